"""Publishing: the Read the Docs and GitHub Actions files, the Colab install cell, the version.

None of these files can run here (no Read the Docs, no GitHub, no Colab), so this module
checks what can be checked offline: the workflows and ``.readthedocs.yaml`` against the
schemastore schemas that check-jsonschema vendors, that they run the same commands as
``nox -s docs`` (parsed from both sides, so they cannot drift), that the repository URL
is written once (``pyproject.toml``) and named exactly by every tutorial's install cell,
and that cell's logic with Colab simulated by the presence of ``google.colab``. Building
and installing the wheel is ``nox -s package`` (it needs the build backend from an index).
"""

from __future__ import annotations

import ast
import re
import runpy
import shlex
import sys
import tomllib
import types
from pathlib import Path

import pytest
import yaml
from check_jsonschema import main as check_jsonschema
from click.testing import CliRunner
from packaging.requirements import Requirement

import saliency_guide
from saliency_guide import data

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
DOCS_WORKFLOW = WORKFLOWS / "docs.yml"
CI_WORKFLOW = WORKFLOWS / "ci.yml"
READTHEDOCS = ROOT / ".readthedocs.yaml"
NOXFILE = ROOT / "noxfile.py"
TUTORIALS = sorted((ROOT / "docs" / "tutorials").glob("*.md"))
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
REPOSITORY_URL = PYPROJECT["project"]["urls"]["Repository"]
OUTPUT = "<output folder>"  # stands for the site's output folder in compared commands


def _schema_check(schema: str, *files: Path) -> tuple[int, str]:
  """Run check-jsonschema in this process (so the no-network fixture covers it)."""
  result = CliRunner().invoke(check_jsonschema, ["--builtin-schema", schema, *map(str, files)])
  return result.exit_code, result.output


def _yaml(path: Path) -> dict:
  document = yaml.safe_load(path.read_text())
  if True in document:  # YAML 1.1 reads a workflow's `on:` key as the boolean true
    document["on"] = document.pop(True)
  return document


# -- the files validate --------------------------------------------------------------------


@pytest.mark.parametrize("path", [DOCS_WORKFLOW, CI_WORKFLOW], ids=lambda p: p.name)
def test_workflow_validates_against_the_github_workflow_schema(path):
  code, output = _schema_check("vendor.github-workflows", path)
  assert code == 0, output


def test_readthedocs_config_validates_against_its_schema():
  code, output = _schema_check("vendor.readthedocs", READTHEDOCS)
  assert code == 0, output


def test_the_schema_check_rejects_broken_files(tmp_path):
  """The check has teeth: a job without `runs-on`, a Read the Docs key that does not exist."""
  workflow = _yaml(DOCS_WORKFLOW)
  del workflow["jobs"]["build"]["runs-on"]
  broken_workflow = tmp_path / "broken.yml"
  broken_workflow.write_text(yaml.safe_dump(workflow))
  assert _schema_check("vendor.github-workflows", broken_workflow)[0] != 0
  config = _yaml(READTHEDOCS)
  config["build"]["tools"]["python"] = "3.11.7"  # not a version Read the Docs offers
  broken_config = tmp_path / "broken.readthedocs.yaml"
  broken_config.write_text(yaml.safe_dump(config))
  assert _schema_check("vendor.readthedocs", broken_config)[0] != 0


# -- the same commands as `nox -s docs` ------------------------------------------------------


def _nox_docs_session() -> tuple[list[str], list[tuple[list[str], dict[str, str]]]]:
  """What noxfile's docs session installs (pip arguments) and runs (``(argv, env)``, in order).

  The output folder becomes OUTPUT, ``*session.posargs`` is dropped, and the caller's
  environment passed through (a dict comprehension over ``os.environ``) counts as empty.
  """
  tree = ast.parse(NOXFILE.read_text())
  names: dict[str, ast.expr] = {}
  for node in tree.body:
    if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
      names[node.targets[0].id] = node.value
  (docs,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "docs"]

  def env_of(node: ast.expr) -> dict[str, str]:
    if isinstance(node, ast.Name):
      return env_of(names[node.id])
    if isinstance(node, ast.DictComp):
      return {}
    assert isinstance(node, ast.Dict), ast.dump(node)
    env: dict[str, str] = {}
    for key, value in zip(node.keys, node.values, strict=True):
      env.update(env_of(value) if key is None else {key.value: value.value})
    return env

  for node in ast.walk(docs):
    if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
      names[node.targets[0].id] = node.value
  install, commands = [], []
  calls = [n for n in ast.walk(docs) if isinstance(n, ast.Call)]
  for call in sorted(calls, key=lambda n: (n.lineno, n.col_offset)):
    function = ast.unparse(call.func)
    if function == "session.install":
      install += [a.value for a in call.args]
    elif function == "_install":  # noxfile's helper: an editable install with extras
      install += ["-e", f".[{','.join(a.value for a in call.args[1:])}]"]
    elif function == "session.run":
      argv = [a.value if isinstance(a, ast.Constant) else OUTPUT
              for a in call.args if not isinstance(a, ast.Starred)]
      env = {k.arg: k.value for k in call.keywords}.get("env")
      commands.append((argv, env_of(env) if env is not None else {}))
  return install, commands


def _shell_commands(scripts: list[str], env: dict[str, str]) -> list[tuple[list[str], dict]]:
  """``(argv, env)`` of the site-building commands in shell lines (``NAME=value`` prefixes
  join ``env``); installation and other commands are left out."""
  commands = []
  for script in scripts:
    for line in script.splitlines():
      words = shlex.split(line, comments=True)
      own = dict(env)
      while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        own.update([words.pop(0).split("=", 1)])
      if words[:1] in (["python"], ["sphinx-build"]) and words[:3] != ["python", "-m", "pip"]:
        commands.append((words, own))
  return commands


def _pip_installs(scripts: list[str]) -> list[str]:
  """The arguments of every ``python -m pip install`` in shell lines, options dropped."""
  return [word for script in scripts for line in script.splitlines()
          if (words := shlex.split(line, comments=True))[:4] == ["python", "-m", "pip", "install"]
          for word in words[4:] if word not in ("--quiet", "-q", "--upgrade", "-U")]


def _compare_with_nox(commands: list[tuple[list[str], dict]], output: str) -> None:
  expected = _nox_docs_session()[1]
  assert any(argv[:4] == ["python", "-m", "saliency_guide", "pretrain"] for argv, _ in expected)
  assert expected[-1][0][0] == "sphinx-build"
  assert commands[-1][0][-1] == output, commands[-1][0]
  commands[-1][0][-1] = OUTPUT
  assert [argv for argv, _ in commands] == [argv for argv, _ in expected]
  for (argv, env), (_, expected_env) in zip(commands, expected, strict=True):
    assert expected_env.items() <= env.items(), (argv, expected_env, env)


def test_docs_workflow_runs_the_commands_of_nox_docs():
  workflow = _yaml(DOCS_WORKFLOW)
  build = workflow["jobs"]["build"]
  env = {**workflow.get("env", {}), **build.get("env", {})}
  commands = []
  for step in build["steps"]:
    if "run" in step:
      commands += _shell_commands([step["run"]], {**env, **step.get("env", {})})
  (upload,) = [s for s in build["steps"] if s.get("uses", "").startswith(
      "actions/upload-pages-artifact@")]
  _compare_with_nox(commands, upload["with"]["path"])
  # ... after installing the package as nox does (editable or not, with the docs extra).
  assert _pip_installs([s["run"] for s in build["steps"] if "run" in s]) == (
      _nox_docs_session()[0])


def test_readthedocs_runs_the_commands_of_nox_docs():
  config = _yaml(READTHEDOCS)
  jobs = config["build"]["jobs"]
  commands = _shell_commands(jobs["pre_build"] + jobs["build"]["html"], {})
  _compare_with_nox(commands, "$READTHEDOCS_OUTPUT/html")
  assert config["build"]["tools"]["python"] == "3.11"
  assert config["build"]["os"].startswith("ubuntu-")
  assert config["sphinx"] == {"configuration": "docs/conf.py", "fail_on_warning": True}
  (install,) = config["python"]["install"]
  assert install["method"] == "pip" and not install.get("editable", False)
  assert _nox_docs_session()[0] == [f"{install['path']}[{','.join(install['extra_requirements'])}]"]


def test_docs_workflow_deploys_to_pages_on_pushes_to_main():
  workflow = _yaml(DOCS_WORKFLOW)
  assert workflow["on"]["push"]["branches"] == ["main"]
  deploy = workflow["jobs"]["deploy"]
  assert deploy["needs"] == "build"
  assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
  assert deploy["environment"]["name"] == "github-pages"
  assert [s["uses"].split("@")[0] for s in deploy["steps"]] == ["actions/deploy-pages"]
  cached = [s["with"]["path"] for s in workflow["jobs"]["build"]["steps"]
            if s.get("uses", "").startswith("actions/cache@")]
  assert "~/tensorflow_datasets" in cached
  assert workflow["env"]["SALIENCY_GUIDE_CACHE"].endswith(tuple(cached))
  (python,) = [s for s in workflow["jobs"]["build"]["steps"]
               if s.get("uses", "").startswith("actions/setup-python@")]
  assert python["with"]["cache"] == "pip"


def test_ci_workflow_runs_ci_run_on_pull_requests_with_the_package_check():
  workflow = _yaml(CI_WORKFLOW)
  assert "pull_request" in workflow["on"]
  (job,) = workflow["jobs"].values()
  assert [s["run"] for s in job["steps"] if "run" in s][-1] == "bash .ci/run"
  assert re.search(r"^python3 -m nox -s package$", (ROOT / ".ci" / "run").read_text(), re.M)
  # The MNIST files it fetches come from where the package's own downloader takes them.
  urls = re.findall(r"https://\S+/", "\n".join(s.get("run", "") for s in job["steps"]))
  assert urls == [data.MNIST_URL]


# -- one repository URL ----------------------------------------------------------------------


def test_the_repository_url_is_written_once_in_pyproject(monkeypatch):
  urls = PYPROJECT["project"]["urls"]
  assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", REPOSITORY_URL)
  assert urls["Changelog"] == f"{REPOSITORY_URL}/blob/main/CHANGELOG.md"
  monkeypatch.delenv("SALIENCY_GUIDE_REPOSITORY_URL", raising=False)
  monkeypatch.setattr(sys, "path", list(sys.path))  # conf.py prepends src/
  assert runpy.run_path(str(ROOT / "docs" / "conf.py"))["REPOSITORY_URL"] == REPOSITORY_URL
  monkeypatch.setenv("SALIENCY_GUIDE_REPOSITORY_URL", "https://github.com/fork/saliency_guide")
  conf = runpy.run_path(str(ROOT / "docs" / "conf.py"))
  assert conf["html_theme_options"]["repository_url"] == "https://github.com/fork/saliency_guide"


# -- the Colab install cell ------------------------------------------------------------------


def _install_cell(page: Path) -> str:
  """The source of a tutorial's first code cell, which must be its hidden install cell."""
  match = re.search(r"^```\{code-cell\}[^\n]*\n(.*?)^```", page.read_text(), re.M | re.S)
  assert match, f"{page.name}: no code cell"
  lines = match.group(1).splitlines()
  options = [line for line in lines if line.startswith(":")]
  assert ":tags: [remove-cell]" in options, f"{page.name}: the first cell is not the install cell"
  return "\n".join(line for line in lines if not line.startswith(":"))


def _as_python(cell: str) -> str:
  """IPython's rewriting of line magics: ``%pip ARGS`` -> ``get_ipython().run_line_magic``."""
  return re.sub(r"^(\s*)%(\w+) ?(.*)$",
                lambda m: f"{m[1]}get_ipython().run_line_magic({m[2]!r}, {m[3]!r})",
                cell, flags=re.M)


def _run_install_cell(page: Path) -> list[tuple[str, str]]:
  """Execute the cell with a stand-in IPython; return the magics it called."""
  calls: list[tuple[str, str]] = []
  shell = types.SimpleNamespace(run_line_magic=lambda name, line: calls.append((name, line)))
  exec(compile(_as_python(_install_cell(page)), page.name, "exec"),
       {"get_ipython": lambda: shell})
  return calls


def test_every_tutorial_is_checked():
  assert len(TUTORIALS) >= 14


@pytest.mark.parametrize("page", TUTORIALS, ids=lambda p: p.stem)
def test_install_cell_does_nothing_outside_colab(page, monkeypatch):
  monkeypatch.delitem(sys.modules, "google.colab", raising=False)
  assert _run_install_cell(page) == []


@pytest.mark.parametrize("page", TUTORIALS, ids=lambda p: p.stem)
def test_install_cell_in_colab_installs_the_package_from_pyprojects_url(page, monkeypatch):
  monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
  calls = _run_install_cell(page)
  assert [name for name, _ in calls] == ["pip"], calls
  words = shlex.split(calls[0][1])
  assert words[0] == "install"
  requirements = [Requirement(w) for w in words[1:] if not w.startswith("-")]
  package, *others = requirements
  assert (package.name, package.url, package.extras) == (
      "saliency_guide", f"git+{REPOSITORY_URL}", set())
  # Nothing heavier than the page needs: anything else installed is imported by the page.
  source = page.read_text()
  for other in others:
    module = other.name.replace("-", "_")
    assert re.search(rf"^\s*(from|import) {module}\b", source, re.M), (page.name, other.name)


# -- one version -----------------------------------------------------------------------------


def test_the_version_is_written_once():
  project = PYPROJECT["project"]
  assert "version" not in project and "version" in project["dynamic"]
  init = ROOT / PYPROJECT["tool"]["hatch"]["version"]["path"]
  assert init == ROOT / "src" / "saliency_guide" / "__init__.py"
  (version,) = re.findall(r'^__version__ = "([^"]+)"$', init.read_text(), re.M)
  assert saliency_guide.__version__ == version
  changelog = (ROOT / "CHANGELOG.md").read_text()
  assert re.search(rf"^## \[?{re.escape(version)}\]?", changelog, re.M), "CHANGELOG lacks it"
