"""Command line: ``python -m saliency_guide.metrics roar [--full] [...]``.

Runs ROAR (:func:`saliency_guide.metrics.roar`) for the pretrained model
``--model`` and prints the test accuracy of every retrained model (mean ±
s.e. over the retrainings) and, with several repeats, each method's paired
verdict against the random ranking. Without
``--full`` it uses the documentation build's configuration
(:class:`~saliency_guide.metrics.ROARConfig` defaults); with ``--full`` the
paper-sized one (:meth:`ROARConfig.full`: all the data of the configured
splits, the model's own architecture and training recipe, 5 repeats, every
method that applies to the model). Data and splits follow
:func:`saliency_guide.pretrained` (``$SALIENCY_GUIDE_TRAIN_SPLIT``, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def roar_methods(model_name: str, references: np.ndarray, seed: int = 0) -> dict[str, Callable]:
  """The methods ROAR evaluates for ``model_name``, with the options of the comparison page.

  CAM needs global average pooling (``gap_cnn``); the other class-activation
  methods need conv feature maps (not ``mlp``).
  """
  from saliency_guide import methods

  key = jax.random.key(seed)
  out = {
      "Gradient": methods.gradients,
      "Gradient × input": methods.gradients_x_inputs,
      "Integrated Gradients": functools.partial(methods.integrated_gradients, steps=32),
      "SmoothGrad": methods.smoothgrad(methods.gradients, samples=25, key=key),
      "Expected Gradients": functools.partial(
          methods.expected_gradients, references=jnp.asarray(references), samples=32, key=key),
      "Deconvolution": methods.deconvolution,
      "Guided Backprop": methods.guided_backprop,
  }
  if model_name != "mlp":
    out |= {
        "Grad-CAM": methods.grad_cam,
        "Guided Grad-CAM": methods.guided_grad_cam,
        "Grad-CAM++": methods.grad_cam_plus_plus,
        "Score-CAM": methods.score_cam,
    }
  if model_name == "gap_cnn":
    out["CAM"] = methods.cam
  return out


def _roar(args: argparse.Namespace) -> None:
  import saliency_guide as sg
  from saliency_guide import metrics, zoo

  config = metrics.ROARConfig.full(args.model) if args.full else metrics.ROARConfig()
  if args.repeats is not None:
    config = dataclasses.replace(config, repeats=args.repeats)
  record = sg.pretrained(args.model, progress=not args.quiet)
  print(record.describe(), flush=True)
  train_data = zoo.train_data(record.train_split)
  test_data = record.eval_data()
  available = roar_methods(args.model, train_data[0][:256])
  names = args.methods or list(available)
  unknown = sorted(set(names) - set(available))
  if unknown:
    sys.exit(f"--methods: unknown {unknown}; choose from {list(available)}")
  print(config.describe(), flush=True)
  start = time.perf_counter()
  result = metrics.roar(
      record.model, {n: available[n] for n in names}, train_data, test_data, config=config,
      log=None if args.quiet else (lambda line: print(line, flush=True)),
  )
  print(f"done in {time.perf_counter() - start:.0f} s")
  stats = result.stats()
  several = config.repeats > 1
  print("test accuracy" + (f", mean ± s.e. over {config.repeats} retrainings" if several else ""))
  width = 16 if several else 8
  print("method".ljust(22) + "".join(f"{t:>{width}.0%}" for t in result.fractions))
  for name, (mean, sem) in stats.items():
    cells = (f"{m:.3f} ± {e:.3f}" if several else f"{m:.3f}"
             for m, e in zip(mean, sem, strict=True))
    print(name.ljust(22) + "".join(f"{c:>{width}}" for c in cells))
  verdicts = {}
  if several and config.random_baseline:
    print(f"\narea under the accuracy curve, paired by retraining: "
          f"{metrics.comparison_rule()}")
    for name in names:
      comparison = result.compare_to_random(name)
      verdicts[name] = comparison
      print(f"{name.ljust(22)}{comparison}")
  if args.output:
    with open(args.output, "w") as f:
      json.dump({
          "model": record.describe(), "config": config.describe(),
          "fractions": result.fractions.tolist(),
          "accuracy": {n: a.tolist() for n, a in result.accuracy.items()},
          "accuracy_mean_sem": {n: [m.tolist(), e.tolist()] for n, (m, e) in stats.items()},
          "versus_random": {n: {"verdict": c.verdict, "difference": c.difference,
                                "difference_sem": c.difference_sem}
                            for n, c in verdicts.items()},
          "attribution_seconds": result.attribution_seconds,
          "retrain_seconds": result.retrain_seconds,
      }, f, indent=2, ensure_ascii=False)
    print(f"wrote {args.output}")


def main(argv: list[str] | None = None) -> None:
  """Parse ``argv`` and run the chosen evaluation."""
  parser = argparse.ArgumentParser(prog="python -m saliency_guide.metrics", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  roar = sub.add_parser("roar", help="remove and retrain (Hooker et al., 2019)")
  roar.add_argument("--full", action="store_true", help="paper-sized configuration")
  roar.add_argument("--model", default="gap_cnn", choices=["mlp", "cnn", "gap_cnn"],
                    help="pretrained model whose maps rank the pixels (default gap_cnn)")
  roar.add_argument("--methods", nargs="+", help="method names (default: all that apply)")
  roar.add_argument("--repeats", type=int, help="override the number of retrainings per point")
  roar.add_argument("--output", help="write the accuracies to this JSON file")
  roar.add_argument("--quiet", action="store_true", help="no progress lines")
  args = parser.parse_args(argv)
  if args.command == "roar":
    _roar(args)


if __name__ == "__main__":
  main()
