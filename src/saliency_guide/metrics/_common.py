"""What every metric shares: per-pixel scores, pixel rankings, summary statistics.

Saliency methods return two kinds of maps: per-feature maps ``(B, H, W, C)``
(gradients, Integrated Gradients, ...) and per-pixel maps ``(B, H, W)`` (the
CAM family). Every metric first reduces a map to one **score per pixel** by
summing over channels (:func:`pixel_scores`): the total attribution a pixel
receives. On MNIST (one channel) that is the map itself.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["mean_and_sem", "pixel_scores", "rank_pixels"]


def pixel_scores(attributions: jax.Array) -> jax.Array:
  r"""One score per pixel: maps ``(B, H, W, C)`` summed over channels; ``(B, H, W)`` unchanged.

  .. math:: s_{b,h,w} = \sum_{c} \phi_{b,h,w,c}

  Summing keeps the sign (a pixel whose channels push the logit in opposite
  directions scores their net effect), which is what deletion, insertion and
  ROAR rank by.

  Args:
    attributions: ``(B, H, W, C)`` or ``(B, H, W)``.

  Returns:
    float32 array ``(B, H, W)``.

  Example:
    >>> import jax.numpy as jnp
    >>> pixel_scores(jnp.ones((2, 4, 4, 3))).shape
    (2, 4, 4)
    >>> float(pixel_scores(jnp.ones((2, 4, 4, 3)))[0, 0, 0])
    3.0
  """
  attributions = jnp.asarray(attributions, jnp.float32)
  if attributions.ndim == 4:
    return attributions.sum(axis=-1)
  if attributions.ndim == 3:
    return attributions
  raise ValueError(
      f"attributions: expected rank 3 (B, H, W) or 4 (B, H, W, C), got shape {attributions.shape}"
  )


@functools.partial(jax.jit, static_argnames=("absolute",))
def rank_pixels(scores: jax.Array, key: jax.Array, absolute: bool = False) -> jax.Array:
  """Rank of every pixel, 0 for the most important, ties broken at random.

  Pixels are ordered by decreasing score (or decreasing ``|score|``). Equal
  scores are common — gradient × input is exactly zero on the whole MNIST
  background — and a stable sort would break those ties by pixel index,
  removing the top rows of the image first; a random order among tied pixels
  (drawn from ``key``, independently per image) is the unbiased choice.

  Args:
    scores: ``(B, H, W)`` per-pixel scores.
    key: a JAX PRNG key for the tie-breaking order.
    absolute: rank by ``|score|``.

  Returns:
    int32 array ``(B, H, W)``: a permutation of ``0 .. H*W-1`` per image.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> rank_pixels(jnp.array([[[0.1, 3.0], [-1.0, 2.0]]]), jax.random.key(0)).tolist()
    [[[2, 0], [3, 1]]]
  """
  batch = scores.shape[0]
  flat = scores.reshape(batch, -1)
  if absolute:
    flat = jnp.abs(flat)
  tiebreak = jax.random.uniform(key, flat.shape)
  # lexsort: the last key is the primary one.
  order = jax.vmap(lambda s, t: jnp.lexsort((t, -s)))(flat, tiebreak)
  ranks = jax.vmap(lambda o: jnp.zeros_like(o).at[o].set(jnp.arange(o.size, dtype=o.dtype)))(order)
  return ranks.astype(jnp.int32).reshape(scores.shape)


def mean_and_sem(values: Any, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
  r"""Mean and standard error of the mean, ignoring NaNs.

  .. math:: \bar v = \frac1n \sum_i v_i, \qquad
            \mathrm{s.e.} = \sqrt{\frac{\sum_i (v_i - \bar v)^2}{n (n - 1)}}

  Args:
    values: array of measurements; NaN entries (e.g. the rank correlation of
      a constant map) are left out.
    axis: the axis of the repeated measurements.

  Returns:
    ``(mean, sem)`` NumPy arrays (``sem`` is NaN where fewer than two values).

  Example:
    >>> m, s = mean_and_sem([1.0, 2.0, 3.0])
    >>> float(m), round(float(s), 4)
    (2.0, 0.5774)
  """
  values = np.asarray(values, np.float64)
  n = np.sum(~np.isnan(values), axis=axis)
  with np.errstate(invalid="ignore", divide="ignore"):
    mean = np.nansum(values, axis=axis) / n
    sq = np.nansum((values - np.expand_dims(mean, axis)) ** 2, axis=axis)
    sem = np.sqrt(sq / (n * (n - 1)))
  return mean, np.where(n >= 2, sem, np.nan)
