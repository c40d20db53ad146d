"""Plain gradient methods: Gradients (saliency maps) and Gradients × Input.

Both explain the target class **logit** :math:`f_c(x)` (pre-softmax), one
backward pass per batch (:func:`saliency_guide.methods._core.logit_gradient`).
"""

from __future__ import annotations

import jax
from flax import nnx

from saliency_guide.methods._core import logit_gradient
from saliency_guide.methods._validation import check_inputs

__all__ = ["gradients", "gradients_x_inputs"]


def _input_x_gradient(model: nnx.Module, images: jax.Array, targets: jax.Array) -> jax.Array:
  """Traceable core of :func:`gradients_x_inputs` (inputs already validated)."""
  return images * logit_gradient(model, images, targets)


@jax.jit
def _gradients(model: nnx.Module, images: jax.Array, targets: jax.Array) -> jax.Array:
  """Jitted core of :func:`gradients` on validated inputs."""
  return logit_gradient(model, images, targets)


@jax.jit
def _gradients_x_inputs(model: nnx.Module, images: jax.Array, targets: jax.Array) -> jax.Array:
  """Jitted core of :func:`gradients_x_inputs` on validated inputs."""
  return _input_x_gradient(model, images, targets)


def gradients(model: nnx.Module, images: jax.Array, targets: jax.Array) -> jax.Array:
  r"""Gradient of the target class logit with respect to the input (a saliency map).

  Simonyan et al. (2014) rank the pixels of an image :math:`I_0` by how much
  the class score :math:`S_c` changes when the pixel changes, i.e. by the
  weights :math:`w` of the first-order Taylor expansion
  :math:`S_c(I) \approx w^\top I + b` around :math:`I_0`:

  .. math::

     w = \left.\frac{\partial S_c}{\partial I}\right|_{I_0}.

  :math:`S_c` is the **logit** of class :math:`c` (the paper: "class score",
  not the softmax probability, which also depends on every other class).
  Simonyan et al. then visualise :math:`\max_{\text{channel}} |w|`; this
  function returns the signed gradient itself (take ``jnp.abs`` for their
  map), so that nothing is lost before plotting.

  Args:
    model: a classifier returning logits ``(B, classes)``.
    images: float array ``(B, H, W, C)`` (NHWC), finite values.
    targets: integer array ``(B,)``, the class to explain for each image.

  Returns:
    float32 array ``(B, H, W, C)``: :math:`\partial f_{c_b}(x_b) / \partial x_b`.

  Raises:
    TypeError, ValueError: bad ``images`` or ``targets`` (see
      :func:`~saliency_guide.methods._validation.check_inputs`).

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> from saliency_guide.methods import gradients
    >>> model = MLP(rngs=nnx.Rngs(0))
    >>> gradients(model, jnp.zeros((2, 28, 28, 1)), jnp.array([3, 7])).shape
    (2, 28, 28, 1)

  References:
    K. Simonyan, A. Vedaldi, A. Zisserman. *Deep Inside Convolutional Networks:
    Visualising Image Classification Models and Saliency Maps.* ICLR workshop
    2014. arXiv:1312.6034.
  """
  images, targets = check_inputs(model, images, targets)
  return _gradients(model, images, targets)


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
  return _gradients_x_inputs(model, images, targets)


# Traceable cores ``(model, images, targets) -> maps`` on validated inputs, for
# wrappers such as ``smoothgrad`` that run many evaluations in one compiled call.
gradients.traceable = logit_gradient  # type: ignore[attr-defined]
gradients_x_inputs.traceable = _input_x_gradient  # type: ignore[attr-defined]
