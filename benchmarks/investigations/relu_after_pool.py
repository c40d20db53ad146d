"""The ReLU after the max-pool: what ``layers.relu_max_pool_2x2`` saves. Measured.

The site's models compute ``max_pool_2x2(relu(conv(x)))``. The same function is
``relu(max_pool_2x2(conv(x)))`` (both are monotone), and so is its gradient:
:func:`saliency_guide.layers.relu_max_pool_2x2` computes that order, applying the
ReLU and its mask to the pooled array, a quarter of the size. A first prototype of
Integrated Gradients that happened to compute bias and ReLU after the pool ran ~30 %
faster than the package under load; this script isolates that difference. It times
Integrated Gradients (64 path points), SmoothGrad (25 samples) and one gradient call
on 256 random digits with the untrained site models fused ("fused", whatever
:func:`saliency_guide.layers.relu_after_pool_pays` says) and with the composition
("composed": the activation set to ``jax.nn.relu``, the same function but not the
default object, which the models never fuse), calls interleaved (the ratio of medians
with the range of the per-round ratios), and checks that the maps are bitwise
identical; once without XLA flags and once with the fast-convolution flag, each in a
fresh process. Its results are what ``relu_after_pool_pays`` follows.

See the Performance page.

Usage::

    python benchmarks/investigations/relu_after_pool.py   # writes results/relu_after_pool.json
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness
import harness

NAME = "relu_after_pool"  # results/<NAME>.json
BATCH = 256
CALLS = 5
SETTINGS = ("default", "fast-conv")  # harness.XLA_MODES: no XLA flags, the fast-conv flag
VERSIONS = ("fused", "composed")
METHODS = ("gradients", "integrated_gradients", "smoothgrad")
# Results: {model: {method: {"fused_ms", "composed_ms", "low", "high", "identical"}}};
# low/high: the smallest and largest per-round ratio composed / fused.
Results = dict[str, dict[str, dict[str, float | bool]]]


def _worker() -> Results:
  """Measure in this process (its XLA_FLAGS fixed at start)."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  from saliency_guide import layers
  from saliency_guide.methods import gradients, integrated_gradients, smoothgrad
  from saliency_guide.models import CNN, GapCNN

  layers.relu_after_pool_pays = lambda: True  # measure the fused order in every setting

  digits = jnp.asarray(np.random.default_rng(0).random((BATCH, 28, 28, 1), np.float32))
  classes = jnp.asarray(np.arange(BATCH) % 10, jnp.int32)
  smooth = smoothgrad(gradients, samples=25, key=jax.random.key(0))
  calls = {"gradients": gradients,
           "integrated_gradients": lambda m, x, t: integrated_gradients(m, x, t, steps=64),
           "smoothgrad": smooth}

  out: Results = {}
  for model_class in (CNN, GapCNN):
    composed = model_class(rngs=nnx.Rngs(0))
    composed.activation = jax.nn.relu  # same function; the models fuse only their default
    models = {"fused": model_class(rngs=nnx.Rngs(0)), "composed": composed}
    out[model_class.__name__] = {}
    for method in METHODS:
      timings, maps = harness.interleaved(
          {version: lambda model=model, fn=calls[method]: jax.block_until_ready(
              fn(model, digits, classes)) for version, model in models.items()}, CALLS)
      low, high = harness.ratio_range(timings["composed"], timings["fused"])
      out[model_class.__name__][method] = {
          **{f"{version}_ms": 1e3 * timings[version].median_s for version in VERSIONS},
          "low": low, "high": high,
          "identical": bool(np.asarray(maps["fused"]).tobytes()
                            == np.asarray(maps["composed"]).tobytes()),
      }
  return out


def parameters() -> dict:
  """What :func:`measure` measures, as recorded beside its results."""
  return {"batch": BATCH, "steps": 64, "samples": 25, "calls": CALLS}


def measure() -> dict[str, Results]:
  """``{setting: results}``, each setting in a fresh process with only its XLA flag."""
  return harness.in_each_xla_setting(__file__, SETTINGS)


def report(results: dict[str, Results], params: dict | None = None) -> str:
  """:func:`measure`'s results as a text table (``params``: :func:`parameters`'s, recorded)."""
  params = params or parameters()
  lines = [f"{params['batch']} digits, IG {params['steps']} steps, SmoothGrad "
           f"{params['samples']} samples; median of {params['calls']} interleaved calls",
           f"{'setting':10s} {'model':7s} {'method':21s} {'fused ms':>9s} {'composed ms':>12s} "
           f"{'×':>5s} {'range':>11s} {'same maps':>10s}"]
  lines += [f"{setting:10s} {model:7s} {method:21s} {r['fused_ms']:9.0f} "
            f"{r['composed_ms']:12.0f} {r['composed_ms'] / r['fused_ms']:5.2f} "
            f"{r['low']:5.2f}–{r['high']:<5.2f} {'bitwise' if r['identical'] else 'NO':>10s}"
            for setting, by_model in results.items() for model, by_method in by_model.items()
            for method, r in by_method.items()]
  return "\n".join(lines)


def main() -> None:
  harness.investigate(NAME, measure, report, parameters, worker=lambda args: _worker())


if __name__ == "__main__":
  main()
