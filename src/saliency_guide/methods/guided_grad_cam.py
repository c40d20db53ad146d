r"""Guided Grad-CAM (Selvaraju et al., 2017): Guided Backpropagation × upsampled Grad-CAM.

.. math::

   L^c_{\text{Guided Grad-CAM}}(x) = R^c_{\text{GB}}(x) \odot
     \mathrm{Up}\big(L^c_{\text{Grad-CAM}}\big).

References:
  R. R. Selvaraju, M. Cogswell, A. Das, R. Vedantam, D. Parikh, D. Batra.
  *Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
  Localization.* ICCV 2017. arXiv:1610.02391.
"""

from __future__ import annotations

import jax
from flax import nnx

from saliency_guide.methods._cores import Core, register
from saliency_guide.methods._feature_maps import Layer, check_layer, finish
from saliency_guide.methods._relu_rules import replace_relus
from saliency_guide.methods.grad_cam import _grad_cam_sum
from saliency_guide.methods.gradients import _logit_gradient
from saliency_guide.methods.guided_backprop import guided_relu
from saliency_guide.validation import check_flag, check_inputs

__all__ = ["guided_grad_cam"]


def _guided_grad_cam_core(
    model: nnx.Module, images: jax.Array, targets: jax.Array, operands: None, *,
    layer: Layer,
) -> jax.Array:
  """Traceable core of :func:`guided_grad_cam`: both maps in one program."""
  del operands
  coarse = finish(_grad_cam_sum(model, images, targets, layer), images.shape[1:3],
                  relu=True, upsample=True)
  guided = replace_relus(model, guided_relu)  # the rule at every ReLU; model is untouched
  return _logit_gradient(guided, images, targets) * coarse[..., None]


def guided_grad_cam(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    layer: str | nnx.Module | None = None,
    upsample: bool = True,
) -> jax.Array:
  r"""Guided Grad-CAM (Selvaraju et al., 2017): Guided Backpropagation × upsampled Grad-CAM.

  .. math::

     L^c_{\text{Guided Grad-CAM}}(x) = R^c_{\text{GB}}(x) \odot
       \mathrm{Up}\big(L^c_{\text{Grad-CAM}}\big),

  the element-wise product of the Guided Backpropagation map
  (:func:`~saliency_guide.methods.guided_backprop`, pixel resolution, one value
  per input channel) with the Grad-CAM map bilinearly upsampled to the input
  size and broadcast over channels. The product is of the **raw** maps (not of
  maps rescaled to [0, 255] for display): it equals
  ``guided_backprop(model, images, targets) * grad_cam(model, images, targets,
  layer=layer)[..., None]``, computed in one compiled call. The Grad-CAM factor
  is non-negative, so the product's sign is Guided Backpropagation's, which is
  not an effect on the logit (it follows the first layer's filters).

  Args:
    model: a convolutional model exposing its feature maps; its ReLUs, however
      called, take the guided rule (see :func:`~saliency_guide.methods.with_relu_rule`).
    images: float array ``(B, H, W, C)``, NHWC.
    targets: integer array ``(B,)``, the class whose logit is explained.
    layer: the Grad-CAM layer, as for :func:`~saliency_guide.methods.grad_cam`: a
      dotted submodule path, the submodule, or a name in ``model.feature_layers``.
    upsample: must be ``True``: the product lives at the input's resolution.

  Returns:
    float32 array of the shape of ``images``, ``(B, H, W, C)``.

  Raises:
    ValueError: ``upsample=False``, the model exposes no feature maps, has no
      ReLU or an activation without a guided rule (GELU, ...), an unknown
      ``layer``, or bad ``images``/``targets``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import CNN
    >>> model = CNN(channels=(4, 8), hidden=16, rngs=nnx.Rngs(0))
    >>> guided_grad_cam(model, jnp.ones((2, 28, 28, 1)), jnp.array([3, 7])).shape
    (2, 28, 28, 1)

  References:
    R. R. Selvaraju, M. Cogswell, A. Das, R. Vedantam, D. Parikh, D. Batra.
    *Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization.* ICCV 2017. arXiv:1610.02391.
  """
  images, targets = check_inputs(model, images, targets)
  return _prepare(model, images, layer=layer, upsample=upsample).run(model, images, targets)


def _prepare(
    model: nnx.Module, images: jax.Array, *, layer: object = None, upsample: bool = True
) -> Core:
  if check_flag("upsample", upsample) is not True:
    raise ValueError(
        "upsample: Guided Grad-CAM multiplies the pixel-resolution Guided Backpropagation "
        "map by Grad-CAM, so Grad-CAM must be upsampled to the input; got upsample=False"
    )
  return Core(_guided_grad_cam_core, static=(("layer", check_layer(model, layer, images)),))


register(guided_grad_cam, _prepare)
