"""Pretrained MNIST classifiers: trained once, then loaded from a disk cache.

:func:`pretrained` is what the tutorials call; :func:`cached` does the same for a
model class of your own. The first call for a given configuration trains the
model (tens of seconds on a laptop CPU) and saves its parameters; later calls
load them. The cache key is a hash of everything that changes the weights: the
model name and its constructor arguments, the training hyper-parameters, the
seed, the training split, whether labels were shuffled, and a fingerprint of the
training data itself. Change any of them and the model is retrained.

Models for the data-randomisation test (``shuffle_labels=True``) follow their
own recipe (:data:`SHUFFLED_LABELS_RECIPE`): they are trained on permuted labels
until they fit them, as in Adebayo et al. (2018).

Cache location: ``$SALIENCY_GUIDE_CACHE``, else the platform's user cache
folder (``~/.cache/saliency_guide`` on Linux). Files are a NumPy ``.npz`` of the
model's state (parameters and BatchNorm statistics; no random-number state),
read with ``allow_pickle=False`` (no pickle anywhere), and a JSON record that
holds the SHA-256 of the parameter file, verified on every load. An entry is
written into a temporary folder and renamed into place, so a process killed
mid-save leaves no entry that loads. A corrupted, truncated, partial or
incompatible entry is retrained with one warning; a cache folder that cannot be
written (read-only, full) still gives the trained model, with a warning that it
was not saved.

Which data? ``$SALIENCY_GUIDE_TRAIN_SPLIT`` and ``$SALIENCY_GUIDE_EVAL_SPLIT``
(defaults ``"train"`` and ``"test"``) choose the splits; the docs build in CI,
which only has the MNIST test files, uses ``"test[:8000]"`` and ``"test[8000:]"``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import platformdirs
from flax import nnx

from saliency_guide import data as data_lib
from saliency_guide.models import CNN, MLP, GapCNN
from saliency_guide.training import TrainConfig, accuracy, train
from saliency_guide.validation import check_flag, describe

__all__ = [
    "CACHE_ENV",
    "EVAL_SPLIT_ENV",
    "MODEL_SPECS",
    "SHUFFLED_LABELS_RECIPE",
    "TRAIN_SPLIT_ENV",
    "MemorizationRecipe",
    "ModelSpec",
    "Pretrained",
    "cache_folder",
    "cached",
    "default_splits",
    "eval_data",
    "pretrained",
    "train_data",
]

CACHE_ENV = "SALIENCY_GUIDE_CACHE"
TRAIN_SPLIT_ENV = "SALIENCY_GUIDE_TRAIN_SPLIT"
EVAL_SPLIT_ENV = "SALIENCY_GUIDE_EVAL_SPLIT"
_FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class MemorizationRecipe:
  """How a model is trained on permuted labels until it fits them (data randomisation).

  The model is trained on the first ``train_size`` digits of the training split
  (all of them if the split is smaller), their labels randomly permuted, and
  stops after the first epoch at whose end its accuracy on those permuted
  labels (measured in evaluation mode) reaches ``target_accuracy``, or after
  ``config.epochs`` epochs (the cap), whichever comes first.

  Attributes:
    train_size: digits to memorise (the first ones of the training split).
    config: hyper-parameters; ``config.epochs`` is the cap (part of the cache key).
    target_accuracy: training accuracy on the permuted labels that counts as fitted.
  """

  train_size: int
  config: TrainConfig
  target_accuracy: float = 0.95


#: The recipe of every ``pretrained(name, shuffle_labels=True)`` model.
#:
#: Adebayo et al. (2018) compare the maps of a model with those of the same
#: architecture trained on permuted labels *until it fits them* (≥ 95 % training
#: accuracy): such a model has learnt nothing about digits, only a lookup table,
#: so a map that still looks like the real model's does not reflect what was
#: learnt. Trained with the normal recipe (6 epochs, weight decay) a GapCNN
#: reaches only ~12 % on its own permuted labels: not that test.
#:
#: Fitting 8,000 random labels would take far longer than the docs build (2 CPU
#: cores) can afford, so the model memorises the **first 1,000 digits** of the
#: training split: with no weight decay, batches of 100 (every digit in every
#: epoch) and a learning rate of 0.01 a GapCNN passes 95 % after about 40 epochs
#: (~40,000 examples seen, less than one normal GapCNN training), and the cap of
#: 100 epochs leaves room for slower machines and other seeds.
SHUFFLED_LABELS_RECIPE = MemorizationRecipe(
    train_size=1000,
    config=TrainConfig(epochs=100, batch_size=100, learning_rate=1e-2, weight_decay=0.0),
    target_accuracy=0.95,
)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """How to build and train one named model.

  Attributes:
    constructor: the model class (called as ``constructor(**kwargs, rngs=...)``).
    kwargs: constructor arguments (JSON-serialisable; part of the cache key).
    config: training hyper-parameters (part of the cache key).
    memorization: how the model is trained with ``shuffle_labels=True``
      (default :data:`SHUFFLED_LABELS_RECIPE`; part of that model's cache key).
  """

  constructor: Callable[..., nnx.Module]
  kwargs: dict[str, Any]
  config: TrainConfig
  memorization: MemorizationRecipe = SHUFFLED_LABELS_RECIPE


#: The named models :func:`pretrained` knows. Hyper-parameters were chosen so
#: that the docs build (8,000 training digits, 2 CPU cores) trains all three in
#: about a minute and each reaches >= 96 % on 2,000 held-out digits.
MODEL_SPECS: dict[str, ModelSpec] = {
    "mlp": ModelSpec(MLP, {"hidden": [256, 128]}, TrainConfig(epochs=10)),
    "cnn": ModelSpec(CNN, {"channels": [32, 64], "hidden": 128}, TrainConfig(epochs=4)),
    "gap_cnn": ModelSpec(
        GapCNN, {"channels": [32, 64, 128]}, TrainConfig(epochs=6, learning_rate=5e-3)
    ),
}


@dataclasses.dataclass
class Pretrained:
  """A trained model and where it came from.

  Attributes:
    model: the trained NNX model (returns logits), in evaluation mode (``model.eval()``).
    name: its name in :data:`MODEL_SPECS`, or the name :func:`cached` stored it under.
    train_split: the MNIST split it was trained on.
    eval_split: the split :attr:`eval_accuracy` was measured on.
    eval_accuracy: accuracy on ``eval_split`` (measured after training, or at load time
      when the evaluation digits differ from those it was measured on).
    train_seconds: wall time the training took (when it was trained).
    from_cache: whether the weights were loaded rather than trained now.
    shuffle_labels: whether the training labels were randomly permuted.
    seed: seed of the initialisation and of the data order.
    path: the cache entry's folder.
    data_dir: the folder of MNIST files it was loaded from (``None``: the default).
    train_size: number of digits trained on (the first ones of ``train_split``;
      fewer than the split for a model trained on shuffled labels, see
      :data:`SHUFFLED_LABELS_RECIPE`).
    train_accuracy: accuracy on the labels it was trained on (the permuted ones),
      measured after training; ``None`` for a model trained on true labels.
    epochs: epochs trained (``None`` for a model trained on true labels: its
      recipe's ``config.epochs``).
    target_accuracy: the training accuracy that counts as having fitted the
      permuted labels (``None`` for true labels).
    memorized: whether ``train_accuracy >= target_accuracy``: the model fits its
      permuted labels, as the data-randomisation test requires. ``False`` if
      the cap on epochs was hit first (a warning says so); ``None`` for true labels.
  """

  model: nnx.Module
  name: str
  train_split: str
  eval_split: str
  eval_accuracy: float
  train_seconds: float
  from_cache: bool
  shuffle_labels: bool
  seed: int
  path: Path
  data_dir: str | None = None
  train_size: int | None = None
  train_accuracy: float | None = None
  epochs: int | None = None
  target_accuracy: float | None = None
  memorized: bool | None = None

  def train_data(self) -> tuple[np.ndarray, np.ndarray]:
    """The ``(images, labels)`` the model was trained on.

    The first :attr:`train_size` images of :attr:`train_split` (all of them for
    a model trained on true labels); their labels, randomly permuted
    (reproducibly, from :attr:`seed`) when :attr:`shuffle_labels`.
    """
    images, labels = data_lib.load_mnist(self.train_split, data_dir=self.data_dir)
    if self.shuffle_labels:
      return _memorization_set(images, labels, self.train_size, self.seed)
    return images, labels

  def eval_data(self) -> tuple[np.ndarray, np.ndarray]:
    """The ``(images, labels)`` of :attr:`eval_split`."""
    return data_lib.load_mnist(self.eval_split, data_dir=self.data_dir)

  def describe(self) -> str:
    """One line saying what the model was trained and evaluated on.

    For a model trained on shuffled labels it also says whether it fits them:
    its training accuracy on the permuted labels and the epochs it took.
    """
    source = "loaded from cache" if self.from_cache else f"trained in {self.train_seconds:.0f} s"
    labels = f" (first {self.train_size:,} digits), shuffled labels" if self.shuffle_labels else ""
    line = (
        f"{self.name}: trained on MNIST '{self.train_split}'{labels} (seed {self.seed}), "
        f"{self.eval_accuracy:.2%} accuracy on '{self.eval_split}' ({source})"
    )
    if self.memorized is not None:
      fit = "fits its permuted labels" if self.memorized else "does NOT fit its permuted labels"
      line += (f"; {fit}: {self.train_accuracy:.1%} training accuracy after {self.epochs} "
               f"epochs (target {self.target_accuracy:.0%})")
    return line


def default_splits() -> tuple[str, str]:
  """``(train_split, eval_split)`` from the environment, defaulting to ``("train", "test")``.

  The variables ``SALIENCY_GUIDE_TRAIN_SPLIT`` and ``SALIENCY_GUIDE_EVAL_SPLIT``
  (:data:`TRAIN_SPLIT_ENV`, :data:`EVAL_SPLIT_ENV`), when set, must hold a split
  :func:`~saliency_guide.data.load_mnist` accepts (e.g. ``"test[:8000]"``).

  Returns:
    ``(train_split, eval_split)``, two split specs.

  Raises:
    ValueError: a variable holds an invalid split; the message names the variable.

  Example:
    >>> import os
    >>> os.environ.get("SALIENCY_GUIDE_TRAIN_SPLIT") is None and default_splits()[0] == "train" \
        or default_splits()[0] == os.environ["SALIENCY_GUIDE_TRAIN_SPLIT"]
    True
  """
  splits = []
  for variable, default in ((TRAIN_SPLIT_ENV, "train"), (EVAL_SPLIT_ENV, "test")):
    value = os.environ.get(variable)
    if value:
      try:
        data_lib._resolve_split(value)  # the parser load_mnist uses
      except ValueError as err:
        raise ValueError(f"{variable}: the environment variable holds an invalid MNIST "
                         f"split {value!r}: {err}") from None
    splits.append(value or default)
  return splits[0], splits[1]


def _check_seed(seed: Any) -> int:
  """``seed`` if it is an integer, else a ``TypeError`` naming ``seed``."""
  if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
    raise TypeError(f"seed: expected an integer, got {describe(seed)}")
  return seed


def train_data(split: str | None = None, *, data_dir: str | None = None):
  """``(images, labels)`` of ``split`` (default: the configured training split)."""
  return data_lib.load_mnist(split or default_splits()[0], data_dir=data_dir)


def eval_data(split: str | None = None, *, data_dir: str | None = None):
  """``(images, labels)`` of ``split`` (default: the configured evaluation split)."""
  return data_lib.load_mnist(split or default_splits()[1], data_dir=data_dir)


def cache_folder() -> Path:
  """The folder of the model cache: ``$SALIENCY_GUIDE_CACHE``, else the user cache folder.

  The platform's user cache folder is ``~/.cache/saliency_guide`` on Linux. Tutorials
  that hand results to one another (the comparison page writes what the decision
  guide reads) keep them here too, so that a notebook run from any folder finds them.

  Returns:
    The path (it may not exist yet: the first save creates it).

  Example:
    >>> import saliency_guide as sg
    >>> sg.zoo.cache_folder().name != ""
    True
  """
  return _cache_root(None)


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
  if cache_dir is not None:
    return Path(cache_dir)
  return Path(os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("saliency_guide"))


def _shuffled(labels: np.ndarray, seed: int) -> np.ndarray:
  """The permuted labels of a data-randomisation model trained with ``seed``."""
  return np.random.default_rng(seed + 1).permutation(labels)


def _memorization_set(
    images: np.ndarray, labels: np.ndarray, train_size: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """The first ``train_size`` digits and their permuted labels (:class:`MemorizationRecipe`)."""
  images, labels = images[:train_size], labels[:train_size]
  return images, _shuffled(labels, seed)


def _fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
  digest = hashlib.sha256()
  digest.update(np.ascontiguousarray(images).tobytes())
  digest.update(np.ascontiguousarray(labels).tobytes())
  return digest.hexdigest()


#: What the cache stores: every variable but random-number state (parameters,
#: BatchNorm running statistics, ...). The package's models hold parameters only.
_SAVED = nnx.Not(nnx.RngState)


def _flat_params(model: nnx.Module) -> dict[str, np.ndarray]:
  pure = nnx.to_pure_dict(nnx.state(model, _SAVED))
  leaves, _ = jax.tree_util.tree_flatten_with_path(pure)
  return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def _load_params(model: nnx.Module, path: Path) -> None:
  """Overwrite ``model``'s saved state from ``path``; ValueError if it doesn't fit."""
  state = nnx.state(model, _SAVED)
  pure = nnx.to_pure_dict(state)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(pure)
  with np.load(path, allow_pickle=False) as stored:
    keys = set(stored.files)
    expected = {jax.tree_util.keystr(p) for p, _ in leaves}
    if keys != expected:
      raise ValueError(f"parameter names differ: {sorted(keys ^ expected)[:4]}")
    values = []
    for p, leaf in leaves:
      value = stored[jax.tree_util.keystr(p)]
      if value.shape != leaf.shape or value.dtype != leaf.dtype:
        raise ValueError(f"{jax.tree_util.keystr(p)}: stored {value.shape} {value.dtype}, "
                         f"model has {leaf.shape} {leaf.dtype}")
      if not np.isfinite(value).all():
        raise ValueError(f"{jax.tree_util.keystr(p)}: non-finite values")
      # JAX arrays, not NumPy buffers: NNX writes into a NumPy-backed parameter in
      # place, so a clone (nnx.clone shares the buffer) edited in place would edit
      # the cached model too.
      values.append(jnp.asarray(value))
  nnx.replace_by_pure_dict(state, jax.tree_util.tree_unflatten(treedef, values))
  nnx.update(model, state)


def pretrained(
    name: str,
    *,
    train_split: str | None = None,
    eval_split: str | None = None,
    seed: int = 0,
    shuffle_labels: bool = False,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> Pretrained:
  """A trained MNIST classifier: from the cache, or trained now and cached.

  Args:
    name: one of :data:`MODEL_SPECS` (``"mlp"``, ``"cnn"``, ``"gap_cnn"``).
    train_split: MNIST split to train on (default :func:`default_splits`).
    eval_split: split to measure the accuracy on (default :func:`default_splits`).
    seed: seed of the initialisation and the data order.
    shuffle_labels: train on randomly permuted labels until the model fits them
      (the "data randomisation" sanity check of Adebayo et al., 2018), by the
      spec's :class:`MemorizationRecipe` (default :data:`SHUFFLED_LABELS_RECIPE`:
      the first 1,000 digits, until 95 % training accuracy on their permuted
      labels); a separate cache entry. Check :attr:`Pretrained.memorized`.
    data_dir: folder of MNIST IDX files (see :func:`saliency_guide.data.load_mnist`).
    cache_dir: cache folder (default ``$SALIENCY_GUIDE_CACHE`` or the user cache).
    progress: show a progress bar while training.

  Returns:
    A :class:`Pretrained` record holding ``.model``.

  Raises:
    TypeError: a ``seed`` that is not an integer, a ``shuffle_labels`` that is
      not a bool (both checked before any data is loaded).
    ValueError: an unknown ``name`` or split.

  Warns:
    RuntimeWarning: with ``shuffle_labels=True``, when the model hit the cap on
      epochs before fitting its permuted labels.

  Example:
    >>> record = pretrained("cnn")  # doctest: +SKIP
    >>> print(record.describe())  # doctest: +SKIP
    cnn: trained on MNIST 'train' (seed 0), 99.1% accuracy on 'test' (trained in 95 s)
  """
  if name not in MODEL_SPECS:
    raise ValueError(f"name: expected one of {sorted(MODEL_SPECS)}, got {name!r}")
  _check_seed(seed)
  check_flag("shuffle_labels", shuffle_labels)
  spec = MODEL_SPECS[name]
  recipe = spec.memorization if shuffle_labels else None
  config = dataclasses.replace(recipe.config if recipe else spec.config, seed=seed)
  train_split, eval_split = _splits(train_split, eval_split)
  data_dir = os.fspath(data_dir) if data_dir is not None else None
  images, labels = data_lib.load_mnist(train_split, data_dir=data_dir)
  if recipe:
    images, labels = _memorization_set(images, labels, recipe.train_size, seed)
  key_fields = {
      "format": _FORMAT_VERSION,
      "name": name,
      "model": spec.constructor.__name__,
      "kwargs": spec.kwargs,
      "config": dataclasses.asdict(config),
      "train_split": train_split,
      "shuffle_labels": shuffle_labels,
      "data": _fingerprint(images, labels),
  }
  if recipe:  # only here: the entries of models trained on true labels keep their keys
    key_fields["memorization"] = {
        "train_size": recipe.train_size, "target_accuracy": recipe.target_accuracy,
    }

  def build() -> nnx.Module:
    return spec.constructor(**spec.kwargs, rngs=nnx.Rngs(seed))

  caller = f"pretrained({name!r}{', shuffle_labels=True' if shuffle_labels else ''})"
  return _load_or_train(
      caller, name, build, key_fields, config, (images, labels),
      train_split=train_split, eval_split=eval_split, shuffle_labels=shuffle_labels,
      data_dir=data_dir, cache_dir=cache_dir, progress=progress,
      target_accuracy=recipe.target_accuracy if recipe else None,
  )


def cached(
    name: str,
    constructor: Callable[..., nnx.Module],
    kwargs: Mapping[str, Any] | None = None,
    *,
    config: TrainConfig | None = None,
    seed: int | None = None,
    train_split: str | None = None,
    eval_split: str | None = None,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> Pretrained:
  """A model class of your own, trained on MNIST once, then loaded from the cache.

  The model is ``constructor(**kwargs, rngs=nnx.Rngs(seed))``. It is trained in
  training mode (``model.train()``: BatchNorm normalises with the batch's
  statistics and updates its running averages, Dropout is active) and returned in
  evaluation mode (``model.eval()``), whether trained now or loaded. The cache
  stores every variable but random-number state, so BatchNorm statistics travel
  with the parameters.

  The cache key hashes ``name``, the constructor's module and qualified name,
  ``kwargs``, ``config``, ``seed``, the training split and its data, and the name,
  shape and dtype of every stored variable. Change any of them and the model is
  retrained. The code of the class is **not** hashed: after editing what
  ``__call__`` computes without changing any of those (a ReLU moved, a residual
  added), pass a new ``name`` or ``cache_dir``, or the old weights are loaded into
  the new code.

  Args:
    name: a label for the cache entry (letters, digits, ``_``, ``.``, ``-``).
    constructor: the model class (or any callable) returning an ``nnx.Module``
      whose ``__call__`` maps ``(B, 28, 28, 1)`` images to ``(B, 10)`` logits.
    kwargs: its constructor arguments, JSON-serialisable (tuples are hashed as
      lists).
    config: training hyper-parameters (default ``TrainConfig()``).
    seed: seed of the initialisation and of the data order (default
      ``config.seed``).
    train_split: MNIST split to train on (default :func:`default_splits`).
    eval_split: split to measure the accuracy on (default :func:`default_splits`).
    data_dir: folder of MNIST IDX files (see :func:`saliency_guide.data.load_mnist`).
    cache_dir: cache folder (default ``$SALIENCY_GUIDE_CACHE`` or the user cache).
    progress: show a progress bar while training.

  Returns:
    A :class:`Pretrained` record holding ``.model`` (trained with
    :func:`~saliency_guide.training.train`).

  Raises:
    TypeError: ``kwargs`` that are not a mapping, a ``seed`` that is not an integer.
    ValueError: a bad ``name``, ``kwargs`` that are not JSON-serialisable, or a
      ``constructor`` that does not return an ``nnx.Module``.

  Example:
    >>> from saliency_guide.models import MLP
    >>> record = cached("my_mlp", MLP, {"hidden": [64]},  # doctest: +SKIP
    ...                 config=TrainConfig(epochs=2))
    >>> record.eval_accuracy > 0.9  # doctest: +SKIP
    True
  """
  if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
    raise ValueError(
        f"name: expected letters, digits, '_', '.' or '-' (a folder name), got {name!r}"
    )
  if not callable(constructor):
    raise ValueError(f"constructor: expected a model class or callable, got {constructor!r}")
  if kwargs is not None and not isinstance(kwargs, Mapping):
    raise TypeError(f"kwargs: expected a mapping of constructor arguments (a dict) or None, "
                    f"got {describe(kwargs)}")
  kwargs = dict(kwargs or {})
  try:
    hashed_kwargs = json.loads(json.dumps(kwargs, sort_keys=True))
  except (TypeError, ValueError) as err:
    raise ValueError(
        f"kwargs: expected JSON-serialisable constructor arguments (they are part of the "
        f"cache key), got {kwargs!r} ({err})"
    ) from None
  config = TrainConfig() if config is None else config
  if not isinstance(config, TrainConfig):
    raise ValueError(f"config: expected a TrainConfig, got {type(config).__name__}")
  seed = config.seed if seed is None else _check_seed(seed)
  config = dataclasses.replace(config, seed=seed)
  train_split, eval_split = _splits(train_split, eval_split)
  data_dir = os.fspath(data_dir) if data_dir is not None else None

  def build() -> nnx.Module:
    return constructor(**kwargs, rngs=nnx.Rngs(seed))

  skeleton = nnx.eval_shape(build)
  if not isinstance(skeleton, nnx.Module):
    raise ValueError(f"constructor: expected it to return an nnx.Module, got "
                     f"{type(skeleton).__name__}")
  architecture = [
      [jax.tree_util.keystr(path), list(leaf.shape), str(leaf.dtype)]
      for path, leaf in jax.tree_util.tree_flatten_with_path(
          nnx.to_pure_dict(nnx.state(skeleton, _SAVED)))[0]
  ]
  images, labels = data_lib.load_mnist(train_split, data_dir=data_dir)
  key_fields = {
      "format": _FORMAT_VERSION,
      "name": name,
      "model": f"{getattr(constructor, '__module__', '?')}."
               f"{getattr(constructor, '__qualname__', type(constructor).__name__)}",
      "kwargs": hashed_kwargs,
      "architecture": architecture,
      "config": dataclasses.asdict(config),
      "train_split": train_split,
      "shuffle_labels": False,
      "data": _fingerprint(images, labels),
  }
  return _load_or_train(
      f"cached({name!r})", name, build, key_fields, config, (images, labels),
      train_split=train_split, eval_split=eval_split, shuffle_labels=False,
      data_dir=data_dir, cache_dir=cache_dir, progress=progress,
  )


def _splits(train_split: str | None, eval_split: str | None) -> tuple[str, str]:
  default_train, default_eval = default_splits()
  return train_split or default_train, eval_split or default_eval


def _skeleton(build: Callable[[], nnx.Module]) -> nnx.Module:
  """The model with abstract values, to be overwritten from the cache.

  Abstract shapes only: running the initialisers eagerly costs seconds of
  compilation, and every saved value is about to be overwritten anyway. A model
  holding random-number state (e.g. ``nnx.Dropout(rngs=...)``) is built for real:
  that state is not saved, so it must be concrete.
  """
  model = nnx.eval_shape(build)
  if jax.tree_util.tree_leaves(nnx.state(model, nnx.RngState)):
    model = build()
  return model


def _load_or_train(
    caller: str,
    name: str,
    build: Callable[[], nnx.Module],
    key_fields: dict[str, Any],
    config: TrainConfig,
    train_set: tuple[np.ndarray, np.ndarray],
    *,
    train_split: str,
    eval_split: str,
    shuffle_labels: bool,
    data_dir: str | None,
    cache_dir: str | os.PathLike | None,
    progress: bool,
    target_accuracy: float | None = None,
) -> Pretrained:
  """Load the entry of ``key_fields`` from the cache, or train ``build()`` and save it.

  With ``target_accuracy`` (a model on permuted labels) the training stops at the
  first epoch whose training accuracy reaches it, and the record keeps that
  accuracy, the epochs and whether the target was reached.
  """
  key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:16]
  entry = _cache_root(cache_dir) / f"{name}-{key}"
  seed = config.seed
  eval_images, eval_labels = data_lib.load_mnist(eval_split, data_dir=data_dir)
  record_path, params_path = entry / "record.json", entry / "params.npz"
  if record_path.exists() or params_path.exists():
    try:
      model = _skeleton(build)
      record = json.loads(record_path.read_text())
      if not isinstance(record, dict) or record.get("key_fields") != key_fields:
        raise ValueError("the record's key fields differ from the requested ones")
      _verify_params(record, params_path)
      _load_params(model, params_path)
      model.eval()
      eval_key = _fingerprint(eval_images, eval_labels)
      if record.get("eval_fingerprint") == eval_key:  # measured on these very digits
        eval_accuracy = float(record["eval_accuracy"])
      else:
        eval_accuracy = accuracy(model, eval_images, eval_labels)
      fit = _fit_record(record, target_accuracy)
      loaded = Pretrained(
          model=model, name=name, train_split=train_split, eval_split=eval_split,
          eval_accuracy=eval_accuracy,
          train_seconds=float(record["train_seconds"]), from_cache=True,
          shuffle_labels=shuffle_labels, seed=seed, path=entry, data_dir=data_dir,
          train_size=len(train_set[0]), **fit,
      )
      _warn_if_not_memorized(caller, loaded)
      return loaded
    except (OSError, EOFError, ValueError, KeyError, TypeError, json.JSONDecodeError,
            zipfile.BadZipFile) as err:  # a damaged entry is rebuilt, never a crash
      warnings.warn(
          f"{caller}: the cache entry {entry} is unreadable or incompatible "
          f"({err}); retraining.",
          RuntimeWarning,
          stacklevel=3,
      )

  model = build()
  model.train()  # BatchNorm: batch statistics, running averages updated; Dropout on
  until = None
  if target_accuracy is not None:
    def until(model: nnx.Module, epoch_loss: float) -> bool:
      evaluated = nnx.clone(model)  # evaluation mode on a copy, as train() measures
      evaluated.eval()
      return accuracy(evaluated, *train_set) >= target_accuracy

  start = time.perf_counter()
  result = train(model, *train_set, config=config, progress=progress, until=until)
  seconds = time.perf_counter() - start
  model.eval()
  eval_accuracy = accuracy(model, eval_images, eval_labels)
  record = {
      "key_fields": key_fields,
      "train_seconds": seconds,
      "eval_split": eval_split,
      "eval_fingerprint": _fingerprint(eval_images, eval_labels),
      "eval_accuracy": eval_accuracy,
      "jax": jax.__version__,
  }
  if target_accuracy is not None:
    train_accuracy = accuracy(model, *train_set)
    record.update(train_accuracy=train_accuracy, epochs=len(result.losses),
                  target_accuracy=target_accuracy, memorized=train_accuracy >= target_accuracy)
  _save(entry, model, record, caller)
  trained = Pretrained(
      model=model, name=name, train_split=train_split, eval_split=eval_split,
      eval_accuracy=eval_accuracy, train_seconds=seconds, from_cache=False,
      shuffle_labels=shuffle_labels, seed=seed, path=entry, data_dir=data_dir,
      train_size=len(train_set[0]), **_fit_record(record, target_accuracy),
  )
  _warn_if_not_memorized(caller, trained)
  return trained


def _fit_record(record: Mapping[str, Any], target_accuracy: float | None) -> dict[str, Any]:
  """The memorisation fields of :class:`Pretrained` from a cache record (``None`` if none)."""
  if target_accuracy is None:
    return {}
  return {
      "train_accuracy": float(record["train_accuracy"]),
      "epochs": int(record["epochs"]),
      "target_accuracy": float(record["target_accuracy"]),
      "memorized": bool(record["memorized"]),
  }


def _warn_if_not_memorized(caller: str, record: Pretrained) -> None:
  if record.memorized is False:
    warnings.warn(
        f"{caller}: the model reached only {record.train_accuracy:.1%} training accuracy on "
        f"its permuted labels after the cap of {record.epochs} epochs (target "
        f"{record.target_accuracy:.0%}): it has not memorised them, and a data-randomisation "
        "test with it is not the test of Adebayo et al. (2018).",
        RuntimeWarning,
        stacklevel=3,
    )


def _file_sha256(path: Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _verify_params(record: Mapping[str, Any], params_path: Path) -> None:
  """ValueError unless the parameter file has the SHA-256 its record stores.

  Entries written before the record held a checksum (no ``params_sha256``) are
  read as before: the ``.npz`` members' CRC-32 and the shape, dtype and
  finiteness checks of :func:`_load_params` still apply.
  """
  expected = record.get("params_sha256")
  if expected is None:
    return
  actual = _file_sha256(params_path)
  if actual != expected:
    raise ValueError(f"params.npz has SHA-256 {actual[:12]}…, its record says {expected[:12]}…")


def _save(entry: Path, model: nnx.Module, record: dict[str, Any], caller: str) -> None:
  """Write the entry atomically (a temporary folder, then a rename); warn if impossible.

  A cache folder that cannot be written (read-only, full disk, no permission) costs
  the next call a retraining, not this one its model: a ``RuntimeWarning`` says so.
  """
  try:
    _write_entry(entry, model, record)
  except OSError as err:
    warnings.warn(
        f"{caller}: could not save the trained model to the cache at {entry.parent} "
        f"({err}); it is returned unsaved and will be trained again next time. Set "
        f"${CACHE_ENV} to a writable folder to keep it.",
        RuntimeWarning,
        stacklevel=4,
    )


def _write_entry(entry: Path, model: nnx.Module, record: dict[str, Any]) -> None:
  entry.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
  try:
    np.savez(tmp / "params.npz", **_flat_params(model))
    record = {**record, "params_sha256": _file_sha256(tmp / "params.npz")}
    (tmp / "record.json").write_text(json.dumps(record, indent=2, sort_keys=True))
    if entry.exists():  # an unreadable entry being replaced
      shutil.rmtree(entry)
    try:
      os.replace(tmp, entry)
    except OSError:
      if not (entry / "record.json").exists():
        raise
      # Another process (a second notebook, a parallel build) trained the same entry
      # and saved it after the check above. Same key: same model, data and seed, so
      # its copy serves as well as ours; keep it instead of failing.
  finally:
    if tmp.exists():
      shutil.rmtree(tmp, ignore_errors=True)

