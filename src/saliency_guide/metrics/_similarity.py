r"""How similar are two saliency maps? Rank correlation and SSIM, image by image.

The sanity checks of Adebayo et al. (2018) compare the map of a trained model
with the map of a damaged one. Two maps can be compared as **rankings** of the
pixels (Spearman's :math:`\rho`, of the signed map and of its absolute value,
which forgives sign flips) or as **pictures** (the structural similarity index,
SSIM, of Wang et al. 2004, computed by ``dm_pix.ssim``). Every function first
reduces maps to one score per pixel (:func:`~saliency_guide.metrics.pixel_scores`),
so ``(B, H, W, C)`` and ``(B, H, W)`` maps can be compared.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import dm_pix
import jax
import jax.numpy as jnp

from saliency_guide.metrics._common import pixel_scores
from saliency_guide.validation import check_flag

__all__ = ["Similarity", "rank_correlation", "similarity", "ssim"]


class Similarity(NamedTuple):
  """Four similarities between two batches of maps, one value per image (a JAX pytree).

  Attributes:
    rank_correlation: Spearman :math:`\\rho` of the signed per-pixel scores.
    abs_rank_correlation: Spearman :math:`\\rho` of their absolute values.
    ssim: SSIM of the signed maps, each scaled to :math:`[0, 1]` (0.5 is zero).
    abs_ssim: SSIM of the absolute maps, each scaled to :math:`[0, 1]`.
  """

  rank_correlation: jax.Array
  abs_rank_correlation: jax.Array
  ssim: jax.Array
  abs_ssim: jax.Array


def _pair(maps_a: Any, maps_b: Any) -> tuple[jax.Array, jax.Array]:
  for name, m in (("maps_a", maps_a), ("maps_b", maps_b)):
    if not hasattr(m, "shape") or not hasattr(m, "dtype"):
      raise TypeError(
          f"{name}: expected an array (B, H, W) or (B, H, W, C), got {type(m).__name__}"
      )
    if m.ndim not in (3, 4):
      raise ValueError(f"{name}: expected rank 3 (B, H, W) or 4 (B, H, W, C), got shape {m.shape}")
  a, b = pixel_scores(maps_a), pixel_scores(maps_b)
  if a.shape != b.shape:
    raise ValueError(
        f"maps_a, maps_b: expected maps of the same batch and spatial shape, got "
        f"{tuple(maps_a.shape)} and {tuple(maps_b.shape)}"
    )
  if not (bool(jnp.isfinite(a).all()) and bool(jnp.isfinite(b).all())):
    raise ValueError("maps_a, maps_b: expected finite values, got NaN or Inf")
  return a, b


def _average_ranks(x: jax.Array) -> jax.Array:
  """0-based ranks of a 1-D array, ties sharing their average rank (as scipy does)."""
  s = jnp.sort(x)
  first = jnp.searchsorted(s, x, side="left")
  last = jnp.searchsorted(s, x, side="right") - 1
  return (first + last).astype(jnp.float32) / 2


def _pearson(a: jax.Array, b: jax.Array) -> jax.Array:
  a = a - a.mean()
  b = b - b.mean()
  return (a @ b) / jnp.sqrt((a @ a) * (b @ b))


@jax.jit
def _spearman(a: jax.Array, b: jax.Array) -> jax.Array:
  """Spearman's rho of the rows of two ``(B, N)`` arrays."""
  return jax.vmap(lambda x, y: _pearson(_average_ranks(x), _average_ranks(y)))(a, b)


def rank_correlation(maps_a: jax.Array, maps_b: jax.Array, *, absolute: bool = False) -> jax.Array:
  r"""Spearman rank correlation of the per-pixel scores of two batches of maps.

  .. math:: \rho(a, b) = \mathrm{corr}\big(\mathrm{rank}(s_a), \mathrm{rank}(s_b)\big)

  with :math:`s` the map summed over channels, i.e. the Pearson correlation of
  the ranks of a map's pixels, tied values sharing their average rank as in
  :func:`scipy.stats.spearmanr`. ``absolute=True`` ranks :math:`|s|`, which
  forgives sign flips (Adebayo et al. report both). A constant map (e.g. an
  all-zero CAM) ranks nothing: its correlation is ``nan``; average with
  ``nanmean``.

  Args:
    maps_a: ``(B, H, W)`` or ``(B, H, W, C)``.
    maps_b: the same batch and spatial shape.
    absolute: compare :math:`|s_a|` and :math:`|s_b|`.

  Returns:
    float32 array ``(B,)`` in :math:`[-1, 1]`.

  Raises:
    TypeError, ValueError: not arrays, not maps, different shapes, or NaN/Inf values.

  Example:
    >>> import jax.numpy as jnp
    >>> a = jnp.arange(2 * 16.0).reshape(2, 4, 4)
    >>> rank_correlation(a, a ** 3).tolist()  # any increasing function: rho = 1
    [1.0, 1.0]
    >>> rank_correlation(a, -a, absolute=True).tolist()
    [1.0, 1.0]

  References:
    C. Spearman. *The proof and measurement of association between two
    things.* American Journal of Psychology 15 (1904).
  """
  check_flag("absolute", absolute)
  a, b = _pair(maps_a, maps_b)
  a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
  if absolute:
    a, b = jnp.abs(a), jnp.abs(b)
  return _spearman(a, b)


def _to_unit(s: jax.Array, absolute: bool) -> jax.Array:
  """Scale each map to [0, 1]: |s| / max|s|, or s / (2 max|s|) + 1/2 (zero maps stay 0 / 0.5)."""
  scale = jnp.abs(s).max(axis=(1, 2), keepdims=True)
  scale = jnp.where(scale > 0, scale, 1.0)
  return jnp.abs(s) / scale if absolute else s / (2 * scale) + 0.5


@jax.jit
def _ssim_unit(a: jax.Array, b: jax.Array) -> jax.Array:
  return dm_pix.ssim(a[..., None], b[..., None], max_val=1.0)


def ssim(maps_a: jax.Array, maps_b: jax.Array, *, absolute: bool = False) -> jax.Array:
  r"""Structural similarity (SSIM) of two batches of maps, each scaled to :math:`[0, 1]`.

  SSIM (Wang et al., 2004) compares local means :math:`\mu`, variances
  :math:`\sigma^2` and covariance :math:`\sigma_{ab}` in an 11×11 Gaussian
  window (:math:`\sigma = 1.5`) and averages over windows:

  .. math::

     \mathrm{SSIM}(a, b) = \frac{(2\mu_a\mu_b + C_1)(2\sigma_{ab} + C_2)}
       {(\mu_a^2 + \mu_b^2 + C_1)(\sigma_a^2 + \sigma_b^2 + C_2)}.

  Maps have arbitrary units, so each is first scaled by its own maximum
  magnitude, the way it would be shown: :math:`|s| / \max|s|` with
  ``absolute=True``, else :math:`s / (2\max|s|) + \tfrac12` (zero at 0.5). The
  SSIM itself is ``dm_pix.ssim`` (DeepMind's maintained implementation).

  Args:
    maps_a: ``(B, H, W)`` or ``(B, H, W, C)`` (at least 11×11 pixels).
    maps_b: the same batch and spatial shape.
    absolute: compare magnitudes.

  Returns:
    float32 array ``(B,)``; 1 for identical maps.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> a = jax.random.normal(jax.random.key(0), (2, 28, 28))
    >>> ssim(a, 3 * a).round(4).tolist()  # scale-free
    [1.0, 1.0]
  """
  check_flag("absolute", absolute)
  a, b = _pair(maps_a, maps_b)
  if min(a.shape[1:]) < 11:
    raise ValueError(f"maps_a, maps_b: SSIM needs maps of at least 11x11 pixels, got {a.shape[1:]}")
  return _ssim_unit(_to_unit(a, absolute), _to_unit(b, absolute))


def similarity(maps_a: jax.Array, maps_b: jax.Array) -> Similarity:
  """All four similarities of :class:`Similarity` between two batches of maps.

  Args:
    maps_a: ``(B, H, W)`` or ``(B, H, W, C)``.
    maps_b: the same batch and spatial shape.

  Returns:
    :class:`Similarity` of ``(B,)`` arrays.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> a = jax.random.normal(jax.random.key(0), (1, 28, 28, 1))
    >>> [round(float(v[0]), 4) for v in similarity(a, a)]
    [1.0, 1.0, 1.0, 1.0]
  """
  return Similarity(
      rank_correlation=rank_correlation(maps_a, maps_b),
      abs_rank_correlation=rank_correlation(maps_a, maps_b, absolute=True),
      ssim=ssim(maps_a, maps_b),
      abs_ssim=ssim(maps_a, maps_b, absolute=True),
  )
