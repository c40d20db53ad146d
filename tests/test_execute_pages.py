"""tools/execute_pages.py: the docs' pages executed several at a time into the cache
Sphinx reads, prerequisites first, failures loud."""

from __future__ import annotations

import runpy
import sys
import threading
import time
from pathlib import Path

import jupyter_cache
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import execute_pages  # noqa: E402

PAGE = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# {name}

```{{code-cell}} ipython3
print("{name}")
```
"""


def test_every_notebook_page_of_the_site_is_found():
  found = execute_pages.pages()
  markdown = [p for p in (ROOT / "docs").rglob("*.md") if "_build" not in p.parts]
  notebooks = {p for p in markdown if p.read_text().startswith("---\njupytext:")}
  assert set(found.values()) == notebooks
  assert "tutorials/comparison" in found and "tutorials/which_method" in found
  assert "api" not in found  # plain Markdown pages are not notebooks
  # Every page that writes or reads a file for another exists (a renamed page would
  # otherwise be silently dropped from the ordering).
  before = execute_pages.prerequisites(execute_pages.load_conf()["PAGE_OUTPUTS"])
  assert before == {"tutorials/which_method": ("tutorials/comparison",)}
  for page, writers in before.items():
    assert page in found and set(writers) <= set(found)
  assert set(execute_pages.load_conf()["PAGE_OUTPUTS"]) <= set(found)


def test_prerequisites_gather_every_writer_of_a_page():
  outputs = {"a": (Path("x"), ("guide", "other")), "b": (Path("y"), ("guide",)),
             "c": (Path("z"), ())}
  assert execute_pages.prerequisites(outputs) == {"guide": ("a", "b"), "other": ("a",)}


def test_prerequisites_come_first_then_the_largest_pages():
  site = execute_pages.pages()
  before = execute_pages.prerequisites(execute_pages.load_conf()["PAGE_OUTPUTS"])
  order = execute_pages.order(site, before)
  assert order[0] == "tutorials/comparison"
  rest = [site[p].stat().st_size for p in order[1:]]
  assert rest == sorted(rest, reverse=True)


@pytest.fixture
def site(tmp_path, monkeypatch):
  """Three one-cell pages; "guide" reads what "slow" writes."""
  docs = tmp_path / "docs"
  docs.mkdir()
  pages = {}
  for name in ("slow", "guide", "other"):
    pages[name] = docs / f"{name}.md"
    pages[name].write_text(PAGE.format(name=name))
  monkeypatch.setattr(execute_pages, "pages", lambda docs=None: dict(pages))
  conf = execute_pages.load_conf()
  conf["PAGE_OUTPUTS"] = {"slow": (tmp_path / "summary.json", ("guide",))}
  monkeypatch.setattr(execute_pages, "load_conf", lambda: conf)
  events: list[tuple[str, str, float]] = []
  lock = threading.Lock()
  fail = set()

  def fake_execute(path, nb, *, in_temp, timeout):
    name = path.stem
    with lock:
      events.append(("start", name, time.perf_counter()))
    time.sleep(0.3 if name == "slow" else 0.05)
    with lock:
      events.append(("end", name, time.perf_counter()))
    return (f"{name} raised" if name in fail else None), 0.1

  monkeypatch.setattr(execute_pages, "execute", fake_execute)
  return pages, events, fail, tmp_path / "cache"


def test_pages_run_in_parallel_after_their_prerequisites_and_are_cached(site):
  pages, events, _, cache = site
  assert execute_pages.main(["--cache", str(cache), "--jobs", "2"]) == 0
  at = {(kind, name): t for kind, name, t in events}
  assert at["end", "slow"] <= at["start", "guide"]  # the guide waits for its input
  assert at["start", "other"] < at["end", "slow"]  # two at a time
  # Each executed notebook is in the cache under the key myst-nb looks up.
  db = jupyter_cache.get_cache(str(cache))
  md = execute_pages.MdParserConfig(
      enable_extensions=set(runpy.run_path(str(ROOT / "docs" / "conf.py"))[
          "myst_enable_extensions"]))
  for path in pages.values():
    db.match_cache_notebook(execute_pages.read(path, md))
  # A second run finds everything cached and executes nothing.
  events.clear()
  assert execute_pages.main(["--cache", str(cache)]) == 0
  assert events == []


def test_a_failed_page_fails_the_run_and_its_dependents_do_not_run(site, capsys):
  _, events, fail, cache = site
  fail.add("slow")
  assert execute_pages.main(["--cache", str(cache), "--jobs", "2"]) == 1
  assert ("start", "guide") not in {(k, n) for k, n, _ in events}
  out = capsys.readouterr()
  assert "slow raised" in out.err and "guide" in out.err
  assert "2 failed: slow, guide" in out.out


def test_jobs_must_be_positive(site):
  with pytest.raises(SystemExit):
    execute_pages.main(["--cache", str(site[3]), "--jobs", "0"])


def test_when_every_page_must_execute_the_folder_and_page_outputs_are_emptied_first(
    site, tmp_path, monkeypatch):
  pages, events, _, _ = site
  docs = tmp_path / "docs"
  caches = tmp_path / "caches"
  stale = caches / "forced-old"
  stale.mkdir(parents=True)
  (stale / "outputs").write_text("from an earlier build")
  summary = tmp_path / "summary.json"  # what "slow" wrote for "guide" in an earlier build
  summary.write_text("{}")
  (docs / "conf.py").write_text(
      "from pathlib import Path\n"
      f"_CACHES = Path({str(caches)!r})\n"
      "_FORCE = True\n"
      "nb_execution_mode = 'cache'\n"
      "nb_execution_cache_path = str(_CACHES / 'forced-new')\n"
      "nb_execution_in_temp = True\n"
      "nb_execution_timeout = 60\n"
      "myst_enable_extensions = ['dollarmath']\n"
      f"PAGE_OUTPUTS = {{'slow': (Path({str(summary)!r}), ('guide',))}}\n"
      "def _prune_execution_caches(app):\n"
      "  raise AssertionError('forced builds empty the folder instead')\n")
  monkeypatch.setattr(execute_pages, "load_conf",
                      lambda: runpy.run_path(str(docs / "conf.py")))
  assert execute_pages.main([]) == 0
  assert not stale.exists()
  assert not summary.exists()  # the guide cannot read the last build's summary
  assert {name for kind, name, _ in events if kind == "start"} == set(pages)
  assert (caches / "forced-new").is_dir()
