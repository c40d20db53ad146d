r"""Class activation maps (CAM, Zhou et al., 2016): the head's weights at every location.

For a network whose logits are one dense layer on the global average of a
layer's maps :math:`A^k`, the logit is the mean of a map plus the bias,

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
    Layer,
    checked_options,
    feature_maps,
    finish,
    layer_name,
    map_shape,
    perturbed_forward,
    weighted_sum,
)
from saliency_guide.models import conv_layer_names
from saliency_guide.validation import check_inputs

__all__ = ["cam"]

#: Largest relative error of the checks of :func:`cam` (the logits rebuilt from
#: the maps; the spread of the gradient over locations) for which it accepts a model.
GAP_TOLERANCE = 1e-4


def _reads_head(model: nnx.Module, layer: Layer) -> bool:
  """Whether :math:`w^c_k` is read from ``model.head`` (a short name and a dense ``head``).

  The package's models (and any with ``feature_layers`` and a dense ``head``):
  the kernel gives the weights directly. Any other model, or a layer named by
  its path, takes the weights from the gradient (:func:`_gradient_cam`).
  """
  return isinstance(layer, str) and isinstance(getattr(model, "head", None), nnx.Linear)


def _no_cam_weights(model: nnx.Module, layer: str, channels: int | None) -> str:
  """The error message for a model whose dense head is not applied to GAP(``layer``)."""
  head = model.head
  has = f" has {channels} channels" if channels is not None else ""
  return (
      f"model: CAM needs logits y^c = sum_k w^c_k GAP(A^k) + b^c, a global average pooling "
      f"of the last conv layer followed by a single dense layer (like GapCNN); "
      f"{type(model).__name__}'s {layer!r}{has} but its head is a dense layer with "
      f"{head.in_features} inputs, so no w^c_k exists for it; use grad_cam, which needs no "
      "particular architecture"
  )


def _check_cam_model(model: nnx.Module, layer: str) -> None:
  """Structural check of a model read through its head (static); the channels are checked later."""
  last = conv_layer_names(model)[-1]
  if layer != last:
    raise ValueError(
        f"layer: CAM's weights w^c_k are the dense weights applied to the global average "
        f"of the last conv layer, {last!r}, so CAM exists only there; got {layer!r} "
        "(Grad-CAM generalises CAM to any layer)"
    )


def _head_cam(model, images, targets, layer):
  """CAM with :math:`w^c_k` read from ``model.head``; the relative error of ``head(GAP(A))``."""
  logits, a = feature_maps(model, images, layer)
  head = model.head
  if head.in_features != a.shape[-1]:  # static shapes: raised while tracing
    raise ValueError(_no_cam_weights(model, layer, a.shape[-1]))
  kernel = head.kernel[...]  # (K, classes): w^c_k = kernel[k, c]
  maps = weighted_sum(kernel[:, targets].T, a)
  # CAM is exact iff y = head(GAP(A)); measure it on these very images.
  rebuilt = head(jnp.mean(a, axis=(1, 2)))
  error = jnp.max(jnp.abs(rebuilt - logits)) / (1.0 + jnp.max(jnp.abs(logits)))
  return maps, (error,)


def _gradient_cam(model, images, targets, layer):
  r"""CAM with weights from the gradient, :math:`w^c_k = Z\,\partial y^c / \partial A^k_{ij}`.

  Returns the maps and two relative errors: the spread of the gradient over
  locations (``0`` for a global average pooling), and
  :math:`|y(A) - y(0) - \langle \nabla_A y, A \rangle|` (``0`` for a logit
  affine in :math:`A`), where :math:`y(0)` is the logit with the maps replaced
  by zeros.
  """
  graphdef, state = nnx.split(model)

  def logits_of(p):  # the target logits (B,) with p added to A, and A
    logits, a = perturbed_forward(graphdef, state, images, layer, p)
    return jnp.take_along_axis(logits, targets[:, None], axis=1)[:, 0], a

  zero = jnp.zeros(map_shape(model, images, layer))
  y, pullback, a = jax.vjp(logits_of, zero, has_aux=True)
  (gradient,) = pullback(jnp.ones_like(y))  # dy^{c_b}/dA_b, (B, h, w, K)
  mean = gradient.mean(axis=(1, 2))  # (B, K)
  z = a.shape[1] * a.shape[2]
  maps = weighted_sum(z * mean, a)  # sum_k w^c_k A^k, w^c_k = Z dy^c/dA^k
  scale = jnp.max(jnp.abs(gradient))
  deviation = jnp.max(jnp.abs(gradient - mean[:, None, None, :]))
  spread = jnp.where(scale > 0, deviation / jnp.where(scale > 0, scale, 1.0), 0.0)
  at_zero, _ = logits_of(-a)  # the maps replaced by 0: y(0), the "bias"
  terms = gradient * a  # <dy/dA, A> = sum of these
  residual = jnp.abs(y - at_zero - terms.sum(axis=(1, 2, 3)))
  residual = residual / (1.0 + jnp.abs(y) + jnp.abs(terms).sum(axis=(1, 2, 3)))
  return maps, (spread, jnp.max(residual))


def _cam_and_errors(
    model: nnx.Module, images: jax.Array, targets: jax.Array, operands: None, *,
    layer: Layer, upsample: bool,
) -> tuple[jax.Array, tuple[jax.Array, ...]]:
  """The maps of :func:`cam` and the relative errors of the identity they rest on."""
  del operands
  cam_of = _head_cam if _reads_head(model, layer) else _gradient_cam
  maps, errors = cam_of(model, images, targets, layer)
  return finish(maps, images.shape[1:3], relu=False, upsample=upsample), errors


def _cam_core(
    model: nnx.Module, images: jax.Array, targets: jax.Array, operands: None, *,
    layer: Layer, upsample: bool,
) -> jax.Array:
  """Traceable core of :func:`cam`: the maps, without the checks of their identity.

  Those checks need the errors' values, known only after the computation, so
  wrappers composing this core skip them; the structural checks still apply.
  """
  return _cam_and_errors(model, images, targets, operands, layer=layer, upsample=upsample)[0]


_cam = jax.jit(_cam_and_errors, static_argnames=("layer", "upsample"))


def _check_errors(model: nnx.Module, layer: Layer, errors: tuple[jax.Array, ...]) -> None:
  """Refuse a model whose logits are not a dense layer on GAP(A) on these images."""
  values = [float(e) for e in errors]
  if _reads_head(model, layer):
    if values[0] > GAP_TOLERANCE:
      raise ValueError(
          f"model: CAM needs logits y^c = sum_k w^c_k GAP(A^k) + b^c, but "
          f"{type(model).__name__}'s logits differ from model.head applied to the global "
          f"average of {layer!r} (relative error {values[0]:.2g}); its head is not a "
          "single dense layer on global-average-pooled maps; use grad_cam instead"
      )
    return
  spread, residual = values
  reasons = []
  if spread > GAP_TOLERANCE:
    reasons.append(f"the gradient of the target logit with respect to A varies over "
                   f"locations (relative spread {spread:.2g}), as no global average pooling "
                   "of A would make it")
  if residual > GAP_TOLERANCE:
    reasons.append(f"the target logit is not affine in A (relative error {residual:.2g})")
  if reasons:
    raise ValueError(
        f"model: CAM needs a target logit y^c = sum_k w^c_k GAP(A^k) + b^c, a global average "
        f"pooling of the layer's maps A followed by an affine map; for "
        f"{type(model).__name__} at layer {layer_name(layer)!r}, {' and '.join(reasons)}, so "
        "no w^c_k exists there; use grad_cam, which needs no particular architecture"
    )


def cam(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    layer: str | nnx.Module | None = None,
    upsample: bool = True,
) -> jax.Array:
  r"""Class activation map (Zhou et al., 2016): the head's weights applied to every location.

  For a network whose logits are a dense layer on the global average of a
  layer's maps :math:`A^k`,

  .. math::

     y^c = \sum_k w^c_k \, \frac{1}{Z} \sum_{i,j} A^k(i, j) + b^c
         = \frac{1}{Z} \sum_{i,j} M_c(i, j) + b^c,
     \qquad
     M_c(i, j) = \sum_k w^c_k A^k(i, j),

  with :math:`Z = h w` the number of locations and :math:`w^c_k` the weight
  from channel :math:`k` to class :math:`c`. The map is signed and exact: its
  mean plus the bias is the target logit. No ReLU is applied, no bias added,
  and nothing class-blind (such as the mean of the activations) enters.

  The weights come from the model itself, whatever its class: for such a
  network the gradient :math:`\partial y^c / \partial A^k_{ij} = w^c_k / Z` is
  the same at every location, so :math:`w^c_k = Z\,\partial y^c/\partial
  A^k_{ij}`. Both conditions are checked on the given images: the gradient must
  not vary over locations, and the logit must be affine in :math:`A`,
  :math:`y^c(A) = y^c(0) + \langle \nabla_A y^c, A \rangle` (relative errors
  below ``1e-4``); :math:`y^c(0)`, the logit with the maps replaced by zeros,
  plays the bias. A model with another head is refused rather than explained
  with weights that do not produce its logits. For a short name of a model
  with a dense ``head`` (:class:`~saliency_guide.models.GapCNN`), the weights
  are read from ``model.head.kernel[k, c]`` and the check is that
  ``head(GAP(A))`` gives the logits. (The core that wrappers such as
  :func:`~saliency_guide.methods.smoothgrad` compose skips these checks of
  values; the structural checks remain.)

  Args:
    model: a classifier whose target logit is a dense layer on the global
      average of ``layer``'s maps, such as
      :class:`~saliency_guide.models.GapCNN` or any Flax NNX model ending in
      GAP + ``nnx.Linear``.
    images: float array ``(B, H, W, C)``, NHWC.
    targets: integer array ``(B,)``, the class whose logit is explained.
    layer: the layer whose output is :math:`A`: a dotted path to a submodule
      (``"blocks.1"``; list indices as parts), the submodule itself, or a name
      in ``model.feature_layers`` (the map the model exposes). Default: the
      last of ``feature_layers``, else the last submodule whose output is
      ``(B, h, w, K)`` in the forward pass.
    upsample: resize the map to the input's ``(H, W)`` (bilinear, half-pixel
      centres); ``False`` returns the layer's ``(h, w)`` map.

  Returns:
    float32 array ``(B, H, W)`` (or ``(B, h, w)`` without upsampling).

  Raises:
    ValueError: the logits are not a dense layer on the global average of
      ``layer``'s maps (use :func:`~saliency_guide.methods.grad_cam`), an
      unknown ``layer`` or one whose output is not ``(B, h, w, K)``, or bad
      ``images``/``targets``.
    TypeError: ``layer`` is not a string, a path tuple, a submodule or ``None``.

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
    >>> class Net(nnx.Module):  # any model with GAP + a dense layer
    ...   def __init__(self, rngs):
    ...     self.body = nnx.Sequential(nnx.Conv(1, 4, (3, 3), rngs=rngs), nnx.relu)
    ...     self.out = nnx.Linear(4, 10, rngs=rngs)
    ...   def __call__(self, x):
    ...     return self.out(self.body(x).mean(axis=(1, 2)))
    >>> net = Net(nnx.Rngs(0))
    >>> m = cam(net, x, t, layer="body", upsample=False)  # the block's (post-ReLU) output
    >>> y0 = net.out.bias[...][t]  # the logit with the maps replaced by zeros
    >>> bool(jnp.allclose(m.mean((1, 2)) + y0, net(x)[[0, 1], t], atol=1e-5))
    True

  References:
    B. Zhou, A. Khosla, A. Lapedriza, A. Oliva, A. Torralba. *Learning Deep
    Features for Discriminative Localization.* CVPR 2016. arXiv:1512.04150.
  """
  images, targets = check_inputs(model, images, targets)
  core = _prepare(model, images, layer=layer, upsample=upsample)
  maps, errors = _cam(model, images, targets, None, **dict(core.static))
  _check_errors(model, dict(core.static)["layer"], errors)
  return maps


def _prepare(
    model: nnx.Module, images: jax.Array, *, layer: object = None, upsample: bool = True
) -> Core:
  static = checked_options(model, images, layer, upsample)
  layer = dict(static)["layer"]
  if _reads_head(model, layer):
    _check_cam_model(model, layer)  # the structure; the channels while tracing
  return Core(_cam_core, static=static)


register(cam, _prepare)
