"""What does Python add around a one-image saliency call? Its parts, measured.

At batch 1 a map costs well under a millisecond of arithmetic, so whatever
Python does around the compiled function shows. The methods used to call
``nnx.split(model)`` on every call to hand ``(graphdef, state)`` to their jitted
core; they now pass the model itself to ``jax.jit``, which only flattens its
arrays. This script times, on the untrained ``CNN`` in a fresh process without
XLA flags (calls interleaved, medians): ``nnx.split(model)`` (what every call
used to do first), ``jax.tree.leaves(model)`` (what ``jax.jit`` does with the
module) and a whole :func:`saliency_guide.methods.gradients` call on one image,
input checks included.

See the Performance page.

Usage::

    python benchmarks/investigations/call_overhead.py   # writes results/call_overhead.json
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness
import harness

NAME = "call_overhead"  # results/<NAME>.json
CALLS = 300
PARTS = {"split": "nnx.split(model)", "leaves": "jax.tree.leaves(model)",
         "map": "gradients, one image"}
# Results: {part: median ms}
Results = dict[str, float]


def _worker() -> Results:
  """Measure in this process."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  from saliency_guide.methods import gradients
  from saliency_guide.models import CNN

  model = CNN(rngs=nnx.Rngs(0))
  image = jnp.asarray(np.random.default_rng(0).random((1, 28, 28, 1), np.float32))
  target = jnp.array([3])
  return harness.median_ms({
      "split": lambda: nnx.split(model),
      "leaves": lambda: jax.tree.leaves(model),
      "map": lambda: jax.block_until_ready(gradients(model, image, target)),
  }, CALLS)


def parameters() -> dict:
  """What :func:`measure` measures, as recorded beside its results."""
  return {"calls": CALLS}


def measure() -> Results:
  """``{part: median ms}``, in a fresh process without XLA flags."""
  return harness.run_in_fresh_process(__file__, ["--worker"])


def report(results: Results, params: dict | None = None) -> str:
  """:func:`measure`'s results as a text table (``params``: :func:`parameters`'s, recorded)."""
  params = params or parameters()
  return "\n".join([f"CNN, median of {params['calls']} interleaved calls",
                    *(f"{label:24s} {results[part]:6.3f} ms" for part, label in PARTS.items())])


def main() -> None:
  harness.investigate(NAME, measure, report, parameters, worker=lambda args: _worker())


if __name__ == "__main__":
  main()
