"""The reader's notebook path, checked without a browser (``nox -s notebooks_check``).

Run in an environment that has only the package as installed (``pip install
".[notebooks]"``, not editable) and after ``nox -s docs``:

1. **JupyterLab answers.** ``jupyter lab`` starts headless on a loopback port with
   ``docs/tutorials`` as its root; the check waits for ``/api/status``, loads ``/lab``,
   and asks the contents API for a tutorial's ``.md`` *as a notebook*, which only
   jupytext's contents manager can answer: the README's "open a ``.md`` directly" works.
2. **A downloaded notebook runs.** The executed notebooks the site offers for download
   (``docs/_build/jupyter_execute/tutorials/*.ipynb``) are copied to a temporary folder
   outside the repository and executed there top to bottom (nbclient), with the
   package imported from site-packages (checked) and MNIST from
   ``SALIENCY_GUIDE_MNIST_DIR``. Every tutorial already runs this way during the docs
   build (each in a temporary folder, package installed); here the notebooks named on
   the command line (default: two quick ones, one of which reads what another page
   wrote) run again in the notebooks environment itself.

Usage::

    python tools/notebook_check.py [NAME ...]    # names of tutorials, e.g. gradients
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = ROOT / "docs" / "tutorials"
EXECUTED = ROOT / "docs" / "_build" / "jupyter_execute" / "tutorials"
DEFAULT = ("getting_started", "which_method")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _get(url: str, timeout: float = 10) -> tuple[int, bytes]:
  with urllib.request.urlopen(url, timeout=timeout) as response:  # a loopback URL
    return response.status, response.read()


def check_lab(timeout: float = 180) -> None:
  port, token = _free_port(), secrets.token_hex(16)
  log = tempfile.TemporaryFile()
  server = subprocess.Popen(
      [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--ServerApp.port={port}",
       "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
       f"--ServerApp.root_dir={TUTORIALS}", "--ServerApp.port_retries=0",
       "--allow-root",  # CI containers run as root
       "--LabApp.extension_manager=readonly"],  # no PyPI queries from the server
      stdout=log, stderr=subprocess.STDOUT)
  base = f"http://127.0.0.1:{port}"
  try:
    deadline = time.monotonic() + timeout
    while True:
      try:
        status, body = _get(f"{base}/api/status?token={token}")
        if status == 200:
          break
      except OSError:
        pass
      if server.poll() is not None or time.monotonic() > deadline:
        log.seek(0)
        raise SystemExit("jupyter lab did not answer:\n" + log.read().decode()[-3000:])
      time.sleep(1)
    started = time.monotonic() - deadline + timeout
    status, page = _get(f"{base}/lab?token={token}")
    assert status == 200 and b"JupyterLab" in page, (status, page[:200])
    status, body = _get(f"{base}/api/contents/gradients.md?type=notebook&content=1"
                        f"&token={token}")
    model = json.loads(body)
    assert model["type"] == "notebook", model.get("type")
    cells = model["content"]["cells"]
    assert sum(c["cell_type"] == "code" for c in cells) >= 3, len(cells)
    print(f"jupyter lab answered in {started:.1f} s on port {port}; gradients.md opens as a "
          f"notebook of {len(cells)} cells")
  finally:
    server.terminate()
    try:
      server.wait(timeout=20)
    except subprocess.TimeoutExpired:
      server.kill()


def run_notebook(name: str) -> None:
  import nbclient
  import nbformat

  source = EXECUTED / f"{name}.ipynb"
  if not source.exists():
    raise SystemExit(f"{source} is missing: run `nox -s docs` first")
  with tempfile.TemporaryDirectory(prefix="saliency_guide-reader-") as folder:
    path = Path(folder) / source.name
    shutil.copy(source, path)
    notebook = nbformat.read(path, as_version=4)
    probe = nbformat.v4.new_code_cell(
        "import saliency_guide, pathlib\n"
        "where = pathlib.Path(saliency_guide.__file__).resolve()\n"
        f"assert pathlib.Path({str(ROOT / 'src')!r}) not in where.parents, where\n"
        "assert 'site-packages' in where.parts, where\n"
        "print('package from', where.parent)")
    notebook.cells.insert(0, probe)
    start = time.perf_counter()
    client = nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": folder}})
    client.execute()
    where = "".join(o.get("text", "") for o in notebook.cells[0].outputs).strip()
    print(f"{name}.ipynb ran top to bottom in {time.perf_counter() - start:.0f} s outside "
          f"the repository ({where})")


def main(argv: list[str]) -> None:
  if "SALIENCY_GUIDE_MNIST_DIR" not in os.environ:
    print("note: SALIENCY_GUIDE_MNIST_DIR is not set; MNIST comes from tensorflow-datasets")
  check_lab()
  for name in argv or DEFAULT:
    run_notebook(name)


if __name__ == "__main__":
  main(sys.argv[1:])
