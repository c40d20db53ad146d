"""The first convolution of a forward-only program: plain, or 9 shifted multiply-adds?

:func:`saliency_guide.layers.conv_one_channel` (the models' one-input-channel
convolution) runs as 9 shifted multiply-adds under differentiation, where XLA
fuses them with the ReLU and pooling that follow; called without differentiation
(logits, deletion curves, the completeness check of Integrated Gradients) it is a
plain ``lax.conv_general_dilated``. This script compiles the logits of 256 random
digits on the untrained site models both ways: the package's, and a variant whose
forward pass is always the shifted form (the primal half of ``jax.vjp`` of
``conv_one_channel``, which is that form). It reports the compile time, the number
of XLA kernels in the compiled program, the median warm call (the two executables'
calls interleaved) and the largest difference between the two logits, once without
XLA flags and once with the fast-convolution flag
(``--xla_cpu_experimental_ynn_fusion_type=``), each in a fresh process.

See the Performance page.

Usage::

    python benchmarks/investigations/first_conv.py   # table; writes results/first_conv.json
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness
import harness

NAME = "first_conv"  # results/<NAME>.json
BATCH = 256
CALLS = 30
SETTINGS = ("default", "fast-conv")  # harness.XLA_MODES: no XLA flags, the fast-conv flag
FORMS = ("plain", "shifted")
# Results: {model: {form: {"compile_s", "kernels", "ms"}, "max_difference": float}}
Results = dict[str, dict]


def _compiled_logits(model, images, one_channel):
  """``model(images)`` compiled with ``one_channel`` as the first convolution.

  Returns ``(compile seconds, executable, number of XLA kernels)``.
  """
  import jax

  from saliency_guide import layers

  kept, layers.conv_one_channel = layers.conv_one_channel, one_channel
  try:
    lowered = jax.jit(lambda m, x: m(x)).trace(model, images).lower()
  finally:
    layers.conv_one_channel = kept
  start = time.perf_counter()
  executable = lowered.compile()
  return time.perf_counter() - start, executable, executable.as_text().count(" fusion(")


def _worker() -> Results:
  """Measure in this process (its XLA_FLAGS fixed at start)."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  from saliency_guide import layers
  from saliency_guide.models import CNN, GapCNN

  package = layers.conv_one_channel

  def shifted(x, kernel):  # the forward rule of conv_one_channel's VJP: 9 shifted multiply-adds
    return jax.vjp(package, x, kernel)[0]

  images = jnp.asarray(np.random.default_rng(1).random((BATCH, 28, 28, 1), np.float32))
  jax.jit(lambda x: 2 * x).lower(images).compile()  # the process's one-off compiler start-up
  results = {}
  for model_class in (CNN, GapCNN):
    model = model_class(rngs=nnx.Rngs(0))
    forms = {"plain": _compiled_logits(model, images, package),
             "shifted": _compiled_logits(model, images, shifted)}
    timings, outputs = harness.interleaved(
        {form: lambda run=run, model=model: jax.block_until_ready(run(model, images))
         for form, (_, run, _) in forms.items()}, CALLS)
    results[model_class.__name__] = {
        **{form: {"compile_s": seconds, "kernels": kernels, "ms": 1e3 * timings[form].median_s}
           for form, (seconds, _, kernels) in forms.items()},
        "max_difference": float(jnp.abs(outputs["plain"] - outputs["shifted"]).max()),
    }
  return results


def parameters() -> dict:
  """What :func:`measure` measures, as recorded beside its results."""
  return {"batch": BATCH, "calls": CALLS}


def measure() -> dict[str, Results]:
  """``{setting: results}``, each setting in a fresh process with only its XLA flag."""
  return harness.in_each_xla_setting(__file__, SETTINGS)


def report(results: dict[str, Results], params: dict | None = None) -> str:
  """:func:`measure`'s results as a text table (``params``: :func:`parameters`'s, recorded)."""
  params = params or parameters()
  lines = [f"logits of {params['batch']} digits; median of {params['calls']} interleaved calls",
           f"{'setting':10s} {'model':7s} {'form':8s} {'compile s':>9s} {'kernels':>8s} "
           f"{'ms/call':>8s}"]
  for setting, by_model in results.items():
    for model, r in by_model.items():
      lines += [f"{setting:10s} {model:7s} {form:8s} {r[form]['compile_s']:9.2f} "
                f"{r[form]['kernels']:8d} {r[form]['ms']:8.1f}" for form in FORMS]
      lines.append(f"{setting:10s} {model:7s} largest difference {r['max_difference']:.1e}")
  return "\n".join(lines)


def main() -> None:
  harness.investigate(NAME, measure, report, parameters, worker=lambda args: _worker())


if __name__ == "__main__":
  main()
