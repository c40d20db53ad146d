"""Test models with NumPy-drawn weights, shared by the method tests."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


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
