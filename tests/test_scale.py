"""Tests of :mod:`saliency_guide.scale`: padded batches, and explain_dataset (streaming,
sharding, order)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from saliency_guide.methods import (
    grad_cam,
    gradients,
    guided_backprop,
    integrated_gradients,
    smoothgrad,
)
from saliency_guide.models import CNN
from saliency_guide.scale import explain_dataset, padded_batches

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def model():
  return CNN(channels=(4, 8), hidden=16, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def data():
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(11, 28, 28, 1)).astype(np.float32)
  return images, (np.arange(11) * 7 % 10).astype(np.int32)


class Recorder:
  """A jitted stand-in method whose output identifies each image: ``x · (target + 1)``.

  It counts traces (compilations) and records the shapes and shardings it sees.
  """

  def __init__(self):
    self.traces = 0
    self.calls = []
    self.__name__ = "recorder"

    @jax.jit
    def impl(images, targets):
      self.traces += 1
      return images * (targets[:, None, None, None] + 1).astype(images.dtype)

    self._impl = impl

  def __call__(self, model, images, targets):
    self.calls.append((images.shape, images.sharding))
    return self._impl(images, targets)


class Rows:
  """An array-like dataset that records which rows are read (like a memory-mapped file)."""

  def __init__(self, array):
    self.array, self.shape, self.dtype, self.reads = array, array.shape, array.dtype, []

  def __getitem__(self, index):
    self.reads.append((index.start, index.stop))
    return self.array[index]


def test_padded_batches_cover_the_dataset_in_order_and_pad_the_last(data):
  images, targets = data  # 11 images
  batches = list(padded_batches(images, targets, 4))
  assert [(b.start, b.count) for b in batches] == [(0, 4), (4, 4), (8, 3)]
  for b in batches:
    assert b.images.shape == (4, 28, 28, 1) and b.targets.shape == (4,)
  np.testing.assert_array_equal(np.concatenate([b.images[:b.count] for b in batches]), images)
  np.testing.assert_array_equal(np.concatenate([b.targets[:b.count] for b in batches]), targets)
  last = batches[-1]  # padded by repeating its last image and target
  np.testing.assert_array_equal(last.images[3], images[10])
  assert last.targets[3] == targets[10]


def test_padded_batches_round_up_and_read_lazily(data):
  images, targets = data
  rows = Rows(images)
  batches = padded_batches(rows, targets, 3, multiple=2)  # 3 rounded up to 4
  assert rows.reads == []  # nothing is read before the batches are asked for
  first = next(batches)
  assert first.images.shape[0] == 4 and rows.reads == [(0, 4)]
  assert [b.start for b in batches] == [4, 8] and rows.reads == [(0, 4), (4, 8), (8, 12)]
  (one,) = padded_batches(images[:2], targets[:2], 5)  # fewer images than a batch: padded
  assert one.count == 2 and one.images.shape[0] == 5


def test_padded_batches_give_the_32_bit_arrays_jax_would_make(data):
  images, targets = data
  batch = next(padded_batches(images.astype(np.float64), targets.astype(np.int64), 4))
  assert batch.images.dtype == np.float32 and batch.targets.dtype == np.int32


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"batch_size": 0}, ValueError, "batch_size: expected an integer >= 1, got 0"),
        ({"multiple": 0}, ValueError, "multiple: expected an integer >= 1, got 0"),
        ({"targets": np.zeros(11)}, TypeError, "targets: expected integer class indices"),
        ({"targets": np.zeros(3, int)}, ValueError, r"targets: expected shape \(11,\)"),
        ({"images": np.zeros((11, 28, 28))}, ValueError, "images: expected NHWC shape"),
    ],
)
def test_padded_batches_bad_arguments(data, kwargs, error, match):
  args = {"images": data[0], "targets": data[1], "batch_size": 4} | kwargs
  with pytest.raises(error, match=match):
    padded_batches(**args)  # checked at the call, not at the first batch


def test_matches_one_call_on_the_whole_dataset(model, data):
  images, targets = data
  maps = explain_dataset(gradients, model, images, targets, batch_size=4)
  assert isinstance(maps, np.ndarray) and maps.shape == images.shape
  np.testing.assert_allclose(maps, gradients(model, images, targets), rtol=1e-5, atol=1e-7)


def test_results_in_input_order_and_padding_dropped(model, data):
  images, targets = data
  method = Recorder()
  out = explain_dataset(method, model, images, targets, batch_size=4)
  expected = images * (targets[:, None, None, None] + 1).astype(np.float32)
  np.testing.assert_array_equal(out, expected)  # order and values exact, 3 padded rows dropped
  assert [shape[0] for shape, _ in method.calls] == [4, 4, 4]  # the last batch padded to 4


def test_compiles_once_for_every_batch_including_the_last(model, data):
  images, targets = data
  method = Recorder()
  explain_dataset(method, model, images, targets, batch_size=3)  # 4 batches, last one partial
  assert method.traces == 1


def test_options_are_passed_to_the_method(model, data):
  images, targets = data
  maps = explain_dataset(integrated_gradients, model, images[:3], targets[:3], batch_size=2,
                         steps=4, method="riemann_left")
  direct = integrated_gradients(model, images[:3], targets[:3], steps=4, method="riemann_left")
  np.testing.assert_allclose(maps, direct, rtol=1e-5, atol=1e-7)


def test_tuple_outputs(model, data):
  images, targets = data
  maps, delta = explain_dataset(integrated_gradients, model, images[:5], targets[:5],
                                batch_size=2, steps=4, return_delta=True)
  assert maps.shape == (5, 28, 28, 1) and delta.shape == (5,)


def test_callers_model_is_not_changed(model, data):
  images, targets = data
  before = jax.tree.map(np.asarray, nnx.state(model))
  explain_dataset(gradients, model, images, targets, batch_size=8)
  after = jax.tree.map(np.asarray, nnx.state(model))
  assert jax.tree.all(jax.tree.map(np.array_equal, before, after))


def test_progress_bar(model, data, capsys):
  images, targets = data
  explain_dataset(Recorder(), model, images, targets, batch_size=4, progress=True)
  assert "11/11" in capsys.readouterr().err
  explain_dataset(Recorder(), model, images, targets, batch_size=4)  # 3 batches: no bar
  assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"batch_size": 0}, ValueError, "batch_size: expected an integer >= 1, got 0"),
        ({"batch_size": 2.0}, TypeError, "batch_size: expected an integer >= 1"),
        ({"batch_size": 2, "mesh": "cpu"}, TypeError, "mesh: expected a jax.sharding.Mesh"),
        ({"batch_size": 2, "progress": "yes"}, TypeError, "progress: expected"),
    ],
)
def test_bad_arguments(model, data, kwargs, error, match):
  images, targets = data
  with pytest.raises(error, match=match):
    explain_dataset(gradients, model, images, targets, **kwargs)


def test_bad_data(model, data):
  images, targets = data
  with pytest.raises(ValueError, match=r"targets: expected shape \(11,\)"):
    explain_dataset(gradients, model, images, targets[:5], batch_size=4)
  with pytest.raises(ValueError, match="images: expected NHWC shape"):
    explain_dataset(gradients, model, images[..., 0], targets, batch_size=4)
  with pytest.raises(ValueError, match="at least one image"):
    explain_dataset(gradients, model, images[:0], targets[:0], batch_size=4)
  with pytest.raises(TypeError, match="method: expected a saliency method"):
    explain_dataset("gradients", model, images, targets, batch_size=4)
  with pytest.raises(TypeError, match="images: expected an array"):
    explain_dataset(gradients, model, images.tolist(), targets, batch_size=4)
  with pytest.raises(TypeError, match="targets: expected integer class indices"):
    explain_dataset(gradients, model, images, targets.astype(np.float32), batch_size=4)


def test_a_two_dimensional_mesh_is_refused(model, data):
  images, targets = data
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1), ("a", "b"))
  with pytest.raises(ValueError, match="mesh: expected a 1-D mesh"):
    explain_dataset(gradients, model, images, targets, batch_size=4, mesh=mesh)


def test_the_method_still_validates_each_batch(model, data):
  images, targets = data
  bad = images.copy()
  bad[9, 0, 0, 0] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    explain_dataset(gradients, model, bad, targets, batch_size=4)


# Run in a fresh interpreter: the device count is fixed when JAX starts.
FOUR_DEVICES = textwrap.dedent(
    """
    import json
    import jax, numpy as np
    from flax import nnx
    from jax.sharding import Mesh
    from saliency_guide.methods import gradients, guided_backprop, integrated_gradients
    from saliency_guide.models import CNN, GapCNN
    from saliency_guide.scale import explain_dataset

    assert len(jax.devices()) == 4, jax.devices()
    rng = np.random.default_rng(1)
    images = rng.uniform(size=(10, 28, 28, 1)).astype(np.float32)
    targets = np.arange(10, dtype=np.int32) % 10
    one = Mesh(np.asarray(jax.devices()[:1]), ("batch",))
    report = {}
    seen = []

    def probe(model, x, t):
      seen.append((sorted(d.id for d in x.sharding.device_set),
                   sorted(d.id for d in jax.tree.leaves(nnx.state(model))[0].devices()),
                   x.shape[0]))
      return gradients(model, x, t)

    cnn = CNN(channels=(4, 8), hidden=16, rngs=nnx.Rngs(0))
    gap = GapCNN(channels=(4, 8, 8), rngs=nnx.Rngs(1))
    cases = (  # 10 images: 4 batches of 3 (5 of 2, 3 of 4) over the 4 devices
        ("cnn/gradients/3", cnn, probe, 3, {}),
        ("cnn/gradients/1", cnn, gradients, 1, {}),
        ("gap/guided_backprop/2", gap, guided_backprop, 2, {}),
        ("cnn/integrated_gradients/4", cnn, integrated_gradients, 4, {"steps": 4}),
    )
    for key, model, method, batch_size, options in cases:
      sharded = explain_dataset(method, model, images, targets, batch_size=batch_size,
                                **options)
      single = explain_dataset(method, model, images, targets, batch_size=batch_size,
                               mesh=one, **options)
      report[key] = sharded.tobytes() == single.tobytes()
    # several batches in flight on each of the four devices
    sharded = explain_dataset(gradients, cnn, images, targets, batch_size=2, workers=2)
    single = explain_dataset(gradients, cnn, images, targets, batch_size=2, mesh=one)
    report["cnn/gradients/2/workers=2"] = sharded.tobytes() == single.tobytes()
    report["calls_seen"] = seen[:4]
    print(json.dumps(report))
    """
)


def test_four_cpu_devices_give_bitwise_the_maps_of_one_device():
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4")
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
  env["JAX_PLATFORMS"] = "cpu"
  result = subprocess.run([sys.executable, "-c", FOUR_DEVICES], env=env, capture_output=True,
                          text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  # Batch k ran on device k mod 4, with that device's copy of the parameters, on all
  # batch_size images (the last batch padded).
  assert report.pop("calls_seen") == [[[k], [k], 3] for k in range(4)]
  assert report == {key: True for key in report} and len(report) == 5, report


def test_assemble_rows_takes_each_row_from_the_process_that_computed_it():
  from saliency_guide.scale import _assemble_rows

  stacked = np.array([[1.0, -0.0, 7.0], [9.0, 2.0, 3.0]])[..., None]  # (P=2, N=3, 1)
  owner = np.array([[True, False, False], [False, True, True]])
  rows = _assemble_rows({"maps": stacked}, owner)["maps"]
  np.testing.assert_array_equal(rows[:, 0], [1.0, 2.0, 3.0])


class ThreadRecorder(Recorder):
  """A :class:`Recorder` that also notes the thread of each call."""

  def __init__(self):
    super().__init__()
    self.threads = set()

  def __call__(self, model, images, targets):
    self.threads.add(threading.get_ident())
    return super().__call__(model, images, targets)


def test_workers_call_from_their_own_threads_and_keep_the_order(model, data):
  images, targets = data
  recorder = ThreadRecorder()
  out = explain_dataset(recorder, model, images, targets, batch_size=2, workers=3)
  expected = images * (targets[:, None, None, None] + 1).astype(np.float32)
  np.testing.assert_array_equal(out, expected)
  assert threading.get_ident() not in recorder.threads  # the caller's thread waits
  assert 2 <= len(recorder.threads) <= 3
  assert recorder.traces == 1  # the padded last batch too: one shape, one compilation


@pytest.mark.parametrize(
    "method",
    [gradients, guided_backprop, grad_cam,
     smoothgrad(gradients, noise_level=0.1, samples=3, key=jax.random.key(0))],
    ids=["gradients", "guided_backprop", "grad_cam", "smoothgrad"],
)
def test_workers_give_exactly_the_maps_of_one_at_a_time(model, data, method):
  images, targets = data
  one = explain_dataset(method, model, images, targets, batch_size=4)
  several = explain_dataset(method, model, images, targets, batch_size=4, workers=2)
  np.testing.assert_array_equal(several, one)  # the same programs on the same batches


def test_an_error_in_a_worker_reaches_the_caller(model, data):
  images, targets = data
  bad = images.copy()
  bad[9, 0, 0, 0] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    explain_dataset(gradients, model, bad, targets, batch_size=2, workers=2)


@pytest.mark.parametrize(
    ("workers", "error", "match"),
    [(0, ValueError, "workers: expected an integer >= 1, got 0"),
     (2.0, TypeError, "workers: expected an integer >= 1, got float 2.0"),
     (True, TypeError, "workers: expected an integer >= 1, got bool True")],
)
def test_bad_workers(model, data, workers, error, match):
  images, targets = data
  with pytest.raises(error, match=match):
    explain_dataset(gradients, model, images, targets, batch_size=4, workers=workers)
