"""How far can a gradient map get? Its convolutions alone, timed in isolation.

A gradient map is one forward and one input-gradient pass, and on the site's
models nearly all of its arithmetic is convolution. This script times each of a
model's convolutions by itself, forward and input gradient, exactly as the package
runs them in a gradient map (:func:`saliency_guide.layers.conv_same` /
:func:`~saliency_guide.layers.conv_one_channel`, batch 256, each feature map's
size read from the model with ``nnx.capture``), under both XLA settings (no
flags, and the documented opt-in ``--xla_cpu_experimental_ynn_fusion_type=``),
each in its own process. The sum at
the faster setting is a floor for any gradient map built on XLA's convolutions;
the script sets it beside the last recorded benchmark (``results/cpu.csv``,
gradients, batch 256) and the time that twice Captum's throughput would allow.
The same convolutions are also timed at batch 32 (:data:`SMALL_BATCH`), the other
batch the benchmark compares at: ``floor_ms`` records, per batch, the floor of a map
that needs every convolution's input gradient (``gradient``: forward + input
gradient) and of one whose backward pass stops at the last convolution's output
(``forward``: Grad-CAM's), which the Performance page sets beside each map that
Captum computed faster.
It also reports XLA's FLOP count of the whole gradient pass (cost analysis of the
compiled program), the rate each timing implies, how many cores each
convolution kept busy (process CPU time / wall time), and, for scale, the rate
of a float32 matrix product in its best case on the machine (square, n = 1024
and 2048, XLA's own ``jnp.matmul``).

Could the convolutions themselves be written faster in XLA? For every convolution
with more than one input channel the script also times two classic
reformulations of the forward pass, checked against ``lax.conv_general_dilated``
(relative L2 ≤ 1e-5): *im2col* (the nine shifted views concatenated into patches,
one matrix product with the ``(9·C, O)`` kernel) and *Winograd F(2×2, 3×3)*
(Lavin & Gray, 2016: 16 products per 2×2 output tile instead of 36, i.e. 2.25×
fewer multiplications, as 16 matrix products of transformed tiles).

Usage::

    python benchmarks/investigations/ceiling.py   # a summary; writes results/cpu.ceiling.json

``nox -s bench`` runs it after the benchmark; run it on the machine of (and close
in time to) the recorded benchmark.
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness
import harness
from harness import RESULTS

BATCH = 256
SMALL_BATCH = 32  # the convolutions alone are timed at this batch too (``floor_ms``)
MODELS = ("cnn", "gap_cnn")
XLA_MODES = {mode: harness.XLA_MODES[mode] for mode in ("default", "fast-conv")}
ROUNDS = 25  # timed calls per function, interleaved across functions
MATMUL_SIZES = (1024, 2048)  # square float32 products: a matrix kernel's best case


def _im2col_conv(x, kernel):
  """``SAME`` 3×3 convolution as one matrix product: ``(B·H·W, 9·C) @ (9·C, O)``."""
  import jax.numpy as jnp

  b, h, w, c = x.shape
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  patches = jnp.concatenate(
      [padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=-1)
  return (patches.reshape(-1, 9 * c) @ kernel.reshape(9 * c, -1)).reshape(b, h, w, -1)


def _winograd_conv(x, kernel):
  r"""``SAME`` 3×3 convolution by Winograd's minimal filtering F(2×2, 3×3).

  Each 2×2 output tile is :math:`A^\top [(G k G^\top) \odot (B^\top d B)] A` of
  the overlapping 4×4 input tile :math:`d`; the elementwise product summed over
  input channels is 16 matrix products ``(tiles, C) @ (C, O)``.
  """
  import jax.numpy as jnp

  def input_transform(d0, d1, d2, d3):  # B^T along one axis
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3

  def output_transform(m0, m1, m2, m3):  # A^T along one axis
    return m0 + m1 + m2, m1 - m2 - m3

  b, h, w, c = x.shape
  th, tw = -(-h // 2), -(-w // 2)  # output tiles per column and row
  padded = jnp.pad(x, ((0, 0), (1, 2 * th + 1 - h), (1, 2 * tw + 1 - w), (0, 0)))
  rows = padded.reshape(b, th + 1, 2, 2 * tw + 2, c)  # tile row t starts at even row 2t
  even, odd = rows[:, :, 0], rows[:, :, 1]
  r = jnp.stack(input_transform(even[:, :-1], odd[:, :-1], even[:, 1:], odd[:, 1:]))
  cols = r.reshape(4, b, th, tw + 1, 2, c)
  even, odd = cols[..., 0, :], cols[..., 1, :]
  v = jnp.stack(input_transform(even[:, :, :, :-1], odd[:, :, :, :-1],
                                even[:, :, :, 1:], odd[:, :, :, 1:]), axis=1)
  m = _winograd_products(v.reshape(4, 4, -1, c), _winograd_kernel(kernel))
  m = m.reshape(4, 4, b, th, tw, -1)
  s = jnp.stack(output_transform(*m))  # (2, 4, B, th, tw, O)
  y = jnp.stack(output_transform(*s.swapaxes(0, 1)), axis=1)  # (2, 2, B, th, tw, O)
  y = y.transpose(2, 3, 0, 4, 1, 5).reshape(b, 2 * th, 2 * tw, -1)
  return y[:, :h, :w]


def _winograd_kernel(kernel):
  """``G k G^T`` of a ``(3, 3, C, O)`` kernel: ``(4, 4, C, O)``."""
  import jax.numpy as jnp

  g = jnp.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], kernel.dtype)
  return jnp.einsum("ai,ijco,bj->abco", g, kernel, g)


def _winograd_products(v, u):
  """The 16 matrix products ``(tiles, C) @ (C, O)``: ``(4, 4, N, C) × (4, 4, C, O)``."""
  import jax.numpy as jnp

  return jnp.einsum("abnc,abco->abno", v, u)


REFORMULATIONS = {"im2col": _im2col_conv, "winograd": _winograd_conv}


def _gflop(fn, args) -> float:
  """XLA's FLOP count of a jitted ``fn(*args)`` (cost analysis of the compiled program)."""
  cost = fn.lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return float(cost["flops"]) / 1e9


def _matmul_gflops() -> dict[str, float]:
  """GFLOP/s (2n³ / median time) of a jitted float32 ``(n, n) @ (n, n)`` for each n."""
  import jax
  import jax.numpy as jnp

  matmul = jax.jit(jnp.matmul)
  rates = {}
  for n in MATMUL_SIZES:
    a, b = (jax.random.normal(jax.random.key(i), (n, n), jnp.float32) for i in (0, 1))
    for _ in range(3):
      jax.block_until_ready(matmul(a, b))
    times = []
    for _ in range(ROUNDS):
      start = time.perf_counter()
      jax.block_until_ready(matmul(a, b))
      times.append(time.perf_counter() - start)
    rates[str(n)] = 2 * n**3 / statistics.median(times) / 1e9
  return rates


def _worker() -> dict:
  """Measure in this process (its XLA_FLAGS fixed at start): conv timings and FLOPs."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  import saliency_guide as sg
  from saliency_guide import layers
  from saliency_guide.methods import logit_gradient

  out = {}
  for name in MODELS:
    model = sg.pretrained(name, progress=False).model
    graphdef, state = nnx.split(model)
    images = jnp.zeros((BATCH, 28, 28, 1), jnp.float32)
    targets = jnp.zeros((BATCH,), jnp.int32)

    def gradients(state, images, targets, graphdef=graphdef):
      return logit_gradient(nnx.merge(graphdef, state), images, targets)

    gflop = _gflop(jax.jit(gradients), (state, images, targets))
    _, feature_maps = nnx.capture(model, nnx.Intermediate)(images[:1])  # each conv's output

    calls = {}
    conv_gflop = 0.0  # XLA's count for every convolution, forward and input gradient
    key = jax.random.key(0)
    small = {}  # the same convolutions at SMALL_BATCH
    for layer in model.feature_layers:
      kernel = getattr(model, layer).kernel[...]
      h, w = feature_maps[layer][0].shape[1:3]  # a SAME convolution: its input's size too
      x = jax.random.uniform(key, (BATCH, h, w, kernel.shape[2]), jnp.float32)
      g = jax.random.normal(key, (BATCH, h, w, kernel.shape[3]), jnp.float32)
      conv = layers.conv_one_channel if kernel.shape[2] == 1 else layers.conv_same
      # The forward pass as a gradient map runs it: the primal half of jax.vjp (for
      # conv_one_channel that is its forward rule, not the plain call's convolution).
      forward = jax.jit(lambda x, k, conv=conv: jax.vjp(lambda x: conv(x, k), x)[0])
      input_grad = jax.jit(lambda x, k, g, conv=conv: jax.vjp(lambda x: conv(x, k), x)[1](g)[0])
      calls[f"{layer} forward"] = (forward, (x, kernel))
      calls[f"{layer} input gradient"] = (input_grad, (x, kernel, g))
      small[f"{layer} forward"] = (forward, (x[:SMALL_BATCH], kernel))
      small[f"{layer} input gradient"] = (input_grad, (x[:SMALL_BATCH], kernel, g[:SMALL_BATCH]))
      conv_gflop += _gflop(forward, (x, kernel)) + _gflop(input_grad, (x, kernel, g))
      if kernel.shape[2] > 1:
        reference = forward(x, kernel)
        for label, reformulated in REFORMULATIONS.items():
          fn = jax.jit(reformulated)
          error = jnp.linalg.norm(fn(x, kernel) - reference) / jnp.linalg.norm(reference)
          if not error <= 1e-5:
            raise AssertionError(f"{label} {layer}: relative L2 {float(error):.1e} > 1e-5")
          calls[f"{layer} forward, {label}"] = (fn, (x, kernel))
        tiles = BATCH * -(-h // 2) * -(-w // 2)  # the products alone, on tiles of that count
        v = jax.random.uniform(key, (4, 4, tiles, kernel.shape[2]), jnp.float32)
        calls[f"{layer} forward, winograd products"] = (
            jax.jit(_winograd_products), (v, _winograd_kernel(kernel)))
    calls.update({f"{label} @{SMALL_BATCH}": call for label, call in small.items()})
    for fn, args in calls.values():
      for _ in range(3):
        jax.block_until_ready(fn(*args))
    times = {label: [] for label in calls}
    cpu = {label: 0.0 for label in calls}  # process CPU time: how many cores a call kept busy
    for _ in range(ROUNDS):
      for label, (fn, args) in calls.items():
        start, start_cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn(*args))
        times[label].append(time.perf_counter() - start)
        cpu[label] += time.process_time() - start_cpu
    ms = {label: 1e3 * statistics.median(t) for label, t in times.items()}
    at_small = f" @{SMALL_BATCH}"
    plain = [label for label in ms if ", " not in label and not label.endswith(at_small)]
    out[name] = {
        "gflop_per_batch": gflop,
        "conv_gflop_per_batch": conv_gflop,
        "conv_ms": {label: ms[label] for label in plain},
        "conv_cores": {label: cpu[label] / sum(times[label]) for label in plain},
        "reformulated_ms": {label: t for label, t in ms.items() if ", " in label},
        "conv_ms_small_batch": {label.removesuffix(at_small): t for label, t in ms.items()
                                if label.endswith(at_small)},
    }
  out["matmul_gflops"] = _matmul_gflops()
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


def _floors(conv_ms: dict[str, float]) -> dict[str, float]:
  """{kind: ms} of a map's convolutions: all of them forward + input gradient
  (``gradient``), or forward alone (``forward``: a backward pass that stops at the last
  convolution's output, as Grad-CAM's does)."""
  return {"gradient": sum(conv_ms.values()),
          "forward": sum(t for label, t in conv_ms.items() if label.endswith(" forward"))}


def main() -> None:
  if "--worker" in sys.argv:
    print(json.dumps(_worker()))
    return
  started, load = harness.utc_now(), harness.load_average()
  measured = {mode: harness.run_in_fresh_process(__file__, ["--worker"], xla_flags=flags)
              for mode, flags in XLA_MODES.items()}
  models = {}
  for name in MODELS:
    recorded = _recorded_ms(name)
    ours_ms, captum_ms = recorded["default"]
    gflop = measured["default"][name]["gflop_per_batch"]
    # {batch: {kind: {xla: ms}}}: the floor of a map of that kind at that batch
    floor_ms = {
        str(batch): {kind: {mode: _floors(m[name][key])[kind] for mode, m in measured.items()}
                     for kind in ("gradient", "forward")}
        for batch, key in ((BATCH, "conv_ms"), (SMALL_BATCH, "conv_ms_small_batch"))}
    conv_total = floor_ms[str(BATCH)]["gradient"]  # {xla: ms}, every convolution at BATCH
    best = min(conv_total, key=conv_total.get)
    conv_gflop = measured["default"][name]["conv_gflop_per_batch"]
    models[name] = {
        "gflop_per_batch": gflop,
        "conv_ms": {mode: m[name]["conv_ms"] for mode, m in measured.items()},
        "conv_cores": {mode: m[name]["conv_cores"] for mode, m in measured.items()},
        "reformulated_ms": {mode: m[name]["reformulated_ms"] for mode, m in measured.items()},
        "best_xla": best,
        "recorded_ours_ms": ours_ms,
        "recorded_ours_ms_by_xla": {mode: ms[0] for mode, ms in recorded.items()},
        "recorded_captum_ms": captum_ms,
        "twice_captum_budget_ms": captum_ms / 2,
        "ours_gflops": gflop / (ours_ms / 1e3),
        "captum_gflops": gflop / (captum_ms / 1e3),
        "twice_captum_gflops": gflop / (captum_ms / 2 / 1e3),
        "conv_gflop_per_batch": conv_gflop,
        "conv_gflops": {mode: conv_gflop / (t / 1e3) for mode, t in conv_total.items()},
        "floor_ms": floor_ms,
    }
    print(f"{name}: {gflop:.2f} GFLOP per {BATCH} gradient maps; convolutions alone "
          + ", ".join(f"{t:.1f} ms ({mode})" for mode, t in conv_total.items())
          + f"; recorded map: ours {ours_ms:.1f} ms, Captum {captum_ms:.1f} ms; "
          f"2x Captum allows {captum_ms / 2:.1f} ms, i.e. "
          f"{models[name]['twice_captum_gflops']:.0f} GFLOP/s; the convolutions "
          f"({conv_gflop:.2f} GFLOP) ran at "
          + ", ".join(f"{rate:.0f} GFLOP/s ({mode})"
                      for mode, rate in models[name]["conv_gflops"].items()))
    for mode, m in measured.items():
      for label, t in m[name]["conv_ms"].items():
        print(f"  {label} ({mode}): {t:.2f} ms on {m[name]['conv_cores'][label]:.1f} cores")
    for mode, m in measured.items():
      for label, t in m[name]["reformulated_ms"].items():
        print(f"  {label} ({mode}): {t:.2f} ms")
    for batch, floors in models[name]["floor_ms"].items():
      print(f"  floors at batch {batch}: " + "; ".join(
          f"{kind} " + ", ".join(f"{t:.2f} ms ({mode})" for mode, t in by_mode.items())
          for kind, by_mode in floors.items()))
  run = harness.record(started, load)
  result = {
      "date": f"{run['finished_utc']} UTC",
      "machine": f"{run['cpu']}, {run['cores']} cores",
      "load_average": run["load_after"],
      "record": run,
      "batch": BATCH,
      "small_batch": SMALL_BATCH,
      "rounds": ROUNDS,
      "models": models,
      "matmul_gflops": {mode: m["matmul_gflops"] for mode, m in measured.items()},
  }
  for mode, rates in result["matmul_gflops"].items():
    print(f"float32 square matrix product ({mode}): "
          + ", ".join(f"n={n}: {r:.0f} GFLOP/s" for n, r in rates.items()))
  (RESULTS / "cpu.ceiling.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
  main()
