"""What the bad-input tables share: the ``Bad`` record, tiny inputs and the batteries.

``tests/test_bad_inputs.py`` holds the table for the package's original names and
collects the tables of the method families from ``tests/bad_inputs_*.py`` (each
exports ``CASES`` and, optionally, ``NO_USER_INPUT``), so that a new family adds
its entries in its own file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from model_factories import numpy_model, toy_batch, toy_mlp
from saliency_guide import methods, metrics
from saliency_guide.models import GapCNN


@dataclasses.dataclass(frozen=True)
class Bad:
  """One bad call: ``call()`` must raise ``error`` with ``match`` in its message."""

  what: str  # the test id: what is wrong with the input
  call: Callable[[], Any]
  error: type[Exception] | tuple[type[Exception], ...]
  match: str  # a regular expression; names the argument at fault
  xfail: str | None = None  # why the error is not yet what it should be


# --------------------------------------------------------------------------------------
# Tiny inputs, built lazily (once) so that collecting the tests costs nothing.
# --------------------------------------------------------------------------------------


@functools.cache
def mlp() -> nnx.Module:
  """A 3-class MLP on 4×5×1 images (tests/model_factories.py)."""
  return toy_mlp()


@functools.cache
def gap() -> nnx.Module:
  """A 3-class GapCNN with 2 channels per conv layer, for 8×8×1 images."""
  return numpy_model(lambda: GapCNN(channels=(2, 2, 2), num_classes=3, rngs=nnx.Rngs(0)))


def x() -> np.ndarray:
  return toy_batch(3)[0]


def t() -> np.ndarray:
  return toy_batch(3)[1]


def x8() -> np.ndarray:
  return np.random.default_rng(0).random((3, 8, 8, 1), dtype=np.float32)


def key() -> jax.Array:
  return jax.random.key(0)


@functools.cache
def tmp() -> Path:
  """A folder for files the data and cache entries need (removed with the process)."""
  folder = Path(tempfile.mkdtemp(prefix="saliency_guide_bad_inputs_"))
  (folder / "garbage.gz").write_bytes(b"not a gzip file")
  (folder / "garbage.idx").write_bytes(b"\x00\x00\x08")
  return folder


@contextlib.contextmanager
def environment(**values: str):
  old = {k: os.environ.get(k) for k in values}
  os.environ.update(values)
  try:
    yield
  finally:
    for k, v in old.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v


def with_env(call: Callable[[], Any], **values: str) -> Callable[[], Any]:
  def run():
    with environment(**values):
      return call()
  return run


def offline(call: Callable[[], Any]) -> Callable[[], Any]:
  """``call`` with the MNIST folder and the model cache in an empty temporary folder.

  A bad option that is not caught goes on to load the data and fails there on the
  missing files (never a download, never a training run).
  """
  def run():
    with environment(SALIENCY_GUIDE_MNIST_DIR=str(tmp()),
                     SALIENCY_GUIDE_CACHE=str(tmp() / "cache")):
      return call()
  return run


def roar_with(config: metrics.ROARConfig) -> Any:
  return metrics.roar(mlp(), {"gradients": methods.gradients}, (x(), t()), (x(), t()),
                      config=config)


def method_battery(method: Callable[..., Any], model: Callable[[], nnx.Module] = mlp,
                   images: Callable[[], np.ndarray] = x) -> list[Bad]:
  """The bad inputs every ``method(model, images, targets)`` must reject."""
  m, i, tt = model, images, t
  return [
      Bad("images rank 3", lambda: method(m(), i()[..., 0], tt()), ValueError, "images"),
      Bad("images NCHW", lambda: method(m(), np.moveaxis(i(), -1, 1), tt()), ValueError,
          "images"),
      Bad("images NaN", lambda: method(m(), np.where(i() > 0.5, np.nan, i()), tt()),
          ValueError, "images"),
      Bad("images Inf", lambda: method(m(), np.full_like(i(), np.inf), tt()), ValueError,
          "images"),
      Bad("images integer", lambda: method(m(), (255 * i()).astype(np.uint8), tt()),
          TypeError, "images"),
      Bad("empty batch", lambda: method(m(), i()[:0], tt()[:0]), ValueError, "images"),
      Bad("target out of range", lambda: method(m(), i(), tt() + 3), ValueError, "targets"),
      Bad("target negative", lambda: method(m(), i(), tt() - 3), ValueError, "targets"),
      Bad("targets float", lambda: method(m(), i(), tt().astype(np.float32)), TypeError,
          "targets"),
      Bad("targets too few", lambda: method(m(), i(), tt()[:2]), ValueError, "targets"),
      Bad("model not a module", lambda: method("cnn", i(), tt()), TypeError, "model"),
  ]


def layer_cases(method: Callable[..., Any]) -> list[Bad]:
  """The bad ``layer`` / ``upsample`` options of the CAM family."""
  return [
      Bad("layer unknown", lambda: method(gap(), x8(), t(), layer="conv9"), ValueError, "layer"),
      Bad("layer a number", lambda: method(gap(), x8(), t(), layer=3), TypeError, "layer"),
      Bad("upsample not a flag", lambda: method(gap(), x8(), t(), upsample="yes"), TypeError,
          "upsample"),
  ]


def relu_flag(method: Callable[..., Any]) -> list[Bad]:
  return [Bad("relu not a flag", lambda: method(gap(), x8(), t(), relu="no"), TypeError,
              "relu")]


def maps_pair_cases(function: Callable[..., Any]) -> list[Bad]:
  """Bad ``maps_a`` / ``maps_b`` of a similarity between two batches of maps."""
  a = lambda: np.random.default_rng(1).random((3, 8, 8), dtype=np.float32)  # noqa: E731
  return [
      Bad("maps of different shapes", lambda: function(a(), a()[:2]), ValueError, "maps_b"),
      Bad("maps rank 2", lambda: function(a()[0], a()[0]), ValueError, "maps_a"),
      Bad("maps NaN", lambda: function(np.full((3, 8, 8), np.nan, np.float32), a()),
          ValueError, "maps_a"),
  ]


def smoothed() -> Callable[..., Any]:
  return methods.smoothgrad(methods.gradients, samples=2, key=key())


def randomization_result() -> metrics.RandomizationResult:
  """A RandomizationResult of one step and three images, for randomization_verdict's options.

  Built by hand: a real one (model_randomization) compiles SSIM and HOG, ~10 s here.
  """
  scores = [np.full((1, 3), 0.5, np.float32)] * len(metrics.Similarity._fields)
  return metrics.RandomizationResult(
      steps=("head",), original=np.zeros((3, 4, 5), np.float32),
      maps=np.zeros((1, 3, 4, 5), np.float32), similarity=metrics.Similarity(*scores))
