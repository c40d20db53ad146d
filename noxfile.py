"""Developer sessions: ``nox -s tests``, ``nox -s docs``, ``nox -s lint``, ...

Every session installs the package from this checkout with the extras it needs
(``pyproject.toml`` is the one place dependencies are declared).
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests", "docs"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "venv"

ROOT = Path(__file__).parent
DOCS_BUILD = ROOT / "docs" / "_build"

# JAX's persistent compilation cache for the test suite: a program already compiled (the
# same computation, shapes and XLA flags) is read from disk instead of compiled again.
# Compilation is most of the suite's time (581 of its 914 CPU-seconds on 2 cores); a
# clean run reuses what its other worker or an earlier test compiled (441 s instead of
# 493 s), a rerun far more (three of the test files: 89 s cold, 23 s warm). No size
# cap: JAX's eviction re-reads the whole folder at every write, which made the clean
# run 764 s. The tests that check bitwise reproducibility across processes compile
# without it (tests/test_determinism.py).
JAX_CACHE = {
    "JAX_COMPILATION_CACHE_DIR": str(ROOT.resolve() / ".jax_cache"),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",  # the tests' programs are small
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}

# Opt-in, documented in the README: XLA:CPU's multi-threaded convolutions (about
# 2x faster on 2 cores, same numbers to rounding). Process-wide and experimental,
# so the package itself never sets it; the docs build opts in for speed.
FAST_CPU_CONV = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="}


def _install(session: nox.Session, *extras: str) -> None:
  target = f".[{','.join(extras)}]" if extras else "."
  session.install("-e", target)


@nox.session
def tests(session: nox.Session) -> None:
  """Run the test suite and the docstring examples on every core (pytest options after --).

  Without options the suite runs in parallel (``pytest -n auto``: one worker per core,
  each compiling its own functions); ``nox -s tests -- -x tests/test_gradients.py``
  runs what you pass, in one process.
  """
  _install(session, "test")
  session.run("pytest", *(session.posargs or ["-n", "auto"]), env=JAX_CACHE)


@nox.session
def lint(session: nox.Session) -> None:
  """Ruff: lint the package, the tests, the benchmark, the site check and the docs' config."""
  session.install("ruff==0.17.6")  # pinned: a new ruff may add checks
  session.run("ruff", "check", "src", "tests", "benchmarks", "tools", "noxfile.py",
              "docs/conf.py", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
  """Build the site once into docs/_build/html, executing the tutorials (no server).

  The package is installed as a reader installs it (not editable) and every notebook
  runs in a temporary folder (``nb_execution_in_temp``): a tutorial that needs the
  repository beside it fails here. (Sphinx's autodoc reads the docstrings from src/.)
  In CI (``CI=true``) or with ``SALIENCY_GUIDE_DOCS_EXECUTION=force`` every page
  executes; otherwise a page whose code, the package and what it reads are unchanged
  takes its outputs from jupyter-cache (``docs/conf.py``), so an unchanged rebuild only
  re-renders.
  """
  session.install(".[docs]")  # not editable: the kernels import the installed copy
  env = {**FAST_CPU_CONV, **{k: v for k, v in os.environ.items() if k == "XLA_FLAGS"}}
  # Train (or load) every model once, before the notebooks run, so no tutorial
  # waits on training and no two notebooks train the same model.
  session.run("python", "-m", "saliency_guide", "pretrain", env=env)
  # The comparison page's data-randomisation test needs a GapCNN trained on
  # shuffled labels until it fits them (zoo.SHUFFLED_LABELS_RECIPE: the first
  # 1,000 digits to >= 95 % training accuracy; ~40 epochs, about the cost of one
  # normal GapCNN training).
  session.run("python", "-m", "saliency_guide", "pretrain", "gap_cnn", "--shuffled-labels",
              env=env)
  shutil.rmtree(DOCS_BUILD / "html", ignore_errors=True)
  shutil.rmtree(DOCS_BUILD / "jupyter_execute", ignore_errors=True)
  # Notebook kernels must draw with Jupyter's inline backend: an inherited
  # MPLBACKEND=Agg (common in CI) would silently drop every figure from the site.
  inline = {**env, "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
  # The pages execute two at a time (the comparison page before the guide that reads
  # its summary) into jupyter-cache, as myst-nb would (docs/conf.py names the folder;
  # in CI a new one, so every page executes, and the comparison page's last summary
  # is deleted first, so the guide reads this build's); Sphinx then reads their outputs.
  session.run("python", "tools/execute_pages.py", env=inline)
  session.run(
      "sphinx-build", "-W", "--keep-going", "-b", "html", "docs", str(DOCS_BUILD / "html"),
      *session.posargs, env=inline,
  )
  session.log(f"Site built: {DOCS_BUILD / 'html' / 'index.html'}")


@nox.session
def references(session: nox.Session) -> None:
  """Every method against its independent implementation (Captum, zennit, PAIR, grad-cam).

  Installs the ``references`` extra, asserts each case's tolerance
  (``tests/test_references.py``), then records the agreement and both sides' speed in
  ``benchmarks/results/references.{md,json}`` (``benchmarks/references.py``; options
  after --, e.g. ``nox -s references -- --no-timing``). Trains the site's models on
  first use, like the docs build.
  """
  _install(session, "test", "references")
  session.run("pytest", "-q", "-p", "no:cacheprovider", "tests/test_references.py")
  session.run("python", "benchmarks/references.py", *session.posargs)


# `nox -s package`'s smoke test, run by the wheel's own interpreter in a folder outside
# the repository: the installed copy is the one imported, its metadata carries
# __version__, and one gradient map of an untrained model comes out finite.
_WHEEL_SMOKE = """
import importlib.metadata, pathlib, sys
import jax, jax.numpy as jnp
from flax import nnx
import saliency_guide
from saliency_guide import methods, models
where = pathlib.Path(saliency_guide.__file__).resolve()
assert pathlib.Path(sys.argv[1]).resolve() not in where.parents, f"imported the source: {where}"
assert importlib.metadata.version("saliency_guide") == saliency_guide.__version__
image = jax.random.uniform(jax.random.key(0), (1, 28, 28, 1))
maps = methods.gradients(models.CNN(rngs=nnx.Rngs(0)), image, jnp.array([3]))
assert maps.shape == (1, 28, 28, 1) and bool(jnp.isfinite(maps).all()), maps
print(f"saliency_guide {saliency_guide.__version__} from {where.parent}: one gradient map "
      f"{maps.shape}, |map| max {float(jnp.abs(maps).max()):.3g}")
"""


@nox.session
def package(session: nox.Session) -> None:
  """Build the sdist and the wheel into dist/, check them, and run the wheel on its own.

  ``python -m build`` (the sdist, then the wheel from it) and ``twine check --strict``;
  the wheel must hold only the package; then a fresh virtual environment outside the
  repository (the source tree off ``sys.path``) installs the wheel with its dependencies
  and runs ``python -m saliency_guide --help`` and one ``gradients`` call on an untrained
  model. dist/ then holds what a release uploads (README, "Cutting a release").
  """
  session.install("build>=1.2", "twine>=6")
  dist = ROOT / "dist"
  shutil.rmtree(dist, ignore_errors=True)
  work = Path(tempfile.mkdtemp(prefix="saliency_guide-package-"))
  try:
    session.run("python", "-m", "build", "--outdir", str(dist), str(ROOT))
    artifacts = sorted(dist.iterdir())
    session.run("twine", "check", "--strict", *map(str, artifacts))
    (wheel,) = dist.glob("*.whl")
    strays = [n for n in zipfile.ZipFile(wheel).namelist()
              if n.split("/")[0] != "saliency_guide" and ".dist-info/" not in n]
    if strays:
      session.error(f"the wheel holds files outside the package: {strays}")
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:  # members are <name>-<version>/<path>
      tops = {m.name.split("/")[1] for m in archive.getmembers() if "/" in m.name}
    if extra := tops - {"src", "pyproject.toml", "README.md", "CHANGELOG.md", "PKG-INFO",
                        ".gitignore"}:
      session.error(f"the sdist holds more than the package and its metadata: {extra}")
    venv = work / "venv"
    session.run("python", "-m", "venv", str(venv))
    python = str(venv / "bin" / "python")
    # --no-compile: byte-compiling every dependency's modules (most never imported here)
    # took as long again as unpacking them from pip's cache.
    session.run(python, "-m", "pip", "install", "--quiet", "--no-compile", str(wheel),
                external=True)
    with session.chdir(work):
      session.run(python, "-m", "saliency_guide", "--help", external=True)
      session.run(python, "-c", _WHEEL_SMOKE, str(ROOT), external=True)
    session.log(f"Built, checked and ran: {', '.join(a.name for a in artifacts)}")
  finally:
    shutil.rmtree(work, ignore_errors=True)


@nox.session
def lab(session: nox.Session) -> None:
  """Open the tutorials in JupyterLab (a browser tab; any .md opens as a notebook)."""
  session.install(".[notebooks]")
  session.run("jupyter", "lab", f"--ServerApp.root_dir={ROOT / 'docs' / 'tutorials'}",
              *session.posargs, env=FAST_CPU_CONV)


@nox.session
def notebooks_check(session: nox.Session) -> None:
  """The reader's notebook path, headless: JupyterLab answers, a downloaded notebook runs.

  Installs the ``notebooks`` extra as a reader does (not editable), starts JupyterLab on
  a loopback port and opens a tutorial's .md as a notebook through its API, then runs
  executed notebooks from the built site (``nox -s docs`` first) in a folder outside
  the repository. See ``tools/notebook_check.py``.
  """
  session.install(".[notebooks]")
  session.run("python", "tools/notebook_check.py", *session.posargs, env=FAST_CPU_CONV)


@nox.session
def site_check(session: nox.Session) -> None:
  """Open every page of the built site in headless Chromium, offline, and check it."""
  session.install("-e", ".[site]")
  session.run("python", "tools/site_check.py", *session.posargs)


@nox.session(venv_backend="none")
def demo_bundle(session: nox.Session) -> None:
  """Rebuild the live demo's JavaScript bundle from its lockfile (needs Node >= 20 and npm).

  ``npm ci`` installs exactly what ``demo/package-lock.json`` pins (``@jax-js/jax``,
  ``esbuild``), then ``demo/build.mjs`` bundles ``demo/src/`` into
  ``docs/_static/demo/demo.js`` (committed: the docs build needs no npm) and records
  its hash, the lockfile's and the sources' in ``demo/bundle.json``, which
  ``tests/test_demo.py`` checks. The build is byte-for-byte reproducible: after this
  session, ``git diff docs/_static/demo`` is empty unless a source or the lockfile changed.
  """
  with session.chdir(ROOT / "demo"):
    session.run("npm", "ci", "--no-audit", "--no-fund", external=True)
    session.run("node", "build.mjs", external=True)


@nox.session
def docs_live(session: nox.Session) -> None:
  """Serve the site with live reload while you edit (never run by CI)."""
  _install(session, "docs")
  session.install("sphinx-autobuild")
  session.run(
      "sphinx-autobuild", "docs", str(DOCS_BUILD / "live"), "--watch", "src",
      *session.posargs, env=FAST_CPU_CONV,
  )


@nox.session
def notebooks(session: nox.Session) -> None:
  """Write each tutorial's .ipynb twin from its .md (Jupytext pairing)."""
  session.install("jupytext>=1.16")
  tutorials = sorted(str(p) for p in (ROOT / "docs" / "tutorials").glob("*.md"))
  session.run("jupytext", "--sync", *tutorials)


@nox.session
def bench(session: nox.Session) -> None:
  """Benchmark the methods against Captum; writes benchmarks/results/cpu.{md,csv} (long).

  Pass options after --: ``nox -s bench -- --smoke`` (a minute: checks that it
  runs), ``nox -s bench -- --batches 256 --xla both``; see
  ``python benchmarks/bench.py --help``.
  """
  _install(session, "bench", "references")
  session.run("python", "benchmarks/bench.py", *session.posargs)
  # The other method families beside their reference libraries (Captum's Occlusion and
  # KernelShap at batch 32 and 256, PAIR one image per call, ...): agreement and speed.
  session.run("python", "benchmarks/references.py")
  # Each model's convolutions timed alone (and re-expressed): how far 2x Captum is from them.
  session.run("python", "benchmarks/investigations/ceiling.py")
