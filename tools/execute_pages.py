"""Execute the site's pages several at a time, into myst-nb's execution cache.

myst-nb executes a page's notebook when Sphinx reads the page, one page at a time. A
page's kernel keeps about 1.4 of this machine's 2 cores busy (compilation, Python and
plotting run on one thread), so two pages at once finish sooner: four tutorials took
127 s one after another and 91 s two at a time here. This script executes every page
whose outputs are not in the cache yet, ``--jobs`` at a time (longest first, a page's
prerequisites before it: docs/conf.py's ``PAGE_OUTPUTS``), exactly as myst-nb would
(the same reader, so the same cache key; each page in a temporary folder unless its
front matter says otherwise; the same timeout), and stores the executed notebooks in
jupyter-cache. ``sphinx-build`` then takes every page's outputs from there. Nothing is
skipped or approximated: a page either executes here or, if it is missing from the
cache, when Sphinx reads it.

Usage (``nox -s docs`` runs it, with the environment Sphinx gets)::

  python tools/execute_pages.py [--jobs 2]   # into the cache folder docs/conf.py names

With ``CI=true`` or ``SALIENCY_GUIDE_DOCS_EXECUTION=force`` that folder is emptied
first, so every page executes, and the files pages write for other pages (conf's
``PAGE_OUTPUTS``) are deleted, so a reader sees only what its writer wrote in this
build. ``--cache FOLDER`` executes into another folder.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import runpy
import shutil
import sys
import tempfile
import time
from pathlib import Path

import jupyter_cache
import myst_nb.core.read
from jupyter_cache.base import CacheBundleIn
from jupyter_cache.executors.utils import single_nb_execution
from myst_parser.config.main import MdParserConfig

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def load_conf() -> dict:
  """docs/conf.py's settings, as Sphinx reads them."""
  return runpy.run_path(str(DOCS / "conf.py"))


def prerequisites(page_outputs: dict[str, tuple[Path, tuple[str, ...]]]
                  ) -> dict[str, tuple[str, ...]]:
  """Each page that reads a file another page writes -> the pages that write it.

  ``page_outputs`` is docs/conf.py's ``PAGE_OUTPUTS``: writer -> (file, readers).
  """
  before: dict[str, tuple[str, ...]] = {}
  for writer, (_, readers) in page_outputs.items():
    for reader in readers:
      before[reader] = (*before.get(reader, ()), writer)
  return before


def pages(docs: Path = DOCS) -> dict[str, Path]:
  """Every MyST notebook under ``docs`` (outside ``_build``), by Sphinx docname."""
  found = {}
  for path in sorted(docs.rglob("*.md")):
    relative = path.relative_to(docs)
    if relative.parts[0].startswith("_"):
      continue
    if myst_nb.core.read.is_myst_markdown_notebook(path.read_text(encoding="utf-8")):
      found[relative.with_suffix("").as_posix()] = path
  return found


def read(path: Path, md_config: MdParserConfig):
  """The notebook as myst-nb reads it for the build (hence the same cache key)."""
  return myst_nb.core.read.read_myst_markdown_notebook(
      path.read_text(encoding="utf-8"), config=md_config, add_source_map=True,
      path=str(path))


def order(todo: dict[str, Path], before: dict[str, tuple[str, ...]]) -> list[str]:
  """Pages that others wait for (``before``: page -> its prerequisites) first, then the
  rest largest file first.

  A page's size is a rough proxy for its cost; starting the long pages first keeps
  the last minutes from running one page alone.
  """
  waited_for = {p for pages_before in before.values() for p in pages_before}
  return sorted(todo, key=lambda page: (page not in waited_for, -todo[page].stat().st_size))


def execute(path: Path, nb, *, in_temp: bool, timeout: int) -> tuple[object, float]:
  """Run ``nb`` (in place) as myst-nb does; ``(error or None, seconds)``."""
  in_temp = nb.metadata.get("mystnb", {}).get("execution_in_temp", in_temp)
  with tempfile.TemporaryDirectory() as temporary:
    cwd = temporary if in_temp else str(path.parent)
    result = single_nb_execution(nb, cwd=cwd, allow_errors=False, timeout=timeout,
                                 meta_override=True)
  if result.err is not None:
    return result.exc_string or repr(result.err), result.time
  return None, result.time


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--cache", type=Path,
                      help="jupyter-cache folder (default: the one docs/conf.py names)")
  parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                      help="pages executing at once (default: min(2, CPU count))")
  args = parser.parse_args(argv)
  if args.jobs < 1:
    parser.error(f"--jobs must be at least 1, got {args.jobs}")

  conf = load_conf()
  before = prerequisites(conf["PAGE_OUTPUTS"])
  if args.cache is None:
    args.cache = Path(conf["nb_execution_cache_path"])
    if conf["_FORCE"]:  # CI=true or SALIENCY_GUIDE_DOCS_EXECUTION=force: every page
      for old in conf["_CACHES"].glob("forced-*"):
        shutil.rmtree(old)
      for written, _ in conf["PAGE_OUTPUTS"].values():
        Path(written).unlink(missing_ok=True)
    else:
      conf["_prune_execution_caches"](None)  # as Sphinx would when it starts
  md_config = MdParserConfig(enable_extensions=set(conf["myst_enable_extensions"]))
  cache = jupyter_cache.get_cache(str(args.cache))
  every = pages()
  todo = {}
  for page, path in every.items():
    nb = read(path, md_config)
    try:
      cache.match_cache_notebook(nb)
    except KeyError:
      todo[page] = (path, nb)
  print(f"{args.cache}: {len(every) - len(todo)} pages cached; executing {len(todo)}, "
        f"{args.jobs} at a time", flush=True)

  queue = order({page: path for page, (path, _) in todo.items()}, before)
  done = set(every) - set(todo)
  failed: dict[str, str] = {}
  running: dict[concurrent.futures.Future, str] = {}
  start = time.perf_counter()

  def waits_for(page: str) -> list[str]:
    return [p for p in before.get(page, ()) if p in every]

  with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
    while queue or running:
      for page in [p for p in queue if any(b in failed for b in waits_for(p))]:
        queue.remove(page)
        failed[page] = f"not executed: {', '.join(waits_for(page))} failed"
      ready = [p for p in queue if all(b in done for b in waits_for(p))]
      for page in ready[:args.jobs - len(running)]:
        queue.remove(page)
        path, nb = todo[page]
        running[pool.submit(execute, path, nb, in_temp=conf["nb_execution_in_temp"],
                            timeout=conf["nb_execution_timeout"])] = page
      if not running:
        continue
      finished, _ = concurrent.futures.wait(
          running, return_when=concurrent.futures.FIRST_COMPLETED)
      for future in finished:
        page = running.pop(future)
        error, seconds = future.result()
        path, nb = todo[page]
        if error is not None:
          failed[page] = error
          print(f"{page}: FAILED after {seconds:.1f} s", flush=True)
          continue
        cache.cache_notebook_bundle(
            CacheBundleIn(nb, str(path), data={"execution_seconds": seconds}),
            check_validity=False, overwrite=True)
        done.add(page)
        print(f"{page}: executed in {seconds:.1f} s "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
  for page, error in failed.items():
    print(f"\n==== {page}\n{error}", file=sys.stderr)
  print(f"{len(todo) - len(failed)} pages executed in {time.perf_counter() - start:.0f} s"
        + (f"; {len(failed)} failed: {', '.join(failed)}" if failed else ""), flush=True)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
