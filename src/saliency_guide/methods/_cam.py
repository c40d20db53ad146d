r"""Class activation maps: the shared machinery, CAM and Score-CAM.

Every method of this family explains the target logit :math:`y^c` through the
feature maps :math:`A^k \in \mathbb{R}^{h \times w}`, :math:`k = 1 \dots K`, of
one convolutional layer (after its ReLU, before pooling): it computes one weight
per channel and returns the weighted sum of the channels,

.. math:: M_c(i, j) = \sum_k \alpha^c_k A^k(i, j),

possibly followed by a ReLU. The methods differ only in the weights
:math:`\alpha^c_k`: the head's weights (CAM, here), averaged gradients
(Grad-CAM), gradient-weighted second-order terms (Grad-CAM++) or the change of
the logit when the input is masked by the channel (Score-CAM, here).
Grad-CAM, Guided Grad-CAM and Grad-CAM++ live in
:mod:`saliency_guide.methods._gradcam`.

**Where the feature maps come from.** The models of :mod:`saliency_guide.models`
pass every conv feature map through ``self.expose(name, x)``. Under
``nnx.capture(model, nnx.Intermediate)`` the map is recorded under the layer's
name, and under ``nnx.capture(model, nnx.Intermediate, init=perturbations)`` the
``nnx.Perturbation`` ``p`` named like the layer is added to it, so that the
forward pass sees :math:`A + p`. :func:`layer_score` wraps this as a function of
``p``: its gradient **at** ``p = 0`` is :math:`\partial y^c / \partial A`,
evaluated at the actual activations. (Initialising ``p`` with the activations
themselves, a tempting mistake, evaluates the gradient at :math:`2A`; the tests
catch it with a quadratic layer.) ``nnx.capture`` stores its buffers as
attributes of the module, which NNX forbids across JAX trace levels, so the
helpers take the module, split it with ``nnx.split`` and capture on a fresh copy
rebuilt with ``nnx.merge`` inside every transformed function (the module passed
in is never modified).

**Upsampling.** With ``upsample=True`` the map is resized from the layer's
:math:`h \times w` to the input's :math:`H \times W` by bilinear interpolation
(:func:`jax.image.resize`, ``"bilinear"``), which uses the half-pixel
convention: output pixel :math:`p` (centre :math:`p + \tfrac12`) samples the map
at :math:`(p + \tfrac12)\,h/H - \tfrac12`, and beyond the outermost cell centres
the edge value is repeated. For the SAME-padded convolutions and 2×2 poolings of
:mod:`saliency_guide.models` this aligns each cell's centre with the centre of
the pixel block it summarises: a 7×7 ``conv3`` map of a 28×28 digit has one cell
per 4×4 block of pixels, and cell :math:`r` sits at pixel coordinate
:math:`4r + 1.5`, where the resize puts it. A VALID-padded layer would cover only
the interior of the image (each VALID 3×3 convolution trims one pixel per side);
stretching its map over the whole input, as this resize and the reference
implementations do, would misalign the border by up to that trim. None of the
package's models has one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from saliency_guide.validation import check_choice, check_inputs
from saliency_guide.models import conv_layer_names

__all__ = ["cam", "feature_maps", "layer_score", "score_cam", "upsample_maps"]

#: Element budget of one chunk of tangent directions in Grad-CAM++ (about
#: 64 MiB of float32 per direction-sized array).
CHUNK_ELEMENTS = 2**24
#: Masked images per forward pass in Score-CAM (bounds activation memory).
SCORE_CAM_IMAGES = 512


# --------------------------------------------------------------------------- #
# Shared machinery.                                                            #
# --------------------------------------------------------------------------- #


def check_layer(model: nnx.Module, layer: object) -> str:
  """The validated layer name: ``layer``, or the last feature map if ``None``.

  Raises:
    ValueError: the model exposes no conv feature maps, or ``layer`` is not one
      of them (the message lists the valid names).
    TypeError: ``layer`` is neither ``None`` nor a string.
  """
  names = conv_layer_names(model)
  if not names:
    raise ValueError(
        f"model: {type(model).__name__} exposes no conv feature maps (its feature_layers is "
        "empty); class activation maps weight the channels of a convolutional layer, so they "
        "need a model whose conv blocks call self.expose(name, x), such as CNN or GapCNN"
    )
  if layer is None:
    return names[-1]
  if not isinstance(layer, str):
    raise TypeError(f"layer: expected None or one of {names}, got {layer!r}")
  return check_choice("layer", layer, names)


def check_flag(name: str, value: object) -> bool:
  """``value`` if it is a ``bool``, else a ``TypeError`` naming ``name``."""
  if not isinstance(value, bool):
    raise TypeError(f"{name}: expected True or False, got {value!r}")
  return value


def _captured(intermediates: nnx.State, layer: str) -> jax.Array:
  if layer not in intermediates:
    raise ValueError(
        f"layer: the model lists {layer!r} in feature_layers but its forward pass never "
        f"exposed it (recorded: {sorted(intermediates.keys())})"
    )
  return intermediates[layer].get_value()[0]


def feature_maps(
    model: nnx.Module, images: jax.Array, layer: str
) -> tuple[jax.Array, jax.Array]:
  """The logits ``(B, classes)`` and the feature maps :math:`A` ``(B, h, w, K)`` of ``layer``.

  The capture runs on a copy of ``model`` rebuilt at the current trace level, so
  this works inside any JAX transformation and leaves ``model`` unmodified.
  """
  graphdef, state = nnx.split(model)
  fresh = nnx.merge(graphdef, state)  # capture mutates the module: build it at this level
  logits, intermediates = nnx.capture(fresh, nnx.Intermediate)(images)
  return logits, _captured(intermediates, layer)


def layer_score(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    layer: str,
) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
  r"""The summed target logits as a function of a perturbation of ``layer``'s maps.

  Returns ``score(p) -> (sum_b y^{c_b}(A_b + p_b), A)``: the forward pass adds
  ``p`` (shape of :math:`A`) to the feature maps through the model's zero-
  initialised ``nnx.Perturbation``, and returns the unperturbed maps :math:`A`
  as auxiliary output. Derivatives of ``score`` at ``p = 0`` are derivatives of
  the logits with respect to :math:`A` at the actual activations. Images of a
  batch do not interact, so the gradient of the sum is the batch of per-image
  gradients. ``model`` is split here and a fresh copy is rebuilt inside every
  call of ``score``, so ``score`` can be differentiated and nested in JAX
  transformations; ``model`` itself is not modified.
  """
  graphdef, state = nnx.split(model)

  def score(p: jax.Array) -> tuple[jax.Array, jax.Array]:
    model = nnx.merge(graphdef, state)  # capture mutates the module: build it at this level
    perturbations = nnx.State({layer: nnx.Perturbation(p)})
    logits, intermediates = nnx.capture(model, nnx.Intermediate, init=perturbations)(images)
    y = jnp.take_along_axis(logits, targets[:, None], axis=1)[:, 0]
    return y.sum(), _captured(intermediates, layer)

  return score


def map_shape(model: nnx.Module, images: jax.Array, layer: str) -> tuple[int, ...]:
  """Shape ``(B, h, w, K)`` of ``layer``'s feature maps, by abstract evaluation."""
  return jax.eval_shape(lambda: feature_maps(model, images, layer)[1]).shape


def upsample_maps(maps: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Bilinear resize of ``maps`` ``(B, h, w[, K])`` to ``size = (H, W)``, half-pixel centres."""
  return jax.image.resize(maps, (maps.shape[0], *size, *maps.shape[3:]), method="bilinear")


def weighted_sum(weights: jax.Array, maps: jax.Array) -> jax.Array:
  r""":math:`\sum_k w_{bk} A_b^k`: ``(B, K)`` weights and ``(B, h, w, K)`` maps to ``(B, h, w)``."""
  return jnp.einsum("bk,bhwk->bhw", weights, maps)


def finish(maps: jax.Array, size: tuple[int, int], relu: bool, upsample: bool) -> jax.Array:
  """Optional ReLU (at the layer's resolution), then optional upsampling to ``size``."""
  if relu:
    maps = jax.nn.relu(maps)
  return upsample_maps(maps, size) if upsample else maps


def chunk_size(items: int, elements_per_item: int) -> int:
  """How many of ``items`` to process at once within :data:`CHUNK_ELEMENTS`."""
  return max(1, min(items, CHUNK_ELEMENTS // max(1, elements_per_item)))


# --------------------------------------------------------------------------- #
# CAM.                                                                         #
# --------------------------------------------------------------------------- #


@functools.partial(jax.jit, static_argnames=("layer", "upsample"))
def _cam(model, images, targets, layer, upsample):
  """Jitted core of :func:`cam`: the maps and the relative error of the GAP identity."""
  logits, a = feature_maps(model, images, layer)
  head = model.head
  if head.in_features != a.shape[-1]:  # static shapes: raised while tracing
    raise ValueError(_no_cam_weights(model, layer, a.shape[-1]))
  kernel = head.kernel[...]  # (K, classes): w^c_k = kernel[k, c]
  maps = weighted_sum(kernel[:, targets].T, a)
  # CAM is exact iff y = head(GAP(A)); measure it on these very images.
  rebuilt = head(jnp.mean(a, axis=(1, 2)))
  error = jnp.max(jnp.abs(rebuilt - logits)) / (1.0 + jnp.max(jnp.abs(logits)))
  return finish(maps, images.shape[1:3], relu=False, upsample=upsample), error


def _no_cam_weights(model: nnx.Module, layer: str, channels: int | None) -> str:
  """The error message for a model whose head is not a dense layer on GAP(``layer``)."""
  head = getattr(model, "head", None)
  got = (
      f"its head is {type(head).__name__}"
      if not isinstance(head, nnx.Linear)
      else f"its head is a dense layer with {head.in_features} inputs"
  )
  has = f" has {channels} channels" if channels is not None else ""
  return (
      f"model: CAM needs logits y^c = sum_k w^c_k GAP(A^k) + b^c, a global average pooling "
      f"of the last conv layer followed by a single dense layer named 'head' (like GapCNN); "
      f"{type(model).__name__}'s {layer!r}{has} but {got}, so no w^c_k "
      "exists for it; use grad_cam, which needs no particular architecture"
  )


def _check_cam_model(model: nnx.Module, layer: str) -> None:
  """Cheap structural checks (no tracing); the channel count is checked in :func:`_cam`."""
  last = conv_layer_names(model)[-1]
  if layer != last:
    raise ValueError(
        f"layer: CAM's weights w^c_k are the dense weights applied to the global average "
        f"of the last conv layer, {last!r}, so CAM exists only there; got {layer!r} "
        "(Grad-CAM generalises CAM to any layer)"
    )
  if not isinstance(getattr(model, "head", None), nnx.Linear):
    raise ValueError(_no_cam_weights(model, layer, None))


def cam(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    layer: str | None = None,
    upsample: bool = True,
) -> jax.Array:
  r"""Class activation map (Zhou et al., 2016): the head's weights applied to every location.

  For a network whose logits are a dense layer on the global average of the
  last conv layer's maps :math:`A^k`,

  .. math::

     y^c = \sum_k w^c_k \, \frac{1}{Z} \sum_{i,j} A^k(i, j) + b^c
         = \frac{1}{Z} \sum_{i,j} M_c(i, j) + b^c,
     \qquad
     M_c(i, j) = \sum_k w^c_k A^k(i, j),

  with :math:`Z = h w` the number of locations and :math:`w^c_k` the weight
  from channel :math:`k` to class :math:`c` (``model.head.kernel[k, c]``). The
  map is signed and exact: its mean plus the bias is the target logit. No
  ReLU is applied, no bias added, and nothing class-blind (such as the mean of
  the activations) enters.

  Only such a model has a CAM, and only at its last conv layer. That the logits
  are computed this way is checked on the given images (relative error below
  ``1e-4``), so a model with a different head is refused rather than explained
  with weights that do not produce its logits.

  Args:
    model: a model with a global-average-pooling + dense ``head``, such as
      :class:`~saliency_guide.models.GapCNN`.
    images: float array ``(B, H, W, C)``, NHWC.
    targets: integer array ``(B,)``, the class whose logit is explained.
    layer: name of the last conv layer (the default); any other is an error.
    upsample: resize the map to the input's ``(H, W)`` (bilinear, see the
      module documentation); ``False`` returns the layer's ``(h, w)`` map.

  Returns:
    float32 array ``(B, H, W)`` (or ``(B, h, w)`` without upsampling).

  Raises:
    ValueError: the model has no GAP + single dense head, ``layer`` is not the
      last conv layer, or bad ``images``/``targets``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import GapCNN
    >>> model = GapCNN(rngs=nnx.Rngs(0))
    >>> x, t = jnp.ones((2, 28, 28, 1)), jnp.array([3, 7])
    >>> cam(model, x, t).shape, cam(model, x, t, upsample=False).shape
    ((2, 28, 28), (2, 7, 7))
    >>> # the mean of the map plus the bias is the logit
    >>> m = cam(model, x, t, upsample=False)
    >>> bool(jnp.allclose(m.mean((1, 2)) + model.head.bias[...][t], model(x)[[0, 1], t],
    ...                   atol=1e-5))
    True

  References:
    B. Zhou, A. Khosla, A. Lapedriza, A. Oliva, A. Torralba. *Learning Deep
    Features for Discriminative Localization.* CVPR 2016. arXiv:1512.04150.
  """
  images, targets = check_inputs(model, images, targets)
  layer = check_layer(model, layer)
  upsample = check_flag("upsample", upsample)
  _check_cam_model(model, layer)
  maps, error = _cam(model, images, targets, layer, upsample)
  if float(error) > 1e-4:
    raise ValueError(
        f"model: CAM needs logits y^c = sum_k w^c_k GAP(A^k) + b^c, but "
        f"{type(model).__name__}'s logits differ from model.head applied to the global "
        f"average of {layer!r} (relative error {float(error):.2g}); its head is not a "
        "single dense layer on global-average-pooled maps; use grad_cam instead"
    )
  return maps


# --------------------------------------------------------------------------- #
# Score-CAM.                                                                   #
# --------------------------------------------------------------------------- #


@functools.partial(jax.jit, static_argnames=("layer", "upsample", "relu"))
def _score_cam(model, images, targets, layer, upsample, relu):
  """Jitted core of :func:`score_cam`."""
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
    layer: str | None = None,
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
    model: a convolutional model exposing its feature maps (``CNN``, ``GapCNN``).
    images: float array ``(B, H, W, C)``, NHWC.
    targets: integer array ``(B,)``, the class whose logit is explained.
    layer: one of ``model.feature_layers`` (default: the last).
    upsample: resize the map to ``(H, W)`` (bilinear, see the module
      documentation); ``False`` returns the layer's ``(h, w)`` map.
    relu: apply the final ReLU (the method); ``False`` returns the signed sum.

  Returns:
    float32 array ``(B, H, W)`` (or ``(B, h, w)`` without upsampling).

  Raises:
    ValueError: the model exposes no feature maps, an unknown ``layer``, or bad
      ``images``/``targets``.

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
  layer = check_layer(model, layer)
  upsample = check_flag("upsample", upsample)
  relu = check_flag("relu", relu)
  return _score_cam(model, images, targets, layer, upsample, relu)
