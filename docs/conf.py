"""Sphinx configuration of the saliency_guide site.

Tutorials are Jupytext-paired MyST markdown notebooks executed on every build
(`nb_execution_mode = "force"`); a cell error or any Sphinx warning fails the
build (`nox -s docs` runs `sphinx-build -W`). Maths is typeset by a MathJax 3
served from the site itself (the `sphinx-mathjax-offline` package), so pages
render without network access.
"""

from __future__ import annotations

import os
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
nb_execution_mode = "force"
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
