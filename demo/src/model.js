// The site's GapCNN and seven saliency maps, written a second time with @jax-js/jax.
//
// Same maths as saliency_guide (the Python package); four details make the numbers
// agree to float32 rounding (see the demo page, "How it works"):
//  * ReLU is where(z > 0, z, 0): its derivative at 0 is 0, as in JAX.
//  * 2x2 max-pooling sends a window's gradient to its *first* maximum (row-major),
//    as the package's max_pool_2x2 and XLA do: a one-hot of the first argmax,
//    held constant under stopGradient, times the window.
//  * Convolutions are im2col (nine shifted copies, one matrix product): same
//    numbers as lax.conv, many times faster on Wasm.
//  * Bilinear upsampling is a fixed matrix U exported from jax.image.resize.
// The backward pass is chained by hand, one vjp per block, so that Guided
// Backprop can replace the ReLU's backward rule (jax-js has no custom_vjp).
import { numpy as np, lax, vjp, jit, init, defaultDevice } from "@jax-js/jax";

export const METHODS = [
  "gradients", "gradients_x_inputs", "integrated_gradients", "smoothgrad",
  "guided_backprop", "grad_cam", "cam",
];

/** Read the exported float32 blob into a dict of jax-js arrays. */
export function loadTensors(manifest, buffer) {
  const out = {};
  for (const [name, e] of Object.entries(manifest.tensors)) {
    const data = new Float32Array(buffer, e.offset, e.length);
    out[name] = { data: new Float32Array(data), shape: e.shape };
  }
  return out;
}

function relu(z) {
  return np.where(z.ref.greater(0), z, 0);
}

// 3x3 SAME convolution of NHWC x with an HWIO kernel, as im2col + matmul.
function conv3x3(x, kernel, bias) {
  const [b, h, w, c] = x.shape;
  const k = kernel.shape[3];
  const padded = np.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]);
  const patches = [];
  for (let dy = 0; dy < 3; dy++) {
    for (let dx = 0; dx < 3; dx++) {
      patches.push(padded.ref.slice([], [dy, dy + h], [dx, dx + w], []));
    }
  }
  padded.dispose();
  const cols = np.concatenate(patches, 3).reshape([b * h * w, 9 * c]); // (dy, dx, c) order = HWIO
  const y = np.matmul(cols, kernel.reshape([9 * c, k])).add(bias);
  return y.reshape([b, h, w, k]);
}

// 2x2 max-pool, stride 2; the gradient goes to the first maximum of each window.
function maxPool(x) {
  const [b, h, w, c] = x.shape;
  const win = x.reshape([b, h / 2, 2, w / 2, 2, c]);
  const v = [];
  for (const p of [0, 1]) for (const q of [0, 1]) v.push(win.ref.slice([], [], p, [], q, []));
  win.dispose();
  const peak = lax.stopGradient(
    np.maximum(np.maximum(v[0].ref, v[1].ref), np.maximum(v[2].ref, v[3].ref)));
  let taken = v[0].ref.equal(peak.ref);
  const masks = [taken.ref];
  for (const i of [1, 2]) {
    const mask = np.logicalAnd(v[i].ref.equal(peak.ref), np.logicalNot(taken.ref));
    masks.push(mask.ref);
    taken = np.logicalOr(taken, mask);
  }
  masks.push(np.logicalNot(taken));
  peak.dispose();
  let out = null;
  for (let i = 0; i < 4; i++) {
    const term = np.where(lax.stopGradient(masks[i]), v[i], 0);
    out = out === null ? term : out.add(term);
  }
  return out;
}

// The blocks between ReLUs: pre-activations z1, z2, z3 and the logits.
const block1 = (p) => (x) => conv3x3(x, p.k1.ref, p.b1.ref);
const block2 = (p) => (r) => conv3x3(maxPool(r), p.k2.ref, p.b2.ref);
const block3 = (p) => (r) => conv3x3(maxPool(r), p.k3.ref, p.b3.ref);
const head = (p) => (r) => np.matmul(np.mean(r, [1, 2]), p.hw.ref).add(p.hb.ref);

/**
 * Logits, the input gradient of the selected logits (plain or guided ReLU rule), the
 * conv3 feature maps A and the gradient of the selected logits with respect to A.
 * x: (B, 28, 28, 1); onehot: (B, 10). Consumes x and onehot.
 */
function backprop(p, x, onehot, guided) {
  const blocks = [block1(p), block2(p), block3(p)];
  const pullbacks = [];
  const zs = [];
  let h = x;
  for (const f of blocks) {
    const [z, pull] = vjp(f, [h]);
    pullbacks.push(pull);
    zs.push(z.ref);
    h = relu(z);
  }
  const a = h; // conv3 feature maps after ReLU, (B, 7, 7, 128)
  const [logits, pullHead] = vjp(head(p), [a.ref]);
  let [g] = pullHead(onehot);
  pullHead.dispose();
  const gradA = g.ref;
  for (let i = 2; i >= 0; i--) {
    const on = zs[i].greater(0);
    g = guided ? np.where(on, np.maximum(g, 0), 0) : np.where(on, g, 0);
    [g] = pullbacks[i](g);
    pullbacks[i].dispose();
  }
  return { logits, grad: g, a, gradA };
}

function upsample(p, m) { // (B, 7, 7) -> (B, 28, 28): U M U^T
  const u = p.up.ref;
  const rows = np.matmul(u.ref, m); // broadcast (28,7) @ (B,7,7) -> (B,28,7)
  return np.matmul(rows, u.transpose());
}

function oneHotRows(targets, n) {
  return np.array(Float32Array.from({ length: n * 10 }, (_, i) => (targets[Math.floor(i / 10)] === i % 10 ? 1 : 0))).reshape([n, 10]);
}

/** Build the seven methods on exported tensors. Call after init(). */
export function makeExplainer(t) {
  const arr = (name) => np.array(t[name].data).reshape(t[name].shape);
  const p = {
    k1: arr("conv1/kernel"), b1: arr("conv1/bias"), k2: arr("conv2/kernel"),
    b2: arr("conv2/bias"), k3: arr("conv3/kernel"), b3: arr("conv3/bias"),
    hw: arr("head/kernel"), hb: arr("head/bias"), up: arr("upsample"),
  };
  const alphas = Array.from(t["ig/alphas"].data);
  const weights = Array.from(t["ig/weights"].data);
  const eps = t["smoothgrad/eps"].data;
  const samples = t["smoothgrad/eps"].shape[0];
  const steps = alphas.length;

  const logitsOf = jit((x) => head(p)(relu(block3(p)(relu(block2(p)(relu(block1(p)(x))))))));
  const gradOf = jit((x, onehot) => {
    const r = backprop(p, x, onehot, false);
    r.a.dispose(); r.gradA.dispose();
    return [r.logits, r.grad];
  });
  const guidedOf = jit((x, onehot) => {
    const r = backprop(p, x, onehot, true);
    r.a.dispose(); r.gradA.dispose(); r.logits.dispose();
    return r.grad;
  });
  const camsOf = jit((x, onehot, wcol) => {
    const r = backprop(p, x, onehot, false);
    r.logits.dispose(); r.grad.dispose();
    // Grad-CAM: alpha_k = mean_ij dy/dA^k_ij; relu(sum_k alpha_k A^k), upsampled.
    const alpha = np.mean(r.gradA, [1, 2]); // (B, K)
    const weighted = (w, a) => np.sum(a.mul(w.reshape([w.shape[0], 1, 1, w.shape[1]])), 3);
    const gradcam = upsample(p, relu(weighted(alpha, r.a.ref)));
    // CAM: M_c = sum_k w^c_k A^k with w^c_k the head's weights, no ReLU.
    const cam = upsample(p, weighted(wcol, r.a));
    return [gradcam, cam];
  });

  async function logits(pixels) {
    const x = np.array(Float32Array.from(pixels)).reshape([1, 28, 28, 1]);
    return Array.from(await logitsOf(x).data());
  }

  async function explain(pixels, method, target) {
    if (pixels.length !== 784) throw new Error(`explain: expected 784 pixels, got ${pixels.length}`);
    if (!METHODS.includes(method)) throw new Error(`explain: unknown method ${method}; one of ${METHODS.join(", ")}`);
    const px = Float32Array.from(pixels);
    const lg = await logits(px);
    const c = target === undefined || target === null ? lg.indexOf(Math.max(...lg)) : target;
    const image = () => np.array(px).reshape([1, 28, 28, 1]);
    let map;
    if (method === "gradients" || method === "gradients_x_inputs") {
      const [l, g] = gradOf(image(), oneHotRows([c], 1));
      l.dispose();
      const m = method === "gradients" ? g : g.mul(image());
      map = await m.data();
    } else if (method === "guided_backprop") {
      map = await guidedOf(image(), oneHotRows([c], 1)).data();
    } else if (method === "integrated_gradients") {
      // Black baseline: x' = 0, path points alpha_k x, sum_k w_k grad(alpha_k x) * x.
      const path = new Float32Array(steps * 784);
      for (let k = 0; k < steps; k++) for (let i = 0; i < 784; i++) path[k * 784 + i] = alphas[k] * px[i];
      const [l, g] = gradOf(np.array(path).reshape([steps, 28, 28, 1]), oneHotRows(Array(steps).fill(c), steps));
      l.dispose();
      const w = np.array(Float32Array.from(weights)).reshape([steps, 1, 1, 1]);
      map = await np.sum(g.mul(w), 0).mul(image().reshape([28, 28, 1])).data();
    } else if (method === "smoothgrad") {
      // sigma = noise_level * (max - min); the package's own noise draws eps_j.
      let lo = Infinity, hi = -Infinity;
      for (const v of px) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      const sigma = Math.fround(Math.fround(0.15) * Math.fround(hi - lo));
      const noisy = new Float32Array(samples * 784);
      for (let j = 0; j < samples; j++) for (let i = 0; i < 784; i++) noisy[j * 784 + i] = px[i] + sigma * eps[j * 784 + i];
      const [l, g] = gradOf(np.array(noisy).reshape([samples, 28, 28, 1]), oneHotRows(Array(samples).fill(c), samples));
      l.dispose();
      map = await np.mean(g, 0).data();
    } else {
      const wcol = p.hw.ref.slice([], c).reshape([1, -1]);
      const [gradcam, cam] = camsOf(image(), oneHotRows([c], 1), wcol);
      const keep = method === "grad_cam" ? gradcam : cam;
      (method === "grad_cam" ? cam : gradcam).dispose();
      map = await keep.data();
    }
    return { logits: lg, target: c, map: Array.from(map) };
  }
  return { explain, logits };
}

/**
 * Initialise jax-js on one backend: Wasm (one thread) unless another is asked for;
 * falls back to Wasm where the requested one (e.g. "webgpu") is unavailable.
 */
export async function start(backend = "wasm") {
  let devices = await init(backend);
  if (!devices.includes(backend)) {
    backend = "wasm";
    devices = await init(backend);
  }
  defaultDevice(backend);
  return backend;
}
