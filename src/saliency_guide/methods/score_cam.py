r"""Score-CAM (Wang et al., 2020): channels weighted by the logit of the input they mask.

.. math::

   H^k = s\big(\mathrm{Up}(A^k)\big), \quad
   s(M) = \frac{M - \min M}{\max M - \min M}, \qquad
   \alpha^c_k = y^c(X \circ H^k) - y^c(X_b), \qquad
   L^c = \mathrm{ReLU}\Big(\sum_k \alpha^c_k A^k\Big).

The default weights are the increase of the target *logit*; ``weights=`` selects
the authors' code's probabilities or pytorch-grad-cam's softmax over channels
(:data:`SCORE_CAM_WEIGHTS`).

References:
  H. Wang, Z. Wang, M. Du, F. Yang, Z. Zhang, S. Ding, P. Mardziel, X. Hu.
  *Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural
  Networks.* CVPR Workshops 2020. arXiv:1910.01279.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from saliency_guide.methods._cores import Core, register
from saliency_guide.methods._feature_maps import (
  Layer,
  checked_options,
  feature_maps,
  finish,
  upsample_maps,
  weighted_sum,
)
from saliency_guide.validation import check_choice, check_inputs

__all__ = ["SCORE_CAM_WEIGHTS", "score_cam"]

#: The channel weights :func:`score_cam` can compute from the masked inputs' scores:
#: ``"logit"`` (default) :math:`y^c(X \circ H^k) - y^c(0)`; ``"probability"``
#: :math:`\mathrm{softmax}(y(X \circ H^k))_c` (the authors' code); ``"channel_softmax"``
#: :math:`\mathrm{softmax}_k\, y^c(X \circ H^k)` (pytorch-grad-cam).
SCORE_CAM_WEIGHTS = ("logit", "probability", "channel_softmax")

#: Masked images per forward pass in Score-CAM (bounds activation memory).
SCORE_CAM_IMAGES = 512


def _score_cam_core(
    model: nnx.Module, images: jax.Array, targets: jax.Array, operands: None, *,
    layer: Layer, upsample: bool, relu: bool, weights: str,
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

  def masked_probability(mask):  # (B, H, W) -> (B,): softmax(f(X o H^k))_c
    p = jax.nn.softmax(model(images * mask[..., None]), axis=-1)
    return jnp.take_along_axis(p, targets[:, None], axis=1)[:, 0]

  batch = max(1, min(masks.shape[0], SCORE_CAM_IMAGES // images.shape[0]))  # channels per pass
  if weights == "probability":  # the authors' code: no baseline; a dead channel is skipped
    scores = jax.lax.map(masked_probability, masks, batch_size=batch)  # (K, B)
    alpha = jnp.where(span[:, 0, 0, :] > 0, scores.T, 0.0)  # (B, K)
    return finish(weighted_sum(alpha, a), size, relu=relu, upsample=upsample)
  scores = jax.lax.map(masked_logit, masks, batch_size=batch)  # (K, B)
  if weights == "channel_softmax":  # pytorch-grad-cam: softmax over the K channels
    alpha = jax.nn.softmax(scores, axis=0).T  # a baseline would cancel: shift-invariant
    return finish(weighted_sum(alpha, a), size, relu=relu, upsample=upsample)
  baseline = logit(jnp.zeros_like(images))  # f^c(X_b), X_b = 0
  alpha = (scores - baseline[None]).T  # (B, K): the increase of the logit
  return finish(weighted_sum(alpha, a), size, relu=relu, upsample=upsample)


def score_cam(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    layer: str | nnx.Module | None = None,
    upsample: bool = True,
    relu: bool = True,
    weights: str = "logit",
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

  **Which weights.** The paper defines the weight as this increase of
  confidence; implementations differ in the score and its normalisation, and
  ``weights`` selects one (:data:`SCORE_CAM_WEIGHTS`):

  * ``"logit"`` (default): :math:`\alpha^c_k = y^c(X \circ H^k) - y^c(X_b)`
    with :math:`y^c` the target **logit**, the quantity every method of this
    package explains, and :math:`X_b = 0`, the black image, which is also what
    a fully masked input :math:`X \circ 0` is, so a constant (dead) channel,
    whose mask is :math:`0`, gets weight exactly :math:`0`. The weights are
    signed and additive in the logit: a channel whose region alone lowers the
    logit below the baseline's counts against the class. We make this choice
    because it is the quantity the other methods explain and, unlike the two
    below, it neither saturates nor exponentiates.
  * ``"probability"``: :math:`\alpha^c_k = \mathrm{softmax}(y(X \circ H^k))_c`,
    the target's probability on the masked input with no baseline subtracted,
    a constant channel skipped: the authors' code (``haofanwang/Score-CAM``).
    Every weight is in :math:`(0, 1)`, and saturates near 1 for every channel
    whose region alone keeps a confident prediction.
  * ``"channel_softmax"``: :math:`\alpha^c_k = \exp y^c(X \circ H^k) / \sum_j
    \exp y^c(X \circ H^j)`, a softmax of the masked logits over the channels
    (a baseline would cancel in it): ``jacobgil/pytorch-grad-cam``. The weights
    sum to 1 per image, and a logit lead of a few units concentrates them on
    a few channels.

  All :math:`K \times B` masked images go through the model in a few large
  batches (``jax.lax.map`` over chunks of channels), not one channel at a time.

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
    weights: ``"logit"`` (default), ``"probability"`` or ``"channel_softmax"``:
      how the masked inputs' scores become channel weights (see above).

  Returns:
    float32 array ``(B, H, W)`` (or ``(B, h, w)`` without upsampling).

  Raises:
    ValueError: the model has no layer with ``(B, h, w, K)`` output, an unknown
      ``layer`` or one whose output is not ``(B, h, w, K)``, an unknown
      ``weights``, or bad ``images``/``targets``.
    TypeError: ``layer`` is not a string, a path tuple, a submodule or ``None``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import CNN
    >>> model = CNN(channels=(4, 8), hidden=16, rngs=nnx.Rngs(0))
    >>> x, t = jnp.ones((2, 28, 28, 1)), jnp.array([3, 7])
    >>> score_cam(model, x, t).shape, score_cam(model, x, t, layer="conv2", upsample=False).shape
    ((2, 28, 28), (2, 14, 14))
    >>> alpha = score_cam(model, x, t, upsample=False, relu=False, weights="channel_softmax")
    >>> alpha.shape
    (2, 14, 14)

  References:
    H. Wang, Z. Wang, M. Du, F. Yang, Z. Zhang, S. Ding, P. Mardziel, X. Hu.
    *Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural
    Networks.* CVPR Workshops 2020. arXiv:1910.01279.
  """
  images, targets = check_inputs(model, images, targets)
  core = _prepare(model, images, layer=layer, upsample=upsample, relu=relu, weights=weights)
  return core.run(model, images, targets)


def _prepare(
    model: nnx.Module, images: jax.Array, *, layer: object = None, upsample: bool = True,
    relu: bool = True, weights: str = "logit",
) -> Core:
  static = (*checked_options(model, images, layer, upsample, relu=relu),
            ("weights", check_choice("weights", weights, SCORE_CAM_WEIGHTS)))
  return Core(_score_cam_core, static=static)


register(score_cam, _prepare)
