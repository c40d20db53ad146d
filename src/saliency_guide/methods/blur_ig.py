r"""Blur IG: the gradient integrated along a path of ever stronger Gaussian blurs.

.. math::

   \mathrm{BlurIG}(x) = -\int_0^{\sigma_{\max}}
     \frac{\partial L(x, \sigma)}{\partial \sigma} \odot
     \nabla f_c\big(L(x, \sigma)\big)\, d\sigma
   \approx -\sum_{k=0}^{n-1} (\sigma_{k+1} - \sigma_k)\,
     \frac{L(x, \sigma_k + h) - L(x, \sigma_k)}{h} \odot \nabla f_c\big(L(x, \sigma_k)\big),

with :math:`L(x, \sigma)` the image blurred by a Gaussian of standard deviation
:math:`\sigma` pixels (PAIR's ``saliency`` 0.2.1, ``saliency/core/blur_ig.py``:
``scipy.ndimage.gaussian_filter`` with ``mode="constant"``, i.e. zeros beyond the
border, truncated at 4σ), reproduced here as a jittable separable convolution.

References:
  S. Xu, S. Venugopalan, M. Sundararajan. *Attribution in Scale and Space.*
  CVPR 2020. arXiv:2004.03383.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from saliency_guide.methods._cores import Core, register
from saliency_guide.methods._path_engine import _pad, _plan
from saliency_guide.methods.gradients import _logit_gradient
from saliency_guide.validation import (
    check_flag,
    check_inputs,
    check_number,
    check_positive_int,
)

__all__ = ["blur_ig"]

_TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default: the kernel stops at 4σ


def blur_ig(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    max_sigma: float = 50.0,
    steps: int = 100,
    grad_step: float = 0.01,
    sqrt: bool = False,
    internal_batch_size: int = 64,
) -> jax.Array:
  r"""Blur IG of the target class logit: integrated gradients along a blur (scale-space) path.

  Xu et al. (2020) replace Integrated Gradients' straight line from a baseline
  by the path that blurs the image, from the image itself
  (:math:`\sigma = 0`) to a strongly blurred copy (:math:`\sigma = \sigma_{\max}`),
  so that no baseline image has to be chosen. With :math:`L(x, \sigma)` the image
  blurred by a Gaussian of standard deviation :math:`\sigma` (pixels, height and
  width only) and :math:`F = f_c` the target class **logit**,

  .. math::

     \mathrm{BlurIG}_i(x) = \int_{\sigma_{\max}}^{0}
       \frac{\partial F\big(L(x, \sigma)\big)}{\partial L_i}\,
       \frac{\partial L_i(x, \sigma)}{\partial \sigma}\, d\sigma,

  which satisfies completeness up to discretisation,
  :math:`\sum_i \mathrm{BlurIG}_i(x) \approx F(x) - F(L(x, \sigma_{\max}))`.
  As in PAIR's ``saliency`` 0.2.1 (``BlurIG.GetMask``), the integral is a left
  Riemann sum over the ``steps`` points :math:`\sigma_k = k\,\sigma_{\max}/n`
  (``sqrt=True``: :math:`\sigma_k = \sqrt{k\,\sigma_{\max}/n}`),
  :math:`k = 0, \dots, n - 1`, and :math:`\partial L/\partial \sigma` is a
  forward difference with step :math:`h` = ``grad_step``:

  .. math::

     \mathrm{BlurIG}(x) \approx -\sum_{k=0}^{n-1} (\sigma_{k+1} - \sigma_k)\,
       \frac{L(x, \sigma_k + h) - L(x, \sigma_k)}{h}
       \odot \nabla F\big(L(x, \sigma_k)\big).

  The blur is PAIR's ``scipy.ndimage.gaussian_filter(x, [σ, σ, 0],
  mode="constant")``: zeros beyond the border (the blurred image loses
  intensity at the edges), kernel :math:`\propto e^{-d^2/2\sigma^2}` on
  :math:`|d| \le \lfloor 4\sigma + \frac12 \rfloor`, normalised over that
  range; :math:`\sigma = 0` is the identity. Here it is a separable product
  with banded blur matrices, so the whole path is one jitted computation. As
  scipy, it sums in float64 and rounds each pass to the images' dtype (this
  function enables ``jax_enable_x64`` around its compiled call; the model still
  sees float32 points), so the path points are scipy's to the last bit almost
  everywhere — a one-ulp difference could flip a ReLU or a max-pool choice and
  change a gradient. Traced as a core without x64 (inside a wrapper) it runs in
  float32. :math:`\partial L/\partial\sigma` is computed from the difference
  of the two kernels (no cancellation), slightly more accurate than PAIR's
  difference of two float32 images.

  Memory: ``steps × B`` path points are evaluated ``internal_batch_size`` at a
  time (``lax.map`` over groups of images, ``lax.scan`` over chunks of points).

  Args:
    model: a classifier returning logits ``(B, classes)``.
    images: float array ``(B, H, W, C)`` (NHWC), finite values.
    targets: integer array ``(B,)``, the class to explain for each image.
    max_sigma: :math:`\sigma_{\max}`, the blur (pixels) at the far end of the path.
    steps: number of path points :math:`n`.
    grad_step: :math:`h`, the step of the finite difference in :math:`\sigma`.
    sqrt: space the :math:`\sigma_k` as square roots (PAIR's option), denser
      near the sharp end of the path; the path then ends at
      :math:`\sigma = \sqrt{\sigma_{\max}}`, not :math:`\sigma_{\max}`.
    internal_batch_size: path points evaluated per forward/backward pass.

  Returns:
    float32 array ``(B, H, W, C)``.

  Raises:
    TypeError, ValueError: bad ``images``/``targets``, a non-positive
      ``max_sigma``/``grad_step``, ``steps``/``internal_batch_size`` not a
      positive integer, ``sqrt`` not a flag.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> from saliency_guide.methods import blur_ig
    >>> model = MLP(rngs=nnx.Rngs(0))
    >>> x = jnp.linspace(0, 1, 2 * 784).reshape(2, 28, 28, 1)
    >>> blur_ig(model, x, jnp.array([3, 7]), max_sigma=10.0, steps=16).shape
    (2, 28, 28, 1)

  References:
    S. Xu, S. Venugopalan, M. Sundararajan. *Attribution in Scale and Space.*
    CVPR 2020. arXiv:2004.03383.
  """
  images, targets = check_inputs(model, images, targets)
  core = _prepare(model, images, max_sigma=max_sigma, steps=steps, grad_step=grad_step,
                  sqrt=sqrt, internal_batch_size=internal_batch_size)
  with jax.enable_x64(True):  # blur sums in float64, as scipy's (the model sees float32)
    return core.run(model, images, targets)


def _path_sigmas(max_sigma: float, steps: int, grad_step: float, sqrt: bool) -> np.ndarray:
  r"""The ``(9, steps)`` per-point constants of the path, in float64 on the host.

  Rows: :math:`\sigma_k`, its kernel radius :math:`r_k` and normaliser
  :math:`Z_k`; the same three at :math:`\sigma_k + h`; then
  :math:`q_k = \frac12(\sigma_k^{-2} - (\sigma_k + h)^{-2})` (0 where
  :math:`\sigma_k = 0`) and :math:`c_k = \log(Z_k / Z^h_k)`, which give the
  difference of the two kernels without cancellation (:func:`_blur_matrices`);
  last, :math:`\Delta\sigma_k = \sigma_{k+1} - \sigma_k`. PAIR's and scipy's
  own expressions, so that the integer radii are exactly scipy's.
  """
  if sqrt:
    sigmas = [math.sqrt(float(i) * max_sigma / float(steps)) for i in range(steps + 1)]
  else:
    sigmas = [float(i) * max_sigma / float(steps) for i in range(steps + 1)]
  rows = []
  for shift in (0.0, grad_step):
    sigma = [sigmas[i] + shift for i in range(steps)]
    radius = [int(_TRUNCATE * s + 0.5) for s in sigma]
    norm = [float(np.exp(-0.5 / (s * s) * np.arange(-r, r + 1) ** 2).sum()) if s > 0 else 1.0
            for s, r in zip(sigma, radius, strict=True)]
    rows += [sigma, radius, norm]
  s, sh = np.asarray(rows[0]), np.asarray(rows[3])
  with np.errstate(divide="ignore", invalid="ignore"):
    q = np.where(s > 0, 0.5 * (sh - s) * (sh + s) / (s * s * sh * sh), 0.0)
  c = np.log(np.asarray(rows[2]) / np.asarray(rows[5]))
  rows += [q, c, [sigmas[i + 1] - sigmas[i] for i in range(steps)]]
  return np.asarray(rows, np.float64)


def _blur_matrices(
    size: int, sigma: jax.Array, radius: jax.Array, norm: jax.Array, sigma_h: jax.Array,
    radius_h: jax.Array, norm_h: jax.Array, q: jax.Array, c: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  r"""``(K, size, size)`` banded matrices of scipy's 1-D Gaussian filter, ``mode="constant"``.

  Returns :math:`(A, A^h, A^h - A)`: row ``i`` of :math:`A` holds the weights
  :math:`w_{ij} = e^{-(i-j)^2/2\sigma^2}/Z` for :math:`|i - j| \le r` (zero
  elsewhere: the zeros beyond the border; :math:`\sigma = 0`, radius 0,
  :math:`Z = 1` gives the identity), :math:`A^h` the same at :math:`\sigma + h`.
  Inside both bands the difference is computed as
  :math:`w_{ij}\,\mathrm{expm1}(q d^2 + c)`, not as the difference of two
  nearly equal numbers (the forward difference then divides it by :math:`h`).
  """
  d2 = ((jnp.arange(size)[:, None] - jnp.arange(size)[None, :]) ** 2).astype(sigma.dtype)
  dist = jnp.sqrt(d2)

  def gaussian(sig, z):
    sig = jnp.where(sig > 0, sig, 1.0)[:, None, None]
    return jnp.exp(-0.5 * d2 / sig**2) / z[:, None, None]

  inside = dist <= radius[:, None, None]
  inside_h = dist <= radius_h[:, None, None]
  w = gaussian(sigma, norm)
  a = jnp.where(inside, w, 0.0)
  ratio_m1 = jnp.expm1(q[:, None, None] * d2 + c[:, None, None])  # w^h / w − 1
  diff = jnp.where(inside, w * ratio_m1,
                   jnp.where(inside_h, gaussian(sigma_h, norm_h), 0.0))
  return a, a + diff, diff


def _blur(x: jax.Array, rows: jax.Array, cols: jax.Array, store=None) -> jax.Array:
  """``(K, m, H, W, C)``: each of ``m`` images blurred by each of ``K`` (rows, cols) pairs.

  Height first, then width, as scipy; with ``store`` (a dtype) the intermediate
  and the result are rounded to it, as scipy stores each pass in the input's
  dtype (its sums are float64).
  """
  hi = jax.lax.Precision.HIGHEST
  round_ = (lambda a: a) if store is None else (lambda a: a.astype(store).astype(a.dtype))
  y = round_(jnp.einsum("kij,mjwc->kmiwc", rows, x, precision=hi))
  return round_(jnp.einsum("klw,kmiwc->kmilc", cols, y, precision=hi))


def _blur_ig_core(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    operands: jax.Array,
    *,
    grad_step: float,
    per_pass: int,
) -> jax.Array:
  """Traceable core of :func:`blur_ig`; ``operands`` is :func:`_path_sigmas`' ``(9, steps)``."""
  batch, height, width = images.shape[:3]
  points = operands.shape[1]
  # float64 where enabled (blur_ig enables it): the blur's sums as scipy's, in
  # float64, each pass rounded to the images' dtype; the model sees float32.
  wide = jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32
  operands = operands.astype(wide)
  groups, per_group, chunks, per_chunk = _plan(batch, points, per_pass)
  padded_batch, padded_points = groups * per_group, chunks * per_chunk
  # Padding: extra images are zeros with target 0, dropped at the end; extra path
  # points have σ = 0, radii 0, normalisers 1 and Δσ = 0 (they add nothing).
  pad_row = jnp.asarray([0, 0, 1, 0, 0, 1, 0, 0, 0], operands.dtype)[:, None]
  columns = jnp.concatenate(
      [operands, jnp.broadcast_to(pad_row, (9, padded_points - points))], axis=1)
  columns = columns.reshape(9, chunks, per_chunk).transpose(1, 0, 2)  # (chunks, 9, k)
  grouped = _pad(images, padded_batch).reshape(groups, per_group, *images.shape[1:])
  grouped_targets = _pad(targets, padded_batch).reshape(groups, per_group)

  def one_group(args):
    x, t = args  # (m, H, W, C), (m,)

    def one_chunk(total, chunk):
      *kernel, dsigma = chunk  # (k,) each
      rows, _, rows_diff = _blur_matrices(height, *kernel)
      cols, cols_h, cols_diff = _blur_matrices(width, *kernel)
      point = _blur(x, rows, cols, store=images.dtype)  # (k, m, H, W, C): L(x, σ_k)
      # L(x, σ + h) − L(x, σ) = (A_H^h − A_H) x A_W^hᵀ + A_H x (A_W^h − A_W)ᵀ
      d_blur = (_blur(x, rows_diff, cols_h) + _blur(x, rows, cols_diff)) / grad_step
      grads = _logit_gradient(
          model, point.reshape(-1, *x.shape[1:]).astype(images.dtype), jnp.tile(t, per_chunk)
      ).reshape(point.shape)
      return total - jnp.einsum("k,k...->...", dsigma, d_blur * grads), None

    total, _ = jax.lax.scan(one_chunk, jnp.zeros_like(x), columns)
    return total.astype(images.dtype)

  maps = jax.lax.map(one_group, (grouped.astype(wide), grouped_targets))
  return maps.reshape(padded_batch, *images.shape[1:])[:batch]


def _prepare(
    model: nnx.Module,
    images: jax.Array,
    *,
    max_sigma: float = 50.0,
    steps: int = 100,
    grad_step: float = 0.01,
    sqrt: bool = False,
    internal_batch_size: int = 64,
) -> Core:
  """The options of :func:`blur_ig` checked, as a :class:`Core`."""
  del model, images
  max_sigma = check_number("max_sigma", max_sigma)
  steps = check_positive_int("steps", steps)
  grad_step = check_number("grad_step", grad_step)
  check_flag("sqrt", sqrt)
  per_pass = check_positive_int("internal_batch_size", internal_batch_size)
  operands = _path_sigmas(max_sigma, steps, grad_step, sqrt)  # float64; float32 without x64
  static = (("grad_step", grad_step), ("per_pass", per_pass))
  return Core(_blur_ig_core, static, operands)


register(blur_ig, _prepare)
