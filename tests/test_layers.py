"""max_pool_2x2 against flax's max_pool (XLA's select_and_scatter gradient)."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from saliency_guide.layers import max_pool_2x2, relu


def _reference(x):
  return nnx.max_pool(x, (2, 2), (2, 2))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), levels=st.integers(1, 4))
def test_max_pool_matches_flax_values_and_gradient_including_ties(seed, levels):
  key1, key2 = jax.random.split(jax.random.key(seed))
  # Few distinct values -> many ties inside windows, as on MNIST's zero background.
  x = jnp.floor(jax.random.uniform(key1, (2, 6, 8, 3)) * levels) / levels
  cotangent = jax.random.normal(key2, (2, 3, 4, 3))
  np.testing.assert_array_equal(max_pool_2x2(x), _reference(x))
  ours = jax.grad(lambda x: (max_pool_2x2(x) * cotangent).sum())(x)
  theirs = jax.grad(lambda x: (_reference(x) * cotangent).sum())(x)
  np.testing.assert_array_equal(ours, theirs)


def test_max_pool_tie_goes_to_first_maximum_in_row_major_order():
  x = jnp.zeros((1, 2, 2, 1))  # a four-way tie
  grad = jax.grad(lambda x: max_pool_2x2(x).sum())(x)
  np.testing.assert_array_equal(grad[0, :, :, 0], [[1.0, 0.0], [0.0, 0.0]])


def test_max_pool_gradient_is_routed_to_the_maximum_only():
  x = jnp.array([[1.0, 5.0], [2.0, 3.0]]).reshape(1, 2, 2, 1)
  grad = jax.grad(lambda x: 7.0 * max_pool_2x2(x).sum())(x)
  np.testing.assert_array_equal(grad[0, :, :, 0], [[0.0, 7.0], [0.0, 0.0]])


def test_max_pool_under_jit_and_vmap():
  x = jax.random.normal(jax.random.key(0), (3, 2, 4, 4, 2))
  out = jax.jit(jax.vmap(max_pool_2x2))(x)
  np.testing.assert_array_equal(out, jax.vmap(_reference)(x))


def test_relu_values_and_gradient_convention_at_zero():
  x = jnp.array([-1.0, 0.0, 2.0])
  np.testing.assert_array_equal(relu(x), [0.0, 0.0, 2.0])
  np.testing.assert_array_equal(jax.grad(lambda x: relu(x).sum())(x), [0.0, 0.0, 1.0])
