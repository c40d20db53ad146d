"""Models shared by the class-activation-map tests (CAM, Grad-CAM, Grad-CAM++, Score-CAM).

Small ``CNN``/``GapCNN``/``MLP`` with NumPy-drawn weights and nonzero biases
(maps and weights of both signs), and tiny hand-built models with literal
weights whose maps can be computed by hand.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from saliency_guide import methods
from saliency_guide.methods._feature_maps import feature_maps
from saliency_guide.models import CNN, MLP, FeatureMaps, GapCNN

METHODS = {
    "cam": methods.cam,
    "grad_cam": methods.grad_cam,
    "guided_grad_cam": methods.guided_grad_cam,
    "grad_cam_plus_plus": methods.grad_cam_plus_plus,
    "score_cam": methods.score_cam,
}

SMALL = {
    CNN: lambda: CNN(channels=(4, 6), hidden=12, rngs=nnx.Rngs(0)),
    MLP: lambda: MLP(hidden=(8,), rngs=nnx.Rngs(0)),
    GapCNN: lambda: GapCNN(channels=(4, 6, 8), rngs=nnx.Rngs(0)),
}


def numpy_init(factory, seed=0):
  """``factory()`` with parameters drawn by NumPy: LeCun-normal kernels, N(0, 0.1²) biases.

  Like ``model_factories.numpy_model`` (no JAX initialiser compiles), at the
  LeCun scale these tests' sign assertions were written for.
  """
  graphdef, state = nnx.split(nnx.eval_shape(factory))
  rng = np.random.default_rng(seed)

  def draw(leaf):
    scale = 1 / np.sqrt(np.prod(leaf.shape[:-1])) if len(leaf.shape) >= 2 else 0.1
    return jnp.asarray(scale * rng.normal(size=leaf.shape), leaf.dtype)

  return nnx.merge(graphdef, jax.tree.map(draw, state))


def small(model_cls, seed=0):
  return numpy_init(SMALL[model_cls], seed)


def captured(model, images, layer):
  """The feature maps of ``layer``, through one jitted forward pass (no eager op compiles)."""
  return jax.jit(lambda model, x: feature_maps(model, x, layer)[1])(model, images)


def digits(seed=0, batch=2):
  return jnp.asarray(np.random.default_rng(seed).uniform(size=(batch, 28, 28, 1)), jnp.float32)


def set_param(param, value):
  param[...] = jnp.asarray(value, jnp.float32).reshape(param.shape)


class TinyGap(FeatureMaps):
  """1×1 conv → ReLU → exposed "feat" → global average → dense head."""

  feature_layers = ("feat",)

  def __init__(self, rngs):
    self.conv = nnx.Conv(1, 2, kernel_size=(1, 1), rngs=rngs)
    self.head = nnx.Linear(2, 3, rngs=rngs)

  def __call__(self, x):
    a = self.expose("feat", jax.nn.relu(self.conv(x)))
    return self.head(a.mean(axis=(1, 2)))


class MaxPoolHead(TinyGap):
  """Same shapes as TinyGap, but global *max* pooling: CAM does not apply."""

  def __call__(self, x):
    a = self.expose("feat", jax.nn.relu(self.conv(x)))
    return self.head(a.max(axis=(1, 2)))


def tiny_gap(cls=TinyGap):
  model = numpy_init(lambda: cls(nnx.Rngs(0)))
  set_param(model.conv.kernel, [1.0, -1.0])  # A^0 = relu(x), A^1 = relu(0.5 - x)
  set_param(model.conv.bias, [0.0, 0.5])
  set_param(model.head.kernel, [[1.0, -1.0, 0.5], [2.0, 3.0, 0.0]])  # kernel[k, c] = w^c_k
  set_param(model.head.bias, [0.1, 0.2, 0.3])
  return model


TINY_IMAGE = jnp.array([[1.0, 2.0], [3.0, -1.0]]).reshape(1, 2, 2, 1)


class QuadraticHead(FeatureMaps):
  """y^c = sum_k v_ck mean(A_k^2) + u_ck mean(A_k): the gradient depends on A."""

  feature_layers = ("feat",)

  def __init__(self, rngs):
    self.conv = nnx.Conv(1, 2, kernel_size=(1, 1), rngs=rngs)
    self.v = nnx.Param(jnp.zeros((2, 2)))  # (K, classes)
    self.u = nnx.Param(jnp.zeros((2, 2)))

  def __call__(self, x):
    a = self.expose("feat", jax.nn.relu(self.conv(x)))
    return (a**2).mean(axis=(1, 2)) @ self.v[...] + a.mean(axis=(1, 2)) @ self.u[...]


def quadratic_head():
  model = numpy_init(lambda: QuadraticHead(nnx.Rngs(0)))
  set_param(model.conv.kernel, [1.0, -1.0])
  set_param(model.conv.bias, [0.0, 0.5])
  set_param(model.v, [[1.0, -2.0], [0.5, 1.0]])
  set_param(model.u, [[0.3, 1.0], [-1.0, 2.0]])
  return model
