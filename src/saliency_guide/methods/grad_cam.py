r"""Grad-CAM (Selvaraju et al., 2017): a conv layer's channels weighted by their mean gradient.

.. math::

   \alpha^c_k = \frac{1}{Z} \sum_{i,j} \frac{\partial y^c}{\partial A^k_{ij}},
   \qquad
   L^c_{\text{Grad-CAM}} = \mathrm{ReLU}\Big(\sum_k \alpha^c_k A^k\Big).

The counterfactual variant (the paper's section "Counterfactual Explanations")
weights the channels by the negated gradients, :math:`-\alpha^c_k`.

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
  Layer,
  checked_options,
  finish,
  layer_score,
  map_shape,
  weighted_sum,
)
from saliency_guide.validation import check_inputs

__all__ = ["grad_cam"]


def _grad_cam_sum(model, images, targets, layer, counterfactual=False):
  r""":math:`\sum_k \alpha^c_k A^k` with :math:`\alpha^c_k` the mean gradient, ``(B, h, w)``.

  With ``counterfactual``, the weights are the mean *negated* gradient, :math:`-\alpha^c_k`.
  """
  score = layer_score(model, images, targets, layer)
  zero = jnp.zeros(map_shape(model, images, layer))  # the gradient is taken at A
  gradient, a = jax.grad(score, has_aux=True)(zero)
  alpha = gradient.mean(axis=(1, 2))  # (1/Z) sum_ij dy/dA^k_ij, (B, K)
  if counterfactual:  # a static flag: the default program is unchanged
    alpha = -alpha
  return weighted_sum(alpha, a)


def _grad_cam_core(
    model: nnx.Module, images: jax.Array, targets: jax.Array, operands: None, *,
    layer: Layer, upsample: bool, relu: bool, counterfactual: bool,
) -> jax.Array:
  """Traceable core of :func:`grad_cam` on checked inputs."""
  del operands
  maps = _grad_cam_sum(model, images, targets, layer, counterfactual)
  return finish(maps, images.shape[1:3], relu=relu, upsample=upsample)


def grad_cam(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    layer: str | nnx.Module | None = None,
    upsample: bool = True,
    relu: bool = True,
    counterfactual: bool = False,
) -> jax.Array:
  r"""Grad-CAM (Selvaraju et al., 2017): channels weighted by their average gradient.

  .. math::

     \alpha^c_k = \frac{1}{Z} \sum_{i,j} \frac{\partial y^c}{\partial A^k_{ij}},
     \qquad
     L^c_{\text{Grad-CAM}} = \mathrm{ReLU}\Big(\sum_k \alpha^c_k A^k\Big),

  with :math:`A^k` the feature maps of ``layer`` (its output), :math:`Z`
  their number of locations and :math:`y^c` the target **logit**. The gradient
  is evaluated at the actual activations :math:`A` (a zero perturbation of the
  layer's output).

  For a global-average-pooling network at its last conv layer,
  :math:`\partial y^c / \partial A^k_{ij} = w^c_k / Z`, so Grad-CAM is
  :math:`\mathrm{ReLU}(M_c) / Z` with :math:`M_c` the CAM: the Grad-CAM paper's
  argument that it generalises CAM.

  **Counterfactual explanations** (the paper's section of that name) negate the
  gradients: the weights are :math:`-\alpha^c_k` and the map is

  .. math::

     L^c_{\text{counterfactual}} = \mathrm{ReLU}\Big(-\sum_k \alpha^c_k A^k\Big),

  the locations whose features, by the same first-order account, *lower* the
  logit of class :math:`c`: removing what is there would raise it. It is the
  negative part of the signed Grad-CAM sum, the part the ReLU of Grad-CAM
  discards; with ``relu=False`` it is exactly the signed sum negated.

  Args:
    model: a classifier (any Flax NNX model returning logits) with a layer whose
      output is feature maps ``(B, h, w, K)``.
    images: float array ``(B, H, W, C)``, NHWC.
    targets: integer array ``(B,)``, the class whose logit is explained.
    layer: the layer whose output is :math:`A`: a dotted path to a submodule
      (``"blocks.1"``, ``"blocks.0.conv2"``; list indices as parts), the
      submodule itself (``model.blocks[1]``), or a name in
      ``model.feature_layers`` (the map the model exposes: ``"conv1"`` of
      ``CNN`` is after its ReLU). Default: the last of ``feature_layers``,
      else the last submodule whose output is ``(B, h, w, K)`` in the forward
      pass.
    upsample: resize the map to ``(H, W)`` (bilinear, half-pixel centres);
      ``False`` returns the ``(h, w)`` map.
    relu: apply the final ReLU (the method); ``False`` returns the signed sum,
      which shows the negative evidence the ReLU discards.
    counterfactual: weight the channels by the negated mean gradients
      (:math:`-\alpha^c_k`): the counterfactual explanation, which highlights
      what counts *against* class :math:`c`. Default ``False``: Grad-CAM.

  Returns:
    float32 array ``(B, H, W)`` (or ``(B, h, w)`` without upsampling).

  Raises:
    ValueError: the model has no layer with ``(B, h, w, K)`` output, an unknown
      ``layer`` or one whose output is not ``(B, h, w, K)`` (the message lists
      the candidates), or bad ``images``/``targets``.
    TypeError: ``layer`` is not a string, a path tuple, a submodule or ``None``;
      ``upsample``, ``relu`` or ``counterfactual`` is not a ``bool``.

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
    ValueError: layer: 'dense' outputs an array of shape (2, 16) (float32), not feature maps ...
    >>> signed = grad_cam(model, x, t, upsample=False, relu=False)
    >>> counterfactual = grad_cam(model, x, t, upsample=False, counterfactual=True)
    >>> bool(jnp.allclose(counterfactual, jax.nn.relu(-signed)))
    True

  References:
    R. R. Selvaraju, M. Cogswell, A. Das, R. Vedantam, D. Parikh, D. Batra.
    *Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization.* ICCV 2017. arXiv:1610.02391.
  """
  images, targets = check_inputs(model, images, targets)
  core = _prepare(model, images, layer=layer, upsample=upsample, relu=relu,
                  counterfactual=counterfactual)
  return core.run(model, images, targets)


def _prepare(
    model: nnx.Module, images: jax.Array, *, layer: object = None, upsample: bool = True,
    relu: bool = True, counterfactual: bool = False,
) -> Core:
  static = checked_options(model, images, layer, upsample, relu=relu,
                           counterfactual=counterfactual)
  return Core(_grad_cam_core, static=static)


register(grad_cam, _prepare)
