"""Tests of Expected Gradients (methods/expected_gradients.py) against the maths.

For a linear model f(x) = W vec(x) + b every sample gives (x - x'_j) ⊙ W[c]
exactly, so Expected Gradients = (x - mean of the drawn x') ⊙ W[c]; completeness
holds in expectation against the mean reference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from model_factories import SHAPE, compilations, linear_model, numpy_model, rand, toy_batch, toy_mlp
from saliency_guide import methods
from saliency_guide.models import CNN


@pytest.fixture(scope="module")
def cnn() -> CNN:
  return numpy_model(lambda: CNN(rngs=nnx.Rngs(0)))


def test_on_a_linear_model():
  """Each sample gives (x - x'_j) ⊙ W[c] exactly, so EG = (x - mean of drawn x') ⊙ W[c]."""
  model, weights = linear_model()
  images, targets = toy_batch()
  one_reference = rand(5, (1, *SHAPE))
  maps = methods.expected_gradients(
      model, images, targets, references=one_reference, samples=5, key=jax.random.key(0))
  expected = (images - one_reference) * weights[targets].reshape(-1, *SHAPE)
  np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-6)
  # Many references: Monte Carlo estimate of (x - E[x']) ⊙ W[c].
  references = rand(6, (4, *SHAPE))
  maps = methods.expected_gradients(
      model, images, targets, references=references, samples=1000, key=jax.random.key(0))
  expected = (images - references.mean(0)) * weights[targets].reshape(-1, *SHAPE)
  np.testing.assert_allclose(maps, expected, atol=0.05 * float(jnp.abs(expected).max()))


def test_is_reproducible_and_depends_on_the_key():
  model = toy_mlp(0)
  images, targets = toy_batch()
  references = rand(6, (6, *SHAPE))
  run = lambda seed: methods.expected_gradients(  # noqa: E731
      model, images, targets, references=references, samples=8, key=jax.random.key(seed))
  np.testing.assert_array_equal(run(0), run(0))
  assert not np.allclose(run(0), run(1))


def test_completeness_in_expectation():
  """Σ_i φ_i(x) → f_c(x) - E_{x'}[f_c(x')] as the number of samples grows."""
  model = toy_mlp(0)
  images, targets = toy_batch()
  references = rand(7, (5, *SHAPE))
  maps = methods.expected_gradients(
      model, images, targets, references=references, samples=2000, key=jax.random.key(0))
  gap = model(images)[jnp.arange(3), targets] - model(references)[:, targets].mean(0)
  # Monte Carlo: the standard error here is a few % of the gap; a missing (x - x')
  # factor or a wrong baseline would be off by far more than 10 %.
  np.testing.assert_allclose(maps.sum(axis=(1, 2, 3)), gap, atol=0.1 * float(jnp.abs(gap).max()))


def test_no_recompilation_for_new_weights_references_or_key():
  x, t = toy_batch(2)
  refs = rand(1, (5, *SHAPE))
  run = lambda model, seed: methods.expected_gradients(  # noqa: E731
      model, x, t, references=refs * seed, samples=3, key=jax.random.key(seed))
  run(toy_mlp(0), 1)
  model, key = toy_mlp(1), jax.random.key(2)
  with compilations() as compiles:
    methods.expected_gradients(model, x, t, references=refs * 2, samples=3, key=key)
  assert compiles == []


@pytest.mark.parametrize(("kwargs", "error", "words"), [
    ({"references": np.zeros((5, 1, 28, 28), np.float32)}, ValueError, ["references", "(R, 28"]),
    ({"references": np.zeros((0, 28, 28, 1), np.float32)}, ValueError, ["references", "at least"]),
    ({"references": np.zeros((5, 28, 28, 1), np.uint8)}, TypeError, ["references", "floating"]),
    ({"references": np.full((5, 28, 28, 1), np.nan, np.float32)}, ValueError,
     ["references", "finite"]),
    ({"samples": 0}, ValueError, ["samples"]),
    ({"key": None}, ValueError, ["key", "PRNG key"]),
    ({"key": np.zeros(3, np.uint32)}, TypeError, ["key"]),
    ({"targets": np.array([10, 0])}, ValueError, ["targets"]),
])
def test_bad_input(cnn, kwargs, error, words):
  args = {"images": np.zeros((2, 28, 28, 1), np.float32), "targets": np.array([0, 1]),
          "references": np.zeros((5, 28, 28, 1), np.float32), "samples": 4,
          "key": jax.random.key(0), **kwargs}
  with pytest.raises(error) as info:
    methods.expected_gradients(cnn, **args)
  for word in words:
    assert word in str(info.value)
