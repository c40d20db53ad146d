// The demo page's UI: a 28x28 drawing canvas, the prediction, seven live maps.
// Data (weights, starter digits, colormaps) come from _static/demo/data/weights.js,
// a classic script written when the site is built (so the page also works from file://).
import { loadTensors, makeExplainer, start, METHODS } from "./model.js";

const LABELS = {
  gradients: ["Gradient", "signed",
    "∂y_c/∂x: red, more ink here would raise the class score; blue, lower it (for a tiny change)."],
  gradients_x_inputs: ["Gradient × Input", "signed",
    "x · ∂y_c/∂x: zero where there is no ink; red ink supports the class, blue ink argues against it (first order)."],
  integrated_gradients: ["Integrated Gradients", "signed",
    "red/blue: each pixel's positive/negative share of y_c(x) − y_c(black); the map sums to that difference."],
  smoothgrad: ["SmoothGrad", "signed",
    "the gradient averaged over noisy copies of the drawing: red raises the class score on average, blue lowers it."],
  guided_backprop: ["Guided Backprop", "signed",
    "the sign is NOT an effect on the score: guided ReLUs drop every negative gradient; the sign left comes from the first layer's weights."],
  grad_cam: ["Grad-CAM", "unsigned",
    "Σ_k α_k A_k with α_k the mean gradient on conv3 map k, then ReLU (≥ 0); 7×7, upsampled. Here α_k = w_ck/49: CAM/49 with negatives cut."],
  cam: ["CAM", "signed",
    "Σ_k w_ck A_k on the 7×7 conv3 maps, upsampled: red regions raise the class logit, blue lower it; mean + bias = logit."],
};

function percentileAbs(values, q) { // numpy's default (linear) percentile of |values|
  const a = Array.from(values, Math.abs).sort((x, y) => x - y);
  const pos = (q / 100) * (a.length - 1);
  const lo = Math.floor(pos);
  const v = a[lo] + (a[Math.min(lo + 1, a.length - 1)] - a[lo]) * (pos - lo);
  const limit = v > 0 ? v : a[a.length - 1];
  return limit > 0 ? limit : 1;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "style") e.style.cssText = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function paint(canvas, values, colour) {
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(28, 28);
  for (let i = 0; i < 784; i++) {
    const [r, g, b] = colour(values[i]);
    img.data.set([r, g, b, 255], 4 * i);
  }
  const tmp = el("canvas", { width: 28, height: 28 });
  tmp.getContext("2d").putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(tmp, 0, 0, canvas.width, canvas.height);
}

function colourScale(table, lo, hi) {
  return (v) => table[Math.max(0, Math.min(255, Math.round(((v - lo) / (hi - lo)) * 255)))];
}

function colourbar(table, lo, hi) {
  const bar = el("div", { class: "sgd-bar" });
  const stops = [0, 64, 128, 192, 255].map((i) => `rgb(${table[i].join(",")}) ${(i / 255) * 100}%`);
  bar.append(el("div", { class: "sgd-gradient", style: `background: linear-gradient(to right, ${stops.join(",")})` }));
  bar.append(el("div", { class: "sgd-ticks" }, el("span", {}, lo.toPrecision(2)), el("span", {}, "0"), el("span", {}, hi.toPrecision(2))));
  if (lo === 0) bar.lastChild.children[1].textContent = "";
  return bar;
}

async function main(root) {
  const data = window.SALIENCY_DEMO_DATA;
  if (!data) throw new Error("saliency demo: weights.js did not load");
  const bytes = Uint8Array.from(atob(data.base64), (c) => c.charCodeAt(0));
  const tensors = loadTensors(data.manifest, bytes.buffer);
  const backend = await start(new URLSearchParams(location.search).get("backend") || undefined);
  const explainer = makeExplainer(tensors);
  const cmaps = data.manifest.colormaps;

  // --- layout
  const pixels = new Float32Array(784);
  const draw = el("canvas", { width: 280, height: 280, class: "sgd-draw", "aria-label": "drawing canvas: draw a digit" });
  const clear = el("button", { type: "button", class: "sgd-btn" }, "Clear");
  const starters = el("div", { class: "sgd-starters" }, "Start from an official test digit: ");
  data.manifest.digits.labels.forEach((label, i) => {
    const b = el("button", { type: "button", class: "sgd-btn", "data-digit": String(i),
      title: `MNIST ${data.manifest.digits.split}, digit #${data.manifest.digits.indices[i]}` }, String(label));
    b.onclick = () => { pixels.set(tensors.digits.data.subarray(784 * i, 784 * (i + 1))); redraw(); schedule(0); };
    starters.append(b);
  });
  const select = el("select", { class: "sgd-select", "aria-label": "class to explain" });
  select.append(el("option", { value: "" }, "the predicted class"));
  for (let c = 0; c < 10; c++) select.append(el("option", { value: String(c) }, `class ${c}`));
  select.onchange = () => schedule(0);
  const probs = el("div", { class: "sgd-probs" });
  const status = el("div", { class: "sgd-status" }, `loading (${backend})…`);
  const grid = el("div", { class: "sgd-grid" });
  const panels = {};
  for (const m of METHODS) {
    const [title, kind, legend] = LABELS[m];
    const canvas = el("canvas", { width: 168, height: 168, class: "sgd-map", "data-method": m });
    const bar = el("div");
    const time = el("span", { class: "sgd-time" });
    grid.append(el("figure", { class: "sgd-panel" },
      el("figcaption", {}, el("strong", {}, title), " ", el("code", {}, m), " ", time), canvas, bar,
      el("div", { class: "sgd-legend" }, legend)));
    panels[m] = { canvas, bar, time, kind };
  }
  root.append(
    el("div", { class: "sgd-top" },
      el("div", { class: "sgd-left" }, draw, el("div", {}, clear, " ", el("label", {}, "Explain ", select)), starters),
      el("div", { class: "sgd-right" }, el("div", { class: "sgd-pred" }), probs, status)),
    grid);

  // --- drawing: pointer events cover mouse, pen and touch
  function redraw() {
    paint(draw, pixels, (v) => { const g = Math.round(255 * (1 - v)); return [g, g, g]; });
  }
  function stamp(cx, cy) { // a soft brush, about 2.5 MNIST pixels wide
    for (let y = Math.floor(cy - 2); y <= Math.ceil(cy + 2); y++) {
      for (let x = Math.floor(cx - 2); x <= Math.ceil(cx + 2); x++) {
        if (x < 0 || y < 0 || x > 27 || y > 27) continue;
        const d2 = (x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2;
        const ink = Math.exp(-d2 / 1.2);
        pixels[y * 28 + x] = Math.max(pixels[y * 28 + x], Math.min(1, 1.6 * ink));
      }
    }
  }
  let last = null;
  const at = (e) => { const r = draw.getBoundingClientRect(); return [((e.clientX - r.left) / r.width) * 28, ((e.clientY - r.top) / r.height) * 28]; };
  draw.addEventListener("pointerdown", (e) => { draw.setPointerCapture(e.pointerId); last = at(e); stamp(...last); redraw(); schedule(); e.preventDefault(); });
  draw.addEventListener("pointermove", (e) => {
    if (!last) return;
    const [x, y] = at(e);
    const n = Math.max(1, Math.ceil(Math.hypot(x - last[0], y - last[1]) * 2));
    for (let k = 1; k <= n; k++) stamp(last[0] + ((x - last[0]) * k) / n, last[1] + ((y - last[1]) * k) / n);
    last = [x, y]; redraw(); schedule(); e.preventDefault();
  });
  const up = () => { if (last) { last = null; schedule(0); } };
  draw.addEventListener("pointerup", up);
  draw.addEventListener("pointercancel", up);
  clear.onclick = () => { pixels.fill(0); redraw(); schedule(0); };

  // --- updates: debounced; one at a time; the latest drawing wins
  let timer = null, running = false, dirty = false;
  function schedule(delay = 150) {
    clearTimeout(timer);
    timer = setTimeout(update, delay);
  }
  async function update() {
    if (running) { dirty = true; return; }
    running = true;
    try {
      const snapshot = Float32Array.from(pixels);
      const target = select.value === "" ? undefined : Number(select.value);
      const t0 = performance.now();
      for (const m of METHODS) {
        const s = performance.now();
        const r = await explainer.explain(snapshot, m, target);
        const p = panels[m];
        p.time.textContent = `${(performance.now() - s).toFixed(0)} ms`;
        if (m === METHODS[0]) showPrediction(r.logits, r.target);
        if (p.kind === "signed") {
          const v = percentileAbs(r.map, 99.5);
          paint(p.canvas, r.map, colourScale(cmaps.signed, -v, v));
          p.bar.replaceChildren(colourbar(cmaps.signed, -v, v));
        } else {
          const v = percentileAbs(r.map, 99.5);
          paint(p.canvas, r.map, colourScale(cmaps.unsigned, 0, v));
          p.bar.replaceChildren(colourbar(cmaps.unsigned, 0, v));
        }
        if (dirty) break; // a newer drawing is waiting: start again from it
      }
      status.textContent = `${backend} backend · all seven maps in ${(performance.now() - t0).toFixed(0)} ms`;
      if (!dirty) root.dataset.updates = String(Number(root.dataset.updates || 0) + 1);
    } finally {
      running = false;
      if (dirty) { dirty = false; schedule(0); }
    }
  }
  function showPrediction(logits, target) {
    const mx = Math.max(...logits);
    const ex = logits.map((l) => Math.exp(l - mx));
    const z = ex.reduce((a, b) => a + b, 0);
    const best = logits.indexOf(mx);
    root.dataset.predicted = String(best);
    root.querySelector(".sgd-pred").innerHTML = `Predicted <strong class="sgd-class">${best}</strong> · explaining class <strong class="sgd-target">${target}</strong>`;
    probs.replaceChildren(...ex.map((e, c) => el("div", { class: "sgd-prob" + (c === best ? " sgd-best" : "") },
      el("span", {}, String(c)), el("span", { class: "sgd-p", style: `width:${(100 * e / z).toFixed(1)}%` }),
      el("span", {}, `${(100 * e / z).toFixed(1)} %`))));
  }

  pixels.set(tensors.digits.data.subarray(0, 784));
  redraw();
  await update();
  return {
    model: data.manifest.model,
    backend,
    methods: METHODS,
    explain: (px, method, target) => explainer.explain(px, method, target),
  };
}

const root = document.getElementById("saliency-demo");
if (root) {
  let resolveReady, rejectReady;
  const ready = new Promise((res, rej) => { resolveReady = res; rejectReady = rej; });
  window.saliencyDemo = {
    ready, model: window.SALIENCY_DEMO_DATA && window.SALIENCY_DEMO_DATA.manifest.model,
    explain: async (...args) => (await ready).explain(...args),
  };
  main(root).then(resolveReady, (err) => {
    root.prepend(el("p", { class: "sgd-error" }, `The demo could not start: ${err.message}`));
    rejectReady(err);
    throw err;
  });
}
