"""How much of a saliency call is the kernel handing out fresh memory? Page faults, measured.

XLA:CPU allocates each call's buffers with ``malloc`` and frees them when the
call ends. glibc gives large freed blocks back to the operating system (``munmap``,
or trimming the top of the heap), so the next call gets fresh pages, and the
kernel zero-fills each one on its first touch: a minor page fault. This script
times :func:`saliency_guide.methods.gradients` at batch 256 on both site models in
fresh processes, without XLA flags: one with glibc's defaults, one with
``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.top_pad=268435456``
(:data:`harness.KEEP_FREED_MEMORY`: never serve an allocation by ``mmap``, and
keep 256 MB of freed memory at the top of the heap instead of returning it). For
each it reports the median wall time of warm calls and, per call, the minor page
faults and the system (kernel) CPU time. With glibc's defaults it also times the
same 256 maps as two calls of 128 digits: glibc serves blocks of up to 32 MB from
its heap once one of that size has been freed (its ``mmap`` threshold adapts up to
that bound), so calls whose buffers stay under it reuse memory without any setting.

The setting is process-wide and must be in the environment before Python starts,
so the package never sets it; see the Performance page.

Usage::

    python benchmarks/investigations/page_faults.py   # table; writes results/page_faults.json
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness
import harness

NAME = "page_faults"  # results/<NAME>.json
BATCH = 256
CALLS = 15
# name: (GLIBC_TUNABLES or None for glibc's defaults, digits per call)
SETTINGS = {"glibc defaults": (None, BATCH),
            "keep freed memory": (harness.KEEP_FREED_MEMORY, BATCH),
            "2 calls of 128": (None, BATCH // 2)}
# Results: {setting: {model: {"ms", "faults_per_call", "system_ms_per_call"}}}
Results = dict[str, dict[str, dict[str, float]]]


def _worker(chunk: int) -> dict[str, dict[str, float]]:
  """Time warm gradient maps of ``BATCH`` digits, ``chunk`` per call, in this process.

  Per ``BATCH`` maps: median wall time, minor page faults and system CPU time.
  """
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

    def maps(model=model):
      return [gradients(model, images[i:i + chunk], targets[i:i + chunk])
              for i in range(0, BATCH, chunk)]

    for _ in range(3):
      jax.block_until_ready(maps())
    before = resource.getrusage(resource.RUSAGE_SELF)
    times = []
    for _ in range(CALLS):
      start = time.perf_counter()
      jax.block_until_ready(maps())
      times.append(time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_SELF)
    out[model_class.__name__] = {
        "ms": 1e3 * statistics.median(times),
        "faults_per_call": (after.ru_minflt - before.ru_minflt) / CALLS,
        "system_ms_per_call": 1e3 * (after.ru_stime - before.ru_stime) / CALLS,
    }
  return out


def parameters() -> dict:
  """What :func:`measure` measures, as recorded beside its results."""
  return {"batch": BATCH, "calls": CALLS, "keep_freed_memory": harness.KEEP_FREED_MEMORY}


def measure() -> Results:
  """``{setting: {model: {ms, faults_per_call, system_ms_per_call}}}``, one process each.

  "Per call" means per ``BATCH`` maps (two calls for the chunked setting).
  """
  return {setting: harness.run_in_fresh_process(__file__, ["--worker", str(chunk)],
                                                glibc_tunables=tunables)
          for setting, (tunables, chunk) in SETTINGS.items()}


def report(results: Results, params: dict | None = None) -> str:
  """:func:`measure`'s results as a text table (``params``: :func:`parameters`'s, recorded)."""
  params = params or parameters()
  lines = [f"gradients, {params['batch']} maps, no XLA flags; median of {params['calls']} "
           "warm rounds",
           f"{'setting':18s} {'model':7s} {'ms/call':>8s} {'faults/call':>12s} "
           f"{'system ms':>10s}"]
  lines += [f"{setting:18s} {model:7s} {r['ms']:8.1f} {r['faults_per_call']:12,.0f} "
            f"{r['system_ms_per_call']:10.1f}"
            for setting, by_model in results.items() for model, r in by_model.items()]
  return "\n".join(lines)


def main() -> None:
  harness.investigate(NAME, measure, report, parameters, worker=lambda args: _worker(int(args[0])))


if __name__ == "__main__":
  main()
