"""Benchmark: saliency_guide's jitted methods against Captum, same weights, same run.

For each method, model (``CNN``, ``GapCNN``) and batch size it measures, for our
methods (JAX) and for Captum (PyTorch CPU) on a PyTorch copy of the same
weights (``benchmarks/torch_models.py``):

* steady-state throughput: maps per second from the median of >= 5 timed calls
  (``jax.block_until_ready`` on our side; PyTorch CPU calls are synchronous),
  the two frameworks' calls interleaved so that background load hits both alike;
* the first call (for JAX: tracing + compilation + one run);
* peak memory: the largest growth of the resident set during one warm call,
  sampled every millisecond, in a separate process per framework, model and batch
  size with glibc's allocator told to return freed memory at once
  (``MALLOC_MMAP_THRESHOLD_``), so that the resident set follows live memory;
* the agreement of the attributions: relative L2 difference and the maximum
  absolute difference relative to the largest absolute value of Captum's map.

Before anything is timed, the logits of both copies are checked equal to 1e-5
(relative to the largest logit).

Usage::

    python benchmarks/bench.py                  # the full benchmark (tens of minutes)
    python benchmarks/bench.py --smoke          # tiny, checks that everything runs
    python benchmarks/bench.py --batches 256 --methods gradients grad_cam

``nox -s bench`` runs it in a virtual environment with ``torch==2.13.0`` and
Captum. The XLA flag ``--xla_cpu_experimental_ynn_fusion_type=`` (XLA's own
multi-threaded convolutions, see the README) is process-wide, so each setting runs
in its own worker process: ``--xla default`` (no flags: JAX as installed, what the
package does; the default), ``--xla fast-conv`` (the documented opt-in) or
``--xla both``. ``--xla device-per-core`` (another documented opt-in) makes XLA
present each CPU core as a device (``--xla_force_host_platform_device_count``) and
splits every batch over them with a ``NamedSharding``, as a single call can
(:func:`saliency_guide.explain_dataset` gives each device batches of its own instead;
batches the device count does not divide run on one device); ``--xla all`` runs the
three settings.

``--device gpu`` runs both frameworks on the GPU instead (JAX with CUDA, Captum on
``cuda:0``; each timed call ends with ``jax.block_until_ready`` on our side and
``torch.cuda.synchronize()`` on Captum's), with no XLA flags and no peak-memory
probe (it measures host memory), into ``results/gpu.*``; the GPU's name joins the
machine line. One short run on a lent GPU machine: ``benchmarks/gpu_run.sh``.

Results: ``benchmarks/results/<name>.csv`` and ``<name>.md`` (``--name``, default
``cpu``, or ``gpu`` with ``--device gpu``), with the machine, the versions, the load
average and the date.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import harness
from harness import HERE, KEEP_FREED_MEMORY, RESULTS, XLA_MODES, interleaved

SHARDED_MODES = ("device-per-core",)  # modes whose batches are split over all devices
XLA_CHOICES = {"both": ("default", "fast-conv"), "all": tuple(XLA_MODES)}
MODELS = ("cnn", "gap_cnn")
BATCHES = (1, 32, 256)
QUADRATURES = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid",
               "gausslegendre")
IG_STEPS = 64
SG_SAMPLES = 25
SG_NOISE = 0.15
EG_SAMPLES = 64  # Expected Gradients: as many gradient passes as IG-64
EG_REFERENCES = 64  # reference digits the baselines are drawn from
PASS_IMAGES = 256  # images per forward/backward pass for the multi-pass methods, both sides
METHODS = (
    "gradients",
    "gradients_x_inputs",
    *(f"ig64_{rule}" for rule in QUADRATURES),
    "smoothgrad25",
    "eg64",
    "deconvolution",
    "guided_backprop",
    "grad_cam",
    "guided_grad_cam",
)
LOGIT_TOLERANCE = 1e-5
PACKAGES = ("jax", "jaxlib", "flax", "torch", "captum", "numpy")  # versions in the record
QUICK_IG = "ig64_gausslegendre"
RANDOM = ("smoothgrad25", "eg64")  # compared with our own seed-to-seed difference


# --------------------------------------------------------------------------------------
# Measurements.
# --------------------------------------------------------------------------------------


def _rss_bytes() -> int:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
  """Samples the resident set every ``interval`` seconds while active; ``.peak`` in bytes."""

  def __init__(self, interval: float = 0.001):
    self.interval = interval
    self.peak = 0
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  def _run(self) -> None:
    while not self._stop.is_set():
      self.peak = max(self.peak, _rss_bytes())
      time.sleep(self.interval)

  def __enter__(self) -> PeakRSS:
    self.peak = _rss_bytes()
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, _rss_bytes())


# --------------------------------------------------------------------------------------
# The two sides.
# --------------------------------------------------------------------------------------


def load_data(batch: int, smoke: bool):
  """``(pretrained models by name, images (batch, 28, 28, 1), labels)``."""
  import numpy as np

  import saliency_guide as sg

  if smoke:  # untrained models and random digits: no data files, no training
    from flax import nnx

    rng = np.random.default_rng(0)
    images = rng.uniform(size=(batch, 28, 28, 1)).astype(np.float32)
    labels = rng.integers(0, 10, size=batch).astype(np.int32)
    models = {"cnn": sg.CNN(rngs=nnx.Rngs(0)), "gap_cnn": sg.GapCNN(rngs=nnx.Rngs(0))}
    return models, images, labels, "random images, untrained models (smoke test)"
  models = {name: sg.pretrained(name, progress=False) for name in MODELS}
  images, labels = next(iter(models.values())).eval_data()
  if len(images) < batch:
    reps = -(-batch // len(images))
    images, labels = np.concatenate([images] * reps), np.concatenate([labels] * reps)
  first = next(iter(models.values()))
  source = (f"the first B digits (B = the batch size) of MNIST '{first.eval_split}'; models "
            f"trained on '{first.train_split}'")
  return ({k: v.model for k, v in models.items()}, images[:batch], labels[:batch], source)


def load_references(smoke: bool):
  """The reference digits of Expected Gradients, ``(EG_REFERENCES, 28, 28, 1)``."""
  import numpy as np

  import saliency_guide as sg

  if smoke:
    return np.random.default_rng(1).uniform(size=(EG_REFERENCES, 28, 28, 1)).astype(np.float32)
  images, _ = sg.pretrained(MODELS[0], progress=False).eval_data()
  return np.asarray(images[-EG_REFERENCES:])  # the last digits: never explained here


def ours(method: str, model, images, targets, references=None, seed: int = 0
         ) -> Callable[[], Any]:
  """A no-argument call of our method (validation included, as a user calls it).

  ``references``: Expected Gradients' reference digits; ``seed``: the random methods' key.
  """
  import jax

  from saliency_guide import methods as m

  if method == "gradients":
    fn = lambda: m.gradients(model, images, targets)  # noqa: E731
  elif method == "gradients_x_inputs":
    fn = lambda: m.gradients_x_inputs(model, images, targets)  # noqa: E731
  elif method.startswith("ig64_"):
    rule = method.removeprefix("ig64_")
    fn = lambda: m.integrated_gradients(  # noqa: E731
        model, images, targets, steps=IG_STEPS, method=rule, internal_batch_size=PASS_IMAGES)
  elif method == "smoothgrad25":
    smooth = m.smoothgrad(m.gradients, noise_level=SG_NOISE, samples=SG_SAMPLES,
                          key=jax.random.key(seed), batch_size=PASS_IMAGES)
    fn = lambda: smooth(model, images, targets)  # noqa: E731
  elif method == "eg64":
    fn = lambda: m.expected_gradients(  # noqa: E731
        model, images, targets, references=references, samples=EG_SAMPLES,
        key=jax.random.key(seed), internal_batch_size=PASS_IMAGES)
  elif method == "deconvolution":
    fn = lambda: m.deconvolution(model, images, targets)  # noqa: E731
  elif method == "guided_backprop":
    fn = lambda: m.guided_backprop(model, images, targets)  # noqa: E731
  elif method == "grad_cam":
    fn = lambda: m.grad_cam(model, images, targets)  # noqa: E731
  elif method == "guided_grad_cam":
    fn = lambda: m.guided_grad_cam(model, images, targets)  # noqa: E731
  else:
    raise ValueError(f"method: unknown {method!r}")
  return lambda: jax.block_until_ready(fn())


def captum(method: str, model, images, targets, references=None) -> Callable[[], Any]:
  """A no-argument call of Captum's implementation of ``method``."""
  import captum.attr as ca
  from torch_models import grad_cam_layer

  batch = images.shape[0]
  if method == "gradients":
    algo = ca.Saliency(model)
    return lambda: algo.attribute(images, target=targets, abs=False)
  if method == "gradients_x_inputs":
    algo = ca.InputXGradient(model)
    return lambda: algo.attribute(images, target=targets)
  if method.startswith("ig64_"):
    rule = method.removeprefix("ig64_")
    algo = ca.IntegratedGradients(model)
    # Captum evaluates at least 2 path points per image in a pass (it raises a smaller
    # internal_batch_size to 2 × batch, with a warning): ask for that directly.
    per_pass = max(PASS_IMAGES, 2 * batch)
    return lambda: algo.attribute(images, baselines=0.0, target=targets, n_steps=IG_STEPS,
                                  method=rule, internal_batch_size=per_pass)
  if method == "smoothgrad25":
    algo = ca.NoiseTunnel(ca.Saliency(model))
    per_pass = max(1, min(SG_SAMPLES, PASS_IMAGES // batch))
    return lambda: algo.attribute(images, nt_type="smoothgrad", nt_samples=SG_SAMPLES,
                                  nt_samples_batch_size=per_pass, stdevs=SG_NOISE,
                                  target=targets, abs=False)
  if method == "eg64":  # GradientShap without noise is Expected Gradients
    algo = ca.GradientShap(model)  # (no batch option: all samples in one pass)
    return lambda: algo.attribute(images, baselines=references, target=targets,
                                  n_samples=EG_SAMPLES, stdevs=0.0)
  if method == "deconvolution":
    algo = ca.Deconvolution(model)
    return lambda: algo.attribute(images, target=targets)
  if method == "guided_backprop":
    algo = ca.GuidedBackprop(model)
    return lambda: algo.attribute(images, target=targets)
  if method == "grad_cam":
    algo = ca.LayerGradCam(model, grad_cam_layer(model))
    size = tuple(images.shape[2:])
    return lambda: ca.LayerAttribution.interpolate(
        algo.attribute(images, target=targets, relu_attributions=True), size, "bilinear")
  if method == "guided_grad_cam":
    algo = ca.GuidedGradCam(model, grad_cam_layer(model))
    return lambda: algo.attribute(images, target=targets, interpolate_mode="bilinear")
  raise ValueError(f"method: unknown {method!r}")


def captum_reference(method: str, model, images, targets, output):
  """Captum's map to compare ours with, with the same quadrature weights.

  Captum's ``riemann_trapezoid`` weights the nodes ``k/(n-1)`` by ``1/n`` (its
  weights sum to ``(n-1)/n``); ours are the textbook trapezoid weights. To compare
  the implementations rather than the rules, Captum is re-run with the textbook
  weights through ``IntegratedGradients._attribute(step_sizes_and_alphas=...)``,
  on at most 32 images (it evaluates all of their path points in one pass).
  """
  if method != "ig64_riemann_trapezoid":
    return output, images.shape[0]
  import captum.attr as ca
  import torch

  from saliency_guide.methods import quadrature

  n = min(32, images.shape[0])
  alphas, weights = quadrature("riemann_trapezoid", IG_STEPS)
  (maps,) = ca.IntegratedGradients(model)._attribute(
      (images[:n],), (torch.zeros_like(images[:n]),), target=targets[:n], n_steps=IG_STEPS,
      step_sizes_and_alphas=(weights.tolist(), alphas.tolist()))
  return maps, n


def differences(a, b) -> tuple[float, float]:
  """``(‖a − b‖ / ‖b‖, max|a − b| / max|b|)``."""
  import numpy as np

  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  scale = max(float(np.linalg.norm(b)), 1e-30)
  peak = max(float(np.abs(b).max()), 1e-30)
  return float(np.linalg.norm(a - b)) / scale, float(np.abs(a - b).max()) / peak


# --------------------------------------------------------------------------------------
# Worker: one XLA setting, every model, batch and method.
# --------------------------------------------------------------------------------------


def check_logits(jax_model, torch_model, images) -> float:
  import numpy as np
  import torch
  from torch_models import to_nchw

  ours_logits = np.asarray(jax_model(images))
  device = next(torch_model.parameters()).device
  with torch.no_grad():
    theirs = torch_model(to_nchw(images).to(device)).cpu().numpy()
  error = float(np.abs(ours_logits - theirs).max() / max(np.abs(ours_logits).max(), 1e-30))
  if not error <= LOGIT_TOLERANCE:
    raise AssertionError(
        f"logits of the PyTorch copy differ from the Flax model's by {error:.2e} (relative), "
        f"more than {LOGIT_TOLERANCE:.0e}: the weight conversion is wrong"
    )
  return error


def _torch_device(name: str):
  """PyTorch's device for ``--device`` (``gpu``: ``cuda:0``, and JAX must be on a GPU)."""
  import jax
  import torch

  if name == "cpu":
    return torch.device("cpu")
  if not torch.cuda.is_available():
    raise SystemExit("--device gpu: PyTorch sees no CUDA device (torch.cuda.is_available() "
                     "is False)")
  if jax.default_backend() != "gpu":
    raise SystemExit(f"--device gpu: JAX runs on {jax.default_backend()!r}, not 'gpu' "
                     "(install JAX with CUDA; JAX_PLATFORMS must allow it)")
  return torch.device("cuda:0")


def _synchronized(fn: Callable[[], Any], device) -> Callable[[], Any]:
  """``fn``, returning only once the GPU has finished its work (CPU calls are synchronous)."""
  if device.type != "cuda":
    return fn
  import torch

  def call():
    out = fn()
    torch.cuda.synchronize(device)
    return out

  return call


def _accelerator(device) -> str:
  """``"none"`` on the CPU; else PyTorch's and JAX's names of the GPU they run on."""
  if device.type != "cuda":
    return "none"
  import jax
  import torch

  return (f"{torch.cuda.get_device_name(device)} (PyTorch {torch.version.cuda} CUDA); JAX "
          f"on {jax.devices()[0].device_kind}")


def worker(args) -> list[dict[str, Any]]:
  import numpy as np
  import torch
  from torch_models import from_flax, to_nchw, to_nhwc

  rows = []
  device = _torch_device(args.device)
  accelerator = _accelerator(device)
  for batch in args.batches:
    models, images_np, labels_np, source = load_data(batch, args.smoke)
    images, targets, devices = harness.device_arrays(images_np, labels_np,
                                                      split=args.xla in SHARDED_MODES)
    images_t = to_nchw(images_np).to(device)
    targets_t = torch.from_numpy(labels_np.astype(np.int64)).to(device)
    references_np = load_references(args.smoke)
    for model_name in args.models:
      model = models[model_name]
      torch_model = from_flax(model).to(device)
      logit_error = check_logits(model, torch_model, images_np)
      for method in args.methods:
        if args.quick and batch > 1 and method.startswith("ig64_") and method != QUICK_IG:
          continue  # --quick: the other rules only at batch 1 (same cost, other nodes)
        print(f"[{args.xla}] {model_name} batch {batch}: {method} ...", file=sys.stderr,
              flush=True)
        gc.collect()
        calls = {"ours": ours(method, model, images, targets, references_np),
                 "captum": _synchronized(captum(method, torch_model, images_t, targets_t,
                                                to_nchw(references_np).to(device)), device)}
        timings, outputs = interleaved(calls, args.repeats, args.min_seconds, args.max_repeats)
        reference, n = captum_reference(method, torch_model, images_t, targets_t,
                                        outputs["captum"])
        mine = np.asarray(outputs["ours"])[:n]
        theirs = to_nhwc(reference)
        if mine.ndim == 3 and theirs.ndim == 4:  # Grad-CAM: Captum keeps a channel axis
          theirs = theirs[..., 0]
        rel_l2, max_rel = differences(mine, theirs.reshape(mine.shape))
        low, high = harness.ratio_range(timings["captum"], timings["ours"])
        row = dict(
            xla=args.xla, model=model_name, method=method, batch=batch, devices=devices,
            ours_maps_per_s=batch / timings["ours"].median_s,
            captum_maps_per_s=batch / timings["captum"].median_s,
            speedup=timings["captum"].median_s / timings["ours"].median_s,
            speedup_low=low, speedup_high=high,
            ours_median_ms=1e3 * timings["ours"].median_s,
            captum_median_ms=1e3 * timings["captum"].median_s,
            ours_first_s=timings["ours"].first_s,
            captum_first_s=timings["captum"].first_s,
            ours_first_cpu_s=timings["ours"].first_cpu_s,
            ours_compile_s=max(0.0, timings["ours"].first_s - timings["ours"].median_s),
            repeats=len(timings["ours"].times_s),
            rel_l2=rel_l2, max_rel=max_rel, compared_images=n, logit_error=logit_error,
            source=source, accelerator=accelerator,
        )
        if method in RANDOM:  # random: compare with our own seed-to-seed spread
          again = np.asarray(ours(method, model, images, targets, references_np, seed=1)())
          row["seed_rel_l2"] = differences(again[:n], mine)[0]
        rows.append(row)
        print(f"    ours {row['ours_median_ms']:.1f} ms, captum {row['captum_median_ms']:.1f} "
              f"ms, x{row['speedup']:.2f}, first {row['ours_first_s']:.2f} s, rel L2 "
              f"{rel_l2:.1e}", file=sys.stderr, flush=True)
        del calls, outputs
  return rows


def memory_probe(args) -> list[dict[str, Any]]:
  """Peak resident-set growth of one warm call per method (one framework, model, batch)."""
  import numpy as np
  import torch
  from torch_models import from_flax, to_nchw

  (batch,), (model_name,) = args.batches, args.models
  models, images_np, labels_np, _ = load_data(batch, args.smoke)
  model = models[model_name]
  if args.framework == "ours":
    images, targets, _ = harness.device_arrays(images_np, labels_np,
                                                split=args.xla in SHARDED_MODES)
    references = load_references(args.smoke)
    make = lambda method: ours(method, model, images, targets, references)  # noqa: E731
  else:
    torch_model = from_flax(model)
    references = to_nchw(load_references(args.smoke))
    make = lambda method: captum(method, torch_model, to_nchw(images_np),  # noqa: E731
                                 torch.from_numpy(labels_np.astype(np.int64)), references)
  rows = []
  for method in args.methods:
    fn = make(method)
    fn()  # compile / warm up
    gc.collect()
    with PeakRSS() as peak:
      start = _rss_bytes()
      fn()
    rows.append(dict(framework=args.framework, model=model_name, batch=batch, method=method,
                     peak_mb=max(0, peak.peak - start) / 2**20))
  return rows


# --------------------------------------------------------------------------------------
# Driver.
# --------------------------------------------------------------------------------------


def _run_child(argv: list[str], xla_flags: str, malloc: bool = False,
               keep_freed_memory: bool = False, jax_platforms: str = "cpu"
               ) -> list[dict[str, Any]]:
  """This script with ``argv`` in a fresh process with only the given settings."""
  # malloc: freed memory goes back to the system at once, so the RSS follows live memory.
  env = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"} if malloc else None
  return harness.run_in_fresh_process(__file__, argv, xla_flags=xla_flags, env=env,
                              glibc_tunables=KEEP_FREED_MEMORY if keep_freed_memory else None,
                              jax_platforms=jax_platforms)


NAMES = {
    "gradients": "Gradients",
    "gradients_x_inputs": "Gradients × Input",
    **{f"ig64_{rule}": f"IG-64, {rule}" for rule in QUADRATURES},
    "smoothgrad25": "SmoothGrad-25",
    "eg64": "Expected Gradients-64",
    "deconvolution": "Deconvolution",
    "guided_backprop": "Guided Backprop",
    "grad_cam": "Grad-CAM",
    "guided_grad_cam": "Guided Grad-CAM",
}
MODEL_NAMES = {"cnn": "CNN (conv–pool–conv–pool–dense)", "gap_cnn": "GapCNN (conv×3, GAP)"}


def _fmt(x: float) -> str:
  if x >= 100:
    return f"{x:,.0f}"
  if x >= 10:
    return f"{x:.1f}"
  return f"{x:.2f}"


def markdown(rows: list[dict[str, Any]], record: dict[str, Any]) -> str:
  """The results as markdown: a header (machine, load, date, settings) and one table per
  XLA setting and model. ``rows`` as in the CSV; ``record`` as in ``<name>.machine.json``."""
  info = record
  lines = [
      f"Recorded {record['started_utc']} → {record['finished_utc']} (UTC) with "
      f"`{record['command']}`.",
      "",
      f"**Machine.** {info['cpu']}, {info['cores']} cores, {info['memory']} RAM, "
      f"{info['os']}; Python {info['python']}, jax {info['jax']} (jaxlib {info['jaxlib']}), "
      f"flax {info['flax']}, torch {info['torch']} ({info['torch_threads']} threads), "
      f"captum {info['captum']}."
      + (f" **GPU** (both frameworks): {info['accelerator']}."
         if info.get("accelerator", "none") != "none" else "")
      + " **Allocator** (both frameworks): "
      f"{record.get('allocator', 'glibc defaults')}. **Load average** (1/5/15 min) before: "
      f"{record['load_before']}; after: {record['load_after']}.",
      "",
      f"**Data.** {record.get('data', '')}; each image explained for its label. "
      f"IG: black baseline, {IG_STEPS} nodes, {PASS_IMAGES} path points per pass on both "
      f"sides (Captum's `internal_batch_size`; at least 2 × batch for Captum, its minimum). "
      f"SmoothGrad: {SG_SAMPLES} samples, noise {SG_NOISE} (Captum `stdevs`), "
      f"{PASS_IMAGES} noisy images per pass on both sides. Expected Gradients: "
      f"{EG_SAMPLES} samples (a reference and a position on the path drawn for each) from "
      f"{EG_REFERENCES} reference digits (the last of the evaluation split), "
      f"{PASS_IMAGES} path points per pass for us, Captum's `GradientShap` with `stdevs=0` "
      "(it has no batch option: all samples in one pass). Grad-CAM on the last conv layer, "
      "upsampled bilinearly on both sides. Peak memory probed with the "
      + (f"{record['memory_setting']} setting." if "memory_setting" in record
         else "first XLA setting listed below."),
      "",
      "**Columns.** *maps/s*: batch / median time of ≥ 5 warm calls, the two frameworks' "
      "calls interleaved. *×*: Captum's median time / ours (> 1: we are faster); in "
      "brackets the smallest and largest ratio of one round's back-to-back calls. *first "
      "call*: our first call (tracing + XLA compilation + one run), wall-clock seconds; "
      "*compile*: first call − median warm call. *peak MB*: largest growth of the resident "
      "set during one warm call. *rel. L2*: ‖ours − Captum‖ / ‖Captum‖; *max rel.*: "
      "max |ours − Captum| / max |Captum| (SmoothGrad and Expected Gradients draw "
      "different noise and baselines in each "
      "framework: there the figure in brackets is our own seed-to-seed difference, the "
      "level expected from noise alone; Captum's `riemann_trapezoid` has different "
      "weights, so it is compared re-run with the textbook weights on ≤ 32 images).",
      "",
  ]
  order = [m for m in XLA_MODES if any(r["xla"] == m for r in rows)]
  for xla in order:
    flag = XLA_MODES[xla]
    lines += [f"### XLA: {xla}" + (f" (`XLA_FLAGS={flag}`)" if flag else " (no XLA flags)"),
              ""]
    if xla in SHARDED_MODES:
      split = sorted({r["batch"] for r in rows if r["xla"] == xla and r.get("devices", 1) > 1})
      count = max(r.get("devices", 1) for r in rows if r["xla"] == xla)
      lines += [f"Each CPU core is a JAX device; batches of {', '.join(map(str, split)) or 'no'} "
                f"images were split over the {count} devices (`NamedSharding` along the batch, as "
                "`explain_dataset` does), the others ran on one device.", ""]
    for model in dict.fromkeys(r["model"] for r in rows):
      subset = [r for r in rows if r["xla"] == xla and r["model"] == model]
      if not subset:
        continue
      lines += [f"#### {MODEL_NAMES.get(model, model)}", "",
                "| method | batch | ours maps/s | Captum maps/s | × | first call s | "
                "compile s | peak MB ours / Captum | rel. L2 | max rel. |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
      for r in subset:
        ours_mb, theirs_mb = r.get("ours_peak_mb"), r.get("captum_peak_mb")
        peak = (f"{ours_mb:,.0f} / {theirs_mb:,.0f}" if ours_mb is not None
                and theirs_mb is not None else "–")
        rel = f"{r['rel_l2']:.1e}"
        if r.get("seed_rel_l2") is not None:
          rel += f" ({r['seed_rel_l2']:.1e})"
        compile_s = max(0.0, r["ours_first_s"] - r["ours_median_ms"] / 1e3)
        lines.append(
            f"| {NAMES.get(r['method'], r['method'])} | {r['batch']} | "
            f"{_fmt(r['ours_maps_per_s'])} | {_fmt(r['captum_maps_per_s'])} | "
            f"**{r['speedup']:.2f}**{_spread(r)} | {r['ours_first_s']:.2f} | {compile_s:.2f} | "
            f"{peak} | {rel} | {r['max_rel']:.1e} |")
      lines.append("")
  return "\n".join(lines)


def _spread(row: dict[str, Any]) -> str:
  """`` (low–high)``: the per-round range of the ratio, where the row recorded it."""
  if row.get("speedup_low") is None:
    return ""
  return f" ({row['speedup_low']:.2f}–{row['speedup_high']:.2f})"


def _numbers(row: dict[str, str]) -> dict[str, Any]:
  """A CSV row with its numbers as numbers (empty fields as None)."""
  out: dict[str, Any] = {}
  for key, value in row.items():
    if value in ("", None):
      out[key] = None
      continue
    try:
      out[key] = int(value)
    except ValueError:
      try:
        out[key] = float(value)
      except ValueError:
        out[key] = value
  return out


def write_markdown(name: str) -> str:
  """(Re)write ``results/<name>.md`` from ``<name>.csv`` and ``<name>.machine.json``."""
  with open(RESULTS / f"{name}.csv", newline="") as f:
    rows = [_numbers(r) for r in csv.DictReader(f)]
  record = json.loads((RESULTS / f"{name}.machine.json").read_text())
  text = markdown(rows, record)
  (RESULTS / f"{name}.md").write_text(text + "\n")
  return text


def _mem_method(method: str) -> str:
  # Every quadrature rule costs the same: memory is probed once, with Gauss–Legendre.
  return "ig64_gausslegendre" if method.startswith("ig64_") else method


def driver(args) -> None:
  started, load_before = harness.utc_now(), harness.load_average()
  common = ["--device", args.device,
            "--repeats", str(args.repeats), "--min-seconds", str(args.min_seconds),
            "--max-repeats", str(args.max_repeats), "--methods", *args.methods,
            *(["--smoke"] if args.smoke else []), *(["--quick"] if args.quick else [])]
  modes = list(dict.fromkeys(m for x in args.xla for m in XLA_CHOICES.get(x, (x,))))
  rows: list[dict[str, Any]] = []
  for mode in modes:
    rows += _run_child(["--worker", "--xla", mode, "--models", *args.models, "--batches",
                        *map(str, args.batches), *common], XLA_MODES[mode],
                       keep_freed_memory=args.keep_freed_memory,
                       jax_platforms="cuda" if args.device == "gpu" else "cpu")
  memory: list[dict[str, Any]] = []
  if not args.no_memory:
    probe_methods = list(dict.fromkeys(_mem_method(m) for m in args.methods))
    for framework in ("ours", "captum"):
      for model in args.models:
        for batch in args.batches:
          print(f"[memory] {framework} {model} batch {batch}", file=sys.stderr, flush=True)
          memory += _run_child(
              ["--memory-probe", framework, "--xla", modes[0], "--models", model,
               "--batches", str(batch), "--methods", *probe_methods,
               *(["--smoke"] if args.smoke else [])],
              XLA_MODES[modes[0]], malloc=True)
  mem = {(r["framework"], r["model"], r["batch"], r["method"]): r["peak_mb"] for r in memory}
  for r in rows:
    for framework in ("ours", "captum"):
      r[f"{framework}_peak_mb"] = mem.get(
          (framework, r["model"], r["batch"], _mem_method(r["method"])))
  sources = dict.fromkeys(r.pop("source") for r in rows)
  accelerators = dict.fromkeys(r.pop("accelerator") for r in rows)
  run = {
      **harness.record(started, load_before, packages=PACKAGES),
      "command": " ".join(["python benchmarks/bench.py", *args.argv]),
      "allocator": (f"GLIBC_TUNABLES={KEEP_FREED_MEMORY}" if args.keep_freed_memory
                    else "glibc defaults"),
      "data": "; ".join(sources),
      "accelerator": "; ".join(accelerators),
      "memory_setting": modes[0],
  }
  name = args.name or "_last"
  RESULTS.mkdir(exist_ok=True)
  keys = list(dict.fromkeys(k for r in rows for k in r))
  with open(RESULTS / f"{name}.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
  (RESULTS / f"{name}.machine.json").write_text(json.dumps(run, indent=2) + "\n")
  print(write_markdown(name))
  if not args.name:
    for suffix in (".csv", ".machine.json", ".md"):
      (RESULTS / f"{name}{suffix}").unlink()
  else:
    print(f"\nWrote {RESULTS / name}.md, .csv and .machine.json", file=sys.stderr)


def parse(argv: list[str]) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
  p.add_argument("--batches", nargs="+", type=int, default=list(BATCHES))
  p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
  p.add_argument("--xla", nargs="+", default=["default"], choices=[*XLA_MODES, *XLA_CHOICES],
                 help="'default': no XLA flags (what the package does); 'fast-conv' and "
                 "'device-per-core': the opt-in flags of the README (the latter also splits "
                 "each batch over the devices); 'both': default and fast-conv; 'all': all "
                 "three; several may be given, each runs in its own process")
  p.add_argument("--repeats", type=int, default=5, help="at least this many timed calls")
  p.add_argument("--min-seconds", type=float, default=2.0,
                 help="keep timing (up to --max-repeats) until both sides used this long")
  p.add_argument("--max-repeats", type=int, default=15)
  p.add_argument("--smoke", action="store_true",
                 help="batch 2, few methods, untrained models: checks that everything runs")
  p.add_argument("--no-memory", action="store_true", help="skip the memory probes")
  p.add_argument("--keep-freed-memory", action="store_true",
                 help=f"time both frameworks with GLIBC_TUNABLES={KEEP_FREED_MEMORY} "
                 "(freed memory stays in the process: fewer page faults; see "
                 "benchmarks/investigations/page_faults.py)")
  p.add_argument("--markdown-only", action="store_true",
                 help="only rewrite results/<name>.md from its .csv and .machine.json")
  p.add_argument("--quick", action="store_true",
                 help="time every IG quadrature rule at batch 1 only, and only Gauss-Legendre "
                 "at larger batches (every rule costs the same: same number of gradient "
                 "passes, only the nodes and weights differ)")
  p.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                 help="where both frameworks run; 'gpu': JAX with CUDA and Captum on cuda:0, "
                 "no XLA flags, no peak-memory probe, results named 'gpu' unless --name")
  p.add_argument("--name", default="cpu", help="results file name ('' to write nothing)")
  p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--memory-probe", dest="framework", choices=("ours", "captum"),
                 help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  args.argv = argv
  if args.worker or args.framework:  # a child process runs exactly one setting
    (args.xla,) = args.xla
  elif args.device == "gpu":
    if args.xla != ["default"]:
      p.error(f"--device gpu: the XLA settings are CPU flags; expected --xla default, "
              f"got {' '.join(args.xla)}")
    if args.keep_freed_memory:
      p.error("--device gpu: --keep-freed-memory is a CPU allocator setting")
    args.no_memory = True  # the probe measures the host's resident set, not the GPU's
    if args.name == "cpu":
      args.name = "gpu"
  if args.smoke and not args.worker and args.framework is None:
    args.batches = [2]
    if args.models == list(MODELS):
      args.models = ["cnn"]
    args.repeats, args.min_seconds, args.max_repeats = 2, 0.0, 2
    if args.methods == list(METHODS):
      args.methods = ["gradients", "ig64_riemann_trapezoid", "smoothgrad25", "eg64", "grad_cam",
                      "guided_grad_cam"]
    if args.name == "cpu":
      args.name = ""
  return args


def main(argv: list[str] | None = None) -> None:
  args = parse(sys.argv[1:] if argv is None else argv)
  if args.worker or args.framework:
    sys.path.insert(0, str(HERE))
    rows = worker(args) if args.worker else memory_probe(args)
    print(json.dumps(rows))
    return
  if args.markdown_only:
    print(write_markdown(args.name))
    return
  driver(args)


if __name__ == "__main__":
  main()
