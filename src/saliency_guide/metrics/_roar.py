r"""ROAR, *RemOve And Retrain* (Hooker et al., 2019).

Deletion curves ask a trained model about images it never saw during training
(digits with holes), so a drop in probability can come from the distribution
shift rather than from lost information. ROAR removes that confound: for a
fraction :math:`t` it replaces the top-:math:`t` pixels of **every training and
test image** (ranked by the method's map of the trained model, for the true
label) by an uninformative value, **retrains a fresh model** on the modified
training set, and reports its accuracy on the modified test set. If the map
found the informative pixels, accuracy falls fast as :math:`t` grows; a
**random ranking** is the baseline to beat.

**The replacement value** is the per-channel mean of the training images
(Hooker et al.'s choice), about 0.13 on MNIST, *not* 0. Zero is MNIST's
background: replacing a background pixel by 0 changes nothing, so a ranking
that puts background pixels first would "remove" nothing at all, and ROAR
would measure how much ink a ranking hits rather than how informative its
pixels are. The grey value removes a pixel whatever it held. It also makes the
*shape* of the removed set visible to the retrained model, which can leak the
class through the mask (Rong et al., 2022): on MNIST the leak is large, and
``ROARConfig(fill="mask")`` measures it — the retrained model then sees the
removal mask alone.

The computation has two parts: :func:`roar_rankings` ranks the pixels of every
image once per method (the costly part for slow methods), and :func:`roar`
retrains on the images with the top-ranked pixels removed (the costly part
for everything else) and returns the accuracy curves. Everything is
configurable through :class:`ROARConfig`: the default is sized for the
documentation build (a subset, a small fast model, few epochs);
:meth:`ROARConfig.full` is the paper-sized run, also available from the command
line as ``python -m saliency_guide.metrics roar --full``.

References:
  S. Hooker, D. Erhan, P.-J. Kindermans, B. Kim. *A Benchmark for
  Interpretability Methods in Deep Neural Networks.* NeurIPS 2019.
  arXiv:1806.10758.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from saliency_guide.metrics._common import (
    RandomComparison,
    _rank_pixels,
    compare_to_random,
    mean_and_sem,
    pixel_scores,
)
from saliency_guide.metrics._deletion import _auc
from saliency_guide.scale import explain_dataset
from saliency_guide.training import TrainConfig, accuracy, train
from saliency_guide.validation import (
    check_dataset,
    check_flag,
    check_key,
    check_maps,
    check_number,
    check_positive_int,
    describe,
)

__all__ = ["ROARConfig", "ROARRankings", "ROARResult", "remove_top_pixels", "roar", "roar_rankings"]

RANDOM = "random"
"""Name of the random-ranking baseline in :class:`ROARResult`."""

Method = Callable[..., jax.Array]
Data = tuple[np.ndarray, np.ndarray]  # (images, labels)


@dataclasses.dataclass(frozen=True)
class ROARConfig:
  """What :func:`roar` removes, on which data, and how it retrains.

  The defaults are the documentation build's configuration (about a minute
  per handful of methods on 2 CPU cores); :meth:`full` is the paper-sized run.

  Attributes:
    fractions: fractions :math:`t` of pixels removed, each in ``[0, 1]``
      (:math:`t = 0`, the unmodified data, is always added).
    train_size: training images used (the first ones; ``None``: all).
    test_size: test images used (``None``: all).
    model: architecture retrained from scratch: a name from
      :data:`saliency_guide.zoo.MODEL_SPECS` (built with its constructor
      arguments) or a callable ``rngs -> nnx.Module``.
    epochs: training epochs of every retrained model.
    batch_size: training batch size.
    learning_rate: peak AdamW learning rate (see :func:`saliency_guide.training.train`).
    repeats: models retrained per point (different seeds); Hooker et al. used 5.
    fill: replacement value: ``"mean"`` (per-channel mean of the training
      images), a number, or ``"mask"``: the *leak diagnostic* — each image is
      replaced by its removal mask alone (1 where a pixel is removed, 0
      elsewhere), so the retrained model sees only *which* pixels a method
      ranks high; accuracy above chance means the mask's shape carries the
      class (Rong et al., 2022).
    absolute: rank pixels by :math:`|s|` rather than :math:`s`.
    random_baseline: also evaluate a uniformly random ranking.
    seed: seed of the retrained models, of the random ranking and of the
      tie-breaking between equal scores.
    attribution_batch_size: images per call of a method.
  """

  fractions: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
  train_size: int | None = 2000
  test_size: int | None = 1000
  model: str | Callable[[nnx.Rngs], nnx.Module] = "mlp"
  epochs: int = 5
  batch_size: int = 128
  learning_rate: float = 2e-3
  repeats: int = 1
  fill: str | float = "mean"
  absolute: bool = False
  random_baseline: bool = True
  seed: int = 0
  attribution_batch_size: int = 250

  @classmethod
  def full(cls, model: str = "gap_cnn") -> ROARConfig:
    """The paper-sized run: all the data, the zoo's training recipe for ``model``, 5 repeats.

    Example:
      >>> ROARConfig.full("cnn").epochs
      4
    """
    from saliency_guide.zoo import MODEL_SPECS

    if model not in MODEL_SPECS:
      raise ValueError(f"model: expected one of {sorted(MODEL_SPECS)}, got {model!r}")
    spec = MODEL_SPECS[model].config
    return cls(
        train_size=None, test_size=None, model=model, epochs=spec.epochs,
        batch_size=spec.batch_size, learning_rate=spec.learning_rate, repeats=5,
    )

  def validate(self) -> None:
    """Raise ``ValueError``/``TypeError`` naming the first bad field."""
    fractions = self.fractions
    if isinstance(fractions, str) or not isinstance(fractions, tuple | list) or not fractions:
      raise TypeError(f"fractions: expected a non-empty tuple of numbers, got {fractions!r}")
    for t in fractions:
      if isinstance(t, bool) or not isinstance(t, int | float) or not 0 <= t <= 1:
        raise ValueError(f"fractions: expected numbers in [0, 1], got {t!r}")
    for name in ("train_size", "test_size"):
      if getattr(self, name) is not None:
        check_positive_int(name, getattr(self, name))
    for name in ("epochs", "batch_size", "repeats", "attribution_batch_size"):
      check_positive_int(name, getattr(self, name))
    if isinstance(self.model, str):
      from saliency_guide.zoo import MODEL_SPECS

      if self.model not in MODEL_SPECS:
        raise ValueError(f"model: expected one of {sorted(MODEL_SPECS)} or a callable, "
                         f"got {self.model!r}")
    elif not callable(self.model):
      raise TypeError(f"model: expected a model name or a callable rngs -> nnx.Module, "
                      f"got {self.model!r}")
    if self.fill not in ("mean", "mask") and (isinstance(self.fill, bool) or
                                              not isinstance(self.fill, int | float) or
                                              not math.isfinite(self.fill)):
      raise ValueError(f"fill: expected 'mean', 'mask' or a finite number, got {self.fill!r}")
    check_number("learning_rate", self.learning_rate)

  def subsets(
      self, train_data: tuple[np.ndarray, np.ndarray], test_data: tuple[np.ndarray, np.ndarray]
  ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The ``(images, labels)`` pairs :func:`roar` uses: the first ``train_size``/``test_size``.

    Precomputed maps passed to :func:`roar` must be maps of these images.
    """
    train_x, train_y = _check_data("train_data", train_data)
    test_x, test_y = _check_data("test_data", test_data)
    return ((train_x[: self.train_size], train_y[: self.train_size]),
            (test_x[: self.test_size], test_y[: self.test_size]))

  def build(self, seed: int) -> nnx.Module:
    """A freshly initialised model of :attr:`model`."""
    if callable(self.model):
      return self.model(nnx.Rngs(seed))
    from saliency_guide.zoo import MODEL_SPECS

    spec = MODEL_SPECS[self.model]
    return spec.constructor(**spec.kwargs, rngs=nnx.Rngs(seed))

  def describe(self) -> str:
    """The configuration in one line, for printing next to results."""
    name = self.model if isinstance(self.model, str) else getattr(self.model, "__name__", "model")
    return (
        f"ROAR: retrain '{name}' for {self.epochs} epoch(s) (batch {self.batch_size}, "
        f"lr {self.learning_rate:g}) x {self.repeats} repeat(s); "
        f"train {self.train_size or 'all'} / test {self.test_size or 'all'} images; "
        f"fractions {tuple(self.fractions)}; fill {self.fill!r}"
    )


@dataclasses.dataclass(frozen=True)
class ROARRankings:
  """Step 1 of ROAR: every ranking's order of the pixels of the training and test images.

  Attributes:
    ranks: name -> ``(train_ranks, test_ranks)``, int32 arrays ``(N, H, W)``
      with a permutation of ``0 .. HW - 1`` per image (0: removed first), for
      the images of :meth:`ROARConfig.subsets`; the random baseline is under
      ``"random"``.
    attribution_seconds: name -> wall time of its maps (train + test images).
  """

  ranks: dict[str, tuple[jax.Array, jax.Array]]
  attribution_seconds: dict[str, float]


@dataclasses.dataclass(frozen=True)
class ROARResult:
  """Test accuracies of the retrained models.

  Attributes:
    fractions: ``(T,)`` fractions removed, starting with 0.
    accuracy: method name -> ``(repeats, T)`` test accuracies (the random
      baseline is under ``"random"``); column 0 (nothing removed) is shared.
      Row :math:`r` of every method was retrained with the same seed, so rows
      pair up across methods (:meth:`compare_to_random`).
    fill_value: the replacement value used (NaN for ``fill="mask"``).
    attribution_seconds: method name -> wall time of its maps (train + test images).
    retrain_seconds: total wall time of the retraining.
    config: the configuration.
  """

  fractions: np.ndarray
  accuracy: dict[str, np.ndarray]
  fill_value: float
  attribution_seconds: dict[str, float]
  retrain_seconds: float
  config: ROARConfig

  def mean(self) -> dict[str, np.ndarray]:
    """Method name -> ``(T,)`` accuracy averaged over repeats."""
    return {name: acc.mean(axis=0) for name, acc in self.accuracy.items()}

  def stats(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Method name -> ``(mean (T,), sem (T,))``: accuracy over the repeats ± its standard error.

    The standard error is over the ``config.repeats`` retrainings (NaN with a
    single repeat): it measures how much the retraining itself varies.
    """
    return {name: mean_and_sem(acc) for name, acc in self.accuracy.items()}

  def areas(self) -> dict[str, np.ndarray]:
    r"""Method name -> ``(repeats,)`` area under each accuracy curve: lower is better.

    :math:`\int \mathrm{Acc}(t)\,dt` by the trapezoid rule over :attr:`fractions`
    (a constant accuracy :math:`a` has area :math:`a\,t_{\max}`), one number
    per retraining.
    """
    return {name: np.asarray(_auc(jnp.asarray(self.fractions), jnp.asarray(acc)))
            for name, acc in self.accuracy.items()}

  def compare_to_random(self, name: str, *, fraction: float | None = None,
                        z: float = 2.0) -> RandomComparison:
    """Whether ``name``'s ranking removes information faster than a random ranking does.

    The pairs are the retrainings: repeat :math:`r` of a method and of the
    random ranking share the seed ``config.seed + r``.
    :func:`~saliency_guide.metrics.compare_to_random` is applied to the areas
    under the accuracy curves (:meth:`areas`), or to the accuracies at one
    ``fraction``, **lower being better**: "beats random" when the method's
    accuracy is lower than random's by more than ``z`` standard errors of the
    paired difference.

    Args:
      name: a method of :attr:`accuracy` (not ``"random"``).
      fraction: compare the accuracies at this fraction (one of
        :attr:`fractions`) instead of the areas.
      z: standard errors the difference must exceed.

    Returns:
      :class:`~saliency_guide.metrics.RandomComparison`.

    Raises:
      ValueError: an unknown name or fraction, no random baseline, or a single
        repeat (no uncertainty).
    """
    if RANDOM not in self.accuracy:
      raise ValueError("compare_to_random: this result has no random baseline "
                       "(ROARConfig(random_baseline=True))")
    if name == RANDOM or name not in self.accuracy:
      raise ValueError(f"name: expected one of {sorted(set(self.accuracy) - {RANDOM})}, "
                       f"got {name!r}")
    if self.config.repeats < 2:
      raise ValueError(f"compare_to_random: expected at least 2 retrainings per point to "
                       f"estimate an uncertainty, got repeats={self.config.repeats} "
                       "(ROARConfig(repeats=...))")
    if fraction is None:
      areas = self.areas()
      method, random = areas[name], areas[RANDOM]
    else:
      hits = np.flatnonzero(np.isclose(self.fractions, fraction))
      if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not hits.size:
        raise ValueError(f"fraction: expected one of {self.fractions.tolist()}, got {fraction!r}")
      method, random = self.accuracy[name][:, hits[0]], self.accuracy[RANDOM][:, hits[0]]
    return compare_to_random(method, random, higher_is_better=False, z=z)


@jax.jit
def _fill_ranked(images: jax.Array, ranks: jax.Array, count: jax.Array,
                 fill: jax.Array) -> jax.Array:
  """``fill`` where ``ranks < count`` (all channels of the pixel), ``images`` elsewhere."""
  return jnp.where((ranks < count)[..., None], fill, images)


def _remove(images: Any, ranks: jax.Array, fraction: float, fill: jax.Array) -> jax.Array:
  """Replace the pixels ranked below ``round(fraction * H * W)`` by ``fill`` ``(C,)``."""
  count = jnp.asarray(round(fraction * images.shape[1] * images.shape[2]), jnp.int32)
  return _fill_ranked(images, ranks, count, fill)


def _check_fill(fill: Any, channels: int) -> jax.Array:
  """``fill`` as a finite float32 ``(channels,)`` array, else an error naming ``fill``."""
  expected = f"a finite number or an array of shape (), (1,) or ({channels},) (per channel)"
  if isinstance(fill, bool) or not (
      isinstance(fill, int | float | np.integer | np.floating | list | tuple)
      or hasattr(fill, "shape")):
    raise TypeError(f"fill: expected {expected}, got {describe(fill)}")
  value = jnp.asarray(fill, jnp.float32)
  if value.shape not in ((), (1,), (channels,)):
    raise ValueError(f"fill: expected {expected}, got shape {tuple(value.shape)}")
  bad = int(jnp.sum(~jnp.isfinite(value)))
  if bad:
    raise ValueError(f"fill: expected {expected}, got {bad} NaN or Inf value(s)")
  return jnp.broadcast_to(value, (channels,))


def remove_top_pixels(
    images: jax.Array,
    attributions: jax.Array,
    fraction: float,
    *,
    fill: float | jax.Array,
    key: jax.Array | None = None,
    absolute: bool = False,
) -> jax.Array:
  r"""Replace the top-``fraction`` pixels of each image, ranked by its map, by ``fill``.

  .. math:: \tilde x_{hw} = \begin{cases} v & \mathrm{rank}(s_{hw}) < \mathrm{round}(t\,HW) \\
            x_{hw} & \text{otherwise}\end{cases}

  (all channels of a pixel are replaced; ties between equal scores are broken
  at random by ``key``).

  Args:
    images: ``(B, H, W, C)`` float images.
    attributions: ``(B, H, W, C)`` or ``(B, H, W)`` maps.
    fraction: :math:`t \in [0, 1]`.
    fill: replacement value :math:`v`, a number or an array broadcastable to
      ``(C,)`` (per channel).
    key: PRNG key for ties (default ``jax.random.key(0)``).
    absolute: rank by :math:`|s|`.

  Returns:
    float32 array, the shape of ``images``.

  Raises:
    TypeError, ValueError: ``images`` not of rank 4, ``attributions`` not maps
      of ``images``, ``fraction`` outside :math:`[0, 1]`, ``fill`` not finite or
      not of shape ``()``, ``(1,)`` or ``(C,)``, ``key`` not a PRNG key.

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    >>> out = remove_top_pixels(x, x, 0.25, fill=-1.0)  # the 4 largest pixels
    >>> out[0, ..., 0].tolist()[-1]
    [-1.0, -1.0, -1.0, -1.0]
  """
  images = jnp.asarray(images, jnp.float32)
  if images.ndim != 4:
    raise ValueError(f"images: expected rank 4 (B, H, W, C), got shape {images.shape}")
  scores = pixel_scores(check_maps("attributions", attributions, images))
  if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction <= 1:
    raise ValueError(f"fraction: expected a number in [0, 1], got {fraction!r}")
  fill = _check_fill(fill, images.shape[-1])
  key = jax.random.key(0) if key is None else check_key(key)
  ranks = _rank_pixels(scores, key, absolute=check_flag("absolute", absolute))
  return _remove(images, ranks, fraction, fill)


def _check_data(name: str, data: Any) -> tuple[np.ndarray, np.ndarray]:
  if not isinstance(data, tuple | list) or len(data) != 2:
    raise TypeError(f"{name}: expected a pair (images, labels), got {type(data).__name__}")
  images, labels = check_dataset(np.asarray(data[0], np.float32), np.asarray(data[1]),
                                 names=(f"{name} images", f"{name} labels"))
  return images, labels.astype(np.int32)


def _check_methods(methods: Any, config: Any) -> None:
  """Check :func:`roar`'s ``config`` and ``methods`` (not the data)."""
  if not isinstance(config, ROARConfig):
    raise TypeError(f"config: expected a ROARConfig, got {type(config).__name__}")
  config.validate()
  if not isinstance(methods, Mapping):
    raise TypeError(f"methods: expected a mapping name -> method, got {type(methods).__name__}")
  for name, method in methods.items():
    if name == RANDOM:
      raise ValueError(f"methods: the name {RANDOM!r} is reserved for the random baseline")
    if not callable(method) and not (isinstance(method, tuple | list) and len(method) == 2):
      raise TypeError(f"methods[{name!r}]: expected a saliency method or a pair "
                      f"(train_maps, test_maps), got {type(method).__name__}")
  if not methods and not config.random_baseline:
    raise ValueError("methods: expected at least one method (or config.random_baseline=True)")


def _scores(model: nnx.Module, name: str, method: Any, train_set: Data, test_set: Data,
            config: ROARConfig) -> list[np.ndarray]:
  """Per-pixel scores ``[train (N, H, W), test (N', H, W)]`` of a method (or its given maps)."""
  if callable(method):
    return [
        np.asarray(pixel_scores(explain_dataset(
            method, model, x, y, batch_size=min(config.attribution_batch_size, len(x)),
            progress=False)))
        for x, y in (train_set, test_set)
    ]
  maps = []
  for part, given, (x, _) in (("train", method[0], train_set), ("test", method[1], test_set)):
    given = np.asarray(pixel_scores(jnp.asarray(given)))
    if given.shape != x.shape[:3]:
      raise ValueError(
          f"methods[{name!r}]: expected {part} maps of shape {x.shape[:3]} (the images of "
          f"ROARConfig.subsets), got {given.shape}"
      )
    maps.append(given)
  return maps


def _rankings(model: nnx.Module, methods: Mapping[str, Any], train_set: Data, test_set: Data,
              config: ROARConfig) -> ROARRankings:
  """:func:`roar_rankings` on checked arguments."""
  # Ties between equal scores are broken at random, independently for the two sets.
  tie_key = jax.random.key(config.seed + 1)

  def rank(train_scores: np.ndarray, test_scores: np.ndarray) -> tuple[jax.Array, jax.Array]:
    return (_rank_pixels(jnp.asarray(train_scores), tie_key, absolute=config.absolute),
            _rank_pixels(jnp.asarray(test_scores), jax.random.fold_in(tie_key, 1),
                        absolute=config.absolute))

  ranks: dict[str, tuple[jax.Array, jax.Array]] = {}
  attribution_seconds: dict[str, float] = {}
  for name, method in methods.items():
    start = time.perf_counter()
    scores = _scores(model, name, method, train_set, test_set, config)
    attribution_seconds[name] = time.perf_counter() - start
    ranks[name] = rank(*scores)
  if config.random_baseline:
    keys = jax.random.split(jax.random.key(config.seed))
    ranks[RANDOM] = rank(*(np.asarray(jax.random.uniform(k, x.shape[:3]))
                           for k, (x, _) in zip(keys, (train_set, test_set), strict=True)))
    attribution_seconds[RANDOM] = 0.0
  return ROARRankings(ranks=ranks, attribution_seconds=attribution_seconds)


def roar_rankings(
    model: nnx.Module,
    methods: Mapping[str, Method | tuple[Any, Any]],
    train_data: tuple[np.ndarray, np.ndarray],
    test_data: tuple[np.ndarray, np.ndarray],
    *,
    config: ROARConfig = ROARConfig(),
) -> ROARRankings:
  r"""Step 1 of ROAR: rank the pixels of every training and test image, once per method.

  Each image :math:`x` is explained for its true label :math:`y` by the trained
  ``model``, its map reduced to per-pixel scores :math:`s`
  (:func:`~saliency_guide.metrics.pixel_scores`), and its pixels ranked by
  decreasing :math:`s` (or :math:`|s|` with ``config.absolute``), ties broken
  at random (:func:`~saliency_guide.metrics.rank_pixels`). Removing a fraction
  :math:`t` then replaces the pixels of rank :math:`< \mathrm{round}(t HW)`.
  The ranking does not depend on :math:`t`, so it is computed once. Maps are
  computed ``config.attribution_batch_size`` images at a time
  (:func:`~saliency_guide.scale.explain_dataset`). :func:`roar` calls this,
  then retrains.

  Args:
    model: the trained model whose maps rank the pixels (not modified).
    methods: as for :func:`roar`.
    train_data: ``(images, labels)``; the first ``config.train_size`` are ranked.
    test_data: ``(images, labels)``; the first ``config.test_size`` are ranked.
    config: a :class:`ROARConfig` (``train_size``, ``test_size``, ``absolute``,
      ``random_baseline``, ``seed`` and ``attribution_batch_size`` are used).

  Returns:
    :class:`ROARRankings`.

  Raises:
    TypeError, ValueError: bad methods, data or configuration.

  Example:
    >>> import numpy as np
    >>> x = np.zeros((4, 2, 2, 1), np.float32)
    >>> maps = np.array([[[4.0, 3.0], [2.0, 1.0]]] * 4)  # the same ranking for every image
    >>> config = ROARConfig(random_baseline=False)
    >>> rankings = roar_rankings(None, {"given": (maps, maps)}, (x, np.zeros(4, int)),
    ...                          (x, np.zeros(4, int)), config=config)
    >>> rankings.ranks["given"][0][0].tolist()
    [[0, 1], [2, 3]]

  References:
    S. Hooker, D. Erhan, P.-J. Kindermans, B. Kim. *A Benchmark for
    Interpretability Methods in Deep Neural Networks.* NeurIPS 2019.
    arXiv:1806.10758.
  """
  _check_methods(methods, config)
  train_set, test_set = config.subsets(train_data, test_data)
  return _rankings(model, methods, train_set, test_set, config)


def _retrain_curves(rankings: ROARRankings, train_set: Data, test_set: Data, config: ROARConfig,
                    log: Callable[[str], None] | None) -> ROARResult:
  """Step 2 of ROAR: for each ranking and fraction, remove, retrain, and test."""
  (train_x, train_y), (test_x, test_y) = train_set, test_set
  mask_only = config.fill == "mask"
  if config.fill == "mean":
    fill = train_x.mean(axis=(0, 1, 2))
  else:
    fill = np.full(train_x.shape[-1:], 1.0 if mask_only else config.fill, np.float32)
  fill_value = jnp.broadcast_to(jnp.asarray(fill, jnp.float32), train_x.shape[-1:])
  # With fill="mask" the retrained model sees the removal mask alone: removed
  # pixels become 1 in an image of zeros.
  base_train, base_test = ((np.zeros_like(train_x), np.zeros_like(test_x)) if mask_only
                           else (train_x, test_x))
  fractions = np.unique(np.asarray([0.0, *config.fractions], np.float64))
  emit = log or (lambda line: None)

  def retrain(x_train: np.ndarray, x_test: np.ndarray, repeat: int) -> float:
    seed = config.seed + repeat
    fresh = config.build(seed)
    train_config = TrainConfig(epochs=config.epochs, batch_size=config.batch_size,
                               learning_rate=config.learning_rate, seed=seed)
    train(fresh, x_train, train_y, config=train_config, progress=False)
    return accuracy(fresh, x_test, test_y)

  start = time.perf_counter()
  # t = 0: nothing removed, one retraining per repeat shared by every ranking.
  baseline = np.array([retrain(base_train, base_test, r) for r in range(config.repeats)])
  emit(f"t = 0: accuracy {baseline.mean():.4f} (no pixel removed)")
  accuracies = {}
  for name, (train_ranks, test_ranks) in rankings.ranks.items():
    acc = np.empty((config.repeats, len(fractions)))
    acc[:, 0] = baseline
    for i, t in enumerate(fractions[1:], start=1):
      x_train = np.asarray(_remove(base_train, train_ranks, float(t), fill_value))
      x_test = np.asarray(_remove(base_test, test_ranks, float(t), fill_value))
      for r in range(config.repeats):
        acc[r, i] = retrain(x_train, x_test, r)
      emit(f"{name}, t = {t:.2f}: accuracy {acc[:, i].mean():.4f}")
    accuracies[name] = acc
  return ROARResult(
      fractions=fractions,
      accuracy=accuracies,
      fill_value=float("nan") if mask_only else float(np.mean(fill)),
      attribution_seconds=rankings.attribution_seconds,
      retrain_seconds=time.perf_counter() - start,
      config=config,
  )


def roar(
    model: nnx.Module,
    methods: Mapping[str, Method | tuple[Any, Any]],
    train_data: tuple[np.ndarray, np.ndarray],
    test_data: tuple[np.ndarray, np.ndarray],
    *,
    config: ROARConfig = ROARConfig(),
    log: Callable[[str], None] | None = None,
) -> ROARResult:
  r"""Remove and retrain: test accuracy of fresh models trained without the top-ranked pixels.

  For each method :math:`E`, fraction :math:`t` and repeat :math:`r`
  (Hooker et al., 2019):

  1. rank the pixels of every training and test image by
     :math:`E(x; \theta)` for its true label, with :math:`\theta` the given
     trained ``model`` (:func:`roar_rankings`);
  2. replace the top :math:`\mathrm{round}(t HW)` pixels by the fill value
     (:func:`remove_top_pixels`);
  3. train a freshly initialised model (``config.model``, seed
     ``config.seed + r``) on the modified training images with
     :func:`saliency_guide.training.train`;
  4. record its accuracy on the modified test images.

  A faithful method makes accuracy fall faster than the random ranking does.
  Nothing is removed at :math:`t = 0`: that column is one retraining per repeat,
  shared by every method (it is the baseline accuracy of the recipe).

  Args:
    model: the trained model whose maps rank the pixels (not modified).
    methods: name -> ``method(model, images, targets)`` (bind options with
      ``functools.partial``), or name -> ``(train_maps, test_maps)``, maps
      already computed for the images of :meth:`ROARConfig.subsets` (to reuse
      them across configurations). ``"random"`` is reserved for the baseline.
    train_data: ``(images, labels)`` the models are retrained on.
    test_data: ``(images, labels)`` the accuracy is measured on.
    config: a :class:`ROARConfig`.
    log: optional callable receiving one progress line per retrained model.

  Returns:
    :class:`ROARResult`.

  Raises:
    TypeError, ValueError: bad methods, data or configuration.

  Example:
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> rng = np.random.default_rng(0)
    >>> x = rng.random((64, 28, 28, 1), np.float32)
    >>> y = (x[:, :14].mean(axis=(1, 2, 3)) > 0.5).astype(np.int32)
    >>> config = ROARConfig(fractions=(0.5,), epochs=1, batch_size=32,
    ...                     model=lambda rngs: MLP(hidden=(8,), rngs=rngs))
    >>> result = roar(MLP(hidden=(8,), rngs=nnx.Rngs(0)), {"input": lambda m, x, t: x},
    ...               (x, y), (x, y), config=config)
    >>> result.fractions.tolist(), sorted(result.accuracy)
    ([0.0, 0.5], ['input', 'random'])

  References:
    S. Hooker, D. Erhan, P.-J. Kindermans, B. Kim. *A Benchmark for
    Interpretability Methods in Deep Neural Networks.* NeurIPS 2019.
    arXiv:1806.10758.
  """
  _check_methods(methods, config)
  train_set, test_set = config.subsets(train_data, test_data)
  if len(train_set[0]) < config.batch_size:
    raise ValueError(f"train_data: expected at least batch_size={config.batch_size} images, "
                     f"got {len(train_set[0])}")
  rankings = _rankings(model, methods, train_set, test_set, config)
  return _retrain_curves(rankings, train_set, test_set, config, log)
