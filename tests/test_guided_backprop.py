"""Tests of Guided Backpropagation (saliency_guide.methods.guided_backprop).

* ``guided_relu``'s backward rule on hand-computed values, with the gradient's
  convention at x = 0 (nothing passes, like ``grad(jax.nn.relu)(0)``), under
  ``jit`` and ``vmap``;
* the whole-network maps against the layer-by-layer reference of
  ``relu_reference`` (MLP, CNN, GapCNN);
* the signal below the first ReLU is never negative (and zero where that ReLU
  was off), for guided backprop and, rectified too, for the deconvnet.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from relu_reference import (
  EXPECTED,
  R,
  X,
  backward,
  check_against_reference,
  images_for,
  plain_gradient,
  randomize_biases,
  small,
)
from saliency_guide import methods
from saliency_guide.layers import max_pool_2x2, relu
from saliency_guide.models import CNN, MLP, GapCNN


def test_guided_relu_on_hand_computed_values():
  np.testing.assert_array_equal(backward(methods.guided_relu, X, R),
                                np.array(EXPECTED["guided_backprop"], np.float32))


def test_guided_relu_mask_at_zero_matches_jax_relu_gradient():
  """1[x > 0] at x = 0: guided passes nothing, exactly like grad(jax.nn.relu)(0) = 0."""
  assert float(jax.grad(jax.nn.relu)(0.0)) == 0.0
  assert float(jax.grad(methods.guided_relu)(0.0)) == float(jax.grad(jax.nn.relu)(0.0))


def test_guided_relu_under_jit_and_vmap():
  rule_grad = jax.jit(jax.vmap(lambda x, r: backward(methods.guided_relu, x, r)))
  np.testing.assert_array_equal(
      rule_grad(jnp.stack([X, -X]), jnp.stack([R, R])),
      jnp.stack([backward(methods.guided_relu, X, R), backward(methods.guided_relu, -X, R)]),
  )


@pytest.mark.parametrize("model_cls", [MLP, CNN, GapCNN])
def test_guided_backprop_matches_layer_by_layer_reference(model_cls):
  check_against_reference("guided_backprop", model_cls)


class AfterConv1(nnx.Module):
  """The CNN from the input of its first ReLU on: ``relu(z1) -> pool -> conv2 -> ...``.

  Its input is the pre-activation z1 of the CNN's first ReLU, so a map of this
  module is the signal the rule sends below the CNN's first ReLU.
  """

  def __init__(self, cnn):
    self.cnn = cnn
    self.activation = relu
    self.image_shape = (28, 28, cnn.conv1.out_features)

  def __call__(self, z1):
    c, act = self.cnn, self.activation
    h = max_pool_2x2(act(z1))
    h = max_pool_2x2(act(c.conv2(h)))
    return c.head(act(c.dense(h.reshape(h.shape[0], -1))))


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 2**16))
def test_signal_below_first_relu_is_never_negative(seed):
  cnn = randomize_biases(small(CNN, seed=seed % 7), seed=seed)
  model = AfterConv1(cnn)
  z1 = cnn.conv1(images_for(seed=seed, batch=2, signed=True))
  targets = jnp.array([seed % 10, (seed + 3) % 10])
  guided = methods.guided_backprop(model, z1, targets)
  assert bool((guided >= 0).all())
  assert bool((methods.deconvolution(model, z1, targets) >= 0).all())
  # The plain gradient does carry negative evidence there (so the check can fail).
  assert bool((plain_gradient(model, z1, targets) < 0).any())
  # Guided = gradient's mask AND positive part: zero wherever the first ReLU was off.
  assert bool((jnp.where(z1 <= 0, guided, 0) == 0).all())
