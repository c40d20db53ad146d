"""Computing maps for many images: fixed-size batches, so that a method compiles once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from saliency_guide.validation import check_positive_int

__all__ = ["attribute_batched"]


def attribute_batched(
    method: Callable[..., jax.Array],
    model: nnx.Module,
    images: Any,
    targets: Any,
    *,
    batch_size: int = 256,
    **options: Any,
) -> np.ndarray:
  """``method(model, images, targets, **options)`` over many images, ``batch_size`` at a time.

  Every call sees a batch of exactly ``batch_size`` images (the last one is
  padded by repeating its final image, and the padding's maps are dropped), so
  the method's jitted core is compiled once, whatever ``len(images)``. Random
  methods receive the same ``options`` (e.g. the same ``key``) in every batch.

  Args:
    method: a saliency method ``method(model, images, targets, **options)``.
    model: the classifier.
    images: ``(N, H, W, C)`` float images.
    targets: ``(N,)`` integer classes.
    batch_size: images per call (at most ``N`` are used).
    **options: passed to ``method``.

  Returns:
    NumPy array of the maps, ``(N, ...)``, as ``method`` returns them.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> from saliency_guide.methods import gradients
    >>> x = jnp.zeros((5, 28, 28, 1))
    >>> attribute_batched(gradients, MLP(rngs=nnx.Rngs(0)), x, jnp.arange(5), batch_size=2).shape
    (5, 28, 28, 1)
  """
  if not callable(method):
    raise TypeError(f"method: expected a saliency method, got {method!r}")
  batch_size = check_positive_int("batch_size", batch_size)
  images = np.asarray(images)
  targets = np.asarray(targets)
  if images.ndim != 4:
    raise ValueError(f"images: expected rank 4 (N, H, W, C), got shape {images.shape}")
  if targets.shape != (len(images),):
    raise ValueError(f"targets: expected shape ({len(images)},), got {targets.shape}")
  if len(images) == 0:
    raise ValueError("images: expected at least one image, got 0")
  size = min(batch_size, len(images))
  out = []
  for start in range(0, len(images), size):
    x, t = images[start : start + size], targets[start : start + size]
    n = len(x)
    if n < size:
      x = np.concatenate([x, np.repeat(x[-1:], size - n, axis=0)])
      t = np.concatenate([t, np.repeat(t[-1:], size - n)])
    maps = method(model, jnp.asarray(x), jnp.asarray(t), **options)
    out.append(np.asarray(maps)[:n])
  return np.concatenate(out)
