r"""Guided Backpropagation (Springenberg et al., 2015): gradient ∧ deconvnet at every ReLU.

The backward pass of the target logit, with a different rule at every ReLU:
with :math:`x` the forward input of a ReLU and :math:`R` the signal from above,

.. math:: R_\text{in} = \max(R, 0) \cdot \mathbb{1}[x > 0],

the gradient's mask and the deconvnet's rectification together; every other
layer back-propagates as in the gradient. The rule is :func:`guided_relu`,
applied at every ReLU of any model (:func:`~saliency_guide.methods.with_relu_rule`).

References:
  J. T. Springenberg, A. Dosovitskiy, T. Brox, M. Riedmiller. *Striving for
  Simplicity: The All Convolutional Net.* ICLR workshop 2015. arXiv:1412.6806.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from saliency_guide.methods._cores import Core, register
from saliency_guide.methods._relu_rules import replace_relus
from saliency_guide.methods.gradients import _logit_gradient
from saliency_guide.validation import check_inputs

__all__ = ["guided_backprop", "guided_relu"]


@jax.custom_vjp
def guided_relu(x: jax.Array) -> jax.Array:
  r"""ReLU whose backward pass is the guided-backpropagation rule (Springenberg et al., 2015).

  Forward: :math:`\max(x, 0)`, the ordinary ReLU. Backward: the signal passes
  only where the unit was on in the forward pass (the gradient's mask) *and* the
  signal from above is positive (the deconvnet's rectification),

  .. math:: R_\text{in} = \max(R, 0) \cdot \mathbb{1}[x > 0].

  At :math:`x = 0` the mask is :math:`0`, as in the gradient of
  :func:`jax.nn.relu`; at :math:`R = 0` the result is :math:`0`.

  Args:
    x: any float array.

  Returns:
    ``max(x, 0)``, same shape and dtype as ``x``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> x = jnp.array([-1.0, 0.0, 2.0, 3.0])
    >>> _, vjp = jax.vjp(guided_relu, x)
    >>> vjp(jnp.array([1.0, 1.0, 1.0, -1.0]))[0]  # mask AND positive signal
    Array([0., 0., 1., 0.], dtype=float32)

  References:
    Springenberg, Dosovitskiy, Brox & Riedmiller, *Striving for Simplicity: The
    All Convolutional Net*, ICLR workshop 2015, arXiv:1412.6806.
  """
  return jax.nn.relu(x)


def _guided_relu_fwd(x):
  return jax.nn.relu(x), x > 0  # save the boolean mask, not x: 4x less memory


def _guided_relu_bwd(on, g):
  return (jnp.where(on, jnp.maximum(g, 0), jnp.zeros_like(g)),)


guided_relu.defvjp(_guided_relu_fwd, _guided_relu_bwd)


def _guided_backprop_core(
    model: nnx.Module, images: jax.Array, targets: jax.Array, operands: None
) -> jax.Array:
  """Traceable core of :func:`guided_backprop` on checked inputs (no options)."""
  del operands
  return _logit_gradient(replace_relus(model, guided_relu), images, targets)



def guided_backprop(model: nnx.Module, images: jax.Array, targets: jax.Array) -> jax.Array:
  r"""Guided Backpropagation (Springenberg et al., 2015): gradient ∧ deconvnet at every ReLU.

  The map is the backward pass of the target logit :math:`f_c` in which every
  ReLU with forward input :math:`x^{(l)}` passes the signal only where the
  unit was on *and* the signal is positive:

  .. math::

     R^{(L)} = \frac{\partial f_c}{\partial a^{(L)}}, \qquad
     R^{(l)}_\text{in} = \max\!\big(R^{(l)}, 0\big) \cdot \mathbb{1}\big[x^{(l)} > 0\big], \qquad
     \text{map} = R^{(0)} \in \mathbb{R}^{H \times W \times C},

  while convolutions, max-pooling and dense layers back-propagate as in the
  gradient.

  Args:
    model: a classifier returning logits, any ``nnx.Module``: its ReLUs take the
      rule however it calls them (``jax.nn.relu``, ``nnx.relu``,
      ``jnp.maximum(x, 0)``; see :func:`~saliency_guide.methods.with_relu_rule`).
    images: float array ``(B, H, W, C)``, NHWC.
    targets: integer array ``(B,)``, the class whose logit is explained.

  Returns:
    Float32 array of the shape of ``images``. It is not a derivative of the
    logit: the signal reaching the first layer is non-negative, so a pixel's
    sign is that of the first layer's filters, not an effect on the logit.

  Raises:
    ValueError, TypeError: bad ``images``/``targets`` (see ``check_inputs``), a
      model without a ReLU, or one with an activation for which the rule is not
      defined (GELU, SiLU, tanh, ...; raised while the core is traced).

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import CNN
    >>> model = CNN(channels=(4, 8), hidden=16, rngs=nnx.Rngs(0))
    >>> maps = guided_backprop(model, jnp.ones((2, 28, 28, 1)), jnp.array([3, 7]))
    >>> maps.shape
    (2, 28, 28, 1)

  References:
    Springenberg, Dosovitskiy, Brox & Riedmiller, *Striving for Simplicity: The
    All Convolutional Net*, ICLR workshop 2015, arXiv:1412.6806.
  """
  images, targets = check_inputs(model, images, targets)
  return _prepare(model, images).run(model, images, targets)


def _prepare(model: nnx.Module, images: jax.Array) -> Core:
  del model, images  # no options to check
  return Core(_guided_backprop_core)


register(guided_backprop, _prepare)
