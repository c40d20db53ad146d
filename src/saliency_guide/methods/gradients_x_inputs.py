r"""Gradient × Input: each input times the gradient of the target logit.

References:
  A. Shrikumar, P. Greenside, A. Shcherbina, A. Kundaje. *Not Just a Black
  Box: Learning Important Features Through Propagating Activation
  Differences.* 2016. arXiv:1605.01713.
"""

from __future__ import annotations

import jax
from flax import nnx

from saliency_guide.methods._cores import Core, register
from saliency_guide.methods.gradients import _logit_gradient
from saliency_guide.validation import check_inputs

__all__ = ["gradients_x_inputs"]


def _gradients_x_inputs_core(
    model: nnx.Module, images: jax.Array, targets: jax.Array, operands: None
) -> jax.Array:
  """Traceable core of :func:`gradients_x_inputs` on checked inputs (no options)."""
  del operands
  return images * _logit_gradient(model, images, targets)



def gradients_x_inputs(model: nnx.Module, images: jax.Array, targets: jax.Array) -> jax.Array:
  r"""Input times the gradient of the target class logit (Gradient × Input).

  .. math::

     \phi_i(x) = x_i \, \frac{\partial f_c(x)}{\partial x_i}.

  :math:`x_i` is pixel :math:`i` of the input, :math:`f_c` the target class
  logit. For a linear model :math:`f_c(x) = w_c^\top x + b_c` this is exactly
  the contribution :math:`w_{c,i} x_i` of each pixel to the logit; for a ReLU
  network without biases it equals the :math:`\epsilon`-LRP and DeepLIFT
  (Rescale, zero reference) attributions (Shrikumar et al. 2016; Ancona et al.
  2018). It is Integrated Gradients with a black baseline evaluated with a
  single Riemann-right step. A pixel equal to 0 always gets 0.

  Args:
    model: a classifier returning logits ``(B, classes)``.
    images: float array ``(B, H, W, C)`` (NHWC), finite values.
    targets: integer array ``(B,)``, the class to explain for each image.

  Returns:
    float32 array ``(B, H, W, C)``: :math:`x_b \odot \partial f_{c_b}(x_b) / \partial x_b`.

  Raises:
    TypeError, ValueError: bad ``images`` or ``targets``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> from saliency_guide.methods import gradients_x_inputs
    >>> model = MLP(rngs=nnx.Rngs(0))
    >>> maps = gradients_x_inputs(model, jnp.zeros((2, 28, 28, 1)), jnp.array([3, 7]))
    >>> float(jnp.abs(maps).max())  # black input: nothing to attribute
    0.0

  References:
    A. Shrikumar, P. Greenside, A. Shcherbina, A. Kundaje. *Not Just a Black
    Box: Learning Important Features Through Propagating Activation
    Differences.* 2016. arXiv:1605.01713.

    M. Ancona, E. Ceolini, C. Öztireli, M. Gross. *Towards better understanding
    of gradient-based attribution methods for deep neural networks.* ICLR 2018.
    arXiv:1711.06104.
  """
  images, targets = check_inputs(model, images, targets)
  return _prepare(model, images).run(model, images, targets)


def _prepare(model: nnx.Module, images: jax.Array) -> Core:
  del model, images  # no options to check
  return Core(_gradients_x_inputs_core)


register(gradients_x_inputs, _prepare)
