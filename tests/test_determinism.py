"""Determinism: the same seed and key give bitwise-identical maps, in any process.

Every method of ``saliency_guide.methods`` (found by its signature: the first three
parameters are ``model, images, targets``) runs in two fresh Python processes on the
same small GapCNN (weights drawn by NumPy from a fixed seed) and the same digits; the
SHA-256 of each map's bytes must be equal between the processes and between two
calls in one process. A method added later is picked up without a change here; one
that needs an argument this table cannot supply fails, naming it.

``explain_dataset`` is checked for ``workers=1`` against ``workers=2`` (bitwise) on one
device, and every method (and a SmoothGrad wrapper) for one device against four
simulated CPU devices (``--xla_force_host_platform_device_count=4``): bitwise equal,
because each device computes whole batches of ``batch_size`` images.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
TESTS = Path(__file__).resolve().parent

PRELUDE = textwrap.dedent(
    """
    import hashlib, inspect, json
    import jax, numpy as np
    from flax import nnx
    from feature_map_models import numpy_init
    from saliency_guide import methods
    from saliency_guide.models import GapCNN
    from saliency_guide.scale import explain_dataset

    model = numpy_init(lambda: GapCNN(channels=(4, 4, 8), num_classes=3,
                                      rngs=nnx.Rngs(0)), seed=3)
    rng = np.random.default_rng(7)
    images = rng.random((4, 12, 12, 1), dtype=np.float32)
    targets = np.array([0, 1, 2, 1], np.int32)
    # Arguments some methods require (keyword-only, no default).
    grid = np.repeat(np.repeat(np.arange(9).reshape(3, 3), 4, 0), 4, 1)  # 9 superpixels
    SUPPLY = {"key": jax.random.key(0), "references": images, "method": methods.gradients,
              "feature_mask": grid}

    def is_method(fn):
      try:
        params = list(inspect.signature(fn).parameters)
      except (TypeError, ValueError):
        return False
      return params[:3] == ["model", "images", "targets"]

    def every_method():
      \"\"\"(name, method, keyword arguments) for every method of the package.\"\"\"
      for name in sorted(n for n in dir(methods) if not n.startswith("_")):
        fn = getattr(methods, name)
        if not callable(fn) or isinstance(fn, type) or not is_method(fn):
          continue
        kwargs = {}
        for p in list(inspect.signature(fn).parameters.values())[3:]:
          if p.default is inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD:
            if p.name not in SUPPLY:
              raise SystemExit(f"{name}: cannot supply required argument {p.name!r}")
            kwargs[p.name] = SUPPLY[p.name]
          elif p.name == "key":
            kwargs["key"] = SUPPLY["key"]
        yield name, fn, kwargs
      yield "smoothgrad(gradients)", methods.smoothgrad(
          methods.gradients, samples=4, key=SUPPLY["key"]), {}
    """
)

SCRIPT = PRELUDE + textwrap.dedent(
    """
    out = {}
    for name, fn, kwargs in every_method():
      maps = [np.asarray(fn(model, images, targets, **kwargs)) for _ in range(2)]
      digests = [hashlib.sha256(np.ascontiguousarray(m).tobytes()).hexdigest() for m in maps]
      out[name] = digests
    for workers in (1, 2):
      maps = explain_dataset(methods.integrated_gradients, model, images, targets,
                             batch_size=2, workers=workers, progress=False)
      out[f"explain_dataset workers={workers}"] = [
          hashlib.sha256(np.ascontiguousarray(np.asarray(maps)).tobytes()).hexdigest()] * 2
    print(json.dumps(out))
    """
)

FOUR_DEVICES = PRELUDE + textwrap.dedent(
    """
    from jax.sharding import Mesh

    assert len(jax.devices()) == 4, jax.devices()
    one = Mesh(np.asarray(jax.devices()[:1]), ("batch",))
    more = np.concatenate([images, images[::-1] * 0.5, images[:2]])  # 10 digits
    more_targets = np.concatenate([targets, targets[::-1], targets[:2]])
    out = {}
    for name, fn, kwargs in every_method():
      # batches of 3: four batches, one per device, the last one padded
      maps = [explain_dataset(fn, model, more, more_targets, batch_size=3, mesh=mesh,
                              progress=False, **kwargs) for mesh in (None, one)]
      out[name] = [hashlib.sha256(np.ascontiguousarray(m).tobytes()).hexdigest()
                   for m in maps]
    print(json.dumps(out))
    """
)


def _run_fresh_process(script: str = SCRIPT, xla_flags: str = "") -> subprocess.Popen:
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + xla_flags).strip()
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), str(TESTS),
                                                    env.get("PYTHONPATH")]))
  env["JAX_PLATFORMS"] = "cpu"
  # Each process compiles for itself: with a persistent compilation cache (nox -s tests
  # sets one) the second process could load the first one's programs, and the check
  # would no longer cover compilation.
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  return subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def test_every_method_is_bitwise_reproducible_across_processes():
  first, second = _run_fresh_process(), _run_fresh_process()  # concurrently
  results = []
  for process in (first, second):
    stdout, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stderr[-3000:]
    results.append(json.loads(stdout.strip().splitlines()[-1]))
  a, b = results
  assert len(a) >= 15, sorted(a)  # every method was found
  for name, digests in a.items():
    assert digests[0] == digests[1], f"{name}: two calls in one process differ"
  differing = sorted(name for name in a if a[name][0] != b[name][0])
  assert not differing, f"maps differ between two fresh processes: {differing}"
  assert a["explain_dataset workers=1"] == a["explain_dataset workers=2"]


def test_every_method_is_bitwise_the_same_on_one_device_and_on_four():
  process = _run_fresh_process(FOUR_DEVICES, "--xla_force_host_platform_device_count=4")
  stdout, stderr = process.communicate(timeout=900)
  assert process.returncode == 0, stderr[-3000:]
  digests = json.loads(stdout.strip().splitlines()[-1])
  assert len(digests) >= 15 and "smoothgrad(gradients)" in digests, sorted(digests)
  differing = sorted(name for name, (four, one) in digests.items() if four != one)
  assert not differing, f"maps differ between four devices and one: {differing}"
