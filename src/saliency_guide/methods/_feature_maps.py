r"""Feature maps of a conv layer and derivatives with respect to them: the CAM family's machinery.

Every class-activation method (CAM, Grad-CAM, Grad-CAM++, Score-CAM) weights
the channels :math:`A^k \in \mathbb{R}^{h \times w}` of one conv layer and sums
them,

.. math:: M_c(i, j) = \sum_k \alpha^c_k A^k(i, j),

possibly followed by a ReLU and a bilinear upsampling to the input size. The
models of :mod:`saliency_guide.models` pass every conv feature map through
``self.expose(name, x)``: :func:`feature_maps` reads :math:`A` with
``nnx.capture``, and :func:`layer_score` gives the target logits as a function
of a perturbation :math:`p` added to :math:`A`, whose derivatives at
:math:`p = 0` are the derivatives with respect to :math:`A` at the actual
activations. The discussion is on the CAM and Grad-CAM tutorial pages.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from saliency_guide.models import conv_layer_names
from saliency_guide.validation import check_choice, check_flag

__all__ = [
    "CHUNK_ELEMENTS",
    "check_layer",
    "checked_options",
    "chunk_size",
    "feature_maps",
    "finish",
    "layer_score",
    "map_shape",
    "upsample_maps",
    "weighted_sum",
]

#: Element budget of one chunk of tangent directions in Grad-CAM++ (about
#: 64 MiB of float32 per direction-sized array).
CHUNK_ELEMENTS = 2**24


def checked_options(
    model: nnx.Module, layer: object, upsample: object, **flags: object
) -> tuple[tuple[str, str | bool], ...]:
  """``(("layer", name), ("upsample", flag), *flags)`` checked against ``model``, for a ``Core``."""
  options = {"layer": check_layer(model, layer), "upsample": upsample, **flags}
  return tuple((k, v if k == "layer" else check_flag(k, v)) for k, v in options.items())


def check_layer(model: nnx.Module, layer: object) -> str:
  """The validated layer name: ``layer``, or the last feature map if ``None``.

  A static check of the model's structure (no tracing), made once per call by
  each method's ``prepare``.

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
  r"""Bilinear resize of ``maps`` ``(B, h, w[, K])`` to ``size = (H, W)``, half-pixel centres.

  Output pixel :math:`p` samples the map at :math:`(p + \tfrac12)\,h/H - \tfrac12`
  (:func:`jax.image.resize`), and beyond the outermost cell centres the edge
  value is repeated: for SAME-padded convolutions and 2×2 poolings each cell
  lands on the centre of the pixel block it summarises.
  """
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
