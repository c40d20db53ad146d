"""benchmarks/bench.py's command line: what ``--device gpu`` implies and refuses.

The GPU run itself needs CUDA (``benchmarks/gpu_run.sh``); what is checked here is the
part that runs before any framework is imported, so it costs nothing on the CPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import bench


def test_cpu_is_the_default_and_keeps_its_results_name_and_memory_probe():
  args = bench.parse([])
  assert (args.device, args.name, args.no_memory, args.xla) == ("cpu", "cpu", False,
                                                                 ["default"])


def test_gpu_writes_its_own_results_without_the_host_memory_probe():
  args = bench.parse(["--device", "gpu"])
  assert (args.device, args.name, args.no_memory) == ("gpu", "gpu", True)
  assert bench.parse(["--device", "gpu", "--name", "h100"]).name == "h100"


@pytest.mark.parametrize("extra, named", [
    (["--xla", "fast-conv"], "fast-conv"),
    (["--xla", "both"], "both"),
    (["--keep-freed-memory"], "--keep-freed-memory"),
])
def test_gpu_refuses_the_cpu_only_settings_naming_them(extra, named, capsys):
  with pytest.raises(SystemExit):
    bench.parse(["--device", "gpu", *extra])
  err = capsys.readouterr().err
  assert "--device gpu" in err and named in err


def test_an_unknown_device_is_refused(capsys):
  with pytest.raises(SystemExit):
    bench.parse(["--device", "tpu"])
  assert "--device" in capsys.readouterr().err
