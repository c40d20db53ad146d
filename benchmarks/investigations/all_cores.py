"""Two ways to put every CPU core to work, measured against one call at a time.

By default XLA:CPU presents the whole CPU as one device, and its default
convolution kernels (YNNPACK fusions) run on one thread: a saliency call keeps
about one core busy while it convolves. This script measures two remedies, each
in a fresh process, on the untrained site models and random digits:

* **one device per core** (``XLA_FLAGS=--xla_force_host_platform_device_count=N``,
  N = ``os.cpu_count()``): JAX lists N CPU devices, and a batch split over them
  along the batch axis (a ``NamedSharding`` on a 1-D ``Mesh``) runs as N programs
  at once. For :func:`~saliency_guide.methods.gradients` and
  :func:`~saliency_guide.methods.guided_backprop` on 256 digits it times the
  batch on one device and split over all (calls interleaved, median of 15),
  compares the two maps, and reports, over warm calls, the process CPU time over
  wall time (how many cores were busy on average) and the minor page faults per
  call. The flag is process-wide and must be set before JAX starts, so the
  package never sets it.
* **several batches at once** (no flag): :func:`saliency_guide.explain_dataset`
  on 512 digits in batches of 128 with ``workers=1`` and ``workers=N`` (each
  batch called from its own thread; XLA:CPU runs calls from different threads
  concurrently), medians of 9 interleaved runs, and whether the maps are equal;
  once without XLA flags and once with the fast-convolution flag
  (``--xla_cpu_experimental_ynn_fusion_type=``), whose kernels already use every
  core.

See the Performance page.

Usage::

    python benchmarks/investigations/all_cores.py   # tables; writes results/all_cores.json
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness
import harness
from harness import DEVICE_PER_CORE_FLAG, FAST_CONV_FLAG

NAME = "all_cores"  # results/<NAME>.json
BATCH = 256
CALLS = 15
METHODS = ("gradients", "guided_backprop")
MODELS = ("CNN", "GapCNN")
DEVICES = os.cpu_count() or 1
DATASET = 512  # digits explained by explain_dataset
DATASET_BATCH = 128
DATASET_RUNS = 9
# Results: {model: {method: {...}}}
Results = dict[str, dict[str, dict[str, float]]]


def _cores_and_faults(fn, calls: int = 5) -> tuple[float, float]:
  """Over ``calls`` warm calls of ``fn``: process CPU seconds over wall seconds (cores
  busy on average) and minor page faults per call."""
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(calls):
    fn()
  busy = (time.process_time() - cpu) / (time.perf_counter() - wall)
  return busy, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / calls


def _models_and_methods():
  """``(model name, model, method name, method)`` for every case measured."""
  from flax import nnx

  from saliency_guide import methods, models

  for name in MODELS:
    model = getattr(models, name)(rngs=nnx.Rngs(0))
    for method_name in METHODS:
      yield name, model, method_name, getattr(methods, method_name)


def _split_over_devices() -> Results:
  """In a process started with ``DEVICE_PER_CORE_FLAG``: one device against all."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  devices = jax.devices()
  if len(devices) != DEVICES:
    raise RuntimeError(f"expected {DEVICES} devices (XLA_FLAGS={DEVICE_PER_CORE_FLAG}), "
                       f"got {devices}")
  images = np.random.default_rng(0).uniform(size=(BATCH, 28, 28, 1)).astype(np.float32)
  targets = (np.arange(BATCH) % 10).astype(np.int32)
  layouts = {"one device": harness.device_arrays(images, targets, split=False)[:2],
             "split": harness.device_arrays(images, targets, split=True)[:2]}  # as bench.py
  out: Results = {}
  for model_name, model, method_name, method in _models_and_methods():
    calls = {layout: (lambda x=x, t=t, method=method, model=model:
                      jax.block_until_ready(method(model, x, t)))
             for layout, (x, t) in layouts.items()}
    timings, maps = harness.interleaved(calls, CALLS)
    if maps["split"].sharding.device_set != set(devices):
      raise RuntimeError("the split maps are not spread over every device")
    scale = float(jnp.abs(maps["one device"]).max())
    busy = {layout: _cores_and_faults(fn) for layout, fn in calls.items()}
    out.setdefault(model_name, {})[method_name] = {
        **{f"{layout}_ms": 1e3 * timing.median_s for layout, timing in timings.items()},
        **{f"{layout}_cores": cores for layout, (cores, _) in busy.items()},
        **{f"{layout}_faults": faults for layout, (_, faults) in busy.items()},
        "max_rel_difference": float(jnp.abs(np.asarray(maps["split"]) - maps["one device"])
                                    .max()) / scale,
    }
  return out


def _workers() -> Results:
  """In a process with one device: ``explain_dataset`` with 1 and ``DEVICES`` workers."""
  import numpy as np

  from saliency_guide.scale import explain_dataset

  rng = np.random.default_rng(0)
  images = rng.uniform(size=(DATASET, 28, 28, 1)).astype(np.float32)
  targets = (np.arange(DATASET) % 10).astype(np.int32)
  out: Results = {}
  for model_name, model, method_name, method in _models_and_methods():
    runs = {workers: (lambda workers=workers, method=method, model=model: explain_dataset(
                method, model, images, targets, batch_size=DATASET_BATCH, workers=workers,
                progress=False))
            for workers in (1, DEVICES)}
    timings, maps = harness.interleaved(runs, DATASET_RUNS)
    out.setdefault(model_name, {})[method_name] = {
        "one at a time_ms": 1e3 * timings[1].median_s,
        "workers_ms": 1e3 * timings[DEVICES].median_s,
        "same_maps": float(np.array_equal(maps[1], maps[DEVICES])),
    }
  return out


# setting: (XLA_FLAGS of its process, what it runs)
SETTINGS = {"one device per core": (DEVICE_PER_CORE_FLAG, _split_over_devices),
            "workers, no flags": ("", _workers),
            "workers, fast-conv flag": (FAST_CONV_FLAG, _workers)}


def parameters() -> dict:
  """What :func:`measure` measures, as recorded beside its results."""
  return {"batch": BATCH, "calls": CALLS, "devices": DEVICES,
          "device_per_core_flag": DEVICE_PER_CORE_FLAG, "dataset": DATASET,
          "dataset_batch": DATASET_BATCH, "dataset_runs": DATASET_RUNS}


def measure() -> dict[str, Results]:
  """``{setting: results}``, each setting in a fresh process with only its XLA flag."""
  return {setting: harness.run_in_fresh_process(__file__, ["--worker", setting], xla_flags=flags)
          for setting, (flags, _) in SETTINGS.items()}


def _table(results: Results, header: str, row) -> str:
  """One line per model and method: their names, then ``row(numbers)``."""
  return "\n".join([f"{'model':7s} {'method':16s} {header}",
                    *(f"{model:7s} {method:16s} {row(r)}"
                      for model, by_method in results.items() for method, r in by_method.items())])


def split_report(results: dict[str, Results], params: dict | None = None) -> str:
  """The one-device-per-core results as a text table (``params``: :func:`parameters`'s)."""
  p = params or parameters()
  return (f"One device per core ({p['device_per_core_flag']}): {p['batch']} maps per call, "
          f"median of {p['calls']} interleaved calls\n") + _table(
      results["one device per core"],
      f"{'one device ms':>14s} {'split ms':>9s} {'×':>5s} {'cores busy':>11s} "
      f"{'page faults/call':>17s} {'max rel. diff':>14s}",
      lambda r: f"{r['one device_ms']:14.1f} {r['split_ms']:9.1f} "
                f"{r['one device_ms'] / r['split_ms']:5.2f} "
                f"{r['one device_cores']:5.1f} → {r['split_cores']:<3.1f} "
                f"{r['one device_faults']:7,.0f} → {r['split_faults']:<7,.0f} "
                f"{r['max_rel_difference']:14.1e}")


def workers_report(results: dict[str, Results], params: dict | None = None) -> str:
  """The ``workers`` results as text tables, one per XLA setting."""
  p = params or parameters()
  many = f"workers={p['devices']} ms"
  return "\n\n".join(
      f"explain_dataset, {setting}: {p['dataset']} digits, batch_size={p['dataset_batch']}, "
      f"median of {p['dataset_runs']} interleaved runs\n" + _table(
          results[setting],
          f"{'workers=1 ms':>13s} {many:>13s} {'×':>5s} "
          f"{'same maps':>10s}",
          lambda r: f"{r['one at a time_ms']:13.0f} {r['workers_ms']:13.0f} "
                    f"{r['one at a time_ms'] / r['workers_ms']:5.2f} "
                    f"{bool(r['same_maps'])!s:>10s}")
      for setting in SETTINGS if setting.startswith("workers"))


def report(results: dict[str, Results], params: dict | None = None) -> str:
  """All of :func:`measure`'s results as text."""
  return split_report(results, params) + "\n\n" + workers_report(results, params)


def main() -> None:
  harness.investigate(NAME, measure, report, parameters, worker=lambda args: SETTINGS[args[0]][1]())


if __name__ == "__main__":
  main()
