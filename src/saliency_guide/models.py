"""Flax NNX classifiers for MNIST: ``MLP``, ``CNN`` and ``GapCNN``.

All three take NHWC float32 images ``(B, 28, 28, 1)`` and return **logits**
``(B, 10)``: there is no softmax inside a model (the training loss applies it,
once). Two hooks make them explainable by every method in
:mod:`saliency_guide.methods`:

* **Replaceable ReLU.** Every ReLU is called as ``self.activation(x)``, so a
  copy can swap it by attribute assignment. A convenience only: the
  modified-backpropagation methods (deconvolution, guided backpropagation) find
  the ReLUs of any model by tracing it
  (:func:`~saliency_guide.methods.with_relu_rule`).
* **Reachable feature maps.** The output of every conv block (after its ReLU,
  before pooling) goes through :meth:`FeatureMaps.expose`. Under
  ``nnx.capture(model, nnx.Intermediate)`` it is recorded under the layer's name
  (``"conv1"``, ``"conv2"``, ...); under ``nnx.capture(..., init=perturbations)``
  a zero-valued ``nnx.Perturbation`` is added to it, so that the gradient of a
  logit with respect to the perturbation is the gradient with respect to the
  feature map itself (what CAM-style methods need). Outside ``nnx.capture`` it
  is the identity: a plain call records nothing and changes nothing.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from saliency_guide import layers
from saliency_guide.layers import conv_general_dilated, max_pool_2x2, relu

__all__ = ["CNN", "MLP", "FeatureMaps", "GapCNN", "conv_layer_names"]

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


class FeatureMaps(nnx.Module):
  """Mixin: conv feature maps visible to ``nnx.capture`` and ``perturb``.

  Subclasses list their conv feature-map names, input to output, in the class
  attribute ``feature_layers``.
  """

  feature_layers: tuple[str, ...] = ()

  @property
  def in_channels(self) -> int | None:
    """Channels of the input images (the first feature layer's input features), or ``None``."""
    if not self.feature_layers:
      return None
    return int(getattr(self, self.feature_layers[0]).in_features)

  def expose(self, name: str, x: jax.Array) -> jax.Array:
    """Record feature map ``x`` as ``name`` and make it perturbable.

    Inside ``nnx.capture(model, nnx.Intermediate, ...)``, ``x`` is sown as an
    ``nnx.Intermediate`` and ``x + p`` is returned, with ``p`` the
    ``nnx.Perturbation`` named ``name`` (zeros unless ``init=`` says otherwise).
    Outside ``nnx.capture`` this returns ``x`` unchanged: flax 0.12 deprecates
    ``sow``/``perturb`` outside a capture (they would add attributes to the
    model), so they are only called while a capture is active.

    Args:
      name: feature-map name, one of ``self.feature_layers``.
      x: the feature map, ``(B, H, W, K)``.

    Returns:
      ``x``, or ``x + perturbation`` under a capture.
    """
    if not hasattr(self, "__captures__"):  # set by nnx.capture for its duration
      return x
    self.sow(nnx.Intermediate, name, x)
    return self.perturb(name, x)

  def activate_and_pool(self, name: str, x: jax.Array) -> jax.Array:
    """``max_pool_2x2(self.expose(name, self.activation(x)))``, fused where it can be.

    With the default activation (:func:`~saliency_guide.layers.relu`), no capture
    active and where it pays (:func:`~saliency_guide.layers.relu_after_pool_pays`),
    this is :func:`~saliency_guide.layers.relu_max_pool_2x2`: the same values and
    gradient, bitwise, faster. Otherwise, e.g. with a swapped activation
    (``with_softplus``) or under a capture (CAM methods reading feature map ``name``),
    it is the composition.

    Args:
      name: feature-map name of the activation, one of ``self.feature_layers``.
      x: the convolution's output, ``(B, H, W, K)``.

    Returns:
      ``(B, H // 2, W // 2, K)``.
    """
    if (self.activation is relu and not hasattr(self, "__captures__")
        and layers.relu_after_pool_pays()):
      return layers.relu_max_pool_2x2(x)
    return max_pool_2x2(self.expose(name, self.activation(x)))


def _conv(in_features: int, out_features: int, rngs: nnx.Rngs) -> nnx.Conv:
  # A plain nnx.Conv (parameters ``kernel`` HWIO and ``bias``) whose convolution has
  # a faster, numerically equivalent backward pass (see saliency_guide.layers).
  return nnx.Conv(in_features, out_features, kernel_size=(3, 3), padding="SAME", rngs=rngs,
                  conv_general_dilated=conv_general_dilated)


def _check_images(x: jax.Array, channels: int) -> None:
  if x.ndim != 4 or x.shape[-1] != channels:
    raise ValueError(
        f"images: expected NHWC shape (B, H, W, {channels}), got {tuple(x.shape)}"
    )


class MLP(nnx.Module):
  r"""A multilayer perceptron: flatten → (dense → ReLU) × L → dense.

  .. math:: f(x) = W_{L+1}\,\mathrm{relu}(\cdots \mathrm{relu}(W_1 \mathrm{vec}(x) + b_1)
            \cdots) + b_{L+1}

  Args:
    hidden: widths of the hidden layers.
    num_classes: number of logits.
    image_shape: ``(H, W, C)`` of the inputs.
    rngs: random streams for the initialisers.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> model = MLP(rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((2, 28, 28, 1))).shape
    (2, 10)
  """

  feature_layers: tuple[str, ...] = ()

  def __init__(
      self,
      hidden: Sequence[int] = (256, 128),
      num_classes: int = NUM_CLASSES,
      image_shape: tuple[int, int, int] = IMAGE_SHAPE,
      *,
      rngs: nnx.Rngs,
  ):
    self.image_shape = tuple(image_shape)
    widths = [math.prod(image_shape), *hidden]
    self.hidden = nnx.List(
        [nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(widths)]
    )
    self.head = nnx.Linear(widths[-1], num_classes, rngs=rngs)
    self.activation: Callable[[jax.Array], jax.Array] = relu

  def __call__(self, x: jax.Array) -> jax.Array:
    _check_images(x, self.image_shape[-1])
    x = x.reshape(x.shape[0], -1)
    for layer in self.hidden:
      x = self.activation(layer(x))
    return self.head(x)


class CNN(FeatureMaps):
  """Two conv–ReLU–max-pool blocks and a dense head.

  ``conv1`` (3×3, 32, SAME) → ReLU → 2×2 max-pool → ``conv2`` (3×3, 64, SAME)
  → ReLU → 2×2 max-pool → flatten (7·7·64) → dense (128) → ReLU → dense (10).
  Feature maps ``"conv1"`` (28×28×32) and ``"conv2"`` (14×14×64) are exposed
  after their ReLU, before pooling.

  Args:
    channels: output channels of the two conv layers.
    hidden: width of the hidden dense layer.
    num_classes: number of logits.
    rngs: random streams for the initialisers.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> model = CNN(rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((2, 28, 28, 1))).shape
    (2, 10)
    >>> _, maps = nnx.capture(model, nnx.Intermediate)(jnp.zeros((2, 28, 28, 1)))
    >>> maps["conv2"][0].shape
    (2, 14, 14, 64)
  """

  feature_layers = ("conv1", "conv2")

  def __init__(
      self,
      channels: tuple[int, int] = (32, 64),
      hidden: int = 128,
      num_classes: int = NUM_CLASSES,
      *,
      rngs: nnx.Rngs,
  ):
    c1, c2 = channels
    self.conv1 = _conv(1, c1, rngs)
    self.conv2 = _conv(c1, c2, rngs)
    self.dense = nnx.Linear(7 * 7 * c2, hidden, rngs=rngs)
    self.head = nnx.Linear(hidden, num_classes, rngs=rngs)
    self.activation: Callable[[jax.Array], jax.Array] = relu

  def __call__(self, x: jax.Array) -> jax.Array:
    _check_images(x, 1)
    x = self.activate_and_pool("conv1", self.conv1(x))
    x = self.activate_and_pool("conv2", self.conv2(x))
    x = self.activation(self.dense(x.reshape(x.shape[0], -1)))
    return self.head(x)


class GapCNN(FeatureMaps):
  r"""Conv–ReLU stack, global average pooling, one dense layer: what CAM requires.

  ``conv1`` (3×3, 32) → ReLU → 2×2 max-pool → ``conv2`` (3×3, 64) → ReLU →
  2×2 max-pool → ``conv3`` (3×3, 128) → ReLU → global average pooling → dense
  (10), all SAME padding. The logit of class :math:`c` is

  .. math:: y^c = \sum_k w^c_k \frac{1}{Z} \sum_{i,j} A^k_{ij} + b^c,

  with :math:`A^k` the ``conv3`` feature maps (7×7) and :math:`Z = 7 \cdot 7`,
  so the class activation map :math:`M_c = \sum_k w^c_k A^k` is exact
  (Zhou et al., 2016).

  Args:
    channels: output channels of the three conv layers.
    num_classes: number of logits.
    rngs: random streams for the initialisers.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> model = GapCNN(rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((2, 28, 28, 1))).shape
    (2, 10)
    >>> model.head.kernel.shape  # (K, classes): the CAM weights w^c_k
    (128, 10)
  """

  feature_layers = ("conv1", "conv2", "conv3")

  def __init__(
      self,
      channels: tuple[int, int, int] = (32, 64, 128),
      num_classes: int = NUM_CLASSES,
      *,
      rngs: nnx.Rngs,
  ):
    c1, c2, c3 = channels
    self.conv1 = _conv(1, c1, rngs)
    self.conv2 = _conv(c1, c2, rngs)
    self.conv3 = _conv(c2, c3, rngs)
    self.head = nnx.Linear(c3, num_classes, rngs=rngs)
    self.activation: Callable[[jax.Array], jax.Array] = relu

  def __call__(self, x: jax.Array) -> jax.Array:
    _check_images(x, 1)
    x = self.activate_and_pool("conv1", self.conv1(x))
    x = self.activate_and_pool("conv2", self.conv2(x))
    x = self.expose("conv3", self.activation(self.conv3(x)))
    return self.head(jnp.mean(x, axis=(1, 2)))


def conv_layer_names(model: nnx.Module) -> tuple[str, ...]:
  """Names of the conv feature maps a model exposes, input to output.

  Args:
    model: any module; models without exposed feature maps give ``()``.

  Returns:
    The names accepted by the ``layer=`` option of CAM-style methods.

  Example:
    >>> from flax import nnx
    >>> conv_layer_names(GapCNN(rngs=nnx.Rngs(0)))
    ('conv1', 'conv2', 'conv3')
  """
  return tuple(getattr(model, "feature_layers", ()))
