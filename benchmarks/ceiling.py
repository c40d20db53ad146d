"""How far can a gradient map get? Its convolutions alone, timed in isolation.

A gradient map is one forward and one input-gradient pass, and on the site's
models nearly all of its arithmetic is convolution. This script times each of a
model's convolutions by itself, forward and input gradient, exactly as the package
runs them (:func:`saliency_guide.layers.conv_same` /
:func:`~saliency_guide.layers.conv_one_channel`, batch 256), under both XLA
settings (no flags, and the documented opt-in
``--xla_cpu_experimental_ynn_fusion_type=``), each in its own process. The sum at
the faster setting is a floor for any gradient map built on XLA's convolutions;
the script sets it beside the last recorded benchmark (``results/cpu.csv``,
gradients, batch 256) and the time that twice Captum's throughput would allow.
It also reports XLA's FLOP count of the whole gradient pass (cost analysis of the
compiled program) and the rate each timing implies.

Usage::

    python benchmarks/ceiling.py     # prints a summary, writes results/cpu.ceiling.json

``nox -s bench`` runs it after the benchmark; run it on the machine of (and close
in time to) the recorded benchmark.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
BATCH = 256
MODELS = ("cnn", "gap_cnn")
XLA_MODES = {"default": "", "fast-conv": "--xla_cpu_experimental_ynn_fusion_type="}
ROUNDS = 25  # timed calls per function, interleaved across functions


def _worker() -> dict:
  """Measure in this process (its XLA_FLAGS fixed at start): conv timings and FLOPs."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  import saliency_guide as sg
  from saliency_guide import layers
  from saliency_guide.methods._cam import map_shape
  from saliency_guide.methods._core import logit_gradient

  out = {}
  for name in MODELS:
    model = sg.pretrained(name, progress=False).model
    graphdef, state = nnx.split(model)
    images = jnp.zeros((BATCH, 28, 28, 1), jnp.float32)
    targets = jnp.zeros((BATCH,), jnp.int32)

    def gradients(state, images, targets, graphdef=graphdef):
      return logit_gradient(nnx.merge(graphdef, state), images, targets)

    cost = jax.jit(gradients).lower(state, images, targets).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost

    calls = {}
    key = jax.random.key(0)
    for layer in model.feature_layers:
      kernel = getattr(model, layer).kernel[...]
      h, w = map_shape(graphdef, state, images, layer)[1:3]
      x = jax.random.uniform(key, (BATCH, h, w, kernel.shape[2]), jnp.float32)
      g = jax.random.normal(key, (BATCH, h, w, kernel.shape[3]), jnp.float32)
      conv = layers.conv_one_channel if kernel.shape[2] == 1 else layers.conv_same
      forward = jax.jit(conv)
      input_grad = jax.jit(lambda x, k, g, conv=conv: jax.vjp(lambda x: conv(x, k), x)[1](g)[0])
      calls[f"{layer} forward"] = (forward, (x, kernel))
      calls[f"{layer} input gradient"] = (input_grad, (x, kernel, g))
    for fn, args in calls.values():
      for _ in range(3):
        jax.block_until_ready(fn(*args))
    times = {label: [] for label in calls}
    for _ in range(ROUNDS):
      for label, (fn, args) in calls.items():
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times[label].append(time.perf_counter() - start)
    out[name] = {
        "gflop_per_batch": float(cost["flops"]) / 1e9,
        "conv_ms": {label: 1e3 * statistics.median(t) for label, t in times.items()},
    }
  return out


def _recorded_ms(model: str) -> dict[str, tuple[float, float]]:
  """{xla: (ours, Captum) median ms} of gradients at ``BATCH`` from results/cpu.csv."""
  found = {}
  with open(RESULTS / "cpu.csv") as f:
    for row in csv.DictReader(f):
      if (row["model"], row["method"], row["batch"]) == (model, "gradients", str(BATCH)):
        found[row["xla"]] = (float(row["ours_median_ms"]), float(row["captum_median_ms"]))
  if "default" not in found:
    raise LookupError(f"no default/{model}/gradients/{BATCH} row in {RESULTS / 'cpu.csv'}")
  return found


def main() -> None:
  if "--worker" in sys.argv:
    print(json.dumps(_worker()))
    return
  measured = {}
  for mode, flags in XLA_MODES.items():
    env = {**os.environ, "XLA_FLAGS": flags}
    done = subprocess.run([sys.executable, __file__, "--worker"], env=env, check=True,
                          capture_output=True, text=True)
    measured[mode] = json.loads(done.stdout.strip().splitlines()[-1])
  models = {}
  for name in MODELS:
    recorded = _recorded_ms(name)
    ours_ms, captum_ms = recorded["default"]
    gflop = measured["default"][name]["gflop_per_batch"]
    conv_total = {mode: sum(m[name]["conv_ms"].values()) for mode, m in measured.items()}
    best = min(conv_total, key=conv_total.get)
    models[name] = {
        "gflop_per_batch": gflop,
        "conv_ms": {mode: m[name]["conv_ms"] for mode, m in measured.items()},
        "conv_total_ms": conv_total,
        "best_xla": best,
        "recorded_ours_ms": ours_ms,
        "recorded_ours_ms_by_xla": {mode: ms[0] for mode, ms in recorded.items()},
        "recorded_captum_ms": captum_ms,
        "twice_captum_budget_ms": captum_ms / 2,
        "ours_gflops": gflop / (ours_ms / 1e3),
        "captum_gflops": gflop / (captum_ms / 1e3),
    }
    print(f"{name}: {gflop:.2f} GFLOP per {BATCH} gradient maps; convolutions alone "
          + ", ".join(f"{t:.1f} ms ({mode})" for mode, t in conv_total.items())
          + f"; recorded map: ours {ours_ms:.1f} ms, Captum {captum_ms:.1f} ms; "
          f"2x Captum allows {captum_ms / 2:.1f} ms")
    for label, t in measured[best][name]["conv_ms"].items():
      print(f"  {label} ({best}): {t:.2f} ms")
  result = {
      "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
      "machine": f"{platform.machine()}, {os.cpu_count()} cores",
      "load_average": os.getloadavg(),
      "batch": BATCH,
      "rounds": ROUNDS,
      "models": models,
  }
  (RESULTS / "cpu.ceiling.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
  main()
