r"""How similar are two saliency maps? Rank correlation, SSIM and HOG, image by image.

The sanity checks of Adebayo et al. (2018) compare the map of a trained model
with the map of a damaged one. Two maps can be compared as **rankings** of the
pixels (Spearman's :math:`\rho`, of the signed map and of its absolute value,
which forgives sign flips), as **pictures** (the structural similarity index,
SSIM, of Wang et al. 2004, computed by ``dm_pix.ssim``) or by their **edges**
(the correlation of their histograms of oriented gradients, HOG, of Dalal and
Triggs 2005). Every function first reduces maps to one score per pixel
(:func:`~saliency_guide.metrics.pixel_scores`), so ``(B, H, W, C)`` and
``(B, H, W)`` maps can be compared.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import dm_pix
import jax
import jax.numpy as jnp

from saliency_guide.metrics._common import pixel_scores
from saliency_guide.validation import check_flag, check_positive_int

__all__ = ["Similarity", "hog_features", "hog_similarity", "rank_correlation", "similarity", "ssim"]


class Similarity(NamedTuple):
  """Five similarities between two batches of maps, one value per image (a JAX pytree).

  Attributes:
    rank_correlation: Spearman :math:`\\rho` of the signed per-pixel scores
      (:func:`rank_correlation`).
    abs_rank_correlation: Spearman :math:`\\rho` of their absolute values.
    ssim: SSIM of the signed maps, each scaled to :math:`[0, 1]` (0.5 is zero)
      (:func:`ssim`).
    abs_ssim: SSIM of the absolute maps, each scaled to :math:`[0, 1]`.
    hog: Pearson correlation of the HOG descriptors of the absolute maps
      (:func:`hog_similarity`).
  """

  rank_correlation: jax.Array
  abs_rank_correlation: jax.Array
  ssim: jax.Array
  abs_ssim: jax.Array
  hog: jax.Array


def _check_maps(name: str, m: Any) -> None:
  if not hasattr(m, "shape") or not hasattr(m, "dtype"):
    raise TypeError(f"{name}: expected an array (B, H, W) or (B, H, W, C), got {type(m).__name__}")
  if m.ndim not in (3, 4):
    raise ValueError(f"{name}: expected rank 3 (B, H, W) or 4 (B, H, W, C), got shape {m.shape}")


def _pair(maps_a: Any, maps_b: Any) -> tuple[jax.Array, jax.Array]:
  _check_maps("maps_a", maps_a)
  _check_maps("maps_b", maps_b)
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


#: Default HOG layout for 28×28 maps (see :func:`hog_features` for why).
HOG_CELL_SIZE = 7
HOG_ORIENTATIONS = 9
HOG_BLOCK_SIZE = 2
_HOG_EPS = 1e-5  # as Dalal & Triggs and skimage: keeps an empty block at zero


@functools.partial(jax.jit, static_argnames=("cell_size", "orientations", "block_size"))
def _hog(maps: jax.Array, cell_size: int, orientations: int, block_size: int) -> jax.Array:
  """``(B, D)`` HOG descriptors of checked ``(B, H, W)`` per-pixel maps."""
  a = jnp.abs(maps)
  # Centred differences [-1, 0, 1], zero on the border rows/columns (as skimage), of
  # |s| / max|s|: scaled after differencing, so that equal pixels give exactly zero.
  peak = a.max(axis=(1, 2), keepdims=True)
  peak = jnp.where(peak > 0, peak, 1.0)
  g_row = jnp.pad(a[:, 2:, :] - a[:, :-2, :], ((0, 0), (1, 1), (0, 0))) / peak
  g_col = jnp.pad(a[:, :, 2:] - a[:, :, :-2], ((0, 0), (0, 0), (1, 1))) / peak
  magnitude = jnp.hypot(g_row, g_col)
  angle = jnp.rad2deg(jnp.arctan2(g_row, g_col)) % 180.0  # unsigned: [0, 180)
  bins = jnp.minimum(jnp.floor(angle * (orientations / 180.0)).astype(jnp.int32),
                     orientations - 1)
  batch, height, width = a.shape
  n_rows, n_cols = height // cell_size, width // cell_size
  votes = jax.nn.one_hot(bins, orientations) * magnitude[..., None]
  votes = votes[:, : n_rows * cell_size, : n_cols * cell_size]
  cells = votes.reshape(batch, n_rows, cell_size, n_cols, cell_size, orientations)
  cells = cells.sum(axis=(2, 4)) / cell_size**2  # (B, rows, cols, O): mean magnitude per bin
  m_rows, m_cols = n_rows - block_size + 1, n_cols - block_size + 1
  blocks = jnp.stack([  # (B, block rows, block cols, block_size, block_size, O)
      jnp.stack([cells[:, i : i + m_rows, j : j + m_cols] for j in range(block_size)], axis=3)
      for i in range(block_size)
  ], axis=3)
  norm = jnp.sqrt((blocks**2).sum(axis=(3, 4, 5), keepdims=True) + _HOG_EPS**2)
  return (blocks / norm).reshape(batch, -1)


def _check_hog_layout(
    shape: tuple[int, ...], cell_size: Any, orientations: Any, block_size: Any
) -> tuple[int, int, int]:
  cell_size = check_positive_int("cell_size", cell_size)
  orientations = check_positive_int("orientations", orientations)
  block_size = check_positive_int("block_size", block_size)
  need = cell_size * block_size
  if min(shape[1:3]) < need:
    raise ValueError(
        f"maps: HOG with {cell_size}x{cell_size}-pixel cells in blocks of {block_size}x"
        f"{block_size} cells needs maps of at least {need}x{need} pixels, got {shape[1:3]}"
    )
  return cell_size, orientations, block_size


def hog_features(
    maps: jax.Array,
    *,
    cell_size: int = HOG_CELL_SIZE,
    orientations: int = HOG_ORIENTATIONS,
    block_size: int = HOG_BLOCK_SIZE,
) -> jax.Array:
  r"""Histogram-of-oriented-gradients (HOG) descriptors of the absolute maps.

  The descriptor of Dalal and Triggs (2005), computed on :math:`a = |s| / \max|s|`
  (the per-pixel map :math:`s`, absolute, scaled to :math:`[0, 1]`):

  1. gradients by centred differences,
     :math:`g_r = a_{r+1,c} - a_{r-1,c}`, :math:`g_c = a_{r,c+1} - a_{r,c-1}`
     (zero on the border), magnitude :math:`m = \sqrt{g_r^2 + g_c^2}`,
     unsigned orientation :math:`\theta = \operatorname{atan2}(g_r, g_c) \bmod 180°`;
  2. in each ``cell_size``×``cell_size`` cell, a histogram of ``orientations``
     bins of :math:`180°/O` each: bin :math:`k` holds the mean over the cell's
     pixels of :math:`m \cdot [\theta \in [k, k+1) \cdot 180°/O]`;
  3. overlapping blocks of ``block_size``×``block_size`` cells (stride one
     cell), each L2-normalised, :math:`v / \sqrt{\lVert v\rVert_2^2 +
     \epsilon^2}` with :math:`\epsilon = 10^{-5}`, concatenated.

  A vertical edge has a horizontal gradient (:math:`\theta = 0`, bin 0); a
  horizontal edge puts its mass in the bin of 90°. Block normalisation makes
  the descriptor invariant to the map's contrast, which matters here: the map
  of a randomised model is on another scale than the trained model's.

  The defaults are chosen for 28×28 MNIST maps: 7×7-pixel cells tile the map
  exactly into 4×4 cells (Dalal & Triggs' 8 pixels would leave 4 rows and
  columns out) and a cell spans a stroke segment (strokes are 2–3 pixels
  wide), 9 unsigned bins of 20° and 2×2-cell blocks are Dalal & Triggs' best
  settings, and L2 is one of the three block norms they found equally good (the
  simplest; no clipping). Votes go to one bin and one cell (no interpolation),
  as in ``skimage.feature.hog(..., block_norm="L2")``, which these features
  equal. An MNIST map has :math:`3 \cdot 3` blocks :math:`\times\ 2 \cdot 2`
  cells :math:`\times\ 9` bins = 324 features.

  A map of constant magnitude (e.g. all zero) has no gradient: its
  descriptor is all zero.

  Args:
    maps: ``(B, H, W)`` or ``(B, H, W, C)`` (summed over channels first), at
      least ``cell_size * block_size`` pixels a side; finite values.
    cell_size: pixels per cell side.
    orientations: orientation bins over :math:`[0°, 180°)`.
    block_size: cells per block side.

  Returns:
    float32 array ``(B, D)`` with :math:`D = (H_c - b + 1)(W_c - b + 1)\,b^2\,O`,
    :math:`H_c = \lfloor H / \text{cell\_size} \rfloor`, in the order
    (block row, block column, cell row, cell column, bin).

  Raises:
    TypeError, ValueError: not maps, non-finite values, a bad layout, or maps
      smaller than one block.

  Example:
    >>> import jax.numpy as jnp
    >>> edge = jnp.zeros((1, 28, 28)).at[:, :, 14:].set(1.0)  # a vertical edge
    >>> f = hog_features(edge)
    >>> f.shape
    (1, 324)
    >>> f.reshape(-1, 9).sum(axis=0).argmax().item()  # 0°: the horizontal-gradient bin
    0
    >>> hog_features(edge.transpose(0, 2, 1)).reshape(-1, 9).sum(axis=0).argmax().item()
    4
    >>> bool(jnp.allclose(hog_features(5 * edge), f, atol=1e-6))  # contrast does not matter
    True

  References:
    N. Dalal, B. Triggs. *Histograms of Oriented Gradients for Human
    Detection.* CVPR 2005.
  """
  _check_maps("maps", maps)
  s = pixel_scores(maps)
  if not bool(jnp.isfinite(s).all()):
    raise ValueError("maps: expected finite values, got NaN or Inf")
  layout = _check_hog_layout(s.shape, cell_size, orientations, block_size)
  return _hog(s, *layout)


@jax.jit
def _rowwise_pearson(a: jax.Array, b: jax.Array) -> jax.Array:
  return jax.vmap(_pearson)(a, b)


def hog_similarity(
    maps_a: jax.Array,
    maps_b: jax.Array,
    *,
    cell_size: int = HOG_CELL_SIZE,
    orientations: int = HOG_ORIENTATIONS,
    block_size: int = HOG_BLOCK_SIZE,
) -> jax.Array:
  r"""Pearson correlation of the HOG descriptors of two batches of absolute maps.

  .. math:: r(a, b) = \mathrm{corr}\big(\mathrm{HOG}(|s_a|), \mathrm{HOG}(|s_b|)\big)

  with :math:`\mathrm{HOG}` the descriptor of :func:`hog_features`: do the two
  maps have edges of the same orientations in the same places? Adebayo et al.
  (2018) report it beside Spearman's :math:`\rho` and SSIM. It is
  scale-free, and forgives a sign flip (magnitudes are compared).

  A map of constant magnitude (e.g. an all-zero CAM) has an all-zero
  descriptor and no correlation with anything: its value is ``nan``, as for
  :func:`rank_correlation`; average with ``nanmean``
  (:func:`~saliency_guide.metrics.mean_and_sem` leaves NaNs out).

  Args:
    maps_a: ``(B, H, W)`` or ``(B, H, W, C)``, at least 14×14 pixels with the
      default layout.
    maps_b: the same batch and spatial shape.
    cell_size: pixels per cell side (see :func:`hog_features`).
    orientations: orientation bins over :math:`[0°, 180°)`.
    block_size: cells per block side.

  Returns:
    float32 array ``(B,)`` in :math:`[-1, 1]`; 1 for identical maps.

  Raises:
    TypeError, ValueError: not arrays, not maps, different shapes, NaN/Inf
      values, a bad layout or maps smaller than one block.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> a = jax.random.normal(jax.random.key(0), (2, 28, 28))
    >>> hog_similarity(a, -3 * a).round(4).tolist()  # scale and sign do not matter
    [1.0, 1.0]
    >>> b = jax.random.normal(jax.random.key(1), (2, 28, 28))
    >>> bool((hog_similarity(a, b) < 0.5).all())  # unrelated noise
    True

  References:
    N. Dalal, B. Triggs. *Histograms of Oriented Gradients for Human
    Detection.* CVPR 2005.

    J. Adebayo, J. Gilmer, M. Muelly, I. Goodfellow, M. Hardt, B. Kim.
    *Sanity Checks for Saliency Maps.* NeurIPS 2018. arXiv:1810.03292.
  """
  a, b = _pair(maps_a, maps_b)
  layout = _check_hog_layout(a.shape, cell_size, orientations, block_size)
  return _rowwise_pearson(_hog(a, *layout), _hog(b, *layout))


def similarity(maps_a: jax.Array, maps_b: jax.Array) -> Similarity:
  """All five similarities of :class:`Similarity` between two batches of maps.

  Each field is computed by its own function with its defaults:
  :func:`rank_correlation` (signed and ``absolute=True``), :func:`ssim`
  (signed and ``absolute=True``) and :func:`hog_similarity`. A constant map
  scores ``nan`` on the rank correlations and the HOG similarity (nothing to
  rank, no edges) and a finite SSIM.

  Args:
    maps_a: ``(B, H, W)`` or ``(B, H, W, C)``, at least 14×14 pixels (the HOG
      similarity's smallest block).
    maps_b: the same batch and spatial shape.

  Returns:
    :class:`Similarity` of ``(B,)`` arrays.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> a = jax.random.normal(jax.random.key(0), (1, 28, 28, 1))
    >>> [round(float(v[0]), 4) for v in similarity(a, a)]
    [1.0, 1.0, 1.0, 1.0, 1.0]
    >>> Similarity._fields
    ('rank_correlation', 'abs_rank_correlation', 'ssim', 'abs_ssim', 'hog')
  """
  return Similarity(
      rank_correlation=rank_correlation(maps_a, maps_b),
      abs_rank_correlation=rank_correlation(maps_a, maps_b, absolute=True),
      ssim=ssim(maps_a, maps_b),
      abs_ssim=ssim(maps_a, maps_b, absolute=True),
      hog=hog_similarity(maps_a, maps_b),
  )
