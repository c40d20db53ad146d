"""The layout a reader relies on (issue 17): where code lives and what may import what.

* Each method tutorial ``docs/tutorials/X.md`` has its code in ``methods/X.py``.
* No module of one subpackage imports a private module of another, and no tutorial
  imports a private module.
* Every public name of ``saliency_guide.methods`` and ``saliency_guide.metrics`` is on
  the API page.
"""

from __future__ import annotations

import ast
import re
import types
from pathlib import Path

import pytest

from saliency_guide import methods, metrics

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "saliency_guide"
TUTORIALS = ROOT / "docs" / "tutorials"
NOT_METHOD_PAGES = {"getting_started", "comparison", "which_method", "own_model", "manipulation"}


def _imports(path: Path) -> list[str]:
  names = []
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module:
      names.append(node.module)
      # ``from package import _module`` imports a module; ``from module import _name`` does not.
      names.extend(f"{node.module}.{alias.name}" for alias in node.names
                   if _is_module(f"{node.module}.{alias.name}"))
    elif isinstance(node, ast.Import):
      names.extend(alias.name for alias in node.names)
  return [n for n in names if n.startswith("saliency_guide")]


def _is_module(name: str) -> bool:
  path = PACKAGE.parent.joinpath(*name.split("."))
  return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _private_part(name: str) -> str | None:
  """The package path up to the first private module of ``name``, if any."""
  parts = name.split(".")
  for i, part in enumerate(parts[1:], start=1):
    if part.startswith("_") and not part.startswith("__"):
      return ".".join(parts[:i])  # the package that owns the private module
  return None


def test_every_method_tutorial_has_its_module():
  pages = {p.stem for p in TUTORIALS.glob("*.md")} - NOT_METHOD_PAGES
  assert pages, "no tutorials found"
  missing = sorted(p for p in pages if not (PACKAGE / "methods" / f"{p}.py").exists())
  assert not missing, f"tutorials without a methods/X.py module: {missing}"


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_import_across_subpackages(path):
  module = ".".join(("saliency_guide", *path.relative_to(PACKAGE).with_suffix("").parts))
  own_package = module.rsplit(".", 1)[0]
  for name in _imports(path):
    owner = _private_part(name)
    if owner is None:
      continue
    # A private module may be used by its own package and that package's submodules.
    assert own_package == owner or own_package.startswith(owner + "."), (
        f"{module} imports {name}, a private module of {owner}")


@pytest.mark.parametrize("path", sorted(TUTORIALS.glob("*.md")), ids=lambda p: p.stem)
def test_no_tutorial_imports_a_private_module(path):
  code = "\n".join(re.findall(r"```\{code-cell\}[^\n]*\n(.*?)```", path.read_text(), re.S))
  private = [line for line in code.splitlines()
             if re.match(r"\s*(from|import)\s+saliency_guide\S*\._", line)
             or re.match(r"\s*from\s+saliency_guide\S*\s+import\s+_", line)]
  assert not private, f"{path.name} imports private modules: {private}"


@pytest.mark.parametrize("namespace", [methods, metrics], ids=lambda m: m.__name__)
def test_every_public_name_is_on_the_api_page(namespace):
  page = (ROOT / "docs" / "api.md").read_text()
  documented_module = f"automodule:: {namespace.__name__}\n   :members:\n   :imported-members:"
  if documented_module in page:
    return  # the whole namespace is documented
  names = [n for n, value in vars(namespace).items()
           if not n.startswith("_") and not isinstance(value, types.ModuleType)]
  missing = [n for n in names if f"{namespace.__name__}.{n}\n" not in page]
  assert not missing, f"not on docs/api.md: {missing}"
