"""One JAX device per CPU core: a batch split over the cores, against one device.

By default XLA:CPU presents the whole CPU as one device, and its default
convolution kernels (YNNPACK fusions) run on one thread: a saliency call keeps
about one core busy while it convolves. ``XLA_FLAGS=--xla_force_host_platform_device_count=N``
presents N CPU devices instead. A batch split over them along the batch axis
(a ``NamedSharding`` on a 1-D ``Mesh``, what :func:`saliency_guide.explain_dataset`
does) runs as N programs at once, one per device, each on its share of the batch.

This script starts one fresh process with ``N = os.cpu_count()`` devices and, for
:func:`~saliency_guide.methods.gradients` and
:func:`~saliency_guide.methods.guided_backprop` on 256 random digits and the
untrained site models, times the same call with the batch on one device and split
over all of them (calls interleaved, median of 15), compares the two maps,
and reports, over warm calls, the process CPU time over wall time (how many cores
were busy on average) and the minor page faults per call. The flag is process-wide
and must be set before JAX starts, so the package never sets it; see the Performance
page.

Usage::

    python benchmarks/device_per_core.py            # prints a table
    python benchmarks/device_per_core.py --json     # the same numbers as JSON
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

BATCH = 256
CALLS = 15
METHODS = ("gradients", "guided_backprop")
DEVICES = os.cpu_count() or 1
FLAG = f"--xla_force_host_platform_device_count={DEVICES}"


def _cores_and_faults(fn, calls: int = 5) -> tuple[float, float]:
  """Over ``calls`` warm calls of ``fn``: process CPU seconds over wall seconds (cores
  busy on average) and minor page faults per call."""
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(calls):
    fn()
  busy = (time.process_time() - cpu) / (time.perf_counter() - wall)
  return busy, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / calls


def _worker() -> dict[str, dict[str, dict[str, float]]]:
  """``{model: {method: {...}}}`` in this process (started with ``FLAG``)."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from bench import interleaved
  from flax import nnx
  from jax.sharding import Mesh, NamedSharding, PartitionSpec

  from saliency_guide import methods
  from saliency_guide.models import CNN, GapCNN

  devices = jax.devices()
  if len(devices) != DEVICES:
    raise RuntimeError(f"expected {DEVICES} devices (XLA_FLAGS={FLAG}), got {devices}")
  split = NamedSharding(Mesh(np.asarray(devices), ("batch",)), PartitionSpec("batch"))
  images = jax.random.uniform(jax.random.key(0), (BATCH, 28, 28, 1))
  targets = jnp.arange(BATCH, dtype=jnp.int32) % 10
  layouts = {"one device": (images, targets),
             "split": (jax.device_put(images, split), jax.device_put(targets, split))}
  out: dict[str, dict[str, dict[str, float]]] = {}
  for model_class in (CNN, GapCNN):
    model = model_class(rngs=nnx.Rngs(0))
    out[model_class.__name__] = {}
    for name in METHODS:
      method = getattr(methods, name)
      calls = {layout: (lambda x=x, t=t, method=method, model=model:
                        jax.block_until_ready(method(model, x, t)))
               for layout, (x, t) in layouts.items()}
      timings, maps = interleaved(calls, CALLS, 0.0, CALLS)
      if maps["split"].sharding.device_set != set(devices):
        raise RuntimeError("the split maps are not spread over every device")
      scale = float(jnp.abs(maps["one device"]).max())
      busy = {layout: _cores_and_faults(fn) for layout, fn in calls.items()}
      out[model_class.__name__][name] = {
          **{f"{layout}_ms": 1e3 * timing.median_s for layout, timing in timings.items()},
          **{f"{layout}_cores": cores for layout, (cores, _) in busy.items()},
          **{f"{layout}_faults": faults for layout, (_, faults) in busy.items()},
          "max_rel_difference": float(jnp.abs(np.asarray(maps["split"]) - maps["one device"])
                                      .max()) / scale,
      }
  return out


def measure() -> dict[str, dict[str, dict[str, float]]]:
  """Run :func:`_worker` in a fresh process with one device per core."""
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  env["XLA_FLAGS"] = FLAG  # replaces any other XLA flag: measure this setting alone
  env["JAX_PLATFORMS"] = "cpu"
  here = os.path.dirname(os.path.abspath(__file__))
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH")]))
  done = subprocess.run([sys.executable, __file__, "--worker"], env=env, check=True,
                        capture_output=True, text=True)
  return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
  if "--worker" in sys.argv:
    print(json.dumps(_worker()))
    return
  results = measure()
  if "--json" in sys.argv:
    print(json.dumps(results))
    return
  print(f"{BATCH} maps per call, {DEVICES} devices ({FLAG}); median of {CALLS} interleaved calls")
  print(table(results))


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
  """:func:`measure`'s results as a text table, one line per model and method."""
  lines = [f"{'model':7s} {'method':16s} {'one device ms':>14s} {'split ms':>9s} {'×':>5s} "
           f"{'cores busy':>11s} {'page faults/call':>17s} {'max rel. diff':>14s}"]
  for model, by_method in results.items():
    for method, r in by_method.items():
      lines.append(
          f"{model:7s} {method:16s} {r['one device_ms']:14.1f} {r['split_ms']:9.1f} "
          f"{r['one device_ms'] / r['split_ms']:5.2f} "
          f"{r['one device_cores']:5.1f} → {r['split_cores']:<3.1f} "
          f"{r['one device_faults']:7,.0f} → {r['split_faults']:<7,.0f} "
          f"{r['max_rel_difference']:14.1e}")
  return "\n".join(lines)


if __name__ == "__main__":
  main()
