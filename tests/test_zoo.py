"""The pretrained-model cache: trains once, reloads, retrains on any change.

Models on shuffled labels: trained on the first digits until they fit their permuted
labels (or the cap on epochs, with a warning and a flag); the record says how far they
got; the entries of models on true labels keep their cache keys.
"""

import dataclasses
import json
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saliency_guide import zoo
from saliency_guide.models import MLP
from saliency_guide.training import TrainConfig


@pytest.fixture
def tiny_world(monkeypatch, tmp_path):
  """A fake MNIST (two classes by ink position) and a tiny, fast model spec."""
  def fake_load_mnist(split, *, data_dir=None):
    rng = np.random.default_rng(len(split))  # deterministic per split, like real data
    n = 128 if split.startswith("train") else 64
    offset = 0 if split.startswith("train") else 1000
    labels = ((np.arange(n) + offset) % 2).astype(np.int32)
    images = np.zeros((n, 28, 28, 1), np.float32)
    for i, label in enumerate(labels):
      images[i, :, 14 * label : 14 * label + 14, 0] = rng.random((28, 14)) > 0.5
    if split.endswith("[:64]"):
      images, labels = images[:64], labels[:64]
    return images, labels

  calls = {"train": 0, "labels": None}
  real_train = zoo.train

  def counting_train(*args, **kwargs):
    calls["train"] += 1
    calls["labels"] = np.asarray(args[2])
    return real_train(*args, **kwargs)

  monkeypatch.setattr(zoo.data_lib, "load_mnist", fake_load_mnist)
  monkeypatch.setattr(zoo, "train", counting_train)
  monkeypatch.setitem(
      zoo.MODEL_SPECS, "tiny",
      zoo.ModelSpec(MLP, {"hidden": [16], "num_classes": 2}, TrainConfig(epochs=2, batch_size=32),
                    memorization=TINY_MEMORIZATION),
  )
  monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path))
  monkeypatch.delenv(zoo.TRAIN_SPLIT_ENV, raising=False)
  monkeypatch.delenv(zoo.EVAL_SPLIT_ENV, raising=False)
  return calls, tmp_path


TINY_MEMORIZATION = zoo.MemorizationRecipe(
    train_size=96,
    config=TrainConfig(epochs=200, batch_size=32, learning_rate=1e-2, weight_decay=0.0),
)


def _params(model):
  return zoo._flat_params(model)


def test_trains_once_then_loads_identical_weights(tiny_world):
  calls, cache = tiny_world
  first = zoo.pretrained("tiny", progress=False)
  second = zoo.pretrained("tiny", progress=False)
  assert calls["train"] == 1
  assert not first.from_cache and second.from_cache
  assert first.path == second.path and first.path.parent == cache
  for key, value in _params(first.model).items():
    np.testing.assert_array_equal(value, _params(second.model)[key])
  assert second.eval_accuracy == first.eval_accuracy
  assert (first.train_split, first.eval_split) == ("train", "test")


def test_a_loaded_model_shares_no_buffer_with_its_clones(tiny_world):
  """Loaded parameters are JAX arrays: a clone edited in place leaves the cached model alone."""
  zoo.pretrained("tiny", progress=False)
  loaded = zoo.pretrained("tiny", progress=False)
  assert loaded.from_cache
  before = _params(loaded.model)
  clone = nnx.clone(loaded.model)
  for _, param in nnx.iter_graph(clone):
    if isinstance(param, nnx.Param):
      assert isinstance(param.get_value(), jax.Array)
      param[...] = jnp.zeros_like(param[...])
  for key, value in _params(loaded.model).items():
    np.testing.assert_array_equal(value, before[key])


@pytest.mark.parametrize("change", [
    {"seed": 1}, {"train_split": "train[:64]"}, {"shuffle_labels": True},
])
def test_any_change_of_the_key_retrains(tiny_world, change):
  calls, _ = tiny_world
  base = zoo.pretrained("tiny", progress=False)
  other = zoo.pretrained("tiny", progress=False, **change)
  assert calls["train"] == 2
  assert other.path != base.path and not other.from_cache


@pytest.mark.parametrize("shuffle", [False, True])
def test_train_data_gives_the_labels_the_model_was_trained_on(tiny_world, shuffle):
  calls, _ = tiny_world
  record = zoo.pretrained("tiny", progress=False, shuffle_labels=shuffle)
  images, labels = record.train_data()
  clean = zoo.train_data("train")[1]
  np.testing.assert_array_equal(labels, calls["labels"])
  assert images.shape == (len(labels), 28, 28, 1)
  if shuffle:  # the first train_size digits, their labels permuted
    assert record.train_size == len(labels) == TINY_MEMORIZATION.train_size
    np.testing.assert_array_equal(images, zoo.train_data("train")[0][: len(labels)])
    clean = clean[: len(labels)]
  else:
    assert record.train_size == len(labels) == len(clean)
  assert (labels != clean).any() == shuffle
  np.testing.assert_array_equal(np.sort(labels), np.sort(clean))  # a permutation


def test_shuffled_labels_are_trained_until_memorised(tiny_world):
  calls, _ = tiny_world
  record = zoo.pretrained("tiny", progress=False, shuffle_labels=True)
  cap = TINY_MEMORIZATION.config.epochs
  assert record.memorized is True and record.target_accuracy == 0.95
  assert 1 <= record.epochs < cap  # stopped early, at the first epoch that fits
  images, labels = record.train_data()
  assert record.train_accuracy == zoo.accuracy(record.model, images, labels) >= 0.95
  assert "fits its permuted labels" in record.describe()
  assert f"after {record.epochs} epochs" in record.describe()
  assert "first 96 digits" in record.describe()
  again = zoo.pretrained("tiny", progress=False, shuffle_labels=True)  # the record travels
  assert again.from_cache and calls["train"] == 1
  assert (again.train_accuracy, again.epochs, again.memorized) == (
      record.train_accuracy, record.epochs, True)
  normal = zoo.pretrained("tiny", progress=False)
  assert normal.memorized is normal.train_accuracy is normal.epochs is None
  assert "permuted" not in normal.describe()


def test_hitting_the_cap_without_memorising_is_flagged(tiny_world, monkeypatch):
  spec = zoo.MODEL_SPECS["tiny"]
  hopeless = dataclasses.replace(  # one epoch cannot reach 100 %
      TINY_MEMORIZATION, config=dataclasses.replace(TINY_MEMORIZATION.config, epochs=1),
      target_accuracy=1.0)
  monkeypatch.setitem(zoo.MODEL_SPECS, "tiny", dataclasses.replace(spec, memorization=hopeless))
  with pytest.warns(RuntimeWarning, match="has not memorised them"):
    record = zoo.pretrained("tiny", progress=False, shuffle_labels=True)
  assert record.memorized is False and record.epochs == 1 and record.train_accuracy < 1.0
  assert "does NOT fit its permuted labels" in record.describe()
  with pytest.warns(RuntimeWarning, match="after the cap of 1 epochs"):
    again = zoo.pretrained("tiny", progress=False, shuffle_labels=True)  # loading warns too
  assert again.from_cache and again.memorized is False


def test_the_memorisation_recipe_is_in_the_key_of_shuffled_models_only(tiny_world, monkeypatch):
  calls, _ = tiny_world
  normal = json.loads((zoo.pretrained("tiny", progress=False).path / "record.json").read_text())
  # The key fields of a model on true labels are what they were before shuffled models got
  # their own recipe, so existing cache entries keep their folders.
  assert set(normal["key_fields"]) == {
      "format", "name", "model", "kwargs", "config", "train_split", "shuffle_labels", "data"}
  assert normal["key_fields"]["config"]["epochs"] == 2
  shuffled = zoo.pretrained("tiny", progress=False, shuffle_labels=True)
  fields = json.loads((shuffled.path / "record.json").read_text())["key_fields"]
  assert fields["memorization"] == {"train_size": 96, "target_accuracy": 0.95}
  assert fields["config"]["epochs"] == TINY_MEMORIZATION.config.epochs
  # Changing the recipe retrains the shuffled model, not the normal one.
  spec = zoo.MODEL_SPECS["tiny"]
  monkeypatch.setitem(zoo.MODEL_SPECS, "tiny", dataclasses.replace(
      spec, memorization=dataclasses.replace(TINY_MEMORIZATION, train_size=64)))
  assert not zoo.pretrained("tiny", progress=False, shuffle_labels=True).from_cache
  assert zoo.pretrained("tiny", progress=False).from_cache
  assert calls["train"] == 3


def test_the_default_recipe_memorises_with_a_cap():
  recipe = zoo.SHUFFLED_LABELS_RECIPE
  assert recipe.target_accuracy == 0.95 and recipe.train_size == 1000
  assert recipe.config.weight_decay == 0.0 and recipe.train_size % recipe.config.batch_size == 0
  assert all(spec.memorization is recipe for spec in zoo.MODEL_SPECS.values())


def test_changed_hyperparameters_retrain(tiny_world, monkeypatch):
  calls, _ = tiny_world
  zoo.pretrained("tiny", progress=False)
  spec = zoo.MODEL_SPECS["tiny"]
  monkeypatch.setitem(zoo.MODEL_SPECS, "tiny",
                      dataclasses.replace(spec, config=dataclasses.replace(spec.config, epochs=3)))
  zoo.pretrained("tiny", progress=False)
  assert calls["train"] == 2


def test_eval_split_changes_the_measurement_not_the_weights(tiny_world):
  calls, _ = tiny_world
  zoo.pretrained("tiny", progress=False)
  other = zoo.pretrained("tiny", eval_split="train", progress=False)
  assert calls["train"] == 1 and other.from_cache and other.eval_split == "train"


def test_environment_chooses_the_splits(tiny_world, monkeypatch):
  monkeypatch.setenv(zoo.TRAIN_SPLIT_ENV, "train[:64]")
  monkeypatch.setenv(zoo.EVAL_SPLIT_ENV, "test[:64]")
  record = zoo.pretrained("tiny", progress=False)
  assert (record.train_split, record.eval_split) == ("train[:64]", "test[:64]")
  assert "train[:64]" in record.describe() and "test[:64]" in record.describe()


@pytest.mark.parametrize("damage", [
    "garbage_params", "flipped_bytes", "truncated", "missing_record", "wrong_shapes", "nan",
    "missing_params", "garbage_record", "record_not_a_dict", "valid_npz_other_values",
])
def test_corrupted_entry_is_retrained_with_a_warning(tiny_world, damage):
  calls, _ = tiny_world
  entry = zoo.pretrained("tiny", progress=False).path
  params = entry / "params.npz"
  if damage == "garbage_params":
    params.write_bytes(b"not a zip file")
  elif damage == "flipped_bytes":  # inside the first stored array: a CRC mismatch
    raw = bytearray(params.read_bytes())
    for i in range(120, 136):
      raw[i] ^= 0xFF
    params.write_bytes(bytes(raw))
  elif damage == "truncated":  # a save cut short
    params.write_bytes(params.read_bytes()[: params.stat().st_size // 2])
  elif damage == "missing_record":
    (entry / "record.json").unlink()
  elif damage == "missing_params":
    params.unlink()
  elif damage == "garbage_record":
    (entry / "record.json").write_text("{not json")
  elif damage == "record_not_a_dict":
    (entry / "record.json").write_text("[1, 2]")
  elif damage == "valid_npz_other_values":  # readable, right shapes: only the SHA-256 tells
    stored = dict(np.load(params))
    np.savez(params, **{k: v + 1.0 for k, v in stored.items()})
  else:
    stored = dict(np.load(params))
    key = sorted(stored)[0]
    stored[key] = (np.zeros((3,), np.float32) if damage == "wrong_shapes"
                   else np.full_like(stored[key], np.nan))
    np.savez(params, **stored)
  with pytest.warns(RuntimeWarning, match="retraining"):
    record = zoo.pretrained("tiny", progress=False)
  assert calls["train"] == 2 and not record.from_cache
  assert zoo.pretrained("tiny", progress=False).from_cache  # repaired


def test_the_record_holds_the_parameter_files_sha256(tiny_world):
  import hashlib

  entry = zoo.pretrained("tiny", progress=False).path
  record = json.loads((entry / "record.json").read_text())
  assert record["params_sha256"] == hashlib.sha256((entry / "params.npz").read_bytes()).hexdigest()


def test_an_entry_without_a_checksum_still_loads(tiny_world):
  """Entries written before the checksum was recorded are read as before."""
  calls, _ = tiny_world
  entry = zoo.pretrained("tiny", progress=False).path
  record = json.loads((entry / "record.json").read_text())
  del record["params_sha256"]
  (entry / "record.json").write_text(json.dumps(record))
  assert zoo.pretrained("tiny", progress=False).from_cache and calls["train"] == 1


def test_a_save_killed_midway_leaves_nothing_that_loads(tiny_world, monkeypatch):
  """A process killed while saving leaves at most a temporary folder, never an entry."""
  calls, cache = tiny_world
  real_savez = zoo.np.savez

  def killed(path, **arrays):
    real_savez(path, **dict(list(arrays.items())[:1]))  # part of the file written...
    raise KeyboardInterrupt  # ...then the process dies

  monkeypatch.setattr(zoo.np, "savez", killed)
  with pytest.raises(KeyboardInterrupt):
    zoo.pretrained("tiny", progress=False)
  monkeypatch.setattr(zoo.np, "savez", real_savez)
  assert not [p for p in cache.iterdir() if not p.name.startswith(".")]  # no entry
  record = zoo.pretrained("tiny", progress=False)  # trains again, cleanly
  assert calls["train"] == 2 and not record.from_cache
  assert zoo.pretrained("tiny", progress=False).from_cache


@pytest.mark.parametrize("errno_name", ["EROFS", "ENOSPC", "EACCES"])
def test_an_unwritable_cache_still_gives_the_trained_model(tiny_world, monkeypatch, errno_name):
  """Read-only or full cache folder: the model is returned with a warning, not a crash.

  Simulated at the first write (tests may run as root, for whom a read-only mode
  bit does not stop a write).
  """
  import errno

  calls, cache = tiny_world

  def refuse(*args, **kwargs):
    code = getattr(errno, errno_name)
    raise OSError(code, os.strerror(code))

  monkeypatch.setattr(zoo.tempfile, "mkdtemp", refuse)
  with pytest.warns(RuntimeWarning, match="could not save"):
    record = zoo.pretrained("tiny", progress=False)
  assert calls["train"] == 1 and not record.from_cache
  assert record.eval_accuracy > 0.5  # a trained model, usable
  assert not list(cache.iterdir())  # nothing half-written


def test_an_entry_saved_meanwhile_by_another_process_is_kept(tiny_world, monkeypatch):
  calls, cache = tiny_world
  real_replace = zoo.os.replace

  def another_process_wins(src, dst):
    # Another process finishes training the same model first: `dst` exists now.
    shutil.copytree(src, dst)
    (Path(dst) / "winner").write_text("the other process")
    real_replace(src, dst)  # raises: a folder cannot replace a non-empty folder

  monkeypatch.setattr(zoo.os, "replace", another_process_wins)
  record = zoo.pretrained("tiny", progress=False)  # trains, then loses the race
  monkeypatch.setattr(zoo.os, "replace", real_replace)
  assert calls["train"] == 1 and not record.from_cache
  assert (record.path / "winner").exists()  # the other process's entry is kept
  assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary left
  again = zoo.pretrained("tiny", progress=False)
  assert again.from_cache and calls["train"] == 1


def test_cache_holds_no_pickle(tiny_world):
  entry = zoo.pretrained("tiny", progress=False).path
  with np.load(entry / "params.npz", allow_pickle=False) as stored:
    assert all(stored[name].dtype == np.float32 for name in stored.files)
  record = json.loads((entry / "record.json").read_text())
  assert record["key_fields"]["name"] == "tiny"


def test_unknown_name_lists_the_known_ones():
  with pytest.raises(ValueError, match=r"name: expected one of \[.*'cnn'.*\], got 'resnet'"):
    zoo.pretrained("resnet")


# --- cached: a user's own model class ------------------------------------------------------

WIDTH = {"value": 3}  # a shape the constructor reads from outside its kwargs


class _UserNet(nnx.Module):
  """conv → BatchNorm → ReLU → GAP → dense (→ Dropout): a user's model with a training mode."""

  def __init__(self, width: int = 4, dropout: bool = False, *, rngs: nnx.Rngs):
    self.conv = nnx.Conv(1, width, (3, 3), strides=2, rngs=rngs)
    self.bn = nnx.BatchNorm(width, momentum=0.5, rngs=rngs)
    self.extra = nnx.Linear(width, WIDTH["value"], rngs=rngs)
    self.head = nnx.Linear(WIDTH["value"], 2, rngs=rngs)
    self.dropout = nnx.Dropout(0.1, rngs=rngs) if dropout else None

  def __call__(self, x):
    h = jax.nn.relu(self.bn(self.conv(x))).mean(axis=(1, 2))
    h = self.extra(h)
    if self.dropout is not None:
      h = self.dropout(h)
    return self.head(h)


_SMALL = TrainConfig(epochs=2, batch_size=32)


def test_cached_trains_once_then_loads_the_batchnorm_statistics_too(tiny_world):
  calls, cache = tiny_world
  first = zoo.cached("user", _UserNet, {"width": 4}, config=_SMALL, progress=False)
  second = zoo.cached("user", _UserNet, {"width": 4}, config=_SMALL, progress=False)
  assert calls["train"] == 1 and not first.from_cache and second.from_cache
  assert first.path == second.path and first.path.parent == cache
  assert first.path.name.startswith("user-") and first.name == "user"
  # Trained in training mode: the running statistics moved away from (0, 1).
  assert not np.allclose(first.model.bn.mean[...], 0.0)
  stored = _params(second.model)
  assert any("mean" in key for key in stored) and any("var" in key for key in stored)
  for key, value in _params(first.model).items():
    np.testing.assert_array_equal(value, stored[key])
  for record in (first, second):  # returned in evaluation mode
    assert record.model.bn.use_running_average
  x = zoo.eval_data()[0][:8]
  np.testing.assert_array_equal(first.model(x), second.model(x))
  assert second.eval_accuracy == first.eval_accuracy


@pytest.mark.parametrize("change", [
    {"kwargs": {"width": 5}}, {"config": dataclasses.replace(_SMALL, epochs=3)},
    {"seed": 1}, {"train_split": "train[:64]"}, {"name": "other"},
])
def test_cached_retrains_when_the_key_changes(tiny_world, change):
  calls, _ = tiny_world
  arguments = {"name": "user", "kwargs": {"width": 4}, "config": _SMALL} | change
  name = arguments.pop("name")
  base = zoo.cached("user", _UserNet, {"width": 4}, config=_SMALL, progress=False)
  other = zoo.cached(name, _UserNet, progress=False, **arguments)
  assert calls["train"] == 2 and other.path != base.path and not other.from_cache


def test_cached_hashes_the_parameter_shapes(tiny_world, monkeypatch):
  """A shape that changes without any argument changing (here a global) retrains."""
  calls, _ = tiny_world
  base = zoo.cached("user", _UserNet, config=_SMALL, progress=False)
  monkeypatch.setitem(WIDTH, "value", 5)
  other = zoo.cached("user", _UserNet, config=_SMALL, progress=False)
  assert calls["train"] == 2 and other.path != base.path
  assert other.model.head.kernel.shape == (5, 2)


def test_cached_does_not_hash_the_code_of_call(tiny_world, monkeypatch):
  """The documented limit: same name, arguments and shapes → the old weights are loaded."""
  calls, _ = tiny_world
  base = zoo.cached("user", _UserNet, config=_SMALL, progress=False)
  original = _UserNet.__call__
  monkeypatch.setattr(_UserNet, "__call__", lambda self, x: -original(self, x))
  again = zoo.cached("user", _UserNet, config=_SMALL, progress=False)
  assert calls["train"] == 1 and again.from_cache and again.path == base.path
  x = zoo.eval_data()[0][:4]
  np.testing.assert_array_equal(again.model(x), -original(base.model, x))  # new code, old weights


def test_cached_model_with_random_state_loads_and_runs(tiny_world):
  calls, _ = tiny_world
  zoo.cached("drop", _UserNet, {"dropout": True}, config=_SMALL, progress=False)
  loaded = zoo.cached("drop", _UserNet, {"dropout": True}, config=_SMALL, progress=False)
  assert calls["train"] == 1 and loaded.from_cache and loaded.model.dropout.deterministic
  x = zoo.eval_data()[0][:4]
  assert np.isfinite(np.asarray(loaded.model(x))).all()


@pytest.mark.parametrize("bad, match", [
    ({"name": "../escape"}, r"name: expected letters, digits"),
    ({"kwargs": {"width": np.int64(4)}}, r"kwargs: expected JSON-serialisable"),
    ({"constructor": "not a class"}, r"constructor: expected a model class"),
    ({"config": {"epochs": 1}}, r"config: expected a TrainConfig"),
])
def test_cached_rejects_bad_arguments(tiny_world, bad, match):
  arguments = {"name": "user", "constructor": _UserNet, "kwargs": None, "config": _SMALL} | bad
  with pytest.raises(ValueError, match=match):
    zoo.cached(arguments.pop("name"), arguments.pop("constructor"), progress=False,
               **arguments)
