r"""XRAI: regions ranked greedily by their density of Integrated Gradients attribution.

.. math::

   R_{k} = \operatorname*{arg\,max}_{s \in S,\ |s \setminus U_{k-1}| \ge d}
     \frac{1}{|s \setminus U_{k-1}|} \sum_{i \in s \setminus U_{k-1}} a_i,
   \qquad U_k = U_{k-1} \cup R_k,

with :math:`a` the base attribution (Integrated Gradients from a black and a
white baseline, averaged, maximum over channels), :math:`S` the dilated
Felzenszwalb segments at several scales, and every pixel of
:math:`R_k \setminus U_{k-1}` given the gain of step :math:`k`. The
segmentation runs on the CPU in NumPy/scikit-image, one image at a time (the
part that is not jitted); the attribution and the greedy selection are JAX.

References:
  A. Kapishnikov, T. Bolukbasi, F. Viégas, M. Terry. *XRAI: Better Attributions
  Through Regions.* ICCV 2019. arXiv:1906.02825.

  P. F. Felzenszwalb, D. P. Huttenlocher. *Efficient Graph-Based Image
  Segmentation.* IJCV 59(2), 2004.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from saliency_guide.methods.integrated_gradients import QUADRATURE_RULES, integrated_gradients
from saliency_guide.validation import (
    check_choice,
    check_flag,
    check_inputs,
    check_maps,
    check_number,
    check_positive_int,
    describe,
)

__all__ = [
    "FELZENSZWALB_SCALES",
    "XRAI_ALGORITHMS",
    "grid_segments",
    "xrai",
    "xrai_base_attributions",
    "xrai_segments",
]

FELZENSZWALB_SCALES = (50, 100, 150, 250, 500, 1200)
"""PAIR's Felzenszwalb ``scale`` values (``saliency`` 0.2.1, ``core/xrai.py``)."""

XRAI_ALGORITHMS = ("full", "fast")
"""``xrai(algorithm=...)``: PAIR's exact greedy search, or its one-pass approximation."""

_PAIR_SIDE = 224  # PAIR segments at 224 × 224 and states its pixel counts for that size
_PAIR_DILATION = 5
_PAIR_MIN_PIXEL_DIFF = 50


def xrai(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    base_attributions: jax.Array | None = None,
    segments: Any = None,
    algorithm: str = "full",
    area_threshold: float = 1.0,
    min_pixel_diff: int | None = None,
    steps: int = 100,
    quadrature: str = "riemann_trapezoid",
    return_ranks: bool = False,
    internal_batch_size: int = 64,
) -> jax.Array | tuple[jax.Array, jax.Array]:
  r"""XRAI maps: each pixel gets the attribution density of the region that added it.

  Kapishnikov et al. (2019) rank *regions* rather than pixels. Given a base
  attribution :math:`a` (one value per pixel) and a set :math:`S` of
  overlapping candidate regions, XRAI grows a selection :math:`U_0 = \emptyset`
  greedily. At step :math:`k` every remaining region :math:`s` is scored by
  the *gain* — the mean attribution of the pixels it would add,

  .. math::

     g_k(s) = \frac{1}{|s \setminus U_{k-1}|} \sum_{i \in s \setminus U_{k-1}} a_i ,

  regions adding fewer than ``min_pixel_diff`` new pixels are dropped for
  good, the best region :math:`R_k` is added (the first one on ties), and the
  pixels :math:`R_k \setminus U_{k-1}` receive the value :math:`g_k(R_k)`.
  The search stops when no region is left or once the covered fraction
  exceeds ``area_threshold``; pixels never covered receive the mean of
  :math:`a` over them. This is PAIR's ``XRAI.GetMaskWithDetails`` (``saliency``
  0.2.1) ``.attribution_mask``, and ``algorithm="fast"`` its ``_xrai_fast``:
  regions sorted once by their gain on the empty selection, then added in that
  order (skipping those adding fewer than ``min_pixel_diff`` pixels), each
  given the mean of :math:`a` over the pixels it adds; it ignores
  ``area_threshold``.

  The base attribution is, by default, as in PAIR: Integrated Gradients of the
  target logit from a black and a white baseline (each image's minimum and
  maximum value), averaged (:func:`xrai_base_attributions`), then the maximum
  over channels. The regions are
  :func:`xrai_segments` of the images (PAIR's Felzenszwalb settings).

  Args:
    model: a classifier returning logits ``(B, classes)``.
    images: float array ``(B, H, W, C)`` (NHWC), finite values.
    targets: integer array ``(B,)``, the class to explain for each image.
    base_attributions: precomputed attributions ``(B, H, W)`` or ``(B, H, W, C)``
      (the maximum over channels is used); ``None`` computes the averaged
      black/white Integrated Gradients.
    segments: boolean array ``(B, M, H, W)`` of ``M`` candidate regions per
      image (all-``False`` rows are padding and never chosen), e.g. from
      :func:`xrai_segments` or :func:`grid_segments`; ``None`` runs
      :func:`xrai_segments` with its defaults.
    algorithm: ``"full"`` or ``"fast"`` (:data:`XRAI_ALGORITHMS`).
    area_threshold: fraction of the image in ``(0, 1]`` after which the full
      search stops (the rest gets its mean attribution).
    min_pixel_diff: fewest new pixels a region must add; ``None`` scales PAIR's
      50 pixels of a 224 × 224 image to the image's area (at least 1; 1 on MNIST).
    steps: Integrated Gradients nodes per baseline (PAIR: 100).
    quadrature: Integrated Gradients rule (:data:`~saliency_guide.methods.QUADRATURE_RULES`);
      ``"riemann_trapezoid"`` has PAIR's nodes (``linspace(0, 1, steps)``).
    return_ranks: also return each pixel's region rank (1 = highest gain).
    internal_batch_size: path points per forward/backward pass of Integrated Gradients.

  Returns:
    float32 array ``(B, H, W)``; with ``return_ranks=True`` a pair
    ``(maps, ranks)``, ``ranks`` int32 ``(B, H, W)``: PAIR's flattened
    ``segments`` (regions ordered by decreasing gain, ties in the order added,
    the uncovered remainder last).

  Raises:
    TypeError, ValueError: bad ``images``/``targets``, ``base_attributions`` or
      ``segments`` of the wrong shape or dtype, unknown ``algorithm``,
      ``area_threshold`` outside ``(0, 1]``, ``min_pixel_diff``/``steps`` not
      positive integers.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import CNN
    >>> from saliency_guide.methods import xrai
    >>> model = CNN(rngs=nnx.Rngs(0))
    >>> x = jnp.zeros((2, 28, 28, 1)).at[:, 8:20, 12:16].set(1.0)
    >>> maps, ranks = xrai(model, x, jnp.array([3, 7]), steps=8, return_ranks=True)
    >>> maps.shape, ranks.shape, int(ranks.min())
    ((2, 28, 28), (2, 28, 28), 1)

  References:
    A. Kapishnikov, T. Bolukbasi, F. Viégas, M. Terry. *XRAI: Better
    Attributions Through Regions.* ICCV 2019. arXiv:1906.02825.
  """
  images, targets = check_inputs(model, images, targets)
  check_choice("algorithm", algorithm, XRAI_ALGORITHMS)
  threshold = check_number("area_threshold", area_threshold)
  if threshold > 1.0:
    raise ValueError(f"area_threshold: expected a fraction in (0, 1], got {area_threshold}")
  check_flag("return_ranks", return_ranks)
  batch, height, width, _ = images.shape
  if min_pixel_diff is None:
    min_pixel_diff = _scaled_min_pixel_diff(height, width)
  min_pixel_diff = check_positive_int("min_pixel_diff", min_pixel_diff)
  if base_attributions is None:
    _check_ig_options(steps, quadrature, internal_batch_size)
    attributions = _black_white_ig(model, images, targets, steps, quadrature,
                                   internal_batch_size)
  else:
    attributions = check_maps("base_attributions", base_attributions, images)
  if attributions.ndim == 4:
    attributions = attributions.max(axis=-1)  # PAIR's channel aggregation
  if segments is None:
    segments = xrai_segments(images)
  else:
    segments = _check_segments(segments, (batch, height, width))
  # The largest number of covered pixels c with c / (H W) <= area_threshold, in
  # float64 as PAIR compares np.mean(mask) <= area_threshold.
  pixels = height * width
  max_covered = int(np.flatnonzero(np.arange(pixels + 1) / pixels <= threshold)[-1])
  core = _select_full if algorithm == "full" else _select_fast
  maps, ranks = _select_batch(core, attributions.reshape(batch, pixels),
                              jnp.asarray(segments).reshape(batch, -1, pixels),
                              min_pixel_diff, max_covered)
  maps, ranks = maps.reshape(batch, height, width), ranks.reshape(batch, height, width)
  return (maps, ranks) if return_ranks else maps


def xrai_base_attributions(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    steps: int = 100,
    quadrature: str = "riemann_trapezoid",
    internal_batch_size: int = 64,
) -> jax.Array:
  r"""XRAI's base attribution: Integrated Gradients from black and white, averaged.

  .. math::

     a = \tfrac12\big(\mathrm{IG}(x; x'_{\text{black}}) + \mathrm{IG}(x; x'_{\text{white}})\big),
     \qquad x'_{\text{black}} = \min_i x_i, \quad x'_{\text{white}} = \max_i x_i,

  each baseline a constant image at the image's own minimum or maximum value
  (PAIR's ``XRAI._make_baselines``), with
  :func:`~saliency_guide.methods.integrated_gradients` of the target logit.
  Averaging the two keeps the pixels that a black baseline cannot see (the
  attribution of a black pixel from a black baseline is 0).

  Args:
    model: a classifier returning logits ``(B, classes)``.
    images: float array ``(B, H, W, C)`` (NHWC), finite values.
    targets: integer array ``(B,)``, the class to explain for each image.
    steps: quadrature nodes per baseline (PAIR: 100).
    quadrature: one of :data:`~saliency_guide.methods.QUADRATURE_RULES`;
      ``"riemann_trapezoid"`` has PAIR's nodes ``linspace(0, 1, steps)`` (PAIR
      weighs them all ``1 / steps``, the trapezoid halves the two ends).
    internal_batch_size: path points per forward/backward pass.

  Returns:
    float32 array ``(B, H, W, C)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import CNN
    >>> from saliency_guide.methods import xrai_base_attributions
    >>> x = jnp.zeros((1, 28, 28, 1)).at[:, 8:20, 12:16].set(1.0)
    >>> xrai_base_attributions(CNN(rngs=nnx.Rngs(0)), x, jnp.array([3]), steps=8).shape
    (1, 28, 28, 1)

  References:
    A. Kapishnikov, T. Bolukbasi, F. Viégas, M. Terry. *XRAI: Better
    Attributions Through Regions.* ICCV 2019. arXiv:1906.02825.
  """
  images, targets = check_inputs(model, images, targets)
  _check_ig_options(steps, quadrature, internal_batch_size)
  return _black_white_ig(model, images, targets, steps, quadrature, internal_batch_size)


def _check_ig_options(steps: Any, quadrature: Any, internal_batch_size: Any) -> None:
  check_positive_int("steps", steps)
  check_choice("quadrature", quadrature, QUADRATURE_RULES)
  check_positive_int("internal_batch_size", internal_batch_size)
  if quadrature == "riemann_trapezoid" and steps < 2:
    raise ValueError(f"steps: expected an integer >= 2 for quadrature='riemann_trapezoid', "
                     f"got {steps}")


def _black_white_ig(model: nnx.Module, images: jax.Array, targets: jax.Array, steps: int,
                    quadrature: str, internal_batch_size: int) -> jax.Array:
  """:func:`xrai_base_attributions` on checked arguments."""
  low = jnp.min(images, axis=(1, 2, 3), keepdims=True) * jnp.ones_like(images)
  high = jnp.max(images, axis=(1, 2, 3), keepdims=True) * jnp.ones_like(images)
  ig = functools.partial(integrated_gradients, model, images, targets, steps=steps,
                         method=quadrature, internal_batch_size=internal_batch_size)
  return (ig(baseline=low) + ig(baseline=high)) / 2


# --------------------------------------------------------------------------------------
# Segmentation (NumPy / scikit-image, one image at a time: the part that is not jitted).
# --------------------------------------------------------------------------------------


def xrai_segments(
    images: Any,
    *,
    scales: Sequence[float] = FELZENSZWALB_SCALES,
    sigma: float = 0.8,
    min_size: int = 150,
    resize: int | None = _PAIR_SIDE,
    dilation_radius: int | None = None,
) -> np.ndarray:
  r"""XRAI's candidate regions: Felzenszwalb segments at several scales, dilated.

  PAIR's ``_get_segments_felzenszwalb``: each image is rescaled to the value
  range :math:`[-1, 1]` (its own min and max), resized to ``resize`` × ``resize``
  (bicubic, anti-aliased) so that the parameters mean the same on every image
  size, segmented by :func:`skimage.segmentation.felzenszwalb` once per value
  of ``scales`` (Gaussian pre-smoothing ``sigma``, smallest segment
  ``min_size`` pixels), the label images resized back (nearest neighbour),
  split into one boolean mask per label (labels that vanished in the resizing
  give empty masks, kept so that the order is PAIR's), and each mask dilated
  by a disk of radius ``dilation_radius`` pixels of the original image, so
  that regions overlap across edges.

  ``scales``, ``sigma`` and ``min_size`` are stated for a 224 × 224 image, as
  PAIR's are. With ``resize=None`` the image is segmented at its own size
  :math:`H \times W` instead, and they are scaled to it: Felzenszwalb's merge
  threshold :math:`k / |C|` compares the scale :math:`k` with a component's
  pixel count, so ``scales`` and ``min_size`` are multiplied by the area ratio
  :math:`\rho = HW / 224^2` (``min_size`` rounded, at least 1) and ``sigma``,
  a length, by :math:`\sqrt{\rho}`. On 28 × 28 digits this is an order of
  magnitude faster than segmenting an upsampled 224 × 224 copy.

  Runs in NumPy on the CPU, one image at a time.

  Args:
    images: float array ``(B, H, W, C)``.
    scales: Felzenszwalb ``scale`` values (larger: larger segments); PAIR's
      :data:`FELZENSZWALB_SCALES` by default.
    sigma: width of the Gaussian smoothing before segmenting (PAIR: 0.8).
    min_size: smallest segment in pixels (PAIR: 150).
    resize: side of the square image that is segmented (PAIR: 224); ``None``
      segments at the original size with the parameters scaled to it.
    dilation_radius: disk radius in original pixels; ``None`` scales PAIR's 5
      pixels of a 224 × 224 image to this size (1 on 28 × 28); 0: no dilation.

  Returns:
    bool NumPy array ``(B, M, H, W)``: ``M`` masks per image in PAIR's order
    (scale by scale, label by label), images with fewer masks padded with
    all-``False`` masks at the end.

  Example:
    >>> import numpy as np
    >>> x = np.zeros((1, 28, 28, 1), np.float32)
    >>> x[0, 6:22, 10:18] = 1.0
    >>> masks = xrai_segments(x, scales=(100,), dilation_radius=0, resize=None)
    >>> masks.shape, masks.sum(axis=(2, 3)).tolist()  # background and bar: a partition
    ((1, 2, 28, 28), [[656, 128]])
    >>> xrai_segments(x, scales=(100,), resize=None).sum(axis=(2, 3)).tolist()  # dilated
    [[700, 176]]

  References:
    P. F. Felzenszwalb, D. P. Huttenlocher. *Efficient Graph-Based Image
    Segmentation.* IJCV 59(2), 2004.
  """
  images = _check_images_only(images)
  if isinstance(scales, str) or not isinstance(scales, Sequence) or not scales:
    raise TypeError(f"scales: expected a non-empty sequence of positive numbers, "
                    f"got {describe(scales)}")
  scales = tuple(check_number("scales", s) for s in scales)
  sigma = check_number("sigma", sigma, inclusive=True)
  min_size = check_positive_int("min_size", min_size)
  if resize is not None:
    resize = check_positive_int("resize", resize)
  _, height, width, _ = images.shape
  if dilation_radius is None:
    dilation_radius = _scaled_dilation(height, width)
  if isinstance(dilation_radius, bool) or not isinstance(dilation_radius, int | np.integer):
    raise TypeError(f"dilation_radius: expected an integer >= 0, got {describe(dilation_radius)}")
  if dilation_radius < 0:
    raise ValueError(f"dilation_radius: expected an integer >= 0, got {dilation_radius}")
  per_image = [_felzenszwalb_masks(image, scales, sigma, min_size, resize, int(dilation_radius))
               for image in np.asarray(images, np.float32)]
  return _pad_masks(per_image)


def _felzenszwalb_masks(image: np.ndarray, scales: tuple[float, ...], sigma: float,
                        min_size: int, resize: int | None, radius: int) -> list[np.ndarray]:
  """One image's masks, as PAIR's ``_get_segments_felzenszwalb`` computes them."""
  from skimage import segmentation
  from skimage.morphology import dilation, disk
  from skimage.transform import resize as resize_image

  shape = image.shape[:2]
  if resize is None:  # parameters stated for 224 x 224, scaled to this image's area
    ratio = shape[0] * shape[1] / _PAIR_SIDE**2
    scales = tuple(scale * ratio for scale in scales)
    min_size, sigma = max(1, round(min_size * ratio)), sigma * math.sqrt(ratio)
  low, high = image.min(), image.max()
  # PAIR divides by (max - min): a constant image gives NaNs there; here it is all -1.
  # In float32 like PAIR's (the resize and the segments depend on the last bit).
  image = (image - low) / (high - low) if high > low else np.zeros_like(image)
  image = image * (1.0 - (-1.0)) + (-1.0)
  if resize is not None:
    image = resize_image(image, (resize, resize), order=3, mode="constant",
                         preserve_range=True, anti_aliasing=True)
  masks = []
  for scale in scales:
    labels = segmentation.felzenszwalb(image, scale=scale, sigma=sigma, min_size=min_size)
    if resize is not None:
      labels = resize_image(labels, shape, order=0, preserve_range=True, mode="constant",
                            anti_aliasing=False).astype(int)
    masks.extend(labels == label for label in range(labels.min(), labels.max() + 1))
  if radius:
    footprint = disk(radius)
    masks = [dilation(mask, footprint=footprint) for mask in masks]
  return masks


def grid_segments(images: Any, *, cells: int | Sequence[int] = 4) -> np.ndarray:
  """Square regions of ``cells`` pixels (several sizes: one partition per size).

  A segmentation that knows nothing of the image, to measure how much XRAI's
  result owes to Felzenszwalb's segments. Cells at the right and bottom edges
  are cut to the image.

  Args:
    images: float array ``(B, H, W, C)`` (only its shape is used).
    cells: side of the squares, or several sides.

  Returns:
    bool NumPy array ``(B, M, H, W)``, the same ``M`` masks for every image.

  Example:
    >>> import numpy as np
    >>> grid_segments(np.zeros((2, 28, 28, 1), np.float32), cells=(7, 14)).shape
    (2, 20, 28, 28)
  """
  images = _check_images_only(images)
  sizes = (cells,) if isinstance(cells, int | np.integer) else cells
  if isinstance(sizes, str) or not isinstance(sizes, Sequence) or not sizes:
    raise TypeError(f"cells: expected a positive integer or a non-empty sequence of them, "
                    f"got {describe(cells)}")
  sizes = tuple(check_positive_int("cells", c) for c in sizes)
  batch, height, width, _ = images.shape
  rows, cols = np.arange(height)[:, None], np.arange(width)[None, :]
  masks = []
  for size in sizes:
    label = (rows // size) * (-(-width // size)) + cols // size
    masks.extend(label == k for k in range(int(label.max()) + 1))
  return np.broadcast_to(np.stack(masks), (batch, len(masks), height, width)).copy()


def _scaled_dilation(height: int, width: int) -> int:
  """PAIR's 5-pixel dilation of a 224 × 224 image, scaled to this image's side."""
  return max(1, round(_PAIR_DILATION * math.sqrt(height * width) / _PAIR_SIDE))


def _scaled_min_pixel_diff(height: int, width: int) -> int:
  """PAIR's 50 pixels of a 224 × 224 image, scaled to this image's area (at least 1)."""
  return max(1, round(_PAIR_MIN_PIXEL_DIFF * height * width / _PAIR_SIDE**2))


def _pad_masks(per_image: list[list[np.ndarray]]) -> np.ndarray:
  """Lists of ``(H, W)`` masks → ``(B, M, H, W)``, padded with all-False masks."""
  count = max(len(masks) for masks in per_image)
  height, width = per_image[0][0].shape
  out = np.zeros((len(per_image), count, height, width), bool)
  for b, masks in enumerate(per_image):
    out[b, :len(masks)] = np.stack(masks)
  return out


def _check_images_only(images: Any) -> np.ndarray:
  if not hasattr(images, "shape") or not hasattr(images, "dtype"):
    raise TypeError(f"images: expected a float array (B, H, W, C), got {describe(images)}")
  if not np.issubdtype(images.dtype, np.floating):
    raise TypeError(f"images: expected a floating dtype, got {images.dtype}")
  if images.ndim != 4 or images.shape[0] == 0:
    raise ValueError(f"images: expected a non-empty batch (B, H, W, C), got shape "
                     f"{tuple(images.shape)}")
  images = np.asarray(images)
  if not np.isfinite(images).all():
    raise ValueError("images: expected finite values, got NaN or Inf")
  return images


def _check_segments(segments: Any, shape: tuple[int, int, int]) -> np.ndarray:
  batch, height, width = shape
  if not hasattr(segments, "shape") or not hasattr(segments, "dtype"):
    raise TypeError(f"segments: expected a boolean array (B, M, H, W), got {describe(segments)}")
  if segments.dtype != bool:
    raise TypeError(f"segments: expected a boolean array (B, M, H, W), got dtype "
                    f"{segments.dtype}")
  if segments.ndim != 4 or segments.shape[0] != batch or tuple(segments.shape[2:]) != (
      height, width) or segments.shape[1] == 0:
    raise ValueError(f"segments: expected shape ({batch}, M, {height}, {width}) with M >= 1 "
                     f"regions per image, got shape {tuple(segments.shape)}")
  return np.asarray(segments)


# --------------------------------------------------------------------------------------
# Greedy selection (JAX; one image at a time inside, vmapped over the batch).
# --------------------------------------------------------------------------------------


def _select_full(attr: jax.Array, masks: jax.Array, min_pixel_diff: jax.Array,
                 max_covered: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """PAIR's ``_xrai`` on one image: attr ``(P,)``, masks ``(M, P)`` bool.

  Returns the map ``(P,)``, each pixel's step ``(P,)`` (-1: never covered) and
  each step's gain ``(M,)`` (-inf for steps not taken).
  """
  n_masks, pixels = masks.shape
  weights = masks.astype(attr.dtype)

  def cond(state):
    covered, _, _, _, _, _, done = state
    return ~done & (covered.sum() <= max_covered)

  def body(state):
    covered, alive, out, step_of, gains, k, _ = state
    free = ~covered
    added = weights @ jnp.stack([jnp.where(free, attr, 0), free.astype(attr.dtype)], axis=1)
    new_sum, new_count = added[:, 0], added[:, 1]
    alive = alive & (new_count >= min_pixel_diff)  # dropped for good, as in PAIR
    gain = jnp.where(alive, new_sum / jnp.maximum(new_count, 1), -jnp.inf)
    best = jnp.argmax(gain)  # the first of equal gains, as PAIR's strict ">"
    go = alive.any()
    diff = masks[best] & free & go
    out = jnp.where(diff, gain[best], out)
    step_of = jnp.where(diff, k, step_of)
    gains = gains.at[k].set(jnp.where(go, gain[best], gains[k]))
    alive = alive.at[best].set(False)
    return covered | diff, alive, out, step_of, gains, k + go, ~go

  state = (jnp.zeros(pixels, bool), jnp.ones(n_masks, bool), jnp.full(pixels, -jnp.inf),
           jnp.full(pixels, -1), jnp.full(n_masks, -jnp.inf), jnp.array(0), jnp.array(False))
  _, _, out, step_of, gains, _, _ = jax.lax.while_loop(cond, body, state)
  return out, step_of, gains


def _select_fast(attr: jax.Array, masks: jax.Array, min_pixel_diff: jax.Array,
                 max_covered: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """PAIR's ``_xrai_fast`` on one image (``max_covered`` is ignored, as there)."""
  del max_covered
  n_masks, pixels = masks.shape
  weights = masks.astype(attr.dtype)
  count = weights.sum(axis=1)
  first_gain = jnp.where(count > 0, (weights @ attr) / jnp.maximum(count, 1), -jnp.inf)
  order = jnp.argsort(-first_gain, stable=True)  # PAIR's stable sort by decreasing gain

  def step(carry, index):
    covered, out, step_of, k = carry
    diff = masks[index] & ~covered
    n_new = diff.sum()
    take = n_new >= min_pixel_diff
    gain = jnp.where(diff, attr, 0).sum() / jnp.maximum(n_new, 1)
    diff = diff & take
    out = jnp.where(diff, gain, out)
    step_of = jnp.where(diff, k, step_of)
    return (covered | diff, out, step_of, k + take), jnp.where(take, gain, -jnp.inf)

  init = (jnp.zeros(pixels, bool), jnp.full(pixels, -jnp.inf), jnp.full(pixels, -1),
          jnp.array(0))
  (_, out, step_of, _), gains = jax.lax.scan(step, init, order)
  # Steps in the order taken: compact the gains of the regions actually added.
  taken = gains > -jnp.inf
  position = jnp.where(taken, jnp.cumsum(taken) - 1, n_masks)
  gains = jnp.full(n_masks + 1, -jnp.inf).at[position].set(gains)[:n_masks]
  return out, step_of, gains


def _finish(attr: jax.Array, out: jax.Array, step_of: jax.Array,
            gains: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Uncovered pixels get their mean attribution; ranks sort the steps by gain."""
  uncovered = step_of < 0
  n_uncovered = uncovered.sum()
  rest = jnp.where(uncovered, attr, 0).sum() / jnp.maximum(n_uncovered, 1)
  out = jnp.where(uncovered, rest, out)
  # PAIR: masks_trace sorted by decreasing gain (stable), the uncovered rest last.
  order = jnp.argsort(-gains, stable=True)
  rank_of_step = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0]) + 1)
  n_steps = (gains > -jnp.inf).sum()
  ranks = jnp.where(uncovered, n_steps + 1, rank_of_step[jnp.maximum(step_of, 0)])
  return out, ranks


@functools.partial(jax.jit, static_argnames=("core",))
def _select_jit(core, attributions, masks, min_pixel_diff, max_covered):
  def one(attr, m):
    out, step_of, gains = core(attr, m, min_pixel_diff, max_covered)
    return _finish(attr, out, step_of, gains)

  return jax.vmap(one)(attributions, masks)


def _select_batch(core, attributions, masks, min_pixel_diff, max_covered):
  """The selection for a batch; the region axis padded to a power of 2 (fewer compiles)."""
  n_masks = masks.shape[1]
  padded = max(32, 1 << (n_masks - 1).bit_length())
  masks = jnp.pad(masks, ((0, 0), (0, padded - n_masks), (0, 0)))
  maps, ranks = _select_jit(core, jnp.asarray(attributions, jnp.float32), masks,
                            jnp.int32(min_pixel_diff), jnp.int32(max_covered))
  return maps, ranks.astype(jnp.int32)
