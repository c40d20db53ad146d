"""Does writing out the convolution's input gradient pay inside ``lax.scan``? Measured.

Integrated Gradients and SmoothGrad run their gradient passes inside
``lax.scan``. :func:`saliency_guide.layers.conv_same` writes the convolution's
input gradient out explicitly (the ``SAME`` convolution of the cotangent with the
flipped kernel, channels swapped) as a custom VJP, instead of leaving it to
autodiff. This script times :func:`saliency_guide.methods.integrated_gradients`
(16 path points, 64 random digits) on the untrained site models as they are and
with their multi-channel convolutions handed back to ``lax.conv_general_dilated``
(``nnx.Conv``'s ``conv_general_dilated`` attribute; the first convolution keeps
its own kernel), the two versions' calls interleaved, and reports the largest
difference between their maps; once without XLA flags and once with the
fast-convolution flag (``--xla_cpu_experimental_ynn_fusion_type=``), each in a
fresh process.

See the Performance page.

Usage::

    python benchmarks/investigations/conv_vjp_in_scan.py   # writes results/conv_vjp_in_scan.json
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness
import harness

NAME = "conv_vjp_in_scan"  # results/<NAME>.json
BATCH = 64
STEPS = 16
CALLS = 7
SETTINGS = ("default", "fast-conv")  # harness.XLA_MODES: no XLA flags, the fast-conv flag
VERSIONS = ("custom VJP", "autodiff")
# Results: {model: {"custom VJP_ms", "autodiff_ms", "max_difference"}}
Results = dict[str, dict[str, float]]


def _worker() -> Results:
  """Measure in this process (its XLA_FLAGS fixed at start)."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx
  from jax import lax

  from saliency_guide.methods import integrated_gradients
  from saliency_guide.models import CNN, GapCNN

  digits = jnp.asarray(np.random.default_rng(0).random((BATCH, 28, 28, 1), np.float32))
  classes = jnp.zeros(BATCH, jnp.int32)

  def with_autodiff_convs(model):
    """The model with its multi-channel convs back on ``lax.conv_general_dilated``."""
    for name in model.feature_layers[1:]:  # the first conv has its own kernel, kept
      getattr(model, name).conv_general_dilated = lax.conv_general_dilated
    return model

  out: Results = {}
  for model_class in (CNN, GapCNN):
    models = {"custom VJP": model_class(rngs=nnx.Rngs(0)),
              "autodiff": with_autodiff_convs(model_class(rngs=nnx.Rngs(0)))}
    timings, maps = harness.interleaved(
        {version: lambda model=model: jax.block_until_ready(
            integrated_gradients(model, digits, classes, steps=STEPS))
         for version, model in models.items()}, CALLS)
    out[model_class.__name__] = {
        **{f"{version}_ms": 1e3 * timings[version].median_s for version in VERSIONS},
        "max_difference": float(jnp.abs(maps["custom VJP"] - maps["autodiff"]).max()),
    }
  return out


def parameters() -> dict:
  """What :func:`measure` measures, as recorded beside its results."""
  return {"batch": BATCH, "steps": STEPS, "calls": CALLS}


def measure() -> dict[str, Results]:
  """``{setting: results}``, each setting in a fresh process with only its XLA flag."""
  return harness.in_each_xla_setting(__file__, SETTINGS)


def report(results: dict[str, Results], params: dict | None = None) -> str:
  """:func:`measure`'s results as a text table (``params``: :func:`parameters`'s, recorded)."""
  params = params or parameters()
  lines = [f"integrated_gradients, {params['steps']} steps, {params['batch']} digits; median "
           f"of {params['calls']} interleaved calls",
           f"{'setting':10s} {'model':7s} {'custom VJP ms':>14s} {'autodiff ms':>12s} "
           f"{'×':>5s} {'largest difference':>19s}"]
  lines += [f"{setting:10s} {model:7s} {r['custom VJP_ms']:14.0f} {r['autodiff_ms']:12.0f} "
            f"{r['autodiff_ms'] / r['custom VJP_ms']:5.2f} {r['max_difference']:19.1e}"
            for setting, by_model in results.items() for model, r in by_model.items()]
  return "\n".join(lines)


def main() -> None:
  harness.investigate(NAME, measure, report, parameters, worker=lambda args: _worker())


if __name__ == "__main__":
  main()
