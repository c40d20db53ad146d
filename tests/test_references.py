"""Every method against its independent implementation, on identical weights.

The cases live in ``benchmarks/references/<family>.py`` (one per method family: the
same code records the figures in ``benchmarks/results/references.md``); this test runs
each on eight digits of the site's trained models and asserts its tolerance. It needs
the ``references`` extra (torch, Captum, zennit, PAIR's saliency, pytorch-grad-cam) and
the trained models: ``nox -s references`` installs the one and trains the others once.
Without those libraries every case is skipped, so the core suite stays light.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path[:0] = [str(BENCHMARKS)]

import references  # noqa: E402

DIGITS = 8

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                reason="the references extra is not installed (torch)")


@functools.cache
def data():
  import numpy as np

  import saliency_guide as sg

  records = {name: sg.pretrained(name, progress=False) for name in ("cnn", "gap_cnn")}
  images, labels = records["cnn"].eval_data()
  return ({name: r.model for name, r in records.items()}, np.asarray(images[:DIGITS]),
          np.asarray(labels[:DIGITS]))


@functools.cache
def cases(family: str):
  module = references.family(family)
  missing = [name for name in getattr(module, "LIBRARIES", ())
             if importlib.util.find_spec(name.replace("-", "_")) is None
             and importlib.util.find_spec(_import_name(name)) is None]
  if missing:
    pytest.skip(f"{family}: {', '.join(missing)} not installed")
  references.torchvision_stub()
  return module.cases(*data())


def _import_name(distribution: str) -> str:
  return {"grad-cam": "pytorch_grad_cam", "scikit-image": "skimage"}.get(distribution,
                                                                         distribution)


@pytest.mark.parametrize("family", [f for f in references.FAMILIES
                                    if (BENCHMARKS / "references" / f"{f}.py").exists()])
def test_agrees_with_the_reference(family):
  failures, report = [], []
  for case in cases(family):
    rel_l2, _ = references.differences(case.ours(), case.theirs())
    report.append(f"{case.method} ({case.model}, {case.reference}): {rel_l2:.1e}")
    if not rel_l2 <= case.tolerance:
      failures.append(f"{report[-1]} > {case.tolerance:.0e}")
  print("\n".join(report))
  assert report, f"{family}: no cases"
  assert not failures, "\n".join(failures)
