"""Tests of β-smoothing (``methods.with_softplus``) and the manipulation attack.

* ``with_softplus``: each ReLU computes exactly softplus_β(x) = log(1 + e^{βx}) / β
  (value and derivative σ(βx)); the smoothed model tends to the model as β → ∞,
  within the bound Σ_j |w_cj| log 2 / β of a one-hidden-layer network; the
  input-derivative of its gradient map is non-zero where the ReLU network's is
  exactly zero (why the attack needs it); the model is not modified, one
  compilation per β; β is validated; a smoothed model has no ReLU left for the
  modified backward rules.
* ``manipulate``: the perturbation respects the budget and the value range; the
  objective decreases and the map moves towards the target; the result's maps and
  logits are those of the public method on the (unsmoothed) model; the output term
  keeps the logits; class-activation methods need ``beta=None`` (a clear error
  otherwise); one compilation for any budget, step size and γ; bad input is refused.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from model_factories import compilations, numpy_model, rand, toy_batch, toy_mlp
from saliency_guide import methods
from saliency_guide.manipulation import ManipulationResult, manipulate, normalized_map
from saliency_guide.models import MLP, GapCNN


class OneRelu(nnx.Module):
  """x -> relu(x): the smoothed module is the softplus itself."""

  def __call__(self, x):
    return jax.nn.relu(x)


# --------------------------------------------------------------------------- #
# with_softplus                                                                #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("beta", [0.5, 3.0, 100.0])
def test_each_relu_computes_softplus_and_its_derivative_is_the_sigmoid(beta):
  x = jnp.linspace(-4.0, 4.0, 33)
  smooth = methods.with_softplus(OneRelu(), beta)
  exact = np.logaddexp(0.0, beta * np.asarray(x, np.float64)) / beta  # log(1 + e^{βx}) / β
  np.testing.assert_allclose(smooth(x), exact, rtol=1e-5, atol=1e-6)
  slope = jax.vmap(jax.grad(lambda v: smooth(v)))(x)
  np.testing.assert_allclose(slope, jax.nn.sigmoid(beta * x), rtol=1e-5, atol=1e-6)


def test_the_smoothed_model_tends_to_the_model_within_the_bound():
  """One hidden layer: 0 < f_β − f ≤ Σ_j |w_cj| log 2 / β for each logit (w: the head)."""
  model = toy_mlp()
  images, _ = toy_batch(4)
  head = np.abs(np.asarray(model.head.kernel[...]))  # (hidden, classes)
  bound = head.sum(0) * math.log(2)
  errors = []
  for beta in (1.0, 10.0, 100.0, 1e4):
    gap = np.asarray(methods.with_softplus(model, beta)(images) - model(images))
    assert (np.abs(gap) <= bound / beta + 1e-5).all()
    errors.append(np.abs(gap).max())
  assert errors == sorted(errors, reverse=True)
  assert errors[-1] < 1e-3


def test_the_gradient_map_has_an_input_derivative_only_when_smoothed():
  """On a ReLU network the map's input-derivative is exactly zero (almost everywhere)."""
  model = toy_mlp()
  images, targets = toy_batch(3)

  def map_derivative(m):
    return jax.grad(lambda x: (methods.logit_gradient(m, x, targets) ** 2).sum())(images)

  np.testing.assert_array_equal(map_derivative(model), 0.0)
  assert float(jnp.abs(map_derivative(methods.with_softplus(model, 10.0))).max()) > 1e-4


def test_smoothing_leaves_the_model_alone_and_compiles_once_per_beta():
  model = toy_mlp()
  images, _ = toy_batch(2)
  before = np.asarray(model(images))
  forward = jax.jit(lambda m, x: m(x))
  with compilations() as compiles:
    a = forward(methods.with_softplus(model, 5.0), images)
    b = forward(methods.with_softplus(model, 5.0), images)  # a new wrapper, the same beta
  assert len(compiles) == 1
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(model(images), before)


@pytest.mark.parametrize(
    "beta, error",
    [(0.0, ValueError), (-1.0, ValueError), (float("nan"), ValueError),
     (float("inf"), ValueError), ("10", TypeError), (True, TypeError), (None, TypeError)])
def test_beta_is_validated(beta, error):
  with pytest.raises(error, match="beta"):
    methods.with_softplus(toy_mlp(), beta)


def test_a_smoothed_model_has_no_relu_for_the_modified_rules():
  images, targets = toy_batch(2)
  with pytest.raises(ValueError, match="softplus"):
    methods.guided_backprop(methods.with_softplus(toy_mlp(), 10.0), images, targets)


# --------------------------------------------------------------------------- #
# normalized_map                                                               #
# --------------------------------------------------------------------------- #


def test_normalized_map_is_the_absolute_map_summed_over_channels_summing_to_one():
  maps = jnp.asarray(rand(0, (3, 4, 5, 2)) - 0.5)
  h = normalized_map(maps)
  assert h.shape == (3, 4, 5)
  np.testing.assert_allclose(h.sum(axis=(1, 2)), 1.0, rtol=1e-6)
  np.testing.assert_allclose(h * jnp.abs(maps).sum(axis=(1, 2, 3))[:, None, None],
                             jnp.abs(maps).sum(-1), rtol=1e-5)
  np.testing.assert_array_equal(normalized_map(jnp.zeros((1, 4, 5))), 0.0)


# --------------------------------------------------------------------------- #
# manipulate                                                                   #
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def mnist_like():
  """A small MLP on 28x28 images and a target: all the map in the top-left corner."""
  model = numpy_model(lambda: MLP(hidden=(32,), rngs=nnx.Rngs(0)))
  images = np.clip(rand(1, (3, 28, 28, 1)) * 1.2 - 0.1, 0.0, 1.0)  # some pixels at 0 and 1
  corner = np.zeros((3, 28, 28), np.float32)
  corner[:, :8, :8] = 1.0
  return model, jnp.asarray(images), jnp.asarray(corner)


def _corner_share(maps):
  return np.asarray(normalized_map(maps)[:, :8, :8].sum(axis=(1, 2)))


def test_the_perturbation_respects_the_budget_and_the_value_range(mnist_like):
  model, images, corner = mnist_like
  result = manipulate(methods.gradients, model, images, corner, epsilon=0.04, steps=30,
                      learning_rate=0.02)
  delta = np.asarray(result.images - images)
  assert np.abs(delta).max() <= 0.04 + 1e-6
  assert np.abs(delta).max() > 0.03  # the budget is used
  assert result.images.min() >= 0.0 and result.images.max() <= 1.0


def test_the_map_moves_towards_the_target_and_the_objective_decreases(mnist_like):
  model, images, corner = mnist_like
  # A one-hidden-layer map is a mix of 32 weight templates: a smooth surrogate flips gates.
  result = manipulate(methods.gradients, model, images, corner, epsilon=0.2, steps=60,
                      learning_rate=0.01, beta=10.0)
  assert isinstance(result, ManipulationResult)
  assert result.objective.shape == (60, 3)
  assert (result.objective[-1] < result.objective[0]).all()
  assert (_corner_share(result.maps_after) > _corner_share(result.maps_before)).all()


def test_the_result_is_the_public_method_on_the_model(mnist_like):
  model, images, corner = mnist_like
  options = {"steps": 4, "method": "riemann_right"}
  result = manipulate(methods.integrated_gradients, model, images, corner, options=options,
                      epsilon=0.05, steps=5)
  predicted = np.asarray(model(images).argmax(-1))
  np.testing.assert_array_equal(result.targets, predicted)  # default: the predicted class
  np.testing.assert_allclose(
      result.maps_before, methods.integrated_gradients(model, images, predicted, **options),
      rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(
      result.maps_after,
      methods.integrated_gradients(model, result.images, predicted, **options),
      rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(result.logits_after, model(result.images), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(
      result.prediction_kept, model(result.images).argmax(-1) == predicted)


def test_the_output_term_keeps_the_logits(mnist_like):
  model, images, corner = mnist_like

  def change(gamma):
    result = manipulate(methods.gradients, model, images, corner, epsilon=0.1, steps=40,
                        gamma=gamma, learning_rate=0.01)
    return float(jnp.abs(result.logits_after - result.logits_before).mean())

  assert change(100.0) < 0.5 * change(0.0)


def test_one_compilation_for_any_budget_step_size_and_gamma(mnist_like):
  model, images, corner = mnist_like
  manipulate(methods.gradients, model, images, corner, epsilon=0.05, steps=3)
  with compilations() as compiles:
    manipulate(methods.gradients, model, images, corner, epsilon=0.01, steps=3,
               learning_rate=0.1, gamma=3.0)
  assert not compiles


def test_smoothgrad_of_a_method_can_be_manipulated(mnist_like):
  model, images, corner = mnist_like
  smooth = methods.smoothgrad(methods.gradients, samples=3, key=jax.random.key(0))
  result = manipulate(smooth, model, images, corner, epsilon=0.05, steps=5)
  np.testing.assert_allclose(result.maps_before, smooth(model, images, result.targets),
                             rtol=1e-5, atol=1e-7)


def test_class_activation_methods_are_differentiated_on_the_model_itself():
  model = numpy_model(lambda: GapCNN(channels=(4, 4, 4), rngs=nnx.Rngs(0)))
  images = jnp.asarray(rand(2, (2, 28, 28, 1)))
  target = jnp.zeros((2, 28, 28)).at[:, :10, :10].set(1.0)
  with pytest.raises(ValueError, match="beta=None"):
    manipulate(methods.grad_cam, model, images, target, steps=2)
  result = manipulate(methods.grad_cam, model, images, target, steps=2, beta=None)
  assert result.maps_after.shape == (2, 28, 28)


@pytest.mark.parametrize(
    "change, error, match",
    [
        ({"method": lambda m, x, t: x}, TypeError, "method"),
        ({"method": 3}, TypeError, "method"),
        ({"target_maps": jnp.ones((3, 14, 14))}, ValueError, "target_maps"),
        ({"target_maps": jnp.zeros((3, 28, 28))}, ValueError, "target_maps"),
        ({"epsilon": 0.0}, ValueError, "epsilon"),
        ({"steps": 0}, ValueError, "steps"),
        ({"learning_rate": -1.0}, ValueError, "learning_rate"),
        ({"gamma": -1.0}, ValueError, "gamma"),
        ({"beta": 0.0}, ValueError, "beta"),
        ({"value_range": (1.0, 0.0)}, ValueError, "value_range"),
        ({"value_range": "01"}, TypeError, "value_range"),
        ({"value_range": (0.0, 0.5)}, ValueError, "images"),
        ({"options": ["steps"]}, TypeError, "options"),
        ({"targets": jnp.array([0, 1])}, ValueError, "targets"),
    ],
)
def test_bad_input_is_refused(mnist_like, change, error, match):
  model, images, corner = mnist_like
  arguments = {"method": methods.gradients, "target_maps": corner, "steps": 1, **change}
  method, target_maps = arguments.pop("method"), arguments.pop("target_maps")
  with pytest.raises(error, match=match):
    manipulate(method, model, images, target_maps, **arguments)
