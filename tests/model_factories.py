"""Test models with NumPy-drawn weights, shared by the method tests."""

import contextlib
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from saliency_guide.models import MLP


def numpy_model(factory, seed: int = 0, bias_scale: float = 0.1) -> nnx.Module:
  """``factory()``'s architecture with He-normal weights and N(0, bias_scale²) biases.

  Drawn with NumPy into an abstract model (``nnx.eval_shape``): initialising
  through ``nnx.Rngs`` compiles JAX's random generator for every rank-4 kernel
  shape, seconds each on this CPU. Non-zero biases matter: a bias-free ReLU
  network is positively homogeneous, f(αx) = α f(x), so its gradient is constant
  along the path from a black baseline and every quadrature rule is exact.
  """
  graphdef, state = nnx.split(nnx.eval_shape(factory))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    if "['bias']" in jax.tree_util.keystr(path):
      values = bias_scale * rng.standard_normal(leaf.shape)
    else:
      values = rng.standard_normal(leaf.shape) * np.sqrt(2 / np.prod(leaf.shape[:-1]))
    return jnp.asarray(values, jnp.float32)

  return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(fill, state))


# A tiny image world: 4x5 single-channel images, 3 classes.
SHAPE = (4, 5, 1)
CLASSES = 3


class Linear(nnx.Module):
  """f(x) = W vec(x) + b: the logits of a linear classifier."""

  def __init__(self, weights: np.ndarray, bias: np.ndarray, image_shape=SHAPE):
    self.image_shape = tuple(image_shape)
    self.weights = nnx.Param(jnp.asarray(weights, jnp.float32))
    self.bias = nnx.Param(jnp.asarray(bias, jnp.float32))

  def __call__(self, x):
    return x.reshape(x.shape[0], -1) @ self.weights[...].T + self.bias[...]


def linear_model(seed: int = 0) -> tuple[Linear, np.ndarray]:
  rng = np.random.default_rng(seed)
  weights = rng.normal(size=(CLASSES, int(np.prod(SHAPE)))).astype(np.float32)
  return Linear(weights, rng.normal(size=CLASSES)), weights


def toy_mlp(seed: int = 0) -> MLP:
  return numpy_model(
      lambda: MLP(hidden=(8,), num_classes=CLASSES, image_shape=SHAPE, rngs=nnx.Rngs(0)), seed)


def rand(seed: int, shape: tuple[int, ...]) -> np.ndarray:
  """Uniform [0, 1) test data from NumPy (an eager rank-4 jax.random call compiles for seconds)."""
  return np.random.default_rng(seed).random(shape, dtype=np.float32)


def toy_batch(batch: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  images = rand(seed, (batch, *SHAPE))
  return images, np.arange(batch, dtype=np.int32) % CLASSES


@contextlib.contextmanager
def compilations() -> Iterator[list[float]]:
  """The XLA compilations that happen inside the ``with`` block (their durations)."""
  compiles: list[float] = []

  def listener(event: str, duration: float, **kwargs: object) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append(duration)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield compiles
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
