"""Independent implementations, driven on identical weights: the agreement cases.

Each module of this folder covers one family of methods and exports::

    LIBRARIES: tuple[str, ...]  # distributions the cases need (versions go in the record)

    def cases(models: dict[str, nnx.Module], images: np.ndarray,
              labels: np.ndarray) -> list[Case]: ...

``models`` holds the site's trained ``"cnn"`` and ``"gap_cnn"`` (Flax), ``images``
``(B, 28, 28, 1)`` float32 digits and ``labels`` ``(B,)`` their classes. A
:class:`Case` pairs a no-argument call of our method with the same computation in
the reference library (PyTorch copies of the models come from
``benchmarks/torch_models.py``), both returning NumPy maps of the same shape.

Two consumers share these cases, so a figure on the site and the assertion in the
tests come from the same code:

* ``tests/test_references.py`` (``nox -s references``) runs every case on a few
  digits and asserts ``relative L2 <= case.tolerance``;
* ``benchmarks/references.py`` (``nox -s references``, then recorded in
  ``benchmarks/results/references.{md,json}``) measures the agreement on more
  digits and times both sides, interleaved, at the batch sizes asked for.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import types
from collections.abc import Callable
from typing import Any

import numpy as np

FAMILIES = ("occlusion", "kernel_shap", "lrp", "deeplift", "path_methods", "xrai",
            "cam_variants")


@dataclasses.dataclass(frozen=True)
class Case:
  """One method, one model, one setting: our call and the reference's, same inputs.

  Attributes:
    method: what is compared, with its settings ("Occlusion, window 4, stride 2").
    model: ``"cnn"`` or ``"gap_cnn"``.
    reference: the library and its function ("Captum Occlusion").
    ours: no-argument call of our method; returns a NumPy array.
    theirs: no-argument call of the reference; returns a NumPy array of ours' shape.
    tolerance: the largest relative L2 difference the tests accept.
    note: how the comparison is made, when it is not plain (shims, re-weighting,
      shared random draws), said once here and shown beside the figure.
    timed: whether ``benchmarks/references.py`` times the two calls.
  """

  method: str
  model: str
  reference: str
  ours: Callable[[], Any]
  theirs: Callable[[], Any]
  tolerance: float = 1e-5
  note: str = ""
  timed: bool = True


def differences(a: Any, b: Any) -> tuple[float, float]:
  """``(‖a − b‖ / ‖b‖, max|a − b| / max|b|)`` in float64."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape:
    raise ValueError(f"shapes differ: ours {a.shape}, reference {b.shape}")
  scale = max(float(np.linalg.norm(b)), 1e-30)
  peak = max(float(np.abs(b).max()), 1e-30)
  return float(np.linalg.norm(a - b)) / scale, float(np.abs(a - b).max()) / peak


def torchvision_stub() -> None:
  """Let zennit and pytorch-grad-cam import where torchvision cannot.

  PyPI's torchvision does not load beside the CPU build of ``torch==2.13.0`` used
  here (``RuntimeError: operator torchvision::nms does not exist``), and both
  libraries import it at module level for things the comparisons never call
  (zennit: ResNet block classes for its ResNet canonizer; pytorch-grad-cam: image
  transforms and box IoU for detection targets). If the real torchvision imports,
  it is used; otherwise a stub module with those names (classes that cannot be
  instantiated, functions that raise) is registered, so that any use of it fails
  loudly instead of computing something else.
  """
  try:
    importlib.import_module("torchvision")
    return
  except Exception:  # ImportError, or the RuntimeError above
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
      del sys.modules[name]

  def unavailable(*args, **kwargs):
    raise RuntimeError("torchvision is a stub here (see benchmarks/references/__init__.py)")

  class Unavailable:
    def __init__(self, *args, **kwargs):
      unavailable()

  names = {
      "torchvision": {},
      "torchvision.models": {},
      "torchvision.models.resnet": {"Bottleneck": Unavailable, "BasicBlock": Unavailable},
      "torchvision.models.vgg": {"VGG": Unavailable},
      "torchvision.transforms": {"Compose": Unavailable, "Normalize": Unavailable,
                                 "ToTensor": Unavailable, "Resize": Unavailable},
      "torchvision.transforms.functional": {"resize": unavailable},
      "torchvision.ops": {"box_iou": unavailable},
  }
  modules = {}
  for name, attributes in names.items():
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    module.__getattr__ = _missing(name)  # any other name: a loud AttributeError
    modules[name] = module
    sys.modules[name] = module
  for name, module in modules.items():
    parent, _, child = name.rpartition(".")
    if parent:
      setattr(modules[parent], child, module)


def _missing(module: str) -> Callable[[str], Any]:
  def getattr_(attr: str) -> Any:
    raise AttributeError(f"{module}.{attr}: torchvision is a stub here "
                         "(see benchmarks/references/__init__.py)")
  return getattr_


def family(name: str) -> types.ModuleType:
  """The module of one family (``benchmarks/references/<name>.py``)."""
  if name not in FAMILIES:
    raise ValueError(f"name: expected one of {FAMILIES}, got {name!r}")
  return importlib.import_module(f"references.{name}")
