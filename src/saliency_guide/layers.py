"""Layers shared by the models: max-pooling and convolutions with fast, exact gradients; ReLU.

Why a custom max-pool? ``jax.grad`` of ``lax.reduce_window`` max-pooling becomes
``select_and_scatter``, which XLA:CPU expands into several activation-sized index
arrays and a scatter: measured here it was ~64 % of the time of a saliency call
on the pooled CNN. :func:`max_pool_2x2` computes the same forward value and the
same gradient (all of a window's gradient goes to the *first* maximum in
row-major order, which is XLA's and PyTorch's tie rule) with a free reshape
``(B, H/2, 2, W/2, 2, C)``, comparisons and selects. The tie rule matters on
MNIST: background windows are all zeros, so every one of them is a tie.

Why custom convolutions? See :func:`conv_general_dilated`: the models' ``nnx.Conv``
layers use it for a faster input gradient (what every saliency method computes)
with the same parameters and the same numbers to float32 rounding.
"""

from __future__ import annotations

import os
import re

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["conv_general_dilated", "conv_one_channel", "conv_same", "max_pool_2x2", "relu",
           "relu_after_pool_pays", "relu_max_pool_2x2", "ynn_fusions_off"]

#: Custom-derivative functions that only speed a composition of other functions up
#: (same values, same gradient): the jaxpr interpreters of the rule-based methods
#: (Deconvolution, Guided Backprop, LRP, DeepLIFT) evaluate their body instead, so
#: they see the ReLU and the max-pool inside.
COMPOSITIONS = frozenset({"relu_max_pool_2x2"})


def relu(x: jax.Array) -> jax.Array:
  r"""The rectified linear unit, :math:`\max(x, 0)`, with the usual gradient.

  The models call their activation through the attribute ``model.activation``
  (this function by default), so that a copy can swap it by attribute
  assignment; the modified-backpropagation methods find the ReLUs of any model
  by tracing it (:func:`~saliency_guide.methods.with_relu_rule`).

  Args:
    x: any array.

  Returns:
    ``max(x, 0)``, same shape and dtype as ``x``.

  Example:
    >>> import jax.numpy as jnp
    >>> relu(jnp.array([-1.0, 0.0, 2.0]))
    Array([0., 0., 2.], dtype=float32)
  """
  return jax.nn.relu(x)


def _windows(x: jax.Array) -> jax.Array:
  """(B, H, W, C) -> (B, H/2, 2, W/2, 2, C): a free reshape, channels stay contiguous."""
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c)


def _first_max_masks(x: jax.Array) -> list[jax.Array]:
  """For window positions (0,0), (0,1), (1,0), (1,1): is it the first maximum of its window?"""
  windows = _windows(x)
  values = [windows[:, :, p, :, q, :] for p in (0, 1) for q in (0, 1)]  # row-major order
  peak = jnp.maximum(jnp.maximum(values[0], values[1]), jnp.maximum(values[2], values[3]))
  taken = values[0] == peak
  masks = [taken]
  for value in values[1:3]:
    mask = (value == peak) & ~taken
    masks.append(mask)
    taken = taken | mask
  masks.append(~taken)
  return masks


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
  r"""2 × 2 max-pooling with stride 2 on NHWC arrays, with a fast exact gradient.

  .. math::

     y_{b,i,j,c} = \max_{(p,q) \in \{0,1\}^2} x_{b,2i+p,2j+q,c},
     \qquad
     \frac{\partial y_{b,i,j,c}}{\partial x_{b,2i+p,2j+q,c}} =
       \mathbb{1}[(p,q) = \text{first argmax in row-major order}].

  The forward pass equals ``flax.nnx.max_pool(x, (2, 2), (2, 2))``; the
  backward pass equals what XLA's ``select_and_scatter`` (and PyTorch) give,
  including ties, at a fraction of the cost on the CPU.

  Args:
    x: float array of shape ``(B, H, W, C)`` with even ``H`` and ``W``.

  Returns:
    Array of shape ``(B, H // 2, W // 2, C)``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> x = jnp.array([[1.0, 3.0], [3.0, 0.0]]).reshape(1, 2, 2, 1)
    >>> max_pool_2x2(x)[0, :, :, 0]
    Array([[3.]], dtype=float32)
    >>> # the tie between the two 3s: the gradient goes to the first one
    >>> jax.grad(lambda x: max_pool_2x2(x).sum())(x)[0, :, :, 0]
    Array([[0., 1.],
           [0., 0.]], dtype=float32)
  """
  return _max_pool(x)


def _max_pool(x: jax.Array) -> jax.Array:
  return jnp.max(_windows(x), axis=(2, 4))


def _max_pool_fwd(x):
  # The residual is the input itself (alive anyway); the backward pass finds the
  # first maxima again, which costs less than storing their indices. (The rules call
  # the plain functions, never the custom_vjp ones: forward-over-reverse, as in
  # Grad-CAM++, differentiates these rules with jvp.)
  return _max_pool(x), x


def _max_pool_bwd(x, g):
  zero = jnp.zeros((), g.dtype)
  routed = [jnp.where(mask, g, zero) for mask in _first_max_masks(x)]
  top, bottom = jnp.stack(routed[:2], axis=3), jnp.stack(routed[2:], axis=3)  # q axis
  windows = jnp.stack([top, bottom], axis=2)  # (B, H/2, 2, W/2, 2, C)
  b, h2, _, w2, _, c = windows.shape
  return (windows.reshape(b, 2 * h2, 2 * w2, c),)


max_pool_2x2.defvjp(_max_pool_fwd, _max_pool_bwd)


@jax.custom_vjp
def relu_max_pool_2x2(x: jax.Array) -> jax.Array:
  r"""``max_pool_2x2(relu(x))``, with the ReLU applied after the pooling and a fused gradient.

  .. math::

     y = \max_{	ext{window}} \max(x, 0) = \maxig(\max_{	ext{window}} x,\ 0ig),
     \qquad
     rac{\partial y}{\partial x_{p}} = \mathbb{1}[y > 0]\,
       \mathbb{1}[p = 	ext{first argmax of the window}].

  The two orders are the same function (both are monotone), and the gradients are
  equal too: where the window's maximum is positive its first maximum is the same
  before and after the ReLU, and elsewhere both are zero. Differentiated, the ReLU and
  its mask run on the pooled array, a quarter of the size. Whether that pays depends on
  the backend and its settings (:func:`relu_after_pool_pays`, which the models ask).
  Undifferentiated, this is the plain composition, which is also what the rule-based
  methods read (:data:`COMPOSITIONS`), so a modified ReLU or max-pool rule reaches
  both.

  Args:
    x: float array of shape ``(B, H, W, C)`` with even ``H`` and ``W``.

  Returns:
    Array of shape ``(B, H // 2, W // 2, C)``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> x = jnp.array([[-1.0, -3.0], [2.0, 2.0]]).reshape(1, 2, 2, 1)
    >>> relu_max_pool_2x2(x)[0, :, :, 0]
    Array([[2.]], dtype=float32)
    >>> jax.grad(lambda x: relu_max_pool_2x2(x).sum())(x)[0, :, :, 0]
    Array([[0., 0.],
           [1., 0.]], dtype=float32)
  """
  return max_pool_2x2(relu(x))


_YNN_FUSION_OFF = re.compile(r"--xla_cpu_experimental_ynn_fusion_type=(\s|$)")


def relu_after_pool_pays() -> bool:
  """Whether the models should use :func:`relu_max_pool_2x2` rather than the composition.

  Measured on the CPU (``benchmarks/investigations/relu_after_pool.py``): with XLA's
  multi-threaded convolutions (``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=``)
  it made Integrated Gradients 1.2–1.35× as fast; with XLA:CPU's defaults (YNNPACK
  fusions) it made a gradient map slower (0.8×). So: on the CPU, only with that flag;
  on other backends, never (not measured). Either way the maps are bitwise the same.

  Returns:
    ``True`` on the CPU backend when ``XLA_FLAGS`` turns the YNNPACK fusions off.
  """
  return ynn_fusions_off()


def ynn_fusions_off() -> bool:
  """Whether this is XLA:CPU with its YNNPACK fusions off (the fast-conv opt-in).

  ``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=`` gives XLA:CPU's own
  multi-threaded convolutions; programs that run fastest with them can differ in
  shape from those fastest under the defaults (:func:`relu_after_pool_pays`,
  SmoothGrad's noise drawn before its passes).

  Returns:
    ``True`` on the CPU backend when ``XLA_FLAGS`` turns the YNNPACK fusions off.
  """
  return (jax.default_backend() == "cpu"
          and _YNN_FUSION_OFF.search(os.environ.get("XLA_FLAGS", "")) is not None)


def _relu_max_pool_fwd(x):
  return jax.nn.relu(_max_pool(x)), x


def _relu_max_pool_bwd(x, g):
  # The ReLU's mask on the pooled array, then the first maximum's routing (a window
  # whose maximum is not positive gets no gradient, whichever position it would name).
  g = jnp.where(_max_pool(x) > 0, g, jnp.zeros((), g.dtype))
  return _max_pool_bwd(x, g)


relu_max_pool_2x2.defvjp(_relu_max_pool_fwd, _relu_max_pool_bwd)


# --------------------------------------------------------------------------------------
# Convolutions with fast, exact input gradients.
# --------------------------------------------------------------------------------------
#
# The models' ``nnx.Conv`` layers call :func:`conv_general_dilated` instead of
# ``lax.conv_general_dilated`` (``nnx.Conv(..., conv_general_dilated=...)``): same
# parameters, same forward values up to float32 rounding, and a backward pass chosen
# for speed on the CPU, where every saliency method spends its time:
#
# * a 3×3 ``SAME`` convolution gets a custom VJP whose input gradient is written out
#   as what autodiff computes anyway, the ``SAME`` convolution of the cotangent with
#   the spatially flipped kernel, in/out channels swapped. Autodiff's version is the
#   same maths but, inside ``lax.scan`` (Integrated Gradients, SmoothGrad), XLA:CPU
#   kept its kernel in a slow layout and ran it about 2× slower;
# * a convolution with a single input channel (the first layer on grey-scale
#   images) is 9 shifted multiply-adds forward, a fused elementwise loop, and its
#   input gradient is a matrix product with the ``(taps, out)`` kernel followed by 9
#   shifted adds ("col2im"). XLA:CPU's generic convolution is slow for 1 input or 1
#   output channel (measured 2-4× slower for each direction here).
#
# Kernel gradients (training) are plain autodiff of the same forward pass.

_NHWC = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), ("NHWC", "HWIO", "NHWC"))


def _plain_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_NHWC)


def _flipped(kernel: jax.Array) -> jax.Array:
  """``(kh, kw, in, out)`` → spatially flipped ``(kh, kw, out, in)``: the transposed conv."""
  return jnp.flip(kernel, (0, 1)).swapaxes(2, 3)


@jax.custom_vjp
def conv_same(x: jax.Array, kernel: jax.Array) -> jax.Array:
  r"""Stride-1 ``SAME`` convolution (odd kernel), NHWC × HWIO, with an explicit input gradient.

  .. math::

     y_{b,p,q,o} = \sum_{i,j,c} x_{b,\,p+i-r,\,q+j-r,\,c}\, k_{i,j,c,o},
     \qquad
     \frac{\partial \mathcal L}{\partial x} = \bar y \star \tilde k,
     \quad \tilde k_{i,j,o,c} = k_{K-1-i,\,K-1-j,\,c,o},

  (zero padding :math:`r = (K - 1)/2`, :math:`\star` the same ``SAME``
  convolution). The forward pass is ``lax.conv_general_dilated``; the input
  gradient equals autodiff's to float32 rounding.

  Args:
    x: ``(B, H, W, C)``.
    kernel: ``(K, K, C, O)`` with odd ``K``.

  Returns:
    ``(B, H, W, O)``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> x = jax.random.normal(jax.random.key(0), (2, 5, 5, 3))
    >>> k = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))
    >>> def plain(x, k):
    ...   return jax.lax.conv_general_dilated(
    ...       x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    >>> mine = jax.grad(lambda x: conv_same(x, k).sum())(x)
    >>> ref = jax.grad(lambda x: plain(x, k).sum())(x)
    >>> bool(jnp.allclose(mine, ref, rtol=1e-5, atol=1e-5))
    True
  """
  return _plain_conv(x, kernel)


def _conv_same_fwd(x, kernel):
  return _plain_conv(x, kernel), (x, kernel)


def _conv_same_bwd(residuals, g):
  x, kernel = residuals
  dx = _plain_conv(g, _flipped(kernel))
  (dkernel,) = jax.vjp(lambda k: _plain_conv(x, k), kernel)[1](g)  # unused ones are DCE'd
  return dx, dkernel


conv_same.defvjp(_conv_same_fwd, _conv_same_bwd)


def _taps(x: jax.Array, kh: int, kw: int) -> list[jax.Array]:
  """The ``kh·kw`` zero-padded shifted views ``(B, H, W)`` of a one-channel ``(B, H, W)``."""
  h, w = x.shape[1:3]
  ph, pw = kh // 2, kw // 2
  padded = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw)))
  return [padded[:, i:i + h, j:j + w] for i in range(kh) for j in range(kw)]


def _one_channel_im2col(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """The same convolution as a matrix product of patches: differentiated for the backward pass."""
  kh, kw, _, out = kernel.shape
  patches = jnp.stack(_taps(x[..., 0], kh, kw), axis=-1)  # (B, H, W, kh·kw)
  return jnp.einsum("bhwt,to->bhwo", patches, kernel.reshape(kh * kw, out))


@jax.custom_vjp
def conv_one_channel(x: jax.Array, kernel: jax.Array) -> jax.Array:
  r"""``SAME`` convolution of one-channel images: 9 shifted multiply-adds, fast gradient.

  .. math:: y_{b,p,q,o} = \sum_{i,j} x_{b,\,p+i-r,\,q+j-r}\, k_{i,j,0,o}.

  Called without differentiation (logits, deletion curves, the completeness
  check of Integrated Gradients) it is ``lax.conv_general_dilated``, which
  XLA:CPU (without XLA flags) takes whole into its fused convolution kernels.
  Under differentiation the forward pass is 9 shifted multiply-adds, which XLA
  fuses with the ReLU and pooling that follow, and the gradient is that of the
  im2col form (patches × the ``(K·K, O)`` kernel): a matrix product and shifted
  adds. (The shifted form in a forward-only program is the slow one there:
  XLA:CPU then compiles each of the 9 shifted views and kernel rows as a kernel
  of its own; ``benchmarks/investigations/first_conv.py`` measures both.) All of these equal
  ``lax.conv_general_dilated`` and its autodiff to float32 rounding.

  Args:
    x: ``(B, H, W, 1)``.
    kernel: ``(K, K, 1, O)`` with odd ``K``.

  Returns:
    ``(B, H, W, O)``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> x = jax.random.normal(jax.random.key(0), (2, 6, 6, 1))
    >>> k = jax.random.normal(jax.random.key(1), (3, 3, 1, 4))
    >>> plain = jax.lax.conv_general_dilated(
    ...     x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    >>> bool(jnp.allclose(conv_one_channel(x, k), plain, rtol=1e-5, atol=1e-5))
    True
  """
  return _plain_conv(x, kernel)


def _one_channel_shifts(x: jax.Array, kernel: jax.Array) -> jax.Array:
  kh, kw = kernel.shape[:2]
  taps = _taps(x[..., 0], kh, kw)
  weights = kernel.reshape(kh * kw, -1)
  y = taps[0][..., None] * weights[0]
  for t in range(1, kh * kw):
    y = y + taps[t][..., None] * weights[t]
  return y


def _conv_one_channel_fwd(x, kernel):
  return _one_channel_shifts(x, kernel), (x, kernel)


def _conv_one_channel_bwd(residuals, g):
  x, kernel = residuals
  return jax.vjp(_one_channel_im2col, x, kernel)[1](g)  # unused ones are DCE'd


conv_one_channel.defvjp(_conv_one_channel_fwd, _conv_one_channel_bwd)


def _is_fast_case(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                  dimension_numbers, feature_group_count, kwargs) -> bool:
  """Whether a ``conv_general_dilated`` call is a stride-1 ``SAME`` NHWC/HWIO convolution."""
  if lhs.ndim != 4 or rhs.ndim != 4 or feature_group_count != 1:
    return False
  if any(v is not None for v in kwargs.values()):  # preferred_element_type, out_sharding
    return False
  kh, kw = rhs.shape[:2]
  if kh % 2 == 0 or kw % 2 == 0 or tuple(window_strides) != (1, 1):
    return False
  for dilation in (lhs_dilation, rhs_dilation):
    if dilation is not None and tuple(dilation) != (1, 1):
      return False
  same = ((kh // 2, kh // 2), (kw // 2, kw // 2))
  if not (padding == "SAME" or (not isinstance(padding, str)
                                and tuple(map(tuple, padding)) == same)):
    return False
  numbers = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  return numbers == _NHWC and lhs.dtype == rhs.dtype == jnp.float32


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    precision=None,
    **kwargs,
) -> jax.Array:
  """Drop-in for ``lax.conv_general_dilated`` with fast exact gradients for the models' convs.

  Stride-1 ``SAME`` float32 NHWC × HWIO convolutions with an odd kernel go to
  :func:`conv_one_channel` (one input channel) or :func:`conv_same`; every other
  call is passed to ``lax.conv_general_dilated`` unchanged. The models pass it to
  ``nnx.Conv(..., conv_general_dilated=conv_general_dilated)``, so their
  parameters (``kernel`` HWIO, ``bias``) are those of a plain ``nnx.Conv``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> conv = nnx.Conv(1, 4, (3, 3), rngs=nnx.Rngs(0), conv_general_dilated=conv_general_dilated)
    >>> conv(jnp.ones((2, 8, 8, 1))).shape
    (2, 8, 8, 4)
  """
  if _is_fast_case(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                   dimension_numbers, feature_group_count, kwargs):
    return conv_one_channel(lhs, rhs) if rhs.shape[2] == 1 else conv_same(lhs, rhs)
  return lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
      precision=precision, **kwargs)
