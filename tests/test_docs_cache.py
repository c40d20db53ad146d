"""The docs build's execution cache: every page executes in CI, and outside CI a page's
cached outputs are reused only while what it depends on is unchanged."""

from __future__ import annotations

import runpy
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "docs" / "conf.py"


def _conf(monkeypatch, **env) -> dict:
  for name in ("CI", "SALIENCY_GUIDE_DOCS_EXECUTION"):
    monkeypatch.delenv(name, raising=False)
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  return runpy.run_path(str(CONF))


@pytest.mark.parametrize("env", [{"CI": "true"}, {"SALIENCY_GUIDE_DOCS_EXECUTION": "force"}])
def test_ci_executes_every_page(monkeypatch, env):
  # Every page executes: tools/execute_pages.py empties the "forced-" folder first
  # (tests/test_execute_pages.py), and Sphinx prunes nothing there.
  conf = _conf(monkeypatch, **env)
  assert conf["nb_execution_mode"] == "cache"
  key = Path(conf["nb_execution_cache_path"])
  assert key.parent == ROOT / "docs" / "_build" / ".jupyter_cache"
  assert key.name == "forced-" + conf["_execution_inputs"]()
  caches = key.parent
  other = caches / "0123456789abcdef"
  existed = other.exists()
  other.mkdir(parents=True, exist_ok=True)
  try:
    conf["_prune_execution_caches"](None)
    assert other.exists()
  finally:
    if not existed:
      shutil.rmtree(other, ignore_errors=True)


def test_a_local_build_reuses_outputs_keyed_on_what_the_pages_read(monkeypatch, tmp_path):
  conf = _conf(monkeypatch)
  assert conf["nb_execution_mode"] == "cache"
  key = Path(conf["nb_execution_cache_path"])
  assert key.parent == ROOT / "docs" / "_build" / ".jupyter_cache"
  assert len(key.name) == 16

  # The digest covers the package, the benchmarks and the pins: a copy with one changed
  # source file gets another cache folder.
  digest = conf["_execution_inputs"]
  copy = tmp_path / "repo"
  for part in ("src", "benchmarks"):
    shutil.copytree(ROOT / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
  shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
  digest.__globals__["ROOT"] = copy
  same = digest()
  assert same == key.name
  layers = copy / "src" / "saliency_guide" / "layers.py"
  layers.write_text(layers.read_text() + "\n# changed\n")
  assert digest() != same


def test_reading_the_configuration_deletes_no_cache(monkeypatch, tmp_path):
  # Pruning other inputs' caches happens when Sphinx starts building, never on import
  # (a test or a second build reading conf.py must not delete a running build's cache).
  caches = ROOT / "docs" / "_build" / ".jupyter_cache"
  other = caches / "0123456789abcdef"
  existed = other.exists()
  other.mkdir(parents=True, exist_ok=True)
  try:
    conf = _conf(monkeypatch)
    assert other.exists()

    class App:
      def __init__(self):
        self.connected = []

      def connect(self, event, handler):
        self.connected.append((event, handler))

    app = App()
    conf["setup"](app)
    assert app.connected == [("builder-inited", conf["_prune_execution_caches"])]
  finally:
    if not existed:
      shutil.rmtree(other, ignore_errors=True)
