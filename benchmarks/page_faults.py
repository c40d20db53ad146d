"""How much of a saliency call is the kernel handing out fresh memory? Page faults, measured.

XLA:CPU allocates each call's buffers with ``malloc`` and frees them when the
call ends. glibc gives large freed blocks back to the operating system (``munmap``,
or trimming the top of the heap), so the next call gets fresh pages, and the
kernel zero-fills each one on its first touch: a minor page fault. This script
times :func:`saliency_guide.methods.gradients` at batch 256 on both site models in
two fresh processes, without XLA flags: one with glibc's defaults, one with
``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.top_pad=268435456`` (never
serve an allocation by ``mmap``, and keep 256 MB of freed memory at the top of
the heap instead of returning it). For each it reports the median wall time of
warm calls and, per call, the minor page faults and the system (kernel) CPU time.

The setting is process-wide and must be in the environment before Python starts,
so the package never sets it; see the Performance page.

Usage::

    python benchmarks/page_faults.py            # prints a table
    python benchmarks/page_faults.py --json     # the same numbers as JSON
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time

BATCH = 256
CALLS = 15
KEEP_FREED_MEMORY = "glibc.malloc.mmap_max=0:glibc.malloc.top_pad=268435456"
SETTINGS = {"glibc defaults": None, "keep freed memory": KEEP_FREED_MEMORY}


def _worker() -> dict[str, dict[str, float]]:
  """Time warm gradient calls in this process; page faults and system time per call."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from saliency_guide.methods import gradients
  from saliency_guide.models import CNN, GapCNN

  images = jax.random.uniform(jax.random.key(0), (BATCH, 28, 28, 1))
  targets = jnp.zeros((BATCH,), jnp.int32)
  out = {}
  for model_class in (CNN, GapCNN):
    model = model_class(rngs=nnx.Rngs(0))
    for _ in range(3):
      jax.block_until_ready(gradients(model, images, targets))
    before = resource.getrusage(resource.RUSAGE_SELF)
    times = []
    for _ in range(CALLS):
      start = time.perf_counter()
      jax.block_until_ready(gradients(model, images, targets))
      times.append(time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_SELF)
    out[model_class.__name__] = {
        "ms": 1e3 * statistics.median(times),
        "faults_per_call": (after.ru_minflt - before.ru_minflt) / CALLS,
        "system_ms_per_call": 1e3 * (after.ru_stime - before.ru_stime) / CALLS,
    }
  return out


def measure() -> dict[str, dict[str, dict[str, float]]]:
  """``{setting: {model: {ms, faults_per_call, system_ms_per_call}}}``, one process each."""
  results = {}
  for setting, tunables in SETTINGS.items():
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "XLA_FLAGS")}
    if tunables:
      env["GLIBC_TUNABLES"] = tunables
    done = subprocess.run([sys.executable, __file__, "--worker"], env=env, check=True,
                          capture_output=True, text=True)
    results[setting] = json.loads(done.stdout.strip().splitlines()[-1])
  return results


def main() -> None:
  if "--worker" in sys.argv:
    print(json.dumps(_worker()))
    return
  results = measure()
  if "--json" in sys.argv:
    print(json.dumps(results))
    return
  print(f"gradients, batch {BATCH}, no XLA flags; median of {CALLS} warm calls")
  print(f"{'setting':18s} {'model':7s} {'ms/call':>8s} {'faults/call':>12s} {'system ms':>10s}")
  for setting, by_model in results.items():
    for model, r in by_model.items():
      print(f"{setting:18s} {model:7s} {r['ms']:8.1f} {r['faults_per_call']:12.0f} "
            f"{r['system_ms_per_call']:10.1f}")


if __name__ == "__main__":
  main()
