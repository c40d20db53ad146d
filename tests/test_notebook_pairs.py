"""Each tutorial's .md (the source) and .ipynb (its notebook twin) must not drift.

Fix a failure with ``nox -s notebooks`` (``jupytext --sync docs/tutorials/*.md``).
"""

from pathlib import Path

import jupytext
import pytest

TUTORIALS = Path(__file__).resolve().parent.parent / "docs" / "tutorials"
SOURCES = sorted(TUTORIALS.glob("*.md"))


def _cells(path: Path) -> list[tuple[str, str]]:
  notebook = jupytext.read(path)
  return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


def test_there_are_tutorials():
  assert SOURCES, f"no tutorials found in {TUTORIALS}"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_markdown_and_notebook_twins_agree(source: Path):
  twin = source.with_suffix(".ipynb")
  assert twin.exists(), f"{twin.name} is missing: run `nox -s notebooks`"
  header = jupytext.read(source).metadata.get("jupytext", {}).get("formats", "")
  assert header == "ipynb,md:myst", f"{source.name}: expected formats ipynb,md:myst, got {header!r}"
  assert _cells(twin) == _cells(source), (
      f"{twin.name} has drifted from {source.name}: run `nox -s notebooks`"
  )


def test_no_orphan_notebooks():
  orphans = [p.name for p in TUTORIALS.glob("*.ipynb") if not p.with_suffix(".md").exists()]
  assert not orphans, f"notebooks without a .md source: {orphans}"
