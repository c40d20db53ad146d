r"""Score-CAM (Wang et al., 2020): channels weighted by the logit of the input they mask.

.. math::

   H^k = s\big(\mathrm{Up}(A^k)\big), \quad
   s(M) = \frac{M - \min M}{\max M - \min M}, \qquad
   \alpha^c_k = y^c(X \circ H^k) - y^c(X_b), \qquad
   L^c = \mathrm{ReLU}\Big(\sum_k \alpha^c_k A^k\Big).

References:
  H. Wang, Z. Wang, M. Du, F. Yang, Z. Zhang, S. Ding, P. Mardziel, X. Hu.
  *Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural
  Networks.* CVPR Workshops 2020. arXiv:1910.01279.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from saliency_guide.methods._cores import register
from saliency_guide.methods._feature_maps import (
  Layer,
  feature_maps,
  finish,
  layer_map_prepare,
  upsample_maps,
  weighted_sum,
)
from saliency_guide.validation import check_inputs

__all__ = ["score_cam"]

#: Masked images per forward pass in Score-CAM (bounds activation memory).
SCORE_CAM_IMAGES = 512


def _score_cam_core(
    model: nnx.Module, images: jax.Array, targets: jax.Array, operands: None, *,
    layer: Layer, upsample: bool, relu: bool,
) -> jax.Array:
  """Traceable core of :func:`score_cam` on checked inputs."""
  del operands
  _, a = feature_maps(model, images, layer)  # (B, h, w, K)
  size = images.shape[1:3]
  # H^k = s(Up(A^k)): upsample, then min-max normalise each map to [0, 1];
  # a constant map has no highlighted region and becomes 0 (the baseline).
  up = upsample_maps(a, size)  # (B, H, W, K)
  low = up.min(axis=(1, 2), keepdims=True)
  high = up.max(axis=(1, 2), keepdims=True)
  span = high - low
  masks = jnp.where(span > 0, (up - low) / jnp.where(span > 0, span, 1.0), 0.0)
  masks = jnp.moveaxis(masks, -1, 0)  # (K, B, H, W): one mask per channel

  def logit(x):  # a plain forward pass, no capture: the module is only read
    return jnp.take_along_axis(model(x), targets[:, None], axis=1)[:, 0]

  def masked_logit(mask):  # (B, H, W) -> (B,): f^c(X o H^k)
    return logit(images * mask[..., None])

  batch = max(1, min(masks.shape[0], SCORE_CAM_IMAGES // images.shape[0]))  # channels per pass
  scores = jax.lax.map(masked_logit, masks, batch_size=batch)  # (K, B)
  baseline = logit(jnp.zeros_like(images))  # f^c(X_b), X_b = 0
  weights = (scores - baseline[None]).T  # (B, K): the increase of the logit
  return finish(weighted_sum(weights, a), size, relu=relu, upsample=upsample)


def score_cam(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    layer: str | nnx.Module | None = None,
    upsample: bool = True,
    relu: bool = True,
) -> jax.Array:
  r"""Score-CAM (Wang et al., 2020): channels weighted by the logit of the input they mask.

  Each feature map :math:`A^k` of the layer is upsampled to the input size and
  min-max normalised to :math:`[0, 1]`, giving a soft mask :math:`H^k`; the
  channel's weight is the increase of the target logit when only what the mask
  keeps of the input is shown, relative to a baseline input :math:`X_b`:

  .. math::

     H^k = s\big(\mathrm{Up}(A^k)\big), \quad
     s(M) = \frac{M - \min M}{\max M - \min M}, \qquad
     \alpha^c_k = y^c(X \circ H^k) - y^c(X_b), \qquad
     M_c = \mathrm{ReLU}\Big(\sum_k \alpha^c_k A^k\Big).

  Choices, all following the paper's definitions: :math:`y^c` is the target
  **logit**, as for every method of this package (the authors' code uses the
  softmax probability, and some re-implementations add a softmax over
  channels; both are monotone reweightings that change the map); the baseline
  :math:`X_b` is the black image :math:`0`, which is also what a fully masked
  input :math:`X \circ 0` is, so a constant (dead) channel, whose mask is
  :math:`0`, gets weight exactly :math:`0`. The weights are signed: a channel
  whose region alone lowers the logit below the baseline's counts against the
  class. All :math:`K \times B` masked images go through the model in a few
  large batches (``jax.lax.map`` over chunks of channels), not one channel at a
  time.

  Args:
    model: a classifier (any Flax NNX model returning logits) with a layer whose
      output is feature maps ``(B, h, w, K)``.
    images: float array ``(B, H, W, C)``, NHWC.
    targets: integer array ``(B,)``, the class whose logit is explained.
    layer: the layer whose output is :math:`A`: a dotted path to a submodule
      (``"blocks.1"``; list indices as parts), the submodule itself, or a name
      in ``model.feature_layers`` (the map the model exposes). Default: the
      last of ``feature_layers``, else the last submodule whose output is
      ``(B, h, w, K)`` in the forward pass.
    upsample: resize the map to ``(H, W)`` (bilinear, half-pixel centres);
      ``False`` returns the layer's ``(h, w)`` map.
    relu: apply the final ReLU (the method); ``False`` returns the signed sum.

  Returns:
    float32 array ``(B, H, W)`` (or ``(B, h, w)`` without upsampling).

  Raises:
    ValueError: the model has no layer with ``(B, h, w, K)`` output, an unknown
      ``layer`` or one whose output is not ``(B, h, w, K)``, or bad
      ``images``/``targets``.
    TypeError: ``layer`` is not a string, a path tuple, a submodule or ``None``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import CNN
    >>> model = CNN(channels=(4, 8), hidden=16, rngs=nnx.Rngs(0))
    >>> x, t = jnp.ones((2, 28, 28, 1)), jnp.array([3, 7])
    >>> score_cam(model, x, t).shape, score_cam(model, x, t, layer="conv2", upsample=False).shape
    ((2, 28, 28), (2, 14, 14))

  References:
    H. Wang, Z. Wang, M. Du, F. Yang, Z. Zhang, S. Ding, P. Mardziel, X. Hu.
    *Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural
    Networks.* CVPR Workshops 2020. arXiv:1910.01279.
  """
  images, targets = check_inputs(model, images, targets)
  core = _prepare(model, images, layer=layer, upsample=upsample, relu=relu)
  return core.run(model, images, targets)


_prepare = layer_map_prepare(_score_cam_core)  # checks layer, upsample and relu


register(score_cam, _prepare)
