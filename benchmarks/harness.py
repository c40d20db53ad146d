"""What every measurement in ``benchmarks/`` shares: timing, fresh processes, settings, records.

* **Timing.** :func:`interleaved` calls each function once (its first call:
  for JAX, tracing + compilation + one run), then the functions in turn until
  each has enough timed calls; medians of interleaved calls are what the
  benchmark and the investigations report, so that background load hits every
  contender alike.
* **Process-wide settings.** XLA's flags and glibc's allocator tunables apply to
  a whole process and must be set before it starts: :data:`XLA_MODES` names the
  XLA settings the measurements use (``default``: no flags; ``fast-conv``:
  XLA's own multi-threaded convolutions; ``device-per-core``: one JAX device per
  CPU core), :data:`KEEP_FREED_MEMORY` the allocator setting, and
  :func:`run_in_fresh_process` runs a script with only the settings it is given;
  :func:`device_arrays` splits a batch over the devices, as the
  ``device-per-core`` setting is used.
* **Records.** :func:`machine` describes what ran a measurement (CPU, cores,
  memory, OS, versions); :func:`save` writes an investigation's results to
  ``results/<name>.json`` with the machine, the command, the load average and
  the dates (UTC), and :func:`load` reads them back (the Performance page shows
  these files instead of measuring again).

No JAX import at module level: the driver processes stay light, and each
measuring process imports JAX after its settings are in its environment.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

FAST_CONV_FLAG = "--xla_cpu_experimental_ynn_fusion_type="
DEVICE_PER_CORE_FLAG = f"--xla_force_host_platform_device_count={os.cpu_count() or 1}"
# name: XLA_FLAGS of a process measuring under that setting
XLA_MODES = {"default": "", "fast-conv": FAST_CONV_FLAG, "device-per-core": DEVICE_PER_CORE_FLAG}
# glibc: serve no allocation by mmap, keep 256 MB of freed memory at the top of the heap
KEEP_FREED_MEMORY = "glibc.malloc.mmap_max=0:glibc.malloc.top_pad=268435456"
PACKAGES = ("jax", "jaxlib", "flax", "numpy")  # versions every record names


# --------------------------------------------------------------------------------------
# Timing.
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Timing:
  """One contender's first call (wall and process CPU seconds) and warm call times."""

  first_s: float
  first_cpu_s: float
  times_s: list[float]

  @property
  def median_s(self) -> float:
    return statistics.median(self.times_s)


def ratio_range(slow: Timing, fast: Timing) -> tuple[float, float]:
  """The smallest and largest per-round ratio ``slow / fast`` of interleaved calls.

  Round *i* called both back to back, so its ratio is the one least disturbed by a
  change of background load; the range over rounds is the spread beside the ratio of
  medians. (Each round's ratio pairs the *i*-th timed call of each.)
  """
  if len(slow.times_s) != len(fast.times_s) or not slow.times_s:
    raise ValueError(f"need the same number (≥ 1) of timed calls of each, got "
                     f"{len(slow.times_s)} and {len(fast.times_s)}")
  ratios = [a / b for a, b in zip(slow.times_s, fast.times_s, strict=True)]
  return min(ratios), max(ratios)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
  """``(wall seconds, fn())``."""
  start = time.perf_counter()
  out = fn()
  return time.perf_counter() - start, out


def timed_cpu(fn: Callable[[], Any]) -> tuple[float, float, Any]:
  """Wall and process CPU seconds (CPU time is less sensitive to other processes' load)."""
  start, cpu = time.perf_counter(), time.process_time()
  out = fn()
  return time.perf_counter() - start, time.process_time() - cpu, out


def interleaved(calls: dict[str, Callable[[], Any]], min_repeats: int, min_seconds: float = 0.0,
                max_repeats: int | None = None) -> tuple[dict[str, Timing], dict[str, Any]]:
  """First call of each, then alternating timed calls until enough repeats and time.

  Each round calls every function once, in order. Rounds stop once there are
  ``min_repeats`` of them and all calls took ``min_seconds`` together, or at
  ``max_repeats`` rounds (default: ``min_repeats``). The functions must block
  until their result is ready (``jax.block_until_ready``).

  Returns:
    ``({name: Timing}, {name: output of the first call})``.
  """
  max_repeats = min_repeats if max_repeats is None else max_repeats
  firsts, outputs = {}, {}
  for name, fn in calls.items():
    firsts[name] = timed_cpu(fn)
    outputs[name] = firsts[name][2]
  times: dict[str, list[float]] = {name: [] for name in calls}
  while True:
    for name, fn in calls.items():
      times[name].append(timed(fn)[0])
    n = len(next(iter(times.values())))
    spent = sum(sum(v) for v in times.values())
    if n >= max_repeats or (n >= min_repeats and spent >= min_seconds):
      break
  return {name: Timing(firsts[name][0], firsts[name][1], times[name]) for name in calls}, outputs


def median_ms(calls: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
  """Median warm milliseconds of each of ``calls``, interleaved ``repeats`` times."""
  timings, _ = interleaved(calls, repeats)
  return {name: 1e3 * timing.median_s for name, timing in timings.items()}


# --------------------------------------------------------------------------------------
# Process-wide settings: a fresh process each.
# --------------------------------------------------------------------------------------


def run_in_fresh_process(script: str | Path, args: Sequence[str], *, xla_flags: str = "",
                         glibc_tunables: str | None = None, jax_platforms: str | None = "cpu",
                         env: dict[str, str] | None = None) -> Any:
  """Run ``python script *args`` with only the given process-wide settings.

  ``XLA_FLAGS`` and ``GLIBC_TUNABLES`` are replaced (not added to), so each
  measurement sees its own setting alone; ``JAX_PLATFORMS`` is set to
  ``jax_platforms`` (``None``: left as it is); ``env`` adds further variables.
  The benchmarks folder is on the child's ``sys.path`` (``import harness``
  works there). Its standard error passes through (progress, tracebacks).

  Returns:
    The last line of the child's standard output, parsed as JSON.
  """
  child = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "XLA_FLAGS")}
  child["XLA_FLAGS"] = xla_flags
  if glibc_tunables:
    child["GLIBC_TUNABLES"] = glibc_tunables
  if jax_platforms:
    child["JAX_PLATFORMS"] = jax_platforms
  child["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), child.get("PYTHONPATH")]))
  child.update(env or {})
  done = subprocess.run([sys.executable, str(script), *args], env=child, check=True,
                        stdout=subprocess.PIPE, text=True)
  return json.loads(done.stdout.strip().splitlines()[-1])


def in_each_xla_setting(script: str | Path, settings: Sequence[str]) -> dict[str, Any]:
  """``{setting: result}``: ``python script --worker`` in a fresh process per setting.

  Each process has only that setting's ``XLA_FLAGS`` (:data:`XLA_MODES`), as
  :func:`run_in_fresh_process` starts it.
  """
  return {setting: run_in_fresh_process(script, ["--worker"], xla_flags=XLA_MODES[setting])
          for setting in settings}


def device_arrays(images, labels, split: bool):
  """``(images, labels, devices)`` as JAX arrays, split along the batch over every device.

  With ``split`` (and a device count that divides the batch) the arrays carry a
  ``NamedSharding`` over a 1-D mesh of all devices, as
  :func:`saliency_guide.scale.explain_dataset` places them; otherwise they sit
  on the default device. ``devices`` is how many devices hold them.
  """
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import Mesh, NamedSharding, PartitionSpec

  devices = jax.devices()
  if not split or len(images) % len(devices):
    return jnp.asarray(images), jnp.asarray(labels), 1
  sharding = NamedSharding(Mesh(np.asarray(devices), ("batch",)), PartitionSpec("batch"))
  return jax.device_put(images, sharding), jax.device_put(labels, sharding), len(devices)


# --------------------------------------------------------------------------------------
# Records: what ran a measurement, where and when.
# --------------------------------------------------------------------------------------


def utc_now() -> str:
  """The current time, ``YYYY-MM-DD HH:MM`` (UTC)."""
  return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")


def load_average() -> str:
  """The 1, 5 and 15 minute load averages, ``"a / b / c"``."""
  try:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())
  except OSError:
    return "unknown"


def machine(packages: Sequence[str] = PACKAGES) -> dict[str, str]:
  """What runs this process: CPU, cores, memory, OS, Python and ``packages``' versions.

  With ``"torch"`` among ``packages``, also PyTorch's thread count (``torch_threads``).
  """
  import importlib.metadata as md

  cpu = platform.processor() or "unknown CPU"
  try:
    with open("/proc/cpuinfo") as f:
      names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    cpu = names[0] if names else cpu
  except OSError:
    pass
  try:
    with open("/proc/meminfo") as f:
      mem_kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    memory = f"{mem_kb / 2**20:.0f} GiB"
  except (OSError, StopIteration):
    memory = "unknown"
  versions = {}
  for package in packages:
    try:
      versions[package] = md.version(package)
    except md.PackageNotFoundError:
      versions[package] = "not installed"
  out = dict(cpu=cpu, cores=str(os.cpu_count()), memory=memory,
             os=f"{platform.system()} {platform.release()}", python=platform.python_version(),
             **versions)
  if "torch" in packages:
    out["torch_threads"] = _torch_threads()
  return out


def _torch_threads() -> str:
  try:
    import torch

    return str(torch.get_num_threads())
  except ImportError:
    return "n/a"


def command() -> str:
  """This process's command line, the script's path relative to the working directory."""
  script = Path(sys.argv[0])
  try:
    script = script.resolve().relative_to(Path.cwd())
  except ValueError:
    pass
  return " ".join(["python", str(script), *sys.argv[1:]])


def record(started: str, load_before: str, packages: Sequence[str] = PACKAGES) -> dict[str, str]:
  """The record of a measurement that began at ``started`` and ends now.

  :func:`machine`'s fields, ``started_utc``, ``finished_utc``, ``load_before``,
  ``load_after`` and ``command``. The benchmark writes it as
  ``results/<name>.machine.json``; :func:`save` embeds it.
  """
  return {**machine(packages), "started_utc": started, "finished_utc": utc_now(),
          "load_before": load_before, "load_after": load_average(), "command": command()}


def save(name: str, results: Any, parameters: dict[str, Any], started: str,
         load_before: str) -> Path:
  """Write ``results/<name>.json``: the record, the measurement's parameters, its results.

  ``{"record": record(started, load_before), "parameters": parameters, "results": results}``.
  """
  path = RESULTS / f"{name}.json"
  RESULTS.mkdir(exist_ok=True)
  data = {"record": record(started, load_before), "parameters": parameters, "results": results}
  path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
  return path


def load(name: str) -> dict[str, Any]:
  """``results/<name>.json`` as :func:`save` wrote it."""
  return json.loads((RESULTS / f"{name}.json").read_text())


def describe(rec: dict[str, str]) -> str:
  """One line for a record: when, on what, with which command, under what load."""
  return (f"Recorded {rec['started_utc']} → {rec['finished_utc']} UTC with "
          f"`{rec['command']}` on {rec['cpu']}, {rec['cores']} cores, {rec['memory']} RAM, "
          f"{rec['os']}; Python {rec['python']}, jax {rec['jax']}, flax {rec['flax']}. "
          f"Load average (1/5/15 min) before: {rec['load_before']}; after: "
          f"{rec['load_after']}.")


def investigate(name: str, measure: Callable[[], Any], report: Callable[[Any], str],
                parameters: Callable[[], dict[str, Any]],
                worker: Callable[[list[str]], Any]) -> None:
  """The command line of an investigation (``python investigations/X.py``).

  With ``--worker ARGS`` (how :func:`run_in_fresh_process` calls the script back):
  one measurement in this process, printed as JSON. Otherwise: ``measure()``, print
  ``report(results)``, and save ``results/<name>.json`` with the machine record.
  """
  if "--worker" in sys.argv:
    print(json.dumps(worker(sys.argv[sys.argv.index("--worker") + 1:])))
    return
  started, load = utc_now(), load_average()
  results = measure()
  print(report(results))
  print(f"wrote {save(name, results, parameters(), started, load)}")
