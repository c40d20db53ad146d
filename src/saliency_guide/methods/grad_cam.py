r"""Grad-CAM (Selvaraju et al., 2017): a conv layer's channels weighted by their mean gradient.

.. math::

   \alpha^c_k = \frac{1}{Z} \sum_{i,j} \frac{\partial y^c}{\partial A^k_{ij}},
   \qquad
   L^c_{\text{Grad-CAM}} = \mathrm{ReLU}\Big(\sum_k \alpha^c_k A^k\Big).

References:
  R. R. Selvaraju, M. Cogswell, A. Das, R. Vedantam, D. Parikh, D. Batra.
  *Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
  Localization.* ICCV 2017. arXiv:1610.02391.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from saliency_guide.methods._cores import Core, register
from saliency_guide.methods._feature_maps import (
    checked_options,
    finish,
    layer_score,
    map_shape,
    weighted_sum,
)
from saliency_guide.validation import check_inputs

__all__ = ["grad_cam"]


def _grad_cam_sum(model, images, targets, layer):
  r""":math:`\sum_k \alpha^c_k A^k` with :math:`\alpha^c_k` the mean gradient, ``(B, h, w)``."""
  score = layer_score(model, images, targets, layer)
  zero = jnp.zeros(map_shape(model, images, layer))  # the gradient is taken at A
  gradient, a = jax.grad(score, has_aux=True)(zero)
  alpha = gradient.mean(axis=(1, 2))  # (1/Z) sum_ij dy/dA^k_ij, (B, K)
  return weighted_sum(alpha, a)


def _grad_cam_core(
    model: nnx.Module, images: jax.Array, targets: jax.Array, operands: None, *,
    layer: str, upsample: bool, relu: bool,
) -> jax.Array:
  """Traceable core of :func:`grad_cam` on checked inputs."""
  del operands
  maps = _grad_cam_sum(model, images, targets, layer)
  return finish(maps, images.shape[1:3], relu=relu, upsample=upsample)


def grad_cam(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    layer: str | None = None,
    upsample: bool = True,
    relu: bool = True,
) -> jax.Array:
  r"""Grad-CAM (Selvaraju et al., 2017): channels weighted by their average gradient.

  .. math::

     \alpha^c_k = \frac{1}{Z} \sum_{i,j} \frac{\partial y^c}{\partial A^k_{ij}},
     \qquad
     L^c_{\text{Grad-CAM}} = \mathrm{ReLU}\Big(\sum_k \alpha^c_k A^k\Big),

  with :math:`A^k` the feature maps of ``layer`` (after its ReLU), :math:`Z`
  their number of locations and :math:`y^c` the target **logit**. The gradient
  is evaluated at the actual activations :math:`A` (a zero perturbation of the
  exposed map).

  For a global-average-pooling network at its last conv layer,
  :math:`\partial y^c / \partial A^k_{ij} = w^c_k / Z`, so Grad-CAM is
  :math:`\mathrm{ReLU}(M_c) / Z` with :math:`M_c` the CAM: the Grad-CAM paper's
  argument that it generalises CAM.

  Args:
    model: a convolutional model exposing its feature maps (``CNN``, ``GapCNN``).
    images: float array ``(B, H, W, C)``, NHWC.
    targets: integer array ``(B,)``, the class whose logit is explained.
    layer: one of ``model.feature_layers`` (default: the last).
    upsample: resize the map to ``(H, W)`` (bilinear, half-pixel centres);
      ``False`` returns the ``(h, w)`` map.
    relu: apply the final ReLU (the method); ``False`` returns the signed sum,
      which shows the negative evidence the ReLU discards.

  Returns:
    float32 array ``(B, H, W)`` (or ``(B, h, w)`` without upsampling).

  Raises:
    ValueError: the model exposes no feature maps, an unknown ``layer`` (the
      message lists the valid names), or bad ``images``/``targets``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import CNN
    >>> model = CNN(channels=(4, 8), hidden=16, rngs=nnx.Rngs(0))
    >>> x, t = jnp.ones((2, 28, 28, 1)), jnp.array([3, 7])
    >>> grad_cam(model, x, t).shape, grad_cam(model, x, t, layer="conv2", upsample=False).shape
    ((2, 28, 28), (2, 14, 14))
    >>> grad_cam(model, x, t, layer="dense")
    Traceback (most recent call last):
    ...
    ValueError: layer: expected one of 'conv1', 'conv2', got 'dense'

  References:
    R. R. Selvaraju, M. Cogswell, A. Das, R. Vedantam, D. Parikh, D. Batra.
    *Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization.* ICCV 2017. arXiv:1610.02391.
  """
  images, targets = check_inputs(model, images, targets)
  core = _prepare(model, images, layer=layer, upsample=upsample, relu=relu)
  return core.run(model, images, targets)


def _prepare(
    model: nnx.Module, images: jax.Array, *, layer: str | None = None, upsample: bool = True,
    relu: bool = True,
) -> Core:
  del images
  static = checked_options(model, layer, upsample, relu=relu)
  return Core(_grad_cam_core, static=static)


register(grad_cam, _prepare)
