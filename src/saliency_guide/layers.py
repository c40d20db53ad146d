"""Layers shared by the models: a fast, exact max-pooling gradient and the ReLU.

Why a custom max-pool? ``jax.grad`` of ``lax.reduce_window`` max-pooling becomes
``select_and_scatter``, which XLA:CPU expands into several activation-sized index
arrays and a scatter: measured here it was ~64 % of the time of a saliency call
on the pooled CNN. :func:`max_pool_2x2` computes the same forward value and the
same gradient (all of a window's gradient goes to the *first* maximum in
row-major order, which is XLA's and PyTorch's tie rule) with a reshape, an
``argmax`` and a one-hot mask. The tie rule matters on MNIST: background windows
are all zeros, so every one of them is a tie.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["max_pool_2x2", "relu"]


def relu(x: jax.Array) -> jax.Array:
  r"""The rectified linear unit, :math:`\max(x, 0)`, with the usual gradient.

  The models call their activation through the attribute ``model.activation``
  (this function by default), so that modified-backpropagation methods can swap
  the backward rule of every ReLU by attribute assignment on a copy of the model.

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
  """(B, H, W, C) -> (B, H/2, W/2, C, 4), window entries in row-major order."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // 2, 2, w // 2, 2, c)
  return x.transpose(0, 1, 3, 5, 2, 4).reshape(b, h // 2, w // 2, c, 4)


def _unwindows(x: jax.Array) -> jax.Array:
  """Inverse of :func:`_windows`."""
  b, h2, w2, c, _ = x.shape
  x = x.reshape(b, h2, w2, c, 2, 2).transpose(0, 1, 4, 2, 5, 3)
  return x.reshape(b, 2 * h2, 2 * w2, c)


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
  return jnp.max(_windows(x), axis=-1)


def _max_pool_fwd(x):
  windows = _windows(x)
  first_max = jnp.argmax(windows, axis=-1)  # argmax returns the first maximum
  return jnp.max(windows, axis=-1), first_max


def _max_pool_bwd(residuals, g):
  first_max = residuals
  routed = jax.nn.one_hot(first_max, 4, dtype=g.dtype) * g[..., None]
  return (_unwindows(routed),)


max_pool_2x2.defvjp(_max_pool_fwd, _max_pool_bwd)
