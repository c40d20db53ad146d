"""The live demo (docs/demo.md): a vendored, reproducible bundle computing the package's maps.

What runs everywhere (no Node needed): the committed bundle is the one recorded by
``demo/build.mjs`` for the committed sources and lockfile (hashes in
``demo/bundle.json``), the lockfile pins exact versions from the npm registry with
integrity hashes, and the page loads nothing from another site.

What runs where ``demo/node_modules`` is installed from the lockfile (``nox -s
demo_bundle``, or ``npm ci`` in ``demo/``): rebuilding gives the committed bundle byte
for byte, and the JavaScript implementation (``demo/src/model.js`` on jax-js's Wasm
backend, in Node) gives the package's seven maps on a randomly initialised GapCNN.
The browser itself is the site check's job (``tools/site_check.py``, on the trained
model, in headless Chromium).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saliency_guide import methods
from saliency_guide.models import GapCNN

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo"
BUNDLE = ROOT / "docs" / "_static" / "demo" / "demo.js"
RECORD = json.loads((DEMO / "bundle.json").read_text())
LOCK = json.loads((DEMO / "package-lock.json").read_text())
PACKAGE = json.loads((DEMO / "package.json").read_text())
NODE = shutil.which("node")
INSTALLED = (DEMO / "node_modules" / "@jax-js" / "jax" / "package.json").exists()
needs_node = pytest.mark.skipif(
    NODE is None or not INSTALLED,
    reason="needs node and demo/node_modules (`nox -s demo_bundle` or `npm ci` in demo/)")
METHODS = ["gradients", "gradients_x_inputs", "integrated_gradients", "smoothgrad",
           "guided_backprop", "grad_cam", "cam"]


def _sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def test_committed_bundle_is_the_recorded_build():
  """Bundle, lockfile and sources are those build.mjs recorded (a hand edit of one fails)."""
  assert _sha256(BUNDLE.read_bytes()) == RECORD["bundle_sha256"], (
      "docs/_static/demo/demo.js differs from demo/bundle.json: run `nox -s demo_bundle`")
  assert _sha256((DEMO / "package-lock.json").read_bytes()) == RECORD["package_lock_sha256"]
  sources = "\n".join(f"{p.name}:{_sha256(p.read_bytes())}"
                      for p in sorted((DEMO / "src").iterdir()))
  assert _sha256(sources.encode()) == RECORD["sources_sha256"], (
      "demo/src changed since the bundle was built: run `nox -s demo_bundle`")
  assert RECORD["@jax-js/jax"] == LOCK["packages"]["node_modules/@jax-js/jax"]["version"]


def test_lockfile_pins_exact_versions_from_the_registry():
  for group in ("dependencies", "devDependencies"):
    for name, version in PACKAGE[group].items():
      assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name}: not an exact version: {version}"
      assert LOCK["packages"][f"node_modules/{name}"]["version"] == version
  for path, entry in LOCK["packages"].items():
    if path:  # (npm leaves "resolved" out when it is the configured registry's URL)
      assert entry.get("resolved", "https://registry.npmjs.org/").startswith(
          "https://registry.npmjs.org/"), path
      assert entry["integrity"].startswith("sha512-"), path


def test_page_loads_nothing_from_another_site():
  page = (ROOT / "docs" / "demo.md").read_text()
  sources = re.findall(r'<script[^>]*src="([^"]+)"', page)
  assert sources == ["_static/demo/data/weights.js", "_static/demo/demo.js"]
  bundle = BUNDLE.read_text(encoding="utf-8")
  for cdn in ("esm.sh", "unpkg.com", "jsdelivr", "cdnjs", "skypack"):
    assert cdn not in bundle and cdn not in page


@needs_node
def test_bundle_rebuilds_byte_for_byte(tmp_path):
  out = tmp_path / "demo.js"
  subprocess.run([NODE, "build.mjs", str(out)], cwd=DEMO, check=True, timeout=120)
  assert out.read_bytes() == BUNDLE.read_bytes()


# -- the JavaScript maps equal the package's, on a random GapCNN -----------------------
RUNNER = """
import { readFileSync } from "node:fs";
import { loadTensors, makeExplainer, start } from "MODEL_JS";
const [manifestPath, binPath, casesPath] = process.argv.slice(2);
const manifest = JSON.parse(readFileSync(manifestPath));
const bytes = readFileSync(binPath);
const tensors = loadTensors(manifest, bytes.buffer.slice(bytes.byteOffset,
                                                         bytes.byteOffset + bytes.byteLength));
await start("wasm");
const explainer = makeExplainer(tensors);
const out = [];
for (const c of JSON.parse(readFileSync(casesPath))) {
  out.push(await explainer.explain(c.pixels, c.method, c.target ?? undefined));
}
console.log(JSON.stringify(out));
"""


def _noise(model, samples: int, key: jax.Array) -> np.ndarray:
  """SmoothGrad's draws eps_j for one 28x28 image, as the demo page exports them."""
  seen = []

  def recorder(model, noisy, targets):
    seen.append(np.asarray(noisy))
    return noisy

  draws = []
  for where in (0, 783):
    image = np.zeros((1, 784), np.float32)
    image[0, where] = 1.0
    seen.clear()
    methods.smoothgrad(recorder, noise_level=1.0, samples=samples, key=key)(
        model, jnp.asarray(image.reshape(1, 28, 28, 1)), jnp.array([0]))
    draws.append(np.concatenate(seen).reshape(samples, 784) - image)
  eps = draws[0].copy()
  eps[:, 0] = draws[1][:, 0]
  return eps


@needs_node
def test_javascript_maps_equal_the_package(tmp_path):
  model = GapCNN(rngs=nnx.Rngs(0))  # zero biases: ReLUs at exactly 0, max-pool ties
  steps, samples, key = 8, 4, jax.random.key(3)
  alphas, weights = methods.quadrature("gausslegendre", steps)
  upsample = np.asarray(jax.image.resize(jnp.eye(7), (28, 7), method="bilinear"))
  tensors = {
      "conv1/kernel": model.conv1.kernel[...], "conv1/bias": model.conv1.bias[...],
      "conv2/kernel": model.conv2.kernel[...], "conv2/bias": model.conv2.bias[...],
      "conv3/kernel": model.conv3.kernel[...], "conv3/bias": model.conv3.bias[...],
      "head/kernel": model.head.kernel[...], "head/bias": model.head.bias[...],
      "upsample": upsample, "ig/alphas": alphas, "ig/weights": weights,
      "smoothgrad/eps": _noise(model, samples, key),
  }
  blob, entries = bytearray(), {}
  for name, value in tensors.items():
    raw = np.ascontiguousarray(value, dtype="<f4").tobytes()
    entries[name] = {"shape": list(np.shape(value)), "offset": len(blob),
                     "length": len(raw) // 4}
    blob += raw
  (tmp_path / "w.bin").write_bytes(bytes(blob))
  (tmp_path / "w.json").write_text(json.dumps({"tensors": entries}))
  # A blocky digit on an exactly black background (pre-activations exactly 0 where the
  # biases are 0, tied maxima in pooling windows: the two places where jax-js's own
  # relu and pooling gradients differ from JAX's), with a faint random texture on the
  # lower half only.
  image = np.zeros((28, 28), np.float32)
  image[6:22, 12:16] = 1.0
  image[6:10, 8:20] = 0.75
  image[16:] += 0.05 * np.asarray(jax.random.uniform(jax.random.key(1), (12, 28)))
  x = jnp.asarray(image.reshape(1, 28, 28, 1))
  python = {
      "gradients": methods.gradients,
      "gradients_x_inputs": methods.gradients_x_inputs,
      "integrated_gradients": lambda m, x, t: methods.integrated_gradients(m, x, t, steps=steps),
      "smoothgrad": methods.smoothgrad(methods.gradients, noise_level=0.15, samples=samples,
                                       key=key),
      "guided_backprop": methods.guided_backprop,
      "grad_cam": methods.grad_cam,
      "cam": methods.cam,
  }
  predicted = int(np.asarray(model(x)).argmax())
  cases = [{"pixels": image.reshape(-1).tolist(), "method": m, "target": t}
           for t in (None, (predicted + 3) % 10) for m in METHODS]
  (tmp_path / "cases.json").write_text(json.dumps(cases))
  runner = tmp_path / "run.mjs"
  runner.write_text(RUNNER.replace("MODEL_JS", (DEMO / "src" / "model.js").as_uri()))
  result = subprocess.run([NODE, str(runner), str(tmp_path / "w.json"), str(tmp_path / "w.bin"),
                           str(tmp_path / "cases.json")], capture_output=True, text=True,
                          timeout=300, check=True)
  answers = json.loads(result.stdout)
  np.testing.assert_allclose(answers[0]["logits"], np.asarray(model(x))[0], rtol=1e-5, atol=1e-6)
  for case, answer in zip(cases, answers, strict=True):
    target = predicted if case["target"] is None else case["target"]
    assert answer["target"] == target
    want = np.asarray(python[case["method"]](model, x, jnp.array([target]))).reshape(-1)
    got = np.asarray(answer["map"])
    error = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert error < 1e-5, (case["method"], target, error)
