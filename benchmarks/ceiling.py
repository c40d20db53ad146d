"""How close to this CPU's arithmetic ceiling are the gradient maps?

A gradient map is one forward and one input-gradient pass. This script counts the
floating-point operations of that pass for each model (XLA's own cost analysis of
the compiled program the package runs), measures the throughput of a large
float32 matrix product on this machine (the best case for any convolution
routine, which is a matrix product in disguise), and combines both with the last
recorded benchmark (``results/cpu.csv``, batch 256, no XLA flags) into achieved
GFLOP/s for our maps and Captum's, and the rate that twice Captum's throughput
would need.

Usage::

    python benchmarks/ceiling.py            # prints a table, writes results/cpu.ceiling.json

``nox -s bench`` runs it after the benchmark; run it on the machine (and close in
time to) the recorded benchmark.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

import saliency_guide as sg
from saliency_guide.methods._core import logit_gradient

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
BATCH = 256


def gradient_gflop(name: str) -> float:
  """GFLOP of one gradient pass over ``BATCH`` digits, as XLA counts the compiled program."""
  graphdef, state = nnx.split(sg.pretrained(name, progress=False).model)

  def gradients(state, images, targets):
    return logit_gradient(nnx.merge(graphdef, state), images, targets)

  images = jnp.zeros((BATCH, 28, 28, 1), jnp.float32)
  targets = jnp.zeros((BATCH,), jnp.int32)
  cost = jax.jit(gradients).lower(state, images, targets).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return float(cost["flops"]) / 1e9


def matmul_gflops(n: int = 2048, repeats: int = 9) -> float:
  """Median GFLOP/s of an ``n × n`` float32 matrix product (``2 n³`` FLOP)."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  product = jax.jit(jnp.dot)
  product(a, b).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    product(a, b).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2 * n**3 / statistics.median(times) / 1e9


def torch_matmul_gflops(n: int = 2048, repeats: int = 9) -> float | None:
  """The same for PyTorch's CPU matrix product, or ``None`` without PyTorch."""
  try:
    import torch
  except ImportError:
    return None
  a, b = torch.randn(n, n), torch.randn(n, n)
  torch.mm(a, b)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    torch.mm(a, b)
    times.append(time.perf_counter() - start)
  return 2 * n**3 / statistics.median(times) / 1e9


def recorded_ms(model: str) -> tuple[float, float]:
  """(ours, Captum) median ms of gradients at ``BATCH``, no XLA flags, from results/cpu.csv."""
  with open(RESULTS / "cpu.csv") as f:
    for row in csv.DictReader(f):
      if (row["xla"], row["model"], row["method"], row["batch"]) == (
          "default", model, "gradients", str(BATCH)):
        return float(row["ours_median_ms"]), float(row["captum_median_ms"])
  raise LookupError(f"no default/{model}/gradients/{BATCH} row in {RESULTS / 'cpu.csv'}")


def main() -> None:
  peak = matmul_gflops()
  torch_peak = torch_matmul_gflops()
  rows = {}
  for model in ("cnn", "gap_cnn"):
    gflop = gradient_gflop(model)
    ours_ms, captum_ms = recorded_ms(model)
    rows[model] = {
        "gflop_per_batch": gflop,
        "ours_gflops": gflop / (ours_ms / 1e3),
        "captum_gflops": gflop / (captum_ms / 1e3),
        "twice_captum_gflops": 2 * gflop / (captum_ms / 1e3),
    }
  result = {
      "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
      "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
      "load_average": os.getloadavg(),
      "batch": BATCH,
      "matmul_gflops": peak,
      "torch_matmul_gflops": torch_peak,
      "models": rows,
  }
  print(f"float32 matrix product (2048², XLA): {peak:.0f} GFLOP/s")
  if torch_peak is not None:
    print(f"float32 matrix product (2048², PyTorch): {torch_peak:.0f} GFLOP/s")
  for model, r in rows.items():
    print(f"{model}: {r['gflop_per_batch']:.2f} GFLOP per {BATCH} gradient maps; "
          f"ours {r['ours_gflops']:.0f}, Captum {r['captum_gflops']:.0f}, "
          f"2x Captum needs {r['twice_captum_gflops']:.0f} GFLOP/s "
          f"({r['twice_captum_gflops'] / peak:.0%} of the matrix product)")
  (RESULTS / "cpu.ceiling.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
  main()
