r"""Class activation maps (CAM, Zhou et al., 2016): the head's weights at every location.

For a network whose logits are one dense layer on the global average of the
last conv layer's maps :math:`A^k`, the logit is the mean of a map plus the bias,

.. math::

   y^c = \frac{1}{Z} \sum_{i,j} M_c(i, j) + b^c, \qquad
   M_c(i, j) = \sum_k w^c_k A^k(i, j).

References:
  B. Zhou, A. Khosla, A. Lapedriza, A. Oliva, A. Torralba. *Learning Deep
  Features for Discriminative Localization.* CVPR 2016. arXiv:1512.04150.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from saliency_guide.methods._cores import Core, register
from saliency_guide.methods._feature_maps import (
    checked_options,
    feature_maps,
    finish,
    weighted_sum,
)
from saliency_guide.models import conv_layer_names
from saliency_guide.validation import check_inputs

__all__ = ["cam"]

#: Largest relative error of ``head(GAP(A))`` against the logits for which
#: :func:`cam` accepts a model.
GAP_TOLERANCE = 1e-4


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
  """Structural checks of the model (static: no computation); the channels are checked later."""
  last = conv_layer_names(model)[-1]
  if layer != last:
    raise ValueError(
        f"layer: CAM's weights w^c_k are the dense weights applied to the global average "
        f"of the last conv layer, {last!r}, so CAM exists only there; got {layer!r} "
        "(Grad-CAM generalises CAM to any layer)"
    )
  if not isinstance(getattr(model, "head", None), nnx.Linear):
    raise ValueError(_no_cam_weights(model, layer, None))


def _cam_and_error(
    model: nnx.Module, images: jax.Array, targets: jax.Array, operands: None, *,
    layer: str, upsample: bool,
) -> tuple[jax.Array, jax.Array]:
  """The maps of :func:`cam` and the relative error of the identity ``y = head(GAP(A))``."""
  del operands
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


def _cam_core(
    model: nnx.Module, images: jax.Array, targets: jax.Array, operands: None, *,
    layer: str, upsample: bool,
) -> jax.Array:
  """Traceable core of :func:`cam`: the maps, without the check of ``y = head(GAP(A))``.

  That check needs the error's value, known only after the computation, so
  wrappers composing this core skip it; the structural checks still apply.
  """
  return _cam_and_error(model, images, targets, operands, layer=layer, upsample=upsample)[0]


_cam = jax.jit(_cam_and_error, static_argnames=("layer", "upsample"))


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
  with weights that do not produce its logits. (The core that wrappers such as
  :func:`~saliency_guide.methods.smoothgrad` compose skips this check of the
  values; the structural checks remain.)

  Args:
    model: a model with a global-average-pooling + dense ``head``, such as
      :class:`~saliency_guide.models.GapCNN`.
    images: float array ``(B, H, W, C)``, NHWC.
    targets: integer array ``(B,)``, the class whose logit is explained.
    layer: name of the last conv layer (the default); any other is an error.
    upsample: resize the map to the input's ``(H, W)`` (bilinear, half-pixel
      centres); ``False`` returns the layer's ``(h, w)`` map.

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
  core = _prepare(model, images, layer=layer, upsample=upsample)
  maps, error = _cam(model, images, targets, None, **dict(core.static))
  if float(error) > GAP_TOLERANCE:
    layer = dict(core.static)["layer"]
    raise ValueError(
        f"model: CAM needs logits y^c = sum_k w^c_k GAP(A^k) + b^c, but "
        f"{type(model).__name__}'s logits differ from model.head applied to the global "
        f"average of {layer!r} (relative error {float(error):.2g}); its head is not a "
        "single dense layer on global-average-pooled maps; use grad_cam instead"
    )
  return maps


def _prepare(
    model: nnx.Module, images: jax.Array, *, layer: str | None = None, upsample: bool = True
) -> Core:
  del images
  static = checked_options(model, layer, upsample)
  _check_cam_model(model, dict(static)["layer"])  # the structure; the channels while tracing
  return Core(_cam_core, static=static)


register(cam, _prepare)
