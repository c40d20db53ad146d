"""When SmoothGrad draws its noisy copies: before its gradient passes, or in each. Measured.

:func:`saliency_guide.methods.smoothgrad` runs its gradient passes in a ``lax.scan``
over chunks of noise samples. Each chunk's noisy copies can be drawn inside the
scan's body, just before that chunk's pass ("inside"), or all of them before the
scan, which then reads them ("first"); the values drawn are the same, so the maps
are bitwise the same. Which order the package compiles is decided when the core is
traced (``smoothgrad._noise_first``: "first" only with the fast-convolution flag,
see :func:`saliency_guide.layers.ynn_fusions_off`). This script times
SmoothGrad-25 of :func:`~saliency_guide.methods.gradients` on 256 random digits with
the untrained site models, both orders compiled side by side (each order is fixed
while its program is traced) and their calls interleaved; it reports the ratio of
medians with the range of the per-round ratios and checks that the maps are
bitwise equal. Once without XLA flags and once with the fast-convolution flag, each
in a fresh process. Its results are what ``_noise_first`` follows.

See the Performance page.

Usage::

    python benchmarks/investigations/smoothgrad_noise_order.py   # writes its results/ JSON
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness
import harness

NAME = "smoothgrad_noise_order"  # results/<NAME>.json
BATCH = 256
SAMPLES = 25
CALLS = 7
SETTINGS = ("default", "fast-conv")  # harness.XLA_MODES: no XLA flags, the fast-conv flag
ORDERS = ("first", "inside")
# Results: {model: {"first_ms", "inside_ms", "low", "high", "identical"}}; low/high: the
# smallest and largest per-round ratio inside / first (above 1: drawing first is faster).
Results = dict[str, dict[str, float | bool]]


def _worker() -> Results:
  """Measure in this process (its XLA_FLAGS fixed at start)."""
  import importlib

  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  from saliency_guide.methods import core, gradients, smoothgrad
  from saliency_guide.models import CNN, GapCNN

  engine = importlib.import_module("saliency_guide.methods.smoothgrad")  # the module
  digits = jnp.asarray(np.random.default_rng(0).random((BATCH, 28, 28, 1), np.float32))
  classes = jnp.asarray(np.arange(BATCH) % 10, jnp.int32)
  smooth = smoothgrad(gradients, samples=SAMPLES, key=jax.random.key(0))
  traced: list[bool] = []

  def compiled(smooth_core, first: bool):
    """SmoothGrad's core in its own jitted function, traced with the order fixed."""
    def run(model, images, targets):
      engine._noise_first = lambda images, samples: traced.append(first) or first
      return smooth_core(model, images, targets)
    return nnx.jit(run)

  out: Results = {}
  for model_class in (CNN, GapCNN):
    model = model_class(rngs=nnx.Rngs(0))
    smooth_core = core(smooth, model, digits)
    runs = {order: compiled(smooth_core, order == "first") for order in ORDERS}
    traced.clear()
    timings, maps = harness.interleaved(
        {order: lambda fn=fn, m=model: jax.block_until_ready(fn(m, digits, classes))
         for order, fn in runs.items()}, CALLS)
    assert traced == [True, False], traced  # each program traced once, in its order
    low, high = harness.ratio_range(timings["inside"], timings["first"])
    out[model_class.__name__] = {
        **{f"{order}_ms": 1e3 * timings[order].median_s for order in ORDERS},
        "low": low, "high": high,
        "identical": bool(np.asarray(maps["first"]).tobytes()
                          == np.asarray(maps["inside"]).tobytes()),
    }
  return out


def parameters() -> dict:
  """What :func:`measure` measures, as recorded beside its results."""
  return {"batch": BATCH, "samples": SAMPLES, "calls": CALLS}


def measure() -> dict[str, Results]:
  """``{setting: results}``, each setting in a fresh process with only its XLA flag."""
  return harness.in_each_xla_setting(__file__, SETTINGS)


def report(results: dict[str, Results], params: dict | None = None) -> str:
  """:func:`measure`'s results as a text table (``params``: :func:`parameters`'s, recorded)."""
  params = params or parameters()
  lines = [f"SmoothGrad-{params['samples']} of gradients, {params['batch']} digits; median "
           f"of {params['calls']} interleaved calls (× = inside / first; range over rounds)",
           f"{'setting':10s} {'model':7s} {'first ms':>9s} {'inside ms':>10s} {'×':>5s} "
           f"{'range':>11s} {'same maps':>10s}"]
  lines += [f"{setting:10s} {model:7s} {r['first_ms']:9.0f} {r['inside_ms']:10.0f} "
            f"{r['inside_ms'] / r['first_ms']:5.2f} {r['low']:5.2f}–{r['high']:<5.2f} "
            f"{'bitwise' if r['identical'] else 'NO':>10s}"
            for setting, by_model in results.items() for model, r in by_model.items()]
  return "\n".join(lines)


def main() -> None:
  harness.investigate(NAME, measure, report, parameters, worker=lambda args: _worker())


if __name__ == "__main__":
  main()
