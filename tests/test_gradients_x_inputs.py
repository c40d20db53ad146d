"""Tests of Gradient × Input (methods/gradients_x_inputs.py) against the maths.

For a linear model f(x) = W vec(x) + b, Gradient × Input is x ⊙ W[c], each
pixel's exact contribution to the logit; in general it is the input times the
gradient, so a black pixel always gets 0.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from model_factories import SHAPE, linear_model, numpy_model, rand, toy_batch, toy_mlp
from saliency_guide import methods
from saliency_guide.models import CNN


def test_linear_model_is_each_pixels_contribution():
  model, weights = linear_model()
  images, targets = toy_batch()
  np.testing.assert_allclose(
      methods.gradients_x_inputs(model, images, targets),
      images * weights[targets].reshape(-1, *SHAPE), rtol=1e-6, atol=1e-7,
  )


def test_is_the_input_times_the_gradient():
  model = toy_mlp(3)
  images, targets = toy_batch()
  np.testing.assert_allclose(
      methods.gradients_x_inputs(model, images, targets),
      images * methods.gradients(model, images, targets), rtol=1e-6)


def test_is_zero_on_black_pixels():
  cnn = numpy_model(lambda: CNN(rngs=nnx.Rngs(0)))
  x = rand(3, (2, 28, 28, 1)) * (rand(4, (2, 28, 28, 1)) > 0.7)
  maps = methods.gradients_x_inputs(cnn, x, np.array([0, 1]))
  assert float(jnp.abs(jnp.where(x == 0, maps, 0)).max()) == 0.0
  assert float(jnp.abs(maps).max()) > 0


def test_is_one_right_riemann_step_of_integrated_gradients():
  model = toy_mlp(3)
  images, targets = toy_batch()
  np.testing.assert_allclose(
      methods.integrated_gradients(model, images, targets, steps=1, method="riemann_right"),
      methods.gradients_x_inputs(model, images, targets), rtol=1e-6, atol=1e-7)


def test_input_invariance_fails_for_gxi_and_holds_for_the_gradient():
  """Kindermans et al. (2019): a shift c absorbed by the first bias, b' = b - W c.

  Same function of the digit, same gradient; Gradient × Input changes by exactly
  c ⊙ ∇f; Integrated Gradients is invariant only if its baseline is shifted too.
  """
  model, c = toy_mlp(3), np.float32(-0.7)
  shifted = nnx.clone(model)
  first = shifted.hidden[0]
  first.bias[...] = first.bias[...] - c * first.kernel[...].sum(0)
  images, targets = toy_batch()
  np.testing.assert_allclose(shifted(images + c), model(images), rtol=1e-5, atol=1e-5)
  gradient = methods.gradients(model, images, targets)
  np.testing.assert_allclose(
      methods.gradients(shifted, images + c, targets), gradient, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      methods.gradients_x_inputs(shifted, images + c, targets),
      methods.gradients_x_inputs(model, images, targets) + c * gradient, rtol=1e-5, atol=1e-6)
  ig = methods.integrated_gradients(model, images, targets, steps=16)
  np.testing.assert_allclose(
      methods.integrated_gradients(shifted, images + c, targets, steps=16, baseline=c), ig,
      rtol=1e-4, atol=1e-5)
  black = methods.integrated_gradients(shifted, images + c, targets, steps=16)
  assert float(jnp.abs(black - ig).max()) > 0.1 * float(jnp.abs(ig).max())
