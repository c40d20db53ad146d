"""Check the built site the way a reader meets it: in a real browser, offline.

Serves ``docs/_build/html`` on 127.0.0.1 and drives headless Chromium (Debian's
``chromium`` package, driven by Playwright's Python API through
``executable_path``; the test tool never downloads a browser). Every request
that leaves 127.0.0.1 is aborted and reported, so the check proves the site
works with no network. For every HTML page:

* it loads with HTTP 200 and logs no console error or page error;
* every ``<img>`` has ``naturalWidth > 0``;
* maths is typeset: no raw ``$$``/``\\(``/``\\[`` left in the visible text, and a
  page whose source has maths shows MathJax output elements (``mjx-container``);
* every internal link (to another page, file or anchor) resolves;
* a notebook page's "download .ipynb" link returns a valid notebook.

Screenshots of every tutorial page go to ``docs/_build/screenshots/``.

The live demo (``demo.html``, see :func:`check_demo`) is checked further: every
method's map computed in the browser equals the Python package's map exported
with the page (relative L2 <= 1e-4), and a stroke drawn through its canvas
changes the prediction. ``--demo-only`` checks that page alone; ``--record-demo
FILE`` also writes the agreement and the per-map latency measured here (the
figures the demo page quotes).

Usage: ``python tools/site_check.py [--site docs/_build/html] [--chromium /usr/bin/chromium]
[--demo-only] [--record-demo demo/measured.json]``
(``nox -s site_check`` runs it after ``nox -s docs``). Exit status 1 lists every
problem found.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import hashlib
import http.server
import json
import math
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-quic",
]
RAW_MATH = re.compile(r"\$\$|\\\(|\\\[")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
  def log_message(self, *args):  # keep the report readable
    pass


class _Server(http.server.ThreadingHTTPServer):
  # The standard listen backlog is 5: a page opening its scripts, styles and fonts at
  # once on a busy machine can overflow it, and a dropped connection is retried by the
  # browser only after seconds.
  request_queue_size = 128


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
  """Serve ``root`` on a free port of 127.0.0.1; returns the server and its base URL."""
  handler = functools.partial(_QuietHandler, directory=str(root))
  server = _Server(("127.0.0.1", 0), handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  return server, f"http://127.0.0.1:{server.server_address[1]}/"


def _status(url: str) -> tuple[int, bytes]:
  try:
    with urllib.request.urlopen(url, timeout=10) as response:
      return response.status, response.read()
  except urllib.error.HTTPError as err:
    return err.code, b""


# How long a page may take to settle, and the quiet time that counts as settled.
SETTLE_TIMEOUT_MS = 180_000
QUIET_MS = 500


def _load(page, url: str) -> tuple[int | None, list[str]]:
  """Open ``url`` and wait until MathJax and the fonts are done and no request is in flight.

  "No request in flight" is counted here, from the page's own request events: no
  request started or ended for :data:`QUIET_MS`. Playwright's ``networkidle`` is not
  used: it can be lost for good when a request starts and ends while the event is
  recorded and a later lifecycle event (here ``load``) removes it (microsoft/playwright
  #42598). That is what stalled ``api.html`` on loaded 2-core machines: MathJax asks
  for its fonts between the first "network idle" and ``load``, and the wait then
  timed out with nothing in flight.

  Returns the HTTP status (``None`` without a response) and the URLs still in flight
  after :data:`SETTLE_TIMEOUT_MS` (empty when the page settled; a page that never
  fell quiet for :data:`QUIET_MS` does not settle either).
  """
  in_flight: dict[str, int] = {}
  clock = {"last": 0.0}

  def started(request):
    in_flight[request.url] = in_flight.get(request.url, 0) + 1
    clock["last"] = time.monotonic()

  def ended(request):
    if in_flight.get(request.url, 0) > 1:
      in_flight[request.url] -= 1
    else:
      in_flight.pop(request.url, None)
    clock["last"] = time.monotonic()

  page.on("request", started)
  page.on("requestfinished", ended)
  page.on("requestfailed", ended)
  response = page.goto(url, wait_until="load", timeout=SETTLE_TIMEOUT_MS)
  if response is None or response.status != 200:
    return None if response is None else response.status, []
  # Wait for MathJax (if the page loads it) to finish typesetting, then for its fonts.
  page.evaluate("() => window.MathJax && MathJax.startup && MathJax.startup.promise"
                " ? MathJax.startup.promise : null")
  page.evaluate("() => document.fonts.ready.then(() => null)")
  deadline = time.monotonic() + SETTLE_TIMEOUT_MS / 1000
  while in_flight or time.monotonic() - clock["last"] < QUIET_MS / 1000:
    if time.monotonic() > deadline:
      return response.status, (sorted(in_flight)
                               or ["(none; but a request started or ended every 0.5 s)"])
    page.wait_for_timeout(100)  # lets Playwright deliver the request events
  return response.status, []


def check_page(context, base: str, relpath: str, problems: list[str],
               shots: Path | None) -> dict:
  """Load one page in a new tab and record every problem found in ``problems``."""
  where = f"{relpath}:"
  page = context.new_page()
  console_errors: list[str] = []
  page.on("console",
          lambda m: console_errors.append(m.text) if m.type == "error" else None)
  page.on("pageerror", lambda e: console_errors.append(str(e)))
  try:
    status, stalled = _load(page, base + relpath)
    if status != 200:
      problems.append(f"{where} HTTP {status}")
      return {}
    if stalled:
      problems.append(f"{where} requests still in flight after "
                      f"{SETTLE_TIMEOUT_MS / 1000:.0f} s: "
                      + ", ".join(url.removeprefix(base) for url in stalled[:5]))
      return {}
    return _inspect(page, relpath, console_errors, problems, shots)
  finally:
    page.close()


def _inspect(page, relpath: str, console_errors: list[str], problems: list[str],
             shots: Path | None) -> dict:
  """Check a loaded page's images, maths and console; returns what the page holds."""
  where = f"{relpath}:"
  info = page.evaluate("""() => {
    const imgs = [...document.images].map(i => ({src: i.currentSrc || i.src, w: i.naturalWidth}));
    const main = document.querySelector('main') || document.body;
    const clone = main.cloneNode(true);
    clone.querySelectorAll('pre, code, script, style, mjx-container, .highlight').forEach(
        e => e.remove());
    const links = [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'));
    const figures = document.querySelectorAll('.cell_output img, figure img').length;
    return {imgs, figures, text: clone.innerText, links,
            mathSource: document.querySelectorAll('.math, span.math, div.math').length,
            mathOut: document.querySelectorAll('mjx-container').length,
            title: document.title};
  }""")
  if relpath.startswith("tutorials/") and not info["figures"]:
    problems.append(f"{where} a tutorial page without a single executed figure")
  for img in info["imgs"]:
    if img["w"] == 0:
      problems.append(f"{where} image did not load: {img['src']}")
  raw = RAW_MATH.findall(info["text"])
  if raw:
    problems.append(f"{where} {len(raw)} untypeset maths delimiter(s) in the visible text")
  if info["mathSource"] and info["mathOut"] < info["mathSource"]:
    problems.append(
        f"{where} {info['mathSource']} maths element(s) but {info['mathOut']} typeset by MathJax")
  for message in console_errors:
    problems.append(f"{where} console error: {message[:300]}")
  if shots is not None and relpath.startswith("tutorials/"):
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / (Path(relpath).stem + ".png")), full_page=True)
  return info


def check_links(base: str, relpath: str, links: list[str], site: Path, problems: list[str],
                seen: dict[str, int]) -> None:
  """Every internal link from ``relpath`` resolves (file exists, anchor exists)."""
  for href in links:
    parsed = urllib.parse.urlparse(href)
    if parsed.scheme in ("http", "https", "mailto") or href.startswith("//"):
      continue  # external: not followed (no network), but counted as outgoing only
    target = urllib.parse.urljoin(base + relpath, href)
    url, _, anchor = target.partition("#")
    if url not in seen:
      seen[url] = _status(url)[0]
    if seen[url] != 200:
      problems.append(f"{relpath}: broken link {href} (HTTP {seen[url]})")
      continue
    if anchor and url.endswith(".html"):
      path = site / urllib.parse.unquote(url[len(base):])
      html = path.read_text(encoding="utf-8", errors="replace")
      anchor = urllib.parse.unquote(anchor)
      if f'id="{anchor}"' not in html and f"name=\"{anchor}\"" not in html:
        problems.append(f"{relpath}: link {href} points at a missing anchor")


def check_notebook_download(base: str, relpath: str, links: list[str], problems: list[str]) -> bool:
  """The page's .ipynb download link (if a notebook page) returns a valid notebook."""
  for href in links:
    if href.endswith(".ipynb") and "_sources" in href:
      status, body = _status(urllib.parse.urljoin(base + relpath, href))
      if status != 200:
        problems.append(f"{relpath}: notebook download {href} gives HTTP {status}")
        return True
      try:
        notebook = json.loads(body)
        assert notebook["nbformat"] == 4 and notebook["cells"]
      except (ValueError, KeyError, AssertionError):
        problems.append(f"{relpath}: notebook download {href} is not a valid .ipynb")
      return True
  return False


# -- the live demo ------------------------------------------------------------------
DEMO_PAGE = "demo.html"
DEMO_EXPECTED = "_static/demo/data/expected.json"
DEMO_TOLERANCE = 1e-4  # relative L2 error between a browser map and the package's map


def _relative_l2(got: list[float], want: list[float]) -> float:
  num = math.sqrt(sum((g - w) ** 2 for g, w in zip(got, want, strict=True)))
  den = math.sqrt(sum(w * w for w in want))
  return num / den if den > 0 else num


def check_demo(context, base: str, site: Path, problems: list[str]) -> dict:
  """The demo computes the package's maps in the browser, and drawing changes the prediction.

  For every case of ``_static/demo/data/expected.json`` (exported by the page with
  the package's own functions) and every method, ``window.saliencyDemo.explain``
  must give the same explained class and a map within ``DEMO_TOLERANCE`` relative
  L2 of the package's. Then the canvas is cleared, a vertical stroke is drawn with
  the mouse, and the predicted class must differ from the starter digit's. Returns
  the measurements (agreement per method, median latency per map after a warm-up).
  """
  where = f"{DEMO_PAGE}:"
  expected = json.loads((site / DEMO_EXPECTED).read_text())
  errors: list[str] = []
  page = context.new_page()
  page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
  page.on("pageerror", lambda e: errors.append(str(e)))
  page.goto(base + DEMO_PAGE, wait_until="load")
  try:
    ready = page.evaluate("async () => { const d = await window.saliencyDemo.ready;"
                          " return {model: window.saliencyDemo.model, backend: d.backend,"
                          " methods: d.methods, ua: navigator.userAgent}; }")
  except Exception as err:  # any failure to start is the finding
    problems.append(f"{where} window.saliencyDemo.ready failed: {err}")
    page.close()
    return {}
  if ready["model"] != expected["model"]:
    problems.append(f"{where} model {ready['model']!r}, expected {expected['model']!r}")
  explain = """async ([pixels, method, target]) => {
    const t0 = performance.now();
    const r = await window.saliencyDemo.explain(pixels, method, target ?? undefined);
    return {target: r.target, map: r.map, logits: r.logits, ms: performance.now() - t0};
  }"""
  first = expected["cases"][0]
  for method in ready["methods"]:  # warm-up: the first call of each method compiles
    page.evaluate(explain, [first["pixels"], method, first["target"]])
  worst: dict[str, float] = {}
  worst_abs: dict[str, float] = {}
  times: dict[str, list[float]] = {}
  for case in expected["cases"]:
    for method, want in case["maps"].items():
      got = page.evaluate(explain, [case["pixels"], method, case["target"]])
      label = f"{where} digit {case['digit']} class {case['explained']} {method}:"
      if got["target"] != case["explained"]:
        problems.append(f"{label} explained class {got['target']}")
        continue
      err = _relative_l2(got["map"], want)
      worst[method] = max(worst.get(method, 0.0), err)
      worst_abs[method] = max(worst_abs.get(method, 0.0),
                              max(abs(g - w) for g, w in zip(got["map"], want, strict=True)))
      times.setdefault(method, []).append(got["ms"])
      if not err <= DEMO_TOLERANCE:
        problems.append(f"{label} relative L2 {err:.2e} > {DEMO_TOLERANCE:g}")
  missing = set(first["maps"]) - set(ready["methods"])
  if missing:
    problems.append(f"{where} methods missing from the page: {sorted(missing)}")
  # A synthetic drawing through the canvas: clear, one vertical stroke (a "1").
  def updates():
    return int(page.eval_on_selector("#saliency-demo", "e => Number(e.dataset.updates || 0)"))

  page.wait_for_function("() => Number(document.querySelector('#saliency-demo')"
                         ".dataset.updates || 0) >= 1", timeout=120_000)
  before = page.eval_on_selector("#saliency-demo", "e => e.dataset.predicted")
  count = updates()
  page.click("#saliency-demo button:text('Clear')")
  box = page.locator("#saliency-demo .sgd-draw").bounding_box()
  x = box["x"] + box["width"] * 0.5
  page.mouse.move(x, box["y"] + box["height"] * 0.18)
  page.mouse.down()
  for k in range(1, 21):
    page.mouse.move(x + k * 0.3, box["y"] + box["height"] * (0.18 + 0.64 * k / 20))
  page.mouse.up()
  page.wait_for_function(f"() => Number(document.querySelector('#saliency-demo')"
                         f".dataset.updates || 0) > {count}", timeout=120_000)
  while True:  # until no update is pending (a debounced one may follow the first)
    count = updates()
    page.wait_for_timeout(1500)
    if updates() == count:
      break
  after = page.eval_on_selector("#saliency-demo", "e => e.dataset.predicted")
  if after == before:
    problems.append(f"{where} drawing a stroke left the prediction at {before}")
  page.close()
  for message in errors:
    problems.append(f"{where} console error: {message[:300]}")
  chrome = re.search(r"(?:Headless)?Chrome/[\d.]+", ready["ua"])
  bundle = (site / "_static/demo/demo.js").read_bytes()
  print(f"checked {DEMO_PAGE}: {len(expected['cases'])} cases x {len(worst)} methods, "
        f"worst relative L2 {max(worst.values(), default=float('nan')):.1e}; "
        f"stroke: predicted {before} -> {after}")
  return {
      "model": ready["model"], "backend": ready["backend"],
      "browser": f"headless Chromium ({chrome.group(0) if chrome else ready['ua']})",
      "machine": f"{platform.machine()} Linux, {os.cpu_count()} CPU cores (shared)",
      "date": datetime.date.today().isoformat(),
      "bundle_sha256": hashlib.sha256(bundle).hexdigest(),
      "weights_sha256": json.loads(
          (site / "_static/demo/data/weights.json").read_text())["sha256"],
      "cases": len(expected["cases"]),
      "relative_l2": worst, "max_abs_diff": worst_abs,
      "latency_ms_median": {m: statistics.median(t) for m, t in times.items()},
      "stroke": {"before": before, "after": after},
  }


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--site", default="docs/_build/html", type=Path)
  parser.add_argument("--screenshots", default="docs/_build/screenshots", type=Path)
  parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
  parser.add_argument("--demo-only", action="store_true", help="check the demo page alone")
  parser.add_argument("--record-demo", type=Path, default=None,
                      help="write the demo's measured agreement and latency to this JSON file")
  args = parser.parse_args(argv)
  site = args.site.resolve()
  if not (site / ("demo.html" if args.demo_only else "index.html")).exists():
    print(f"site_check: no built site at {site} (run `nox -s docs` first)")
    return 1
  if not Path(args.chromium).exists():
    print(f"site_check: no Chromium at {args.chromium} (apt-get install chromium)")
    return 1
  pages = sorted(
      str(p.relative_to(site)) for p in site.rglob("*.html")
      if not p.relative_to(site).parts[0].startswith(("_", "."))
      and (not args.demo_only or p.name == DEMO_PAGE)
  )
  problems: list[str] = []
  offsite: list[str] = []
  seen: dict[str, int] = {}
  server, base = serve(site)
  notebook_pages = 0
  try:
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
      context = p.chromium.launch_persistent_context(
          profile, executable_path=args.chromium, headless=True, args=CHROMIUM_FLAGS,
          viewport={"width": 1280, "height": 900},
      )

      def only_localhost(route):
        if route.request.url.startswith(base) or route.request.url.startswith("data:"):
          return route.continue_()
        offsite.append(route.request.url)
        return route.abort()

      context.route("**/*", only_localhost)
      for relpath in pages:
        info = check_page(context, base, relpath, problems, args.screenshots)
        if not info:
          continue
        check_links(base, relpath, info["links"], site, problems, seen)
        if relpath.startswith("tutorials/"):
          notebook_pages += 1
          if not check_notebook_download(base, relpath, info["links"], problems):
            problems.append(f"{relpath}: no .ipynb download link")
        print(f"checked {relpath}: {len(info['imgs'])} images, {info['mathOut']} typeset maths, "
              f"{len(info['links'])} links", flush=True)
      if (site / DEMO_PAGE).exists():
        measured = check_demo(context, base, site, problems)
        if args.record_demo is not None and measured:
          args.record_demo.write_text(json.dumps(measured, indent=1) + "\n")
          print(f"recorded the demo's measurements in {args.record_demo}")
      elif args.demo_only:
        problems.append(f"no {DEMO_PAGE} in {site}")
      context.close()
  finally:
    server.shutdown()
  for url in sorted(set(offsite)):
    problems.append(f"a page requested an off-site resource (blocked): {url}")
  print(f"\n{len(pages)} pages, {notebook_pages} notebook pages, {len(seen)} distinct link targets")
  if problems:
    print(f"{len(problems)} problem(s):")
    for problem in problems:
      print("  -", problem)
    return 1
  print("site_check: all pages passed")
  return 0


if __name__ == "__main__":
  sys.exit(main())
