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

Usage: ``python tools/site_check.py [--site docs/_build/html] [--chromium /usr/bin/chromium]``
(``nox -s site_check`` runs it after ``nox -s docs``). Exit status 1 lists every
problem found.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import re
import shutil
import sys
import tempfile
import threading
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


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
  """Serve ``root`` on a free port of 127.0.0.1; returns the server and its base URL."""
  handler = functools.partial(_QuietHandler, directory=str(root))
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  return server, f"http://127.0.0.1:{server.server_address[1]}/"


def _status(url: str) -> tuple[int, bytes]:
  try:
    with urllib.request.urlopen(url, timeout=10) as response:
      return response.status, response.read()
  except urllib.error.HTTPError as err:
    return err.code, b""


def check_page(page, base: str, relpath: str, problems: list[str], shots: Path | None) -> dict:
  """Load one page and record every problem found in ``problems``."""
  console_errors: list[str] = []
  page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
  page.on("pageerror", lambda e: console_errors.append(str(e)))
  response = page.goto(base + relpath, wait_until="load")
  where = f"{relpath}:"
  if response is None or response.status != 200:
    problems.append(f"{where} HTTP {None if response is None else response.status}")
    return {}
  # Wait for MathJax (if the page loads it) to finish typesetting.
  page.evaluate("() => window.MathJax && MathJax.startup && MathJax.startup.promise"
                " ? MathJax.startup.promise : null")
  page.wait_for_load_state("networkidle")
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


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--site", default="docs/_build/html", type=Path)
  parser.add_argument("--screenshots", default="docs/_build/screenshots", type=Path)
  parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
  args = parser.parse_args(argv)
  site = args.site.resolve()
  if not (site / "index.html").exists():
    print(f"site_check: no built site at {site} (run `nox -s docs` first)")
    return 1
  if not Path(args.chromium).exists():
    print(f"site_check: no Chromium at {args.chromium} (apt-get install chromium)")
    return 1
  pages = sorted(
      str(p.relative_to(site)) for p in site.rglob("*.html")
      if not p.relative_to(site).parts[0].startswith(("_", "."))
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
        page = context.new_page()
        info = check_page(page, base, relpath, problems, args.screenshots)
        page.close()
        if not info:
          continue
        check_links(base, relpath, info["links"], site, problems, seen)
        if relpath.startswith("tutorials/"):
          notebook_pages += 1
          if not check_notebook_download(base, relpath, info["links"], problems):
            problems.append(f"{relpath}: no .ipynb download link")
        print(f"checked {relpath}: {len(info['imgs'])} images, {info['mathOut']} typeset maths, "
              f"{len(info['links'])} links")
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
