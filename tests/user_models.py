"""Models written the way a user writes them, none defined by the package (issue 18).

Each is an ordinary Flax NNX classifier of 28×28×1 images into 10 logits, written
without any convention of :mod:`saliency_guide.models` (no ``activation``
attribute, no ``expose``, no ``feature_layers``):

* :class:`ResNet`: a stem conv + BatchNorm (eval mode) + ``jax.nn.relu``, residual
  blocks inside an ``nnx.List`` (one with a strided conv and a 1×1 projection),
  global average pooling, an ``nnx.Linear`` head.
* :class:`LayerNormNet`: conv → LayerNorm → ``nnx.relu`` → average pooling → conv →
  ``jnp.maximum(x, 0)`` → flatten → dense.
* :class:`BlockGap`: two conv + ReLU block modules, then GAP + a dense head: CAM
  exists at ``"blocks.1"``.
* :class:`UserCNN`: a user's copy of :class:`saliency_guide.models.CNN` (same
  layers, same parameter names), with directly called ReLUs and ``nnx.max_pool``;
  :func:`user_cnn_like` copies a package ``CNN``'s weights into it.
* :class:`WideFirst`: an attribute order that puts a 12-channel block before the
  1-channel stem (input checks must not guess channels from it).
* :class:`GeluNet`: GELU activations (no Guided Backprop / Deconvolution rule).
* :class:`SoftmaxNet`: returns probabilities, not logits (every method refuses).
* :func:`linen_model`: a Linen CNN wrapped with ``nnx.bridge.ToNNX``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen, nnx

from saliency_guide.models import CNN

__all__ = [
    "BlockGap", "GeluNet", "LayerNormNet", "ResNet", "SoftmaxNet", "UserCNN", "WideFirst",
    "linen_model", "user_cnn_like",
]


def _gap(x: jax.Array) -> jax.Array:
  return x.mean(axis=(1, 2))


class Residual(nnx.Module):
  """relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)), optionally strided."""

  def __init__(self, cin: int, cout: int, stride: int = 1, *, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(cin, cout, (3, 3), strides=stride, padding="SAME", rngs=rngs)
    self.bn1 = nnx.BatchNorm(cout, use_running_average=True, rngs=rngs)
    self.conv2 = nnx.Conv(cout, cout, (3, 3), padding="SAME", rngs=rngs)
    self.bn2 = nnx.BatchNorm(cout, use_running_average=True, rngs=rngs)
    self.project = (nnx.Conv(cin, cout, (1, 1), strides=stride, rngs=rngs)
                    if stride != 1 or cin != cout else None)

  def __call__(self, x):
    y = jax.nn.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    shortcut = x if self.project is None else self.project(x)
    return jax.nn.relu(y + shortcut)


class ResNet(nnx.Module):
  """Stem, residual blocks in an ``nnx.List``, GAP, dense head (BatchNorm in eval mode)."""

  def __init__(self, width: int = 8, *, rngs: nnx.Rngs):
    self.stem = nnx.Conv(1, width, (3, 3), padding="SAME", rngs=rngs)
    self.bn = nnx.BatchNorm(width, use_running_average=True, rngs=rngs)
    self.blocks = nnx.List([
        Residual(width, width, rngs=rngs),
        Residual(width, 2 * width, stride=2, rngs=rngs),
    ])
    self.head = nnx.Linear(2 * width, 10, rngs=rngs)

  def __call__(self, x):
    x = jax.nn.relu(self.bn(self.stem(x)))
    for block in self.blocks:
      x = block(x)
    return self.head(_gap(x))


class LayerNormNet(nnx.Module):
  """conv → LayerNorm → nnx.relu → avg-pool → conv → jnp.maximum(x, 0) → dense."""

  def __init__(self, *, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(1, 6, (3, 3), padding="SAME", rngs=rngs)
    self.norm = nnx.LayerNorm(6, rngs=rngs)
    self.conv2 = nnx.Conv(6, 8, (3, 3), padding="SAME", rngs=rngs)
    self.out = nnx.Linear(14 * 14 * 8, 10, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.norm(self.conv1(x)))
    x = nnx.avg_pool(x, (2, 2), strides=(2, 2))
    x = jnp.maximum(self.conv2(x), 0)
    return self.out(x.reshape(x.shape[0], -1))


class ConvBlock(nnx.Module):
  """conv + ReLU: the unit a user names as a layer (its output is after the ReLU)."""

  def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs):
    self.conv = nnx.Conv(cin, cout, (3, 3), padding="SAME", rngs=rngs)

  def __call__(self, x):
    return jax.nn.relu(self.conv(x))


class BlockGap(nnx.Module):
  """Two conv + ReLU blocks (one after a max-pool), GAP, one dense layer: CAM-able."""

  def __init__(self, *, rngs: nnx.Rngs):
    self.blocks = nnx.List([ConvBlock(1, 6, rngs=rngs), ConvBlock(6, 8, rngs=rngs)])
    self.classifier = nnx.Linear(8, 10, rngs=rngs)

  def __call__(self, x):
    x = self.blocks[0](x)
    x = nnx.max_pool(x, (2, 2), strides=(2, 2))
    x = self.blocks[1](x)
    return self.classifier(_gap(x))


class UserCNN(nnx.Module):
  """A user's copy of the package's ``CNN``: same layers, plain JAX/NNX calls."""

  def __init__(self, channels: tuple[int, int] = (32, 64), hidden: int = 128, *,
               rngs: nnx.Rngs):
    c1, c2 = channels
    self.conv1 = nnx.Conv(1, c1, (3, 3), padding="SAME", rngs=rngs)
    self.conv2 = nnx.Conv(c1, c2, (3, 3), padding="SAME", rngs=rngs)
    self.dense = nnx.Linear(7 * 7 * c2, hidden, rngs=rngs)
    self.head = nnx.Linear(hidden, 10, rngs=rngs)

  def __call__(self, x):
    x = nnx.max_pool(jax.nn.relu(self.conv1(x)), (2, 2), strides=(2, 2))
    x = nnx.max_pool(jax.nn.relu(self.conv2(x)), (2, 2), strides=(2, 2))
    x = jax.nn.relu(self.dense(x.reshape(x.shape[0], -1)))
    return self.head(x)


def user_cnn_like(model: CNN) -> UserCNN:
  """A :class:`UserCNN` holding exactly the weights of the package ``CNN`` ``model``."""
  c1 = model.conv1.out_features
  c2 = model.conv2.out_features
  user = UserCNN((c1, c2), model.dense.out_features, rngs=nnx.Rngs(0))
  for name in ("conv1", "conv2", "dense", "head"):
    source, target = getattr(model, name), getattr(user, name)
    target.kernel[...] = jnp.asarray(source.kernel[...])
    target.bias[...] = jnp.asarray(source.bias[...])
  return user


class WideFirst(nnx.Module):
  """Attribute order: a 12-channel block is defined before the 1-channel stem."""

  def __init__(self, *, rngs: nnx.Rngs):
    self.body = nnx.Conv(12, 12, (3, 3), padding="SAME", rngs=rngs)
    self.stem = nnx.Conv(1, 12, (3, 3), padding="SAME", rngs=rngs)
    self.head = nnx.Linear(12, 10, rngs=rngs)

  def __call__(self, x):
    x = jax.nn.relu(self.stem(x))
    x = jax.nn.relu(self.body(x))
    return self.head(_gap(x))


class GeluNet(nnx.Module):
  """conv → GELU → GAP → dense: smooth activations, no modified backward rule exists."""

  def __init__(self, *, rngs: nnx.Rngs):
    self.conv = nnx.Conv(1, 6, (3, 3), padding="SAME", rngs=rngs)
    self.head = nnx.Linear(6, 10, rngs=rngs)

  def __call__(self, x):
    return self.head(_gap(jax.nn.gelu(self.conv(x))))


class SoftmaxNet(nnx.Module):
  """Returns class probabilities (a softmax at the end): not what saliency explains."""

  def __init__(self, *, rngs: nnx.Rngs):
    self.conv = nnx.Conv(1, 6, (3, 3), padding="SAME", rngs=rngs)
    self.head = nnx.Linear(6, 10, rngs=rngs)

  def __call__(self, x):
    return jax.nn.softmax(self.head(_gap(jax.nn.relu(self.conv(x)))))


class _LinenCNN(linen.Module):
  @linen.compact
  def __call__(self, x):
    x = linen.relu(linen.Conv(6, (3, 3), padding="SAME", name="conv")(x))
    x = x.mean(axis=(1, 2))
    return linen.Dense(10, name="head")(x)


def linen_model(seed: int = 0) -> nnx.Module:
  """A Linen CNN wrapped as an NNX module with ``nnx.bridge.ToNNX`` (initialised)."""
  # rngs only for initialisation: a ToNNX that keeps them draws from them on every call,
  # which changes the model's state (refused by check_inputs).
  model = nnx.bridge.ToNNX(_LinenCNN())
  nnx.bridge.lazy_init(model, jnp.zeros((1, 28, 28, 1)), rngs=nnx.Rngs(seed))
  return model


def with_random_batch_stats(model: nnx.Module, seed: int = 0) -> nnx.Module:
  """Non-trivial BatchNorm statistics (mean ≠ 0, var ≠ 1), so eval mode matters."""
  rng = np.random.default_rng(seed)
  for _, node in nnx.iter_graph(model):
    if isinstance(node, nnx.BatchNorm):
      node.mean[...] = jnp.asarray(rng.normal(0, 0.2, node.mean.shape), jnp.float32)
      node.var[...] = jnp.asarray(rng.uniform(0.5, 2.0, node.var.shape), jnp.float32)
  return model


class _LinenFeatures(linen.Module):
  @linen.compact
  def __call__(self, x):
    return linen.relu(linen.Conv(6, (3, 3), padding="SAME", name="conv")(x))


class _LinenHead(linen.Module):
  @linen.compact
  def __call__(self, x):
    return linen.Dense(10, name="dense")(x.mean(axis=(1, 2)))


class LinenParts(nnx.Module):
  """A Linen feature extractor and a Linen head, each wrapped with ``nnx.bridge.ToNNX``.

  Layer methods name a layer by its NNX path; the inside of one ``ToNNX`` is
  Linen, so a Linen model is wrapped in parts to name its feature maps
  (``layer="features"``: conv + ReLU, then GAP + dense: CAM-able).
  """

  def __init__(self, seed: int = 0):
    # No rngs kept in the wrappers (a call would draw from them: a change of state that
    # jax.grad cannot carry); they are given to lazy_init, for the initial weights only.
    rngs = nnx.Rngs(seed)
    x = jnp.zeros((1, 28, 28, 1))
    self.features = nnx.bridge.lazy_init(nnx.bridge.ToNNX(_LinenFeatures()), x, rngs=rngs)
    self.head = nnx.bridge.lazy_init(nnx.bridge.ToNNX(_LinenHead()), self.features(x),
                                     rngs=rngs)

  def __call__(self, x):
    return self.head(self.features(x))


class BlockCNN(nnx.Module):
  """The package ``CNN`` with each conv + ReLU in a block module: ``"block1"``/``"block2"``
  output the maps ``CNN`` exposes as ``"conv1"``/``"conv2"`` (after the ReLU)."""

  def __init__(self, channels: tuple[int, int] = (32, 64), hidden: int = 128, *,
               rngs: nnx.Rngs):
    c1, c2 = channels
    self.block1 = ConvBlock(1, c1, rngs=rngs)
    self.block2 = ConvBlock(c1, c2, rngs=rngs)
    self.dense = nnx.Linear(7 * 7 * c2, hidden, rngs=rngs)
    self.head = nnx.Linear(hidden, 10, rngs=rngs)

  def __call__(self, x):
    x = nnx.max_pool(self.block1(x), (2, 2), strides=(2, 2))
    x = nnx.max_pool(self.block2(x), (2, 2), strides=(2, 2))
    x = jax.nn.relu(self.dense(x.reshape(x.shape[0], -1)))
    return self.head(x)


def block_cnn_like(model: CNN) -> BlockCNN:
  """A :class:`BlockCNN` holding exactly the weights of the package ``CNN`` ``model``."""
  user = BlockCNN((model.conv1.out_features, model.conv2.out_features),
                  model.dense.out_features, rngs=nnx.Rngs(0))
  pairs = {"conv1": user.block1.conv, "conv2": user.block2.conv, "dense": user.dense,
           "head": user.head}
  for name, target in pairs.items():
    source = getattr(model, name)
    target.kernel[...] = jnp.asarray(source.kernel[...])
    target.bias[...] = jnp.asarray(source.bias[...])
  return user
