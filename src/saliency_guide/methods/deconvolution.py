r"""Deconvolution (Zeiler & Fergus, 2014): the logit's backward pass with rectified ReLU signals.

The backward pass of the target logit, with a different rule at every ReLU:
with :math:`x` the forward input of a ReLU and :math:`R` the signal from above,

.. math:: R_\text{in} = \max(R, 0) \qquad \text{(the gradient: } R \cdot \mathbb{1}[x > 0]\text{)},

while convolutions, max-pooling switches and dense layers back-propagate as in
the gradient. The rule is :func:`deconv_relu`, applied at every ReLU of any model
(:func:`~saliency_guide.methods.with_relu_rule`).

References:
  M. D. Zeiler, R. Fergus. *Visualizing and Understanding Convolutional
  Networks.* ECCV 2014. arXiv:1311.2901.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from saliency_guide.methods._cores import Core, register
from saliency_guide.methods._relu_rules import replace_relus
from saliency_guide.methods.gradients import _logit_gradient
from saliency_guide.validation import check_inputs

__all__ = ["deconv_relu", "deconvolution"]


@jax.custom_vjp
def deconv_relu(x: jax.Array) -> jax.Array:
  r"""ReLU whose backward pass is the deconvnet rule of Zeiler & Fergus (2014).

  Forward: :math:`\max(x, 0)`, the ordinary ReLU. Backward: the signal
  :math:`R` arriving from above is rectified and the forward mask is ignored,

  .. math:: R_\text{in} = \max(R, 0),

  so a unit that was *off* in the forward pass still passes a positive signal
  (the deconvnet "unpools and rectifies" the signal, it does not differentiate).
  At :math:`R = 0` the result is :math:`0`.

  Args:
    x: any float array.

  Returns:
    ``max(x, 0)``, same shape and dtype as ``x``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> x = jnp.array([-1.0, 0.0, 2.0, 3.0])
    >>> _, vjp = jax.vjp(deconv_relu, x)
    >>> vjp(jnp.array([1.0, 1.0, 1.0, -1.0]))[0]  # the mask is ignored
    Array([1., 1., 1., 0.], dtype=float32)

  References:
    Zeiler & Fergus, *Visualizing and Understanding Convolutional Networks*,
    ECCV 2014, arXiv:1311.2901.
  """
  return jax.nn.relu(x)


def _deconv_relu_fwd(x):
  return jax.nn.relu(x), None  # the rule does not depend on x: nothing to save


def _deconv_relu_bwd(_, g):
  return (jnp.maximum(g, 0),)


deconv_relu.defvjp(_deconv_relu_fwd, _deconv_relu_bwd)


def _deconvolution_core(
    model: nnx.Module, images: jax.Array, targets: jax.Array, operands: None
) -> jax.Array:
  """Traceable core of :func:`deconvolution` on checked inputs (no options)."""
  del operands
  return _logit_gradient(replace_relus(model, deconv_relu), images, targets)



def deconvolution(model: nnx.Module, images: jax.Array, targets: jax.Array) -> jax.Array:
  r"""Deconvnet saliency (Zeiler & Fergus, 2014): the logit's backward pass, ReLUs rectified.

  The map is the backward pass of the target logit :math:`f_c` in which every
  ReLU sends down the rectified signal, whatever its forward input was:

  .. math::

     R^{(L)} = \frac{\partial f_c}{\partial a^{(L)}}, \qquad
     R^{(l)}_\text{in} = \max\!\big(R^{(l)}, 0\big), \qquad
     \text{map} = R^{(0)} \in \mathbb{R}^{H \times W \times C},

  while convolutions (transposed filters), max-pooling (the forward "switches")
  and dense layers back-propagate as in the gradient. Zeiler & Fergus
  reconstruct a single feature map layer by layer with a deconvnet; here the
  same rules are applied to the whole network, from the logit down, as in
  Springenberg et al. (2015).

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
    >>> maps = deconvolution(model, jnp.ones((2, 28, 28, 1)), jnp.array([3, 7]))
    >>> maps.shape
    (2, 28, 28, 1)

  References:
    Zeiler & Fergus, *Visualizing and Understanding Convolutional Networks*,
    ECCV 2014, arXiv:1311.2901.
  """
  images, targets = check_inputs(model, images, targets)
  return _prepare(model, images).run(model, images, targets)


def _prepare(model: nnx.Module, images: jax.Array) -> Core:
  del model, images  # no options to check
  return Core(_deconvolution_core)


register(deconvolution, _prepare)
