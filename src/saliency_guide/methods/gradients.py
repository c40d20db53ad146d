r"""Gradients (saliency maps, Simonyan et al. 2014): the logit's gradient w.r.t. the input.

Every method of this package explains :math:`f_c(x)`, the **pre-softmax** logit
of the target class :math:`c`, never the training loss (whose gradient has the
opposite sign and mixes in every other class through the softmax):
:func:`target_logits` and :func:`logit_gradient` are the two helpers the other
methods build on (checked public names; the methods call their unchecked
traceable cores ``_target_logits`` and ``_logit_gradient`` on inputs they have
checked once).

References:
  K. Simonyan, A. Vedaldi, A. Zisserman. *Deep Inside Convolutional Networks:
  Visualising Image Classification Models and Saliency Maps.* ICLR workshop
  2014. arXiv:1312.6034.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from saliency_guide.methods._cores import Core, register
from saliency_guide.validation import check_inputs

__all__ = ["gradients", "logit_gradient", "target_logits"]


def target_logits(
    model: nnx.Module, images: jax.Array, targets: jax.Array
) -> jax.Array:
  r"""The target logits :math:`f_{c_b}(x_b)` of a batch, shape ``(B,)``.

  .. math:: t_b = f_{c_b}(x_b), \qquad b = 1, \dots, B.

  Checks its arguments (:func:`~saliency_guide.validation.check_inputs`), then
  calls the traceable core ``_target_logits`` that the methods use on inputs
  they have already checked.

  Args:
    model: a classifier returning logits ``(B, classes)``.
    images: float array ``(B, H, W, C)`` (NHWC), finite values.
    targets: integer array ``(B,)`` of classes in ``[0, classes)``.

  Returns:
    float32 array ``(B,)``: each image's logit of its target class.

  Raises:
    TypeError, ValueError: bad ``model``, ``images`` or ``targets`` (see
      :func:`~saliency_guide.validation.check_inputs`).

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> model = MLP(rngs=nnx.Rngs(0))
    >>> target_logits(model, jnp.zeros((2, 28, 28, 1)), jnp.array([0, 1])).shape
    (2,)

  References:
    K. Simonyan, A. Vedaldi, A. Zisserman. *Deep Inside Convolutional Networks:
    Visualising Image Classification Models and Saliency Maps.* ICLR workshop
    2014. arXiv:1312.6034 (the class score is the logit, before the softmax).
  """
  images, targets = check_inputs(model, images, targets)
  return _target_logits(model, images, targets)


def _target_logits(model: nnx.Module, images: jax.Array, targets: jax.Array) -> jax.Array:
  """Traceable core of :func:`target_logits` on checked inputs (checks nothing)."""
  logits = model(images)
  return jnp.take_along_axis(logits, targets[:, None], axis=1)[:, 0]


def logit_gradient(
    model: nnx.Module, images: jax.Array, targets: jax.Array
) -> jax.Array:
  r""":math:`\partial f_{c_b}(x_b) / \partial x_b` of a batch, shape of ``images``.

  Examples of a batch do not interact in these models, so the gradient of the
  *sum* of the target logits with respect to the batch is the batch of
  per-example gradients (one backward pass instead of ``B``):

  .. math:: \frac{\partial}{\partial x_b} \sum_{b'} f_{c_{b'}}(x_{b'})
            = \frac{\partial f_{c_b}(x_b)}{\partial x_b}.

  Checks its arguments (:func:`~saliency_guide.validation.check_inputs`), then
  calls the traceable core ``_logit_gradient`` that the methods use on inputs
  they have already checked; :func:`gradients` returns the same maps from one
  compiled call.

  Args:
    model: a classifier returning logits ``(B, classes)``; examples must not
      interact (no batch statistics).
    images: float array ``(B, H, W, C)`` (NHWC), finite values.
    targets: integer array ``(B,)`` of classes in ``[0, classes)``.

  Returns:
    float32 array of the shape of ``images``.

  Raises:
    TypeError, ValueError: bad ``model``, ``images`` or ``targets`` (see
      :func:`~saliency_guide.validation.check_inputs`).

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> model = MLP(rngs=nnx.Rngs(0))
    >>> logit_gradient(model, jnp.zeros((2, 28, 28, 1)), jnp.array([0, 1])).shape
    (2, 28, 28, 1)

  References:
    K. Simonyan, A. Vedaldi, A. Zisserman. *Deep Inside Convolutional Networks:
    Visualising Image Classification Models and Saliency Maps.* ICLR workshop
    2014. arXiv:1312.6034.
  """
  images, targets = check_inputs(model, images, targets)
  return _logit_gradient(model, images, targets)


def _logit_gradient(model: nnx.Module, images: jax.Array, targets: jax.Array) -> jax.Array:
  """Traceable core of :func:`logit_gradient` on checked inputs (checks nothing)."""
  return jax.grad(lambda x: _target_logits(model, x, targets).sum())(images)


def _gradients_core(
    model: nnx.Module, images: jax.Array, targets: jax.Array, operands: None
) -> jax.Array:
  """Traceable core of :func:`gradients` on checked inputs (no options)."""
  del operands
  return _logit_gradient(model, images, targets)


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
      :func:`~saliency_guide.validation.check_inputs`).

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
  return _prepare(model, images).run(model, images, targets)


def _prepare(model: nnx.Module, images: jax.Array) -> Core:
  del model, images  # no options to check
  return Core(_gradients_core)


register(gradients, _prepare)
