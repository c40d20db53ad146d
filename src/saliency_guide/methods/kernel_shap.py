r"""KernelSHAP and LIME: a weighted linear regression on superpixels switched on and off.

Both explain the target logit :math:`f` through the game
:math:`v(z) = f\big(h_x(z)\big)` of :math:`M` superpixels, where :math:`h_x(z)` keeps
the pixels of the superpixels with :math:`z_j = 1` and shows the baseline elsewhere,
and fit :math:`v(z) \approx \phi_0 + \sum_j z_j \phi_j` on random coalitions
:math:`z \in \{0, 1\}^M` by weighted least squares:

.. math::

   \text{KernelSHAP:}\quad \pi(z) = \frac{M - 1}{\binom{M}{|z|}\,|z|\,(M - |z|)},
   \qquad
   \text{LIME:}\quad \pi(z) = \exp\!\Big(-\frac{d_{\cos}(z, \mathbf 1)^2}{2\sigma^2}\Big).

With the Shapley kernel (and :math:`\phi_0 = v(\mathbf 0)`,
:math:`\sum_j \phi_j = v(\mathbf 1) - v(\mathbf 0)` imposed) the solution is the
Shapley values; :func:`exact_shapley` enumerates them for a few superpixels.

References:
  S. M. Lundberg, S.-I. Lee. *A Unified Approach to Interpreting Model
  Predictions.* NeurIPS 2017. arXiv:1705.07874.

  M. T. Ribeiro, S. Singh, C. Guestrin. *"Why Should I Trust You?": Explaining the
  Predictions of Any Classifier.* KDD 2016. arXiv:1602.04938.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from saliency_guide.methods._cores import Core, register
from saliency_guide.methods._random import flat_random
from saliency_guide.validation import (
    check_array,
    check_flag,
    check_inputs,
    check_key,
    check_number,
    check_positive_int,
    describe,
)

__all__ = ["exact_shapley", "grid_mask", "kernel_shap", "lime"]

#: Side of the square superpixels of the default feature mask (:func:`grid_mask`):
#: a 28×28 digit becomes 7×7 = 49 features.
DEFAULT_CELL = 4

#: The most superpixels :func:`exact_shapley` enumerates (:math:`2^{16}` coalitions).
MAX_EXACT_FEATURES = 16


# ---------------------------------------------------------------------------------------
# The features: a segmentation of the image into superpixels.
# ---------------------------------------------------------------------------------------


def grid_mask(height: int, width: int, cell: int | tuple[int, int] = DEFAULT_CELL) -> jax.Array:
  r"""The default segmentation: a regular grid of ``cell × cell`` superpixels, row by row.

  Pixel :math:`(i, j)` belongs to feature
  :math:`\lfloor i / c_h \rfloor \cdot \lceil W / c_w \rceil + \lfloor j / c_w \rfloor`;
  the last row and column of cells are smaller when ``cell`` does not divide the
  image. The same grid serves every image of a batch (a fixed, image-independent
  segmentation: on MNIST digits, colour or texture segmenters such as
  Felzenszwalb's find the stroke and the background, not its parts).

  Args:
    height: image height :math:`H`.
    width: image width :math:`W`.
    cell: the side of a cell, or ``(c_h, c_w)``.

  Returns:
    int32 array ``(H, W)`` of labels ``0 … ⌈H/c_h⌉·⌈W/c_w⌉ − 1``.

  Example:
    >>> grid_mask(28, 28).max() + 1
    Array(49, dtype=int32)
    >>> grid_mask(4, 5, cell=(2, 3))
    Array([[0, 0, 0, 1, 1],
           [0, 0, 0, 1, 1],
           [2, 2, 2, 3, 3],
           [2, 2, 2, 3, 3]], dtype=int32)
  """
  height = check_positive_int("height", height)
  width = check_positive_int("width", width)
  if isinstance(cell, tuple | list) and len(cell) == 2:
    ch, cw = (check_positive_int("cell", c) for c in cell)
  elif isinstance(cell, int | np.integer) and not isinstance(cell, bool):
    ch = cw = check_positive_int("cell", cell)
  else:
    raise TypeError(f"cell: expected an integer >= 1 or a pair (c_h, c_w), got {describe(cell)}")
  columns = -(-width // cw)
  rows = np.arange(height)[:, None] // ch
  cols = np.arange(width)[None, :] // cw
  return jnp.asarray(rows * columns + cols, jnp.int32)


def _checked_masks(
    feature_mask: Any, images: jax.Array, *, required: bool = False
) -> tuple[jax.Array, jax.Array, int]:
  """``feature_mask`` as ``(B, H, W)`` labels ``0 … M_b − 1``, the counts ``M_b`` and ``max M_b``.

  Labels are renumbered per image in increasing order (feature ``j`` of an image is
  its ``j``-th smallest label); an image with fewer labels than another gets empty
  (null) features at the end.
  """
  batch, height, width, _ = images.shape
  if feature_mask is None:
    if required:
      raise ValueError(
          "feature_mask: exact enumeration needs an explicit segmentation with at most "
          f"{MAX_EXACT_FEATURES} superpixels, e.g. grid_mask(H, W, cell=10); got None")
    feature_mask = grid_mask(height, width)
  if not hasattr(feature_mask, "shape") or not hasattr(feature_mask, "dtype"):
    raise TypeError(
        f"feature_mask: expected an integer array (H, W) or (B, H, W) of superpixel labels, "
        f"got {describe(feature_mask)}")
  if isinstance(feature_mask, jax.core.Tracer):
    raise TypeError("feature_mask: expected a concrete integer array (its labels set the number "
                    "of features, a static shape), got a traced array; build it outside jit")
  mask = np.asarray(feature_mask)
  if not np.issubdtype(mask.dtype, np.integer):
    raise TypeError(
        f"feature_mask: expected an integer array of superpixel labels, got dtype {mask.dtype}; "
        "convert a segmentation with .astype(np.int32)")
  if mask.shape not in ((height, width), (batch, height, width)):
    raise ValueError(
        f"feature_mask: expected shape {(height, width)} (one segmentation for every image) or "
        f"{(batch, height, width)} (one per image) for images of shape {tuple(images.shape)}, "
        f"got {mask.shape}")
  mask = np.broadcast_to(mask, (batch, height, width))
  labels = np.empty(mask.shape, np.int32)
  counts = np.empty(batch, np.int32)
  for b in range(batch):
    unique, inverse = np.unique(mask[b], return_inverse=True)
    labels[b] = inverse.reshape(height, width)
    counts[b] = unique.size
  features = int(counts.max())
  if features < 2:
    raise ValueError(
        "feature_mask: expected at least 2 superpixels (with one, it receives the whole "
        "difference f(x) − f(baseline) and there is nothing to attribute), got 1")
  return jnp.asarray(labels), jnp.asarray(counts), features


# ---------------------------------------------------------------------------------------
# Evaluating coalitions: every perturbed copy through the model, in large chunks.
# ---------------------------------------------------------------------------------------


def _coalition_logits(
    model: nnx.Module, images: jax.Array, targets: jax.Array, masks: jax.Array,
    baseline: jax.Array, z: jax.Array, per_pass: int,
) -> jax.Array:
  r"""``v(z) = f_c(h_x(z))`` for coalitions ``z (B, S, F)``: ``(B, S)`` target logits.

  The :math:`B S` perturbed images are built ``per_pass`` at a time inside a
  ``lax.map``, so memory is bounded by one pass whatever ``B`` and ``S`` are.
  """
  batch, samples, _ = z.shape
  total = batch * samples
  per_pass = min(per_pass, total)
  chunks = -(-total // per_pass)
  index = jnp.arange(chunks * per_pass, dtype=jnp.int32) % total  # the padding repeats

  def evaluate(flat):  # (per_pass,) indices into the B × S pairs
    image, sample = flat // samples, flat % samples
    shown = z[image, sample]  # (per_pass, F)
    keep = jnp.take_along_axis(shown, masks[image].reshape(flat.shape[0], -1), axis=1)
    keep = keep.reshape(masks[image].shape)[..., None]  # (per_pass, H, W, 1)
    x = jnp.where(keep, images[image], baseline[image])
    return jnp.take_along_axis(model(x), targets[image][:, None], axis=1)[:, 0]

  values = jax.lax.map(evaluate, index.reshape(chunks, per_pass))
  return values.reshape(-1)[:total].reshape(batch, samples)


def _per_image(
    batch: int, masks: jax.Array, counts: jax.Array, baseline: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The per-image operands tiled when the images are ``n`` copies of the batch (wrappers)."""
  reps = batch // masks.shape[0]
  if reps == 1:
    return masks, counts, baseline
  return (jnp.tile(masks, (reps, 1, 1)), jnp.tile(counts, reps),
          jnp.tile(baseline, (reps, 1, 1, 1)))


def _target_logits(model: nnx.Module, x: jax.Array, targets: jax.Array) -> jax.Array:
  return jnp.take_along_axis(model(x), targets[:, None], axis=1)[:, 0]


def _paint(values: jax.Array, masks: jax.Array, channels: int) -> jax.Array:
  """Feature values ``(B, F)`` onto their pixels: ``(B, H, W, C)``."""
  flat = jnp.take_along_axis(values, masks.reshape(masks.shape[0], -1), axis=1)
  return jnp.broadcast_to(flat.reshape(masks.shape)[..., None], (*masks.shape, channels))


# ---------------------------------------------------------------------------------------
# KernelSHAP.
# ---------------------------------------------------------------------------------------


def _shapley_kernel_coalitions(
    key: jax.Array, counts: jax.Array, samples: int, features: int
) -> jax.Array:
  r"""Coalitions ``(B, S, F)`` drawn with probability proportional to the Shapley kernel.

  The size :math:`k = |z|` is drawn from :math:`p(k) \propto (M-1)/(k(M-k))`,
  :math:`1 \le k \le M - 1`, then :math:`k` of the image's :math:`M` features uniformly;
  every drawn coalition comes with its complement (paired sampling, as the SHAP
  package does), which has the same kernel weight.
  """
  batch = counts.shape[0]
  half = -(-samples // 2)
  size_key, order_key = jax.random.split(key)
  m = counts[:, None].astype(jnp.float32)  # (B, 1)
  k = jnp.arange(1, features, dtype=jnp.float32)[None]  # sizes 1 … F − 1
  valid = k < m
  p = jnp.where(valid, (m - 1) / jnp.where(valid, k * (m - k), 1.0), 0.0)
  cdf = jnp.cumsum(p / jnp.maximum(p.sum(-1, keepdims=True), 1e-30), axis=-1)  # (B, F − 1)
  u = flat_random(jax.random.uniform, size_key, (batch, half))
  size = 1 + jnp.sum(u[..., None] > cdf[:, None, :-1], axis=-1)  # inverse CDF
  size = jnp.minimum(size, counts[:, None] - 1)  # rounding of the CDF; 0 when M = 1
  active = jnp.arange(features)[None] < counts[:, None]  # (B, F)
  order = flat_random(jax.random.uniform, order_key, (batch, half, features))
  order = jnp.where(active[:, None], order, 2.0)  # empty features are never drawn
  # the `size` smallest of i.i.d. uniforms: a uniform subset of `size` active features
  threshold = jnp.take_along_axis(jnp.sort(order, axis=-1), size[..., None] - 1, axis=-1)
  z = (order <= threshold) & (size[..., None] > 0)
  pairs = jnp.stack([z, active[:, None] & ~z], axis=2)  # (B, half, 2, F)
  return pairs.reshape(batch, 2 * half, features)[:, :samples]


def _shapley_regression(
    z: jax.Array, y: jax.Array, delta: jax.Array, count: jax.Array
) -> jax.Array:
  r"""Least squares on coalitions drawn from the Shapley kernel, with efficiency imposed.

  Lundberg & Lee's constrained problem for one image: minimise
  :math:`\sum_s \big(y_s - z_s \cdot \phi\big)^2` (unit weights: the kernel is in the
  sampling) subject to :math:`\sum_j \phi_j = \Delta`, with
  :math:`y = v(z) - v(\mathbf 0)` and :math:`\Delta = v(\mathbf 1) - v(\mathbf 0)`.
  The last feature is eliminated, :math:`\phi_M = \Delta - \sum_{j<M} \phi_j`, which
  leaves ordinary least squares
  :math:`y_s - z_{sM}\Delta \approx \sum_{j<M} (z_{sj} - z_{sM})\,\phi_j`, solved by
  ``jnp.linalg.lstsq`` (minimum norm if the coalitions do not determine it).

  Args:
    z: coalitions ``(S, F)``; features ``≥ count`` are empty and get 0.
    y: ``(S,)`` values :math:`v(z) - v(\mathbf 0)`.
    delta: :math:`v(\mathbf 1) - v(\mathbf 0)`, a scalar.
    count: the image's number of features :math:`M`.

  Returns:
    ``(F,)`` estimates :math:`\phi`, summing to :math:`\Delta` exactly.
  """
  z = z.astype(y.dtype)
  features = z.shape[-1]
  last = count - 1
  keep = (jnp.arange(features) < last)[None]  # the M − 1 free features
  z_last = jax.lax.dynamic_index_in_dim(z, last, axis=1, keepdims=True)  # (S, 1)
  design = jnp.where(keep, z - z_last, 0.0)
  phi = jnp.linalg.lstsq(design, y - z_last[:, 0] * delta)[0]
  phi = jnp.where(keep[0], phi, 0.0)
  return phi.at[last].set(delta - phi.sum())


def _kernel_shap_core(
    model: nnx.Module, images: jax.Array, targets: jax.Array,
    operands: tuple[jax.Array, ...], *, samples: int, features: int, per_pass: int,
    return_features: bool,
) -> Any:
  """Traceable core of :func:`kernel_shap`; ``operands = (masks, counts, baseline, key)``."""
  masks, counts, baseline, key = operands
  masks, counts, baseline = _per_image(images.shape[0], masks, counts, baseline)
  z = _shapley_kernel_coalitions(key, counts, samples, features)  # (B, S, F)
  v_empty = _target_logits(model, baseline, targets)
  v_full = _target_logits(model, images, targets)
  v = _coalition_logits(model, images, targets, masks, baseline, z, per_pass)
  phi = jax.vmap(_shapley_regression)(z, v - v_empty[:, None], v_full - v_empty, counts)
  maps = _paint(phi, masks, images.shape[-1])
  return (maps, phi) if return_features else maps


def kernel_shap(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    feature_mask: jax.Array | np.ndarray | None = None,
    samples: int = 1000,
    baseline: float | jax.Array = 0.0,
    key: jax.Array,
    internal_batch_size: int = 512,
    return_features: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
  r"""KernelSHAP (Lundberg & Lee, 2017): Shapley values of superpixels by weighted regression.

  The players are the :math:`M` superpixels of ``feature_mask``; a coalition
  :math:`z \in \{0,1\}^M` is the image with the superpixels of :math:`z` kept and
  the others replaced by ``baseline``, :math:`h_x(z) = z \odot x + (1 - z) \odot b`
  (per pixel), and its value is the target logit :math:`v(z) = f_c(h_x(z))`. The
  Shapley value of feature :math:`j` is its average marginal contribution,

  .. math::

     \phi_j = \sum_{S \subseteq N \setminus \{j\}}
       \frac{|S|!\,(M - |S| - 1)!}{M!}\,\big[v(S \cup \{j\}) - v(S)\big],

  and Lundberg & Lee show that it is the solution of a weighted linear regression
  :math:`\min_\phi \sum_z \pi(z)\,\big(v(z) - \phi_0 - z \cdot \phi\big)^2` with the
  Shapley kernel

  .. math::

     \pi(z) = \frac{M - 1}{\binom{M}{|z|}\,|z|\,(M - |z|)},

  whose infinite weights at :math:`z = \mathbf 0, \mathbf 1` become the constraints
  :math:`\phi_0 = v(\mathbf 0)` and :math:`\sum_j \phi_j = v(\mathbf 1) - v(\mathbf 0)`
  (efficiency). Here ``samples`` coalitions are drawn with probability
  :math:`\propto \pi(z)` (sizes from :math:`p(k) \propto (M-1)/(k(M-k))`, each with its
  complement), so the regression has unit weights; efficiency is imposed exactly by
  eliminating one variable, solved with
  ``jnp.linalg.lstsq``. The estimate converges to the Shapley values as
  ``samples`` grows (error :math:`\propto 1/\sqrt{S}`); :func:`exact_shapley`
  computes them by enumeration for a few superpixels.

  Every one of the :math:`B \times S` perturbed images goes through ``model`` in
  compiled batches of ``internal_batch_size`` (a ``lax.map``): only the model's
  outputs are used, never its gradients.

  Args:
    model: a classifier (any Flax NNX model returning logits ``(B, classes)``).
    images: float array ``(B, H, W, C)``, NHWC.
    targets: integer array ``(B,)``, the class whose logit is explained.
    feature_mask: integer superpixel labels ``(H, W)`` (shared by every image) or
      ``(B, H, W)`` (one segmentation per image, e.g. from
      ``skimage.segmentation.felzenszwalb``); the labels of an image are
      renumbered ``0 … M − 1`` in increasing order. Default: :func:`grid_mask`
      with ``4 × 4`` cells (49 features on a 28×28 digit).
    samples: number of coalitions :math:`S` per image, at least twice the number of
      features (coalitions come in complementary pairs).
    baseline: what a removed superpixel shows: a number, or an array ``(H, W, C)``,
      ``(1, H, W, C)`` or ``(B, H, W, C)``. The values depend on it (they explain
      :math:`f(x) - f(\text{baseline})`).
    key: PRNG key (``jax.random.key(seed)``); the same key gives the same result,
      whatever ``internal_batch_size``.
    internal_batch_size: perturbed images per forward pass.
    return_features: also return the per-feature values :math:`\phi`.

  Returns:
    float32 maps ``(B, H, W, C)``: every pixel (and channel) of superpixel :math:`j`
    carries :math:`\phi_j`, the feature's whole value (not divided by its area), as
    Captum does. With ``return_features=True``, ``(maps, phi)`` with ``phi``
    ``(B, F)``, :math:`F` the largest number of features of an image (an image with
    fewer has zeros at the end); :math:`\sum_j \phi_j = f_c(x) - f_c(\text{baseline})`.

  Raises:
    TypeError, ValueError: bad ``images``/``targets``, a ``feature_mask`` that is not
      an integer array of shape ``(H, W)`` or ``(B, H, W)`` or has a single label,
      ``samples`` fewer than twice the features, a ``baseline`` of another shape, a
      missing key.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> model = MLP(rngs=nnx.Rngs(0))
    >>> x, t = jnp.ones((2, 28, 28, 1)), jnp.array([3, 7])
    >>> maps, phi = kernel_shap(model, x, t, samples=100, key=jax.random.key(0),
    ...                         return_features=True)
    >>> maps.shape, phi.shape
    ((2, 28, 28, 1), (2, 49))
    >>> logits = model(x)[jnp.arange(2), t] - model(0 * x)[jnp.arange(2), t]
    >>> bool(jnp.allclose(phi.sum(1), logits, atol=1e-4))  # efficiency, exactly
    True

  References:
    S. M. Lundberg, S.-I. Lee. *A Unified Approach to Interpreting Model
    Predictions.* NeurIPS 2017. arXiv:1705.07874.
  """
  images, targets = check_inputs(model, images, targets)
  core = _prepare_kernel_shap(
      model, images, feature_mask=feature_mask, samples=samples, baseline=baseline, key=key,
      internal_batch_size=internal_batch_size, return_features=return_features)
  return core.run(model, images, targets)


def _prepare_kernel_shap(
    model: nnx.Module, images: jax.Array, *, feature_mask: Any = None, samples: int = 1000,
    baseline: Any = 0.0, key: Any = None, internal_batch_size: int = 512,
    return_features: bool = False,
) -> Core:
  """The options of :func:`kernel_shap` checked, as a :class:`Core`."""
  del model
  masks, counts, features = _checked_masks(feature_mask, images)
  samples = check_positive_int("samples", samples)
  if samples < 2 * features:
    raise ValueError(
        f"samples: expected at least twice as many coalitions as features (2 × {features} = "
        f"{2 * features}: each drawn coalition comes with its complement, which adds the same "
        f"equation with the opposite sign), so that the regression can determine every "
        f"value, got {samples}")
  baseline = check_array("baseline", baseline, images.shape)
  key = check_key(key, "kernel_shap")
  static = (("samples", samples), ("features", features),
            ("per_pass", check_positive_int("internal_batch_size", internal_batch_size)),
            ("return_features", check_flag("return_features", return_features)))
  return Core(_kernel_shap_core, static, (masks, counts, baseline, key))


register(kernel_shap, _prepare_kernel_shap)


# ---------------------------------------------------------------------------------------
# Exact Shapley values by enumeration.
# ---------------------------------------------------------------------------------------


def _shapley_coefficients(features: int) -> np.ndarray:
  r"""``C (2^F, F)`` with :math:`\phi = v\,C`: the Shapley weights of every coalition."""
  bits = (np.arange(2 ** features)[:, None] >> np.arange(features)[None]) & 1  # (2^F, F)
  size = bits.sum(1, keepdims=True)
  w = np.array([math.factorial(s) * math.factorial(features - s - 1) / math.factorial(features)
                for s in range(features)] + [0.0])  # w(s) = s!(F − s − 1)!/F!
  return np.where(bits == 1, w[np.maximum(size - 1, 0)], -w[size]), bits.astype(bool)


def _exact_shapley_core(
    model: nnx.Module, images: jax.Array, targets: jax.Array,
    operands: tuple[jax.Array, ...], *, features: int, per_pass: int, return_features: bool,
) -> Any:
  """Traceable core of :func:`exact_shapley`; ``operands = (masks, counts, baseline)``."""
  masks, counts, baseline = _per_image(images.shape[0], *operands)
  coefficients, bits = _shapley_coefficients(features)
  z = jnp.broadcast_to(jnp.asarray(bits), (images.shape[0], *bits.shape))
  v = _coalition_logits(model, images, targets, masks, baseline, z, per_pass)  # (B, 2^F)
  phi = (v - v[:, :1]) @ jnp.asarray(coefficients, v.dtype)  # coefficients sum to 0 per j
  phi = jnp.where(jnp.arange(features)[None] < counts[:, None], phi, 0.0)  # null players
  maps = _paint(phi, masks, images.shape[-1])
  return (maps, phi) if return_features else maps


def exact_shapley(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    feature_mask: jax.Array | np.ndarray,
    baseline: float | jax.Array = 0.0,
    internal_batch_size: int = 512,
    return_features: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
  r"""Exact Shapley values of a few superpixels, by enumerating every coalition.

  The same game as :func:`kernel_shap` (superpixels kept or replaced by
  ``baseline``, value the target logit), with all :math:`2^M` coalitions evaluated
  and combined with the Shapley weights:

  .. math::

     \phi_j = \sum_{S \subseteq N \setminus \{j\}}
       \frac{|S|!\,(M - |S| - 1)!}{M!}\,\big[v(S \cup \{j\}) - v(S)\big]
     = \sum_{S \subseteq N} v(S)\, C_{S j}.

  The reference that KernelSHAP's estimates converge to; the cost is
  :math:`2^M` forward passes per image, so :math:`M \le 16`. An image with fewer
  superpixels than another has null players, whose value is 0 and which leave the
  others' values unchanged.

  Args:
    model: a classifier (any Flax NNX model returning logits ``(B, classes)``).
    images: float array ``(B, H, W, C)``, NHWC.
    targets: integer array ``(B,)``.
    feature_mask: integer labels ``(H, W)`` or ``(B, H, W)`` with at most 16
      distinct labels per image (e.g. ``grid_mask(28, 28, cell=10)``: 9).
    baseline: as in :func:`kernel_shap`.
    internal_batch_size: perturbed images per forward pass.
    return_features: also return the per-feature values ``(B, F)``.

  Returns:
    float32 maps ``(B, H, W, C)`` (each superpixel's pixels carry its value), or
    ``(maps, phi)``.

  Raises:
    TypeError, ValueError: bad inputs, a missing ``feature_mask`` or one with more
      than 16 superpixels.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> model = MLP(rngs=nnx.Rngs(0))
    >>> x, t = jnp.ones((1, 28, 28, 1)), jnp.array([3])
    >>> _, phi = exact_shapley(model, x, t, feature_mask=grid_mask(28, 28, cell=14),
    ...                        return_features=True)
    >>> phi.shape
    (1, 4)

  References:
    L. S. Shapley. *A Value for n-Person Games.* Contributions to the Theory of
    Games II, 1953.
  """
  images, targets = check_inputs(model, images, targets)
  core = _prepare_exact(model, images, feature_mask=feature_mask, baseline=baseline,
                        internal_batch_size=internal_batch_size,
                        return_features=return_features)
  return core.run(model, images, targets)


def _prepare_exact(
    model: nnx.Module, images: jax.Array, *, feature_mask: Any = None, baseline: Any = 0.0,
    internal_batch_size: int = 512, return_features: bool = False,
) -> Core:
  """The options of :func:`exact_shapley` checked, as a :class:`Core`."""
  del model
  masks, counts, features = _checked_masks(feature_mask, images, required=True)
  if features > MAX_EXACT_FEATURES:
    raise ValueError(
        f"feature_mask: exact enumeration evaluates 2^M coalitions per image, at most "
        f"M = {MAX_EXACT_FEATURES} superpixels here, got {features}; use kernel_shap to "
        "estimate the values, or a coarser mask")
  baseline = check_array("baseline", baseline, images.shape)
  static = (("features", features),
            ("per_pass", check_positive_int("internal_batch_size", internal_batch_size)),
            ("return_features", check_flag("return_features", return_features)))
  return Core(_exact_shapley_core, static, (masks, counts, baseline))


register(exact_shapley, _prepare_exact)


# ---------------------------------------------------------------------------------------
# LIME.
# ---------------------------------------------------------------------------------------


def _lime_regression(
    z: jax.Array, y: jax.Array, count: jax.Array, *, kernel_width: float, alpha: float
) -> jax.Array:
  r"""LIME's weighted ridge regression for one image, as the ``lime`` package fits it.

  Each coalition is weighted by the exponential kernel of its cosine distance to
  the unperturbed instance :math:`\mathbf 1` (``lime_image``'s
  :math:`\sqrt{\exp(-d^2/\sigma^2)}`),

  .. math::

     d(z) = 1 - \frac{z \cdot \mathbf 1}{\lVert z \rVert\,\lVert \mathbf 1 \rVert}
          = 1 - \sqrt{|z| / M}, \qquad
     \pi(z) = \exp\!\Big(-\frac{d(z)^2}{2\sigma^2}\Big)

  (:math:`d = 1` for the empty coalition), and
  :math:`\min_{\beta_0, \beta} \sum_s \pi(z_s)\,(y_s - \beta_0 - z_s \cdot \beta)^2
  + \alpha \lVert \beta \rVert^2` is solved with the intercept unpenalised
  (scikit-learn's ``Ridge(alpha)`` with ``sample_weight``: weighted centring, then
  the normal equations); ``alpha = 0`` is plain weighted least squares
  (``jnp.linalg.lstsq``).

  Args:
    z: coalitions ``(S, F)``; features ``≥ count`` are empty and get 0.
    y: ``(S,)`` target logits.
    count: the image's number of features :math:`M`.
    kernel_width: :math:`\sigma`.
    alpha: the ridge penalty :math:`\alpha \ge 0`.

  Returns:
    ``(F,)`` coefficients :math:`\beta`.
  """
  z = z.astype(y.dtype)
  active = jnp.arange(z.shape[-1]) < count
  size = z.sum(-1)
  d = 1.0 - jnp.sqrt(size / count.astype(y.dtype))
  w = jnp.exp(-(d ** 2) / (2.0 * kernel_width ** 2))
  z_mean = (w @ z) / w.sum()
  y_mean = (w @ y) / w.sum()
  zc, yc = z - z_mean, y - y_mean
  if alpha == 0.0:
    root = jnp.sqrt(w)[:, None]
    beta = jnp.linalg.lstsq(jnp.where(active, zc, 0.0) * root, yc * root[:, 0])[0]
  else:
    gram = (zc * w[:, None]).T @ zc + jnp.diag(jnp.where(active, alpha, 1.0))
    beta = jnp.linalg.solve(gram, (zc * w[:, None]).T @ yc)
  return jnp.where(active, beta, 0.0)


def _lime_core(
    model: nnx.Module, images: jax.Array, targets: jax.Array,
    operands: tuple[jax.Array, ...], *, samples: int, features: int, per_pass: int,
    kernel_width: float, alpha: float, return_features: bool,
) -> Any:
  """Traceable core of :func:`lime`; ``operands = (masks, counts, baseline, key)``."""
  masks, counts, baseline, key = operands
  masks, counts, baseline = _per_image(images.shape[0], masks, counts, baseline)
  active = jnp.arange(features)[None] < counts[:, None]  # (B, F)
  draws = flat_random(jax.random.uniform, key, (images.shape[0], samples, features)) < 0.5
  z = (draws & active[:, None]).at[:, 0].set(active)  # the first sample is the instance
  v = _coalition_logits(model, images, targets, masks, baseline, z, per_pass)
  solve = lambda z, y, m: _lime_regression(z, y, m, kernel_width=kernel_width, alpha=alpha)  # noqa: E731
  beta = jax.vmap(solve)(z, v, counts)
  maps = _paint(beta, masks, images.shape[-1])
  return (maps, beta) if return_features else maps


def lime(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    feature_mask: jax.Array | np.ndarray | None = None,
    samples: int = 1000,
    baseline: float | jax.Array = 0.0,
    key: jax.Array,
    kernel_width: float = 0.25,
    alpha: float = 1.0,
    internal_batch_size: int = 512,
    return_features: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
  r"""LIME (Ribeiro et al., 2016): a local linear surrogate fitted on superpixels.

  LIME draws binary coalitions :math:`z` uniformly at random (each superpixel kept
  with probability :math:`1/2`; the first sample is the instance itself,
  :math:`z = \mathbf 1`), evaluates :math:`v(z) = f_c(h_x(z))` with removed
  superpixels replaced by ``baseline``, and fits a linear model weighted by
  proximity to the instance,

  .. math::

     \hat\beta = \mathop{\arg\min}_{\beta_0, \beta} \sum_s \pi(z_s)\,
       \big(v(z_s) - \beta_0 - z_s \cdot \beta\big)^2 + \alpha \lVert \beta \rVert^2,
     \qquad
     \pi(z) = \exp\!\Big(-\frac{d_{\cos}(z, \mathbf 1)^2}{2\sigma^2}\Big),

  the defaults of the ``lime`` package's image explainer: cosine distance between
  binary vectors, :math:`\sigma = 0.25`, ``Ridge(alpha=1)`` with an intercept, all
  features kept (its default ``num_features`` selects them all). Unlike KernelSHAP
  its kernel is not the Shapley kernel and no efficiency constraint is imposed:
  :math:`\hat\beta` estimates the coefficients of the best *locally weighted* linear
  fit, which equal the Shapley values only when :math:`v` is linear in :math:`z`
  (then both recover the linear model's effects, up to the ridge shrinkage). The
  model is explained on its logits, not on probabilities as in the ``lime`` package.

  Args:
    model: a classifier (any Flax NNX model returning logits ``(B, classes)``).
    images: float array ``(B, H, W, C)``, NHWC.
    targets: integer array ``(B,)``.
    feature_mask: as in :func:`kernel_shap` (default: 4×4 grid cells).
    samples: number of coalitions per image, at least 2 (the first is the instance).
    baseline: what a removed superpixel shows (``lime``'s ``hide_color``): a number
      or an array ``(H, W, C)``, ``(1, H, W, C)`` or ``(B, H, W, C)``.
    key: PRNG key; the same key gives the same result.
    kernel_width: :math:`\sigma > 0` of the exponential kernel.
    alpha: ridge penalty :math:`\alpha \ge 0` (``0``: weighted least squares).
    internal_batch_size: perturbed images per forward pass.
    return_features: also return the coefficients :math:`\hat\beta` ``(B, F)``.

  Returns:
    float32 maps ``(B, H, W, C)`` (each superpixel's pixels carry its coefficient),
    or ``(maps, beta)``.

  Raises:
    TypeError, ValueError: bad inputs, mask, ``samples`` < 2, ``kernel_width`` ≤ 0,
      ``alpha`` < 0, missing key.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> model = MLP(rngs=nnx.Rngs(0))
    >>> x, t = jnp.ones((2, 28, 28, 1)), jnp.array([3, 7])
    >>> lime(model, x, t, samples=64, key=jax.random.key(0)).shape
    (2, 28, 28, 1)

  References:
    M. T. Ribeiro, S. Singh, C. Guestrin. *"Why Should I Trust You?": Explaining
    the Predictions of Any Classifier.* KDD 2016. arXiv:1602.04938.
  """
  images, targets = check_inputs(model, images, targets)
  core = _prepare_lime(
      model, images, feature_mask=feature_mask, samples=samples, baseline=baseline, key=key,
      kernel_width=kernel_width, alpha=alpha, internal_batch_size=internal_batch_size,
      return_features=return_features)
  return core.run(model, images, targets)


def _prepare_lime(
    model: nnx.Module, images: jax.Array, *, feature_mask: Any = None, samples: int = 1000,
    baseline: Any = 0.0, key: Any = None, kernel_width: float = 0.25, alpha: float = 1.0,
    internal_batch_size: int = 512, return_features: bool = False,
) -> Core:
  """The options of :func:`lime` checked, as a :class:`Core`."""
  del model
  masks, counts, features = _checked_masks(feature_mask, images)
  samples = check_positive_int("samples", samples)
  if samples < 2:
    raise ValueError("samples: expected at least 2 coalitions (the first is the instance "
                     f"itself), got {samples}")
  baseline = check_array("baseline", baseline, images.shape)
  key = check_key(key, "lime")
  static = (("samples", samples), ("features", features),
            ("per_pass", check_positive_int("internal_batch_size", internal_batch_size)),
            ("kernel_width", check_number("kernel_width", kernel_width)),
            ("alpha", check_number("alpha", alpha, inclusive=True)),
            ("return_features", check_flag("return_features", return_features)))
  return Core(_lime_core, static, (masks, counts, baseline, key))


register(lime, _prepare_lime)
