"""Agreement with the independent implementations, and their speed beside ours.

For every family in ``benchmarks/references/`` (Occlusion, KernelSHAP and LIME, LRP,
DeepLIFT, Blur IG and Guided IG, XRAI, the CAM variants) this runs each
:class:`references.Case` on the site's trained models and real digits:

* **agreement**: relative L2 difference ‖ours − theirs‖ / ‖theirs‖ and the maximum
  difference relative to the reference's largest value, on ``--agree`` digits;
* **speed**: for cases marked ``timed``, both calls interleaved
  (``harness.interleaved``, medians of ≥ ``--repeats`` warm calls) at each batch size
  the family asks for (its ``BATCHES``, default ``(32, 256)``; families whose
  reference handles one image per call ask for small batches).

Writes ``results/references.json`` (with the machine record) and
``results/references.md``; the Performance page shows them. ``nox -s references``
runs it after ``tests/test_references.py``, which asserts every case's tolerance.

Usage::

    python benchmarks/references.py                       # everything (minutes)
    python benchmarks/references.py --families lrp xrai   # some families
    python benchmarks/references.py --no-timing           # agreement only
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]

import harness  # noqa: E402
import references  # noqa: E402

DEFAULT_BATCHES = (32, 256)


def _packages(libraries: tuple[str, ...]) -> dict[str, str]:
  from importlib import metadata

  versions = {}
  for name in libraries:
    try:
      versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      versions[name] = "not installed"
  return versions


def load(n: int):
  """The trained models by name and the first ``n`` evaluation digits with their labels."""
  import numpy as np

  import saliency_guide as sg

  records = {name: sg.pretrained(name, progress=False) for name in ("cnn", "gap_cnn")}
  images, labels = records["cnn"].eval_data()
  if len(images) < n:
    raise ValueError(f"n: the evaluation split has {len(images)} digits, asked for {n}")
  models = {name: r.model for name, r in records.items()}
  return models, np.asarray(images[:n]), np.asarray(labels[:n]), records["cnn"]


def agreement(family: str, models, images, labels) -> list[dict[str, Any]]:
  module = references.family(family)
  rows = []
  for case in module.cases(models, images, labels):
    start = time.perf_counter()
    rel_l2, max_rel = references.differences(case.ours(), case.theirs())
    rows.append({"family": family, "method": case.method, "model": case.model,
                 "reference": case.reference, "images": len(images), "rel_l2": rel_l2,
                 "max_rel": max_rel, "tolerance": case.tolerance, "note": case.note,
                 "passes": rel_l2 <= case.tolerance})
    print(f"  {family:13s} {case.model:8s} {case.method[:48]:48s} rel. L2 {rel_l2:.1e} "
          f"({time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)
  return rows


def speed(family: str, models, images, labels, repeats: int,
          batches: tuple[int, ...] | None = None) -> list[dict[str, Any]]:
  import jax
  import numpy as np

  module = references.family(family)
  rows = []
  for batch in batches or getattr(module, "BATCHES", DEFAULT_BATCHES):
    if batch > len(images):
      reps = -(-batch // len(images))
      images, labels = np.concatenate([images] * reps), np.concatenate([labels] * reps)
    for case in module.cases(models, images[:batch], labels[:batch]):
      if not case.timed:
        continue
      calls = {"ours": lambda c=case: jax.block_until_ready(c.ours()), "theirs": case.theirs}
      timings, _ = harness.interleaved(calls, repeats)
      ours_s, theirs_s = timings["ours"].median_s, timings["theirs"].median_s
      rows.append({"family": family, "method": case.method, "model": case.model,
                   "reference": case.reference, "batch": batch, "ours_s": ours_s,
                   "theirs_s": theirs_s, "ratio": theirs_s / ours_s,
                   "ours_first_s": timings["ours"].first_s})
      print(f"  {family:13s} {case.model:8s} {case.method[:40]:40s} batch {batch:4d}: "
            f"{theirs_s / ours_s:6.2f}× ({ours_s:.3f} s vs {theirs_s:.3f} s)",
            file=sys.stderr, flush=True)
  return rows


def markdown(data: dict[str, Any], agreement: bool = True) -> str:
  """The two tables of ``results/<name>.md`` (the agreement table only if ``agreement``)."""
  lines = [harness.describe(data["record"]), "",
           "Library versions: " + ", ".join(f"{k} {v}" for k, v in
                                            data["parameters"]["libraries"].items()) + "."]
  if agreement:
    lines += ["", *_agreement_lines(data)]
  if data["results"]["speed"]:
    lines += ["", "#### Speed (median warm call, interleaved)", "",
              "| family | method | model | reference | batch | ours s | reference s | × |",
              "|---|---|---|---|---:|---:|---:|---:|"]
    for r in data["results"]["speed"]:
      lines.append(f"| {r['family']} | {r['method']} | {r['model']} | {r['reference']} | "
                   f"{r['batch']} | {r['ours_s']:.3g} | {r['theirs_s']:.3g} | "
                   f"**{r['ratio']:.2f}** |")
  return "\n".join(lines) + "\n"


def _agreement_lines(data: dict[str, Any]) -> list[str]:
  lines = ["#### Agreement on identical weights", "",
           "| family | method | model | reference | digits | rel. L2 | max rel. | tolerance |",
           "|---|---|---|---|---:|---:|---:|---:|"]
  for r in data["results"]["agreement"]:
    lines.append(f"| {r['family']} | {r['method']} | {r['model']} | {r['reference']} | "
                 f"{r['images']} | {r['rel_l2']:.1e} | {r['max_rel']:.1e} | "
                 f"{r['tolerance']:.0e} |")
  notes = {(r["family"], r["note"]) for r in data["results"]["agreement"] if r["note"]}
  if notes:
    lines += ["", "Notes:", ""] + [f"* **{f}**: {n}" for f, n in sorted(notes)]
  return lines


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--families", nargs="+", default=list(references.FAMILIES),
                      choices=references.FAMILIES)
  parser.add_argument("--agree", type=int, default=32, help="digits for the agreement")
  parser.add_argument("--repeats", type=int, default=5, help="timed calls per contender")
  parser.add_argument("--no-timing", action="store_true")
  parser.add_argument("--batches", type=int, nargs="+", default=None,
                      help="batch sizes to time (default: each family's BATCHES)")
  parser.add_argument("--name", default="references", help="results/<name>.{json,md}")
  parser.add_argument("--speed-table-only", action="store_true",
                      help="write only the speed table to results/<name>.md")
  args = parser.parse_args(argv)

  started, load_before = harness.utc_now(), harness.load_average()
  references.torchvision_stub()
  models, images, labels, record = load(max(args.agree, 32, *(args.batches or [])))
  libraries: tuple[str, ...] = ()
  agree, timed = [], []
  for family in args.families:
    libraries += tuple(getattr(references.family(family), "LIBRARIES", ()))
    agree += agreement(family, models, images[:args.agree], labels[:args.agree])
    if not args.no_timing:
      timed += speed(family, models, images, labels, args.repeats,
                     tuple(args.batches) if args.batches else None)
  parameters = {"families": args.families, "agree_digits": args.agree,
                "repeats": args.repeats, "batches": args.batches,
                "data": f"the first digits of MNIST "
                f"'{record.eval_split}'; models trained on '{record.train_split}'",
                "libraries": _packages(tuple(dict.fromkeys(("torch", *libraries))))}
  path = harness.save(args.name, {"agreement": agree, "speed": timed}, parameters, started,
                      load_before)
  data = json.loads(path.read_text())
  (harness.RESULTS / f"{args.name}.md").write_text(
      markdown(data, agreement=not args.speed_table_only))
  print(f"wrote {path} and {args.name}.md")
  failing = [r for r in agree if not r["passes"]]
  if failing:
    raise SystemExit(f"{len(failing)} case(s) beyond their tolerance: "
                     + "; ".join(f"{r['family']} {r['method']} {r['model']}: {r['rel_l2']:.1e}"
                                 for r in failing))


if __name__ == "__main__":
  main()
