"""Sphinx configuration of the saliency_guide site.

Tutorials are Jupytext-paired MyST markdown notebooks executed on every build: in CI
(`CI=true`) every page re-executes; locally a page's outputs are reused from
jupyter-cache until its code *or anything it reads* changes (see `_execution_inputs`).
`nox -s docs` executes the pages two at a time first (`tools/execute_pages.py`, as
myst-nb would, into the cache) and Sphinx then reads their outputs; a plain
`sphinx-build` executes what is not cached itself, one page at a time. A cell error
or any Sphinx warning fails the build (`nox -s docs` runs `sphinx-build -W`). Maths
is typeset by a MathJax 3 served from the site itself (the `sphinx-mathjax-offline`
package), so pages render without network access.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import saliency_guide

project = "saliency_guide"
author = "saliency_guide developers"
copyright = "2026, saliency_guide developers"
version = release = saliency_guide.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # serves MathJax 3 from _static: maths renders offline
    "sphinxcontrib.bibtex",
    "sphinx_copybutton",
    "sphinx_design",
]

exclude_patterns = [
    "_build",
    "jupyter_execute",
    "**.ipynb_checkpoints",
    # The .ipynb halves of the Jupytext pairs are for Colab and local use; the
    # .md halves are the sources Sphinx reads (one document per tutorial).
    "tutorials/*.ipynb",
]

# -- MyST / myst-nb -----------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist", "substitution"]
myst_heading_anchors = 3


def _execution_inputs() -> str:
  """A digest of what a page's outputs depend on besides its own code.

  jupyter-cache matches a notebook by its code cells only. A page's outputs also depend
  on the package (src/), the recorded benchmark files and scripts the Performance page
  reads (benchmarks/), the project's pins (pyproject.toml), the installed libraries'
  versions and the trained models (each record holds its parameters' SHA-256). A change
  to any of them starts a new cache folder, so every page re-executes.
  """
  digest = hashlib.sha256()
  files = sorted([*(ROOT / "src").rglob("*.py"), ROOT / "pyproject.toml",
                  *(p for p in (ROOT / "benchmarks").rglob("*")
                    if p.suffix in (".py", ".json", ".md", ".csv"))])
  for path in files:
    digest.update(str(path.relative_to(ROOT)).encode() + path.read_bytes())
  for library in ("jax", "jaxlib", "flax", "optax", "numpy", "scipy", "matplotlib",
                  "scikit-image", "myst-nb"):
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
      digest.update(f"{library}=={importlib.metadata.version(library)}".encode())
  # The site's pretrained models (`python -m saliency_guide pretrain`, before any page
  # runs); not the models a page trains and caches itself (the own-model tutorial's
  # ResNet), which would change the digest between executing the pages and reading them.
  models = saliency_guide.zoo.cache_folder()
  for record in sorted(models.rglob("record.json")):
    if record.parent.name.rsplit("-", 1)[0] in saliency_guide.zoo.MODEL_SPECS:
      digest.update(record.read_bytes())
  return digest.hexdigest()[:16]


# The files a page writes when it executes, and the pages that read them: the decision
# guide reads the summary the comparison page measures; the demo page's script reads
# the weights the demo page exports. A page whose outputs come from the cache does not
# write them again, so the cache is kept only while they exist (below), and
# tools/execute_pages.py executes a writer before its readers.
PAGE_OUTPUTS = {
    "tutorials/comparison": (saliency_guide.zoo.cache_folder() / "comparison_summary.json",
                             ("tutorials/which_method",)),
    "demo": (ROOT / "docs" / "_static" / "demo" / "data" / "weights.bin", ()),
}


_FORCE = (os.environ.get("CI", "").lower() in ("1", "true", "yes")
          or os.environ.get("SALIENCY_GUIDE_DOCS_EXECUTION") == "force")
_CACHES = ROOT / "docs" / "_build" / ".jupyter_cache"
# Outputs are kept per digest of what the pages read. When every page must execute,
# tools/execute_pages.py (run by nox -s docs) empties the "forced-" folder first and
# executes every page into it, two at a time; a plain sphinx-build executes what it
# does not find there itself, one page at a time.
nb_execution_mode = "cache"
nb_execution_cache_path = str(_CACHES / (("forced-" if _FORCE else "") + _execution_inputs()))


def _prune_execution_caches(app) -> None:
  """Keep only the current inputs' cache, and only while the files pages leave exist.

  Runs when Sphinx starts building (not when this file is merely read), and from
  tools/execute_pages.py before it looks for cached pages. When every page is forced
  to execute, tools/execute_pages.py empties the folder instead, and Sphinx prunes
  nothing (it reads what was just executed).
  """
  if _FORCE:
    return
  for old in _CACHES.glob("*"):
    if str(old) != nb_execution_cache_path or not all(
        file.exists() for file, _ in PAGE_OUTPUTS.values()):
      shutil.rmtree(old, ignore_errors=True)
nb_execution_allow_errors = False
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_execution_timeout = 900
# Each notebook runs in a temporary folder, with the package as installed (nox -s docs
# installs it, not in editable mode): a tutorial that silently depended on the
# repository's layout or on files beside it would fail the build, as it would for a
# reader who downloads it. (The Performance page, which reads the recorded benchmark
# files in benchmarks/results/, opts out in its front matter.)
nb_execution_in_temp = True
nb_merge_streams = True
nb_execution_excludepatterns: list[str] = []  # every tutorial is executed

# -- API reference --------------------------------------------------------------
autosummary_generate = True
autodoc_typehints = "description"
autodoc_member_order = "bysource"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # dataclass "Attributes:" as fields, not duplicate objects
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}

intersphinx_mapping = {}  # no network at build time: no intersphinx inventories

# -- References -----------------------------------------------------------------
bibtex_bibfiles = ["references.bib"]
bibtex_reference_style = "author_year"
bibtex_default_style = "plain"

# -- HTML -------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = "saliency_guide"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
# The repository URL is written once, in pyproject.toml's [project.urls]; a fork
# building its own site can override it without editing a file.
with (ROOT / "pyproject.toml").open("rb") as _pyproject:
  _PROJECT_URLS = tomllib.load(_pyproject)["project"]["urls"]
REPOSITORY_URL = os.environ.get("SALIENCY_GUIDE_REPOSITORY_URL") or _PROJECT_URLS["Repository"]
html_theme_options = {
    "repository_url": REPOSITORY_URL,
    "repository_branch": "main",
    "path_to_docs": "docs",
    "use_repository_button": True,
    "use_download_button": True,
    "use_source_button": True,
    "launch_buttons": {"colab_url": "https://colab.research.google.com"},
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
html_context = {"default_mode": "light"}  # else a first visit logs "invalid theme mode"
html_last_updated_fmt = ""


def setup(app) -> None:
  app.connect("builder-inited", _prune_execution_caches)
