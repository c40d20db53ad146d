"""Training the MNIST classifiers with optax: a jitted step, a progress bar, accuracy."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable

import jax
import numpy as np
import optax
from flax import nnx

from saliency_guide.validation import check_callable

__all__ = ["TrainConfig", "TrainResult", "accuracy", "predict", "train"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Hyper-parameters of :func:`train`; part of the pretrained-model cache key.

  Attributes:
    epochs: passes over the training set.
    batch_size: examples per optimisation step.
    learning_rate: peak AdamW learning rate (warm-up, then cosine decay to zero;
      see :func:`train`).
    weight_decay: decoupled weight decay of AdamW.
    seed: seed of the parameter initialisation and of the shuffling order.
  """

  epochs: int = 8
  batch_size: int = 128
  learning_rate: float = 2e-3
  weight_decay: float = 1e-4
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class TrainResult:
  """What :func:`train` measured.

  Attributes:
    losses: mean training loss of each epoch run (fewer than ``config.epochs``
      when ``until`` stopped the training early).
    eval_accuracy: accuracy on the evaluation set after training (``nan`` when
      no evaluation set was given).
    seconds: wall time of training, compilation included.
  """

  losses: tuple[float, ...]
  eval_accuracy: float
  seconds: float


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  r"""Mean softmax cross-entropy :math:`-\frac1B\sum_b \log \mathrm{softmax}(z_b)_{y_b}`.

  The softmax is applied here, once: models return logits.
  """
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@functools.lru_cache(maxsize=32)
def _adamw(
    learning_rate: float, weight_decay: float, total_steps: int
) -> optax.GradientTransformation:
  """AdamW with linear warm-up (first 5 % of steps) and cosine decay to zero.

  Cached so that every training run with the same hyper-parameters gets the
  *same* transformation object: the optimizer's static structure (and with it
  the compiled ``_train_step``) is then shared between runs instead of being
  traced and compiled again for each retraining (ROAR retrains dozens of times).
  """
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, learning_rate, max(1, total_steps // 20), total_steps
  )
  return optax.adamw(schedule, weight_decay=weight_decay)


@nnx.jit
def _train_step(model: nnx.Module, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array):
  loss, grads = nnx.value_and_grad(lambda m: cross_entropy(m(x), y))(model)
  optimizer.update(model, grads)
  return loss


@nnx.jit
def _logits(model: nnx.Module, x: jax.Array) -> jax.Array:
  return model(x)


def predict(
    model: nnx.Module, images: np.ndarray | jax.Array, *, batch_size: int = 1000
) -> np.ndarray:
  """Logits of ``model`` on ``images``, computed in batches.

  Args:
    model: a classifier returning logits.
    images: ``(N, H, W, C)`` float32.
    batch_size: images per compiled call.

  Returns:
    ``(N, classes)`` NumPy array of logits.

  Example:
    >>> import numpy as np
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> predict(MLP(rngs=nnx.Rngs(0)), np.zeros((3, 28, 28, 1), np.float32)).shape
    (3, 10)
  """
  images = np.asarray(images, np.float32)
  out = [np.asarray(_logits(model, images[i : i + batch_size]))
         for i in range(0, len(images), batch_size)]
  return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def accuracy(model: nnx.Module, images: np.ndarray, labels: np.ndarray) -> float:
  """Fraction of ``images`` whose arg-max logit equals ``labels``.

  Example:
    >>> import numpy as np
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> 0.0 <= accuracy(MLP(rngs=nnx.Rngs(0)), np.zeros((4, 28, 28, 1), np.float32),
    ...                 np.zeros(4, np.int32)) <= 1.0
    True
  """
  if len(images) != len(labels):
    raise ValueError(f"labels: expected {len(images)} labels (one per image), got {len(labels)}")
  return float(np.mean(predict(model, images).argmax(-1) == np.asarray(labels)))


def train(
    model: nnx.Module,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    config: TrainConfig = TrainConfig(),
    eval_data: tuple[np.ndarray, np.ndarray] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    until: Callable[[nnx.Module, float], bool] | None = None,
) -> TrainResult:
  r"""Train ``model`` in place by minimising softmax cross-entropy with AdamW.

  The learning rate follows a warm-up cosine schedule: linear warm-up
  over the first 5 % of steps to ``config.learning_rate``, then cosine decay to
  zero. Each epoch visits the training set in a fresh random order (the last,
  incomplete batch is dropped so that every step has the same shape and
  compiles once).

  Layers with a training mode follow the model's: call ``model.train()`` before
  (BatchNorm then normalises with batch statistics and updates its running
  averages at every step) and ``model.eval()`` after, as
  :func:`saliency_guide.zoo.cached` does. ``eval_data`` is measured on an
  evaluation-mode copy, so it never reaches the running averages.

  ``until`` stops the training early: it is called after each epoch with the
  model and that epoch's mean loss, and the training ends after the first
  epoch for which it returns ``True`` (the learning-rate schedule is still the
  one of ``config.epochs``, which is then a cap). :func:`saliency_guide.zoo.pretrained`
  uses it to train on permuted labels until the model fits them.

  Args:
    model: an NNX classifier returning logits; updated in place.
    images: ``(N, H, W, C)`` float32 training images.
    labels: ``(N,)`` integer labels.
    config: hyper-parameters.
    eval_data: optional ``(images, labels)`` whose accuracy is reported (measured in
      evaluation mode on a copy of the model).
    progress: show a tqdm progress bar.
    log: optional callable receiving one line per epoch.
    until: optional ``until(model, epoch_loss) -> bool``, called after each
      epoch; ``True`` ends the training.

  Returns:
    A :class:`TrainResult` (``len(result.losses)`` is the number of epochs run).

  Example:
    >>> import numpy as np
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> rng = np.random.default_rng(0)
    >>> x = rng.random((64, 28, 28, 1), np.float32)
    >>> y = (x.mean(axis=(1, 2, 3)) > 0.5).astype(np.int32)
    >>> result = train(MLP(rngs=nnx.Rngs(0)), x, y, progress=False,
    ...                config=TrainConfig(epochs=2, batch_size=32))
    >>> len(result.losses)
    2
    >>> stopped = train(MLP(rngs=nnx.Rngs(0)), x, y, progress=False,
    ...                 config=TrainConfig(epochs=5, batch_size=32),
    ...                 until=lambda model, loss: True)  # stop after the first epoch
    >>> len(stopped.losses)
    1
  """
  images = np.asarray(images, np.float32)
  labels = np.asarray(labels, np.int32)
  if images.ndim != 4:
    raise ValueError(f"images: expected shape (N, H, W, C), got {images.shape}")
  if labels.shape != (len(images),):
    raise ValueError(f"labels: expected shape ({len(images)},), got {labels.shape}")
  if until is not None:
    check_callable("until", until, "a callable until(model, epoch_loss) -> bool")
  steps_per_epoch = len(images) // config.batch_size
  if steps_per_epoch < 1:
    raise ValueError(
        f"images: need at least batch_size={config.batch_size} examples, got {len(images)}"
    )
  total_steps = steps_per_epoch * config.epochs
  tx = _adamw(config.learning_rate, config.weight_decay, total_steps)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  order_rng = np.random.default_rng(config.seed)
  losses = []
  start = time.perf_counter()
  # tqdm.auto: a notebook widget in Jupyter (ipywidgets, the `notebooks` extra), text in
  # a terminal; imported here so that a call without a bar never touches IPython.
  from tqdm.auto import tqdm

  bar = tqdm(total=total_steps, disable=not progress, desc=type(model).__name__, unit="step")
  for epoch in range(config.epochs):
    order = order_rng.permutation(len(images))
    epoch_loss = 0.0
    for step in range(steps_per_epoch):
      idx = order[step * config.batch_size : (step + 1) * config.batch_size]
      epoch_loss += float(_train_step(model, optimizer, images[idx], labels[idx]))
      bar.update()
    losses.append(epoch_loss / steps_per_epoch)
    bar.set_postfix(loss=f"{losses[-1]:.4f}")
    if log is not None:
      log(f"epoch {epoch + 1}/{config.epochs}: loss {losses[-1]:.4f}")
    if until is not None and until(model, losses[-1]):
      break
  bar.close()
  seconds = time.perf_counter() - start
  eval_accuracy = float("nan")
  if eval_data is not None:
    # A model in training mode would normalise the evaluation batches with their own
    # statistics and fold them into its running averages: measure an eval-mode copy.
    evaluated = nnx.clone(model)
    evaluated.eval()
    eval_accuracy = accuracy(evaluated, *eval_data)
  return TrainResult(losses=tuple(losses), eval_accuracy=eval_accuracy, seconds=seconds)
