"""Tests of the ReLU rules shared by Deconvolution and Guided Backprop (methods._relu_rules).

Models the package does not define: ``test_relu_rules_any_model.py``.

* the three backward rules (gradient, deconvnet, guided) against each other
  for any input (hypothesis): guided = max(gradient, 0) = deconv · 1[x > 0];
  the forward pass and dtype are those of the ReLU;
* a network in which no ReLU acts: all three maps coincide;
* a model with no ReLU to modify (none at all, or an ``activation`` that is the
  identity) is refused instead of silently given the plain gradient, and so is
  an activation without a rule (named in the message); any implementation of
  max(x, 0) is accepted, with the same maps;
* ``with_relu_rule`` wraps the model without modifying it, works inside a user's
  ``jit``, replaces an earlier rule, and refuses a rule that is not a ReLU;
  alternating methods under ``jit`` never reuse the other rule's compilation;
* each method's registered core equals the method; bad input is refused.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from model_factories import compilations
from relu_reference import (
  EXPECTED,
  METHODS,
  RULES,
  R,
  X,
  backward,
  images_for,
  plain_gradient,
  randomize_biases,
  reference,
  small,
)
from saliency_guide import methods
from saliency_guide.layers import relu
from saliency_guide.methods import logit_gradient
from saliency_guide.models import CNN, MLP, GapCNN
from saliency_guide.validation import check_inputs

# --------------------------------------------------------------------------- #
# The rules on one ReLU.                                                       #
# --------------------------------------------------------------------------- #


def test_gradient_rule_on_hand_computed_values():
  """The baseline the two rules modify: R * 1[x > 0]."""
  np.testing.assert_array_equal(backward(relu, X, R), np.array(EXPECTED["gradient"], np.float32))


@pytest.mark.parametrize("rule", [methods.deconv_relu, methods.guided_relu])
def test_forward_is_the_relu(rule):
  np.testing.assert_array_equal(rule(X), jax.nn.relu(X))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("rule", [methods.deconv_relu, methods.guided_relu])
def test_rules_keep_dtype(rule, dtype):
  out, vjp = jax.vjp(rule, X.astype(dtype))
  (grad,) = vjp(R.astype(dtype))
  assert out.dtype == dtype and grad.dtype == dtype


finite = st.floats(-10, 10, width=32, allow_nan=False)
# A fixed length (values vary, not shapes) keeps every example on one compilation.
pairs = st.tuples(*[hnp.arrays(np.float32, 16, elements=finite | st.just(0.0))] * 2)


@settings(max_examples=40, deadline=None)
@given(pairs)
def test_rule_identities_hold_for_all_inputs(xr):
  """guided = max(gradient, 0) = deconv * 1[x > 0], and deconv = max(R, 0), everywhere."""
  x, r = (jnp.asarray(a) for a in xr)
  grad = backward(RULES["gradient"], x, r)
  deconv = backward(RULES["deconvolution"], x, r)
  guided = backward(RULES["guided_backprop"], x, r)
  np.testing.assert_array_equal(deconv, jnp.maximum(r, 0))
  np.testing.assert_array_equal(guided, jnp.maximum(grad, 0))
  np.testing.assert_array_equal(guided, jnp.where(x > 0, deconv, 0))
  assert bool((guided >= 0).all()) and bool((deconv >= 0).all())


# --------------------------------------------------------------------------- #
# Whole networks.                                                              #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("model_cls", [MLP, CNN, GapCNN])
def test_output_shape_and_dtype(model_cls):
  model = small(model_cls)
  for method in METHODS.values():
    out = method(model, images_for(), np.array([1, 2, 3]))
    assert out.shape == (3, 28, 28, 1) and out.dtype == jnp.float32
    assert bool(jnp.isfinite(out).all())


def positive_cnn():
  """A CNN with non-negative kernels and positive biases: on positive images every ReLU input
  is > 0 and every backward signal >= 0, so every ReLU is the identity both ways."""
  model = small(CNN, seed=3)
  for _, module in nnx.iter_modules(model):
    if isinstance(module, nnx.Linear | nnx.Conv):
      module.kernel[...] = jnp.abs(module.kernel[...])
      module.bias[...] = jnp.full(module.bias.shape, 0.1)
  return model


def test_all_rules_coincide_where_no_relu_acts():
  model = positive_cnn()
  images = images_for(seed=2) + 0.1
  targets = jnp.array([0, 5, 9])
  grad = plain_gradient(model, images, targets)
  assert bool((grad > 0).any())
  np.testing.assert_allclose(methods.deconvolution(model, images, targets), grad, rtol=1e-5)
  np.testing.assert_allclose(methods.guided_backprop(model, images, targets), grad, rtol=1e-5)


# --------------------------------------------------------------------------- #
# Models without a ReLU to modify.                                             #
# --------------------------------------------------------------------------- #


class Linear2(nnx.Module):
  """A linear classifier: no ReLU anywhere."""

  def __init__(self, rngs):
    self.head = nnx.Linear(784, 10, kernel_init=nnx.initializers.normal(0.05), rngs=rngs)

  def __call__(self, x):
    return self.head(x.reshape(x.shape[0], -1))


@pytest.mark.parametrize("method", METHODS.values(), ids=METHODS)
def test_model_without_relu_is_an_error(method):
  with pytest.raises(ValueError, match="no replaceable ReLU"):
    method(Linear2(nnx.Rngs(0)), images_for(batch=1), np.array([0]))


@pytest.mark.parametrize(
    ("activation", "message"),
    [(lambda x: x, "no replaceable ReLU"), (jax.nn.gelu, r"MLP applies jax\.nn\.gelu"),
     (lambda x: jax.nn.leaky_relu(x, 0.01), "MLP applies leaky_relu"),
     (jnp.tanh, "MLP applies tanh")],
    ids=["identity", "gelu", "leaky_relu", "tanh"],
)
@pytest.mark.parametrize("method", METHODS.values(), ids=METHODS)
def test_activation_that_is_not_a_relu_is_an_error(method, activation, message):
  """Never the plain gradient: no ReLU at all, or an activation without a rule, is refused."""
  model = small(MLP)
  model.activation = activation
  with pytest.raises(ValueError, match=message):
    method(model, images_for(batch=1), np.array([0]))


def test_any_implementation_of_relu_is_accepted():
  model = small(CNN)
  images, targets = images_for(signed=True), jnp.array([1, 2, 3])
  expected = methods.guided_backprop(model, images, targets)
  model.activation = lambda x: jnp.maximum(x, 0.0)
  np.testing.assert_array_equal(methods.guided_backprop(model, images, targets), expected)


# --------------------------------------------------------------------------- #
# with_relu_rule, compilations, cores.                                         #
# --------------------------------------------------------------------------- #


def test_alternating_rules_under_jit_give_the_right_rule_each_time():
  model = randomize_biases(small(CNN))
  # A batch size no other test uses, so that the compilations counted below are new.
  images, targets = images_for(signed=True, batch=5), jnp.array([0, 4, 9, 1, 2])
  expected = reference(model, images, targets)
  plain_gradient(model, images, targets)  # compiled before counting, as is the input check
  check_inputs(model, images, targets)
  with compilations() as compiles:
    for name in ["guided_backprop", "deconvolution", "guided_backprop", "deconvolution"] * 2:
      np.testing.assert_allclose(
          METHODS[name](model, images, targets), expected[name], rtol=1e-4, atol=1e-6,
          err_msg=name,
      )
      # The plain gradient of the same model object stays the plain gradient.
      np.testing.assert_allclose(
          plain_gradient(model, images, targets), expected["gradient"], rtol=1e-4, atol=1e-6
      )
  assert len(compiles) == 2  # one compilation per rule


def test_with_relu_rule_inside_a_users_jit():
  """with_relu_rule on a model merged inside jit (how a user would reuse it)."""
  model = small(CNN)
  images, targets = images_for(), jnp.array([0, 1, 2])
  graphdef, state = nnx.split(model)

  @jax.jit
  def guided(state, images):
    m = methods.with_relu_rule(nnx.merge(graphdef, state), methods.guided_relu)
    return logit_gradient(m, images, targets)

  @jax.jit
  def deconv(state, images):
    m = methods.with_relu_rule(nnx.merge(graphdef, state), methods.deconv_relu)
    return logit_gradient(m, images, targets)

  for _ in range(2):
    np.testing.assert_allclose(
        guided(state, images), methods.guided_backprop(model, images, targets), rtol=1e-6
    )
    np.testing.assert_allclose(
        deconv(state, images), methods.deconvolution(model, images, targets), rtol=1e-6
    )


def test_with_relu_rule_replaces_an_earlier_rule_and_leaves_the_model_alone():
  model = small(CNN)
  images, targets = images_for(signed=True), jnp.array([0, 1, 2])
  guided = methods.with_relu_rule(model, methods.guided_relu)
  assert guided.model is model and model.activation is relu
  np.testing.assert_array_equal(guided(images), model(images))
  np.testing.assert_allclose(logit_gradient(guided, images, targets),
                             methods.guided_backprop(model, images, targets), rtol=1e-6)
  # A ReLU that already has a rule (guided_relu) is a ReLU: deconv_relu replaces it.
  np.testing.assert_allclose(
      methods.deconvolution(guided, images, targets),
      methods.deconvolution(model, images, targets),
      rtol=1e-6,
  )


def test_with_relu_rule_rejects_a_non_relu_rule():
  with pytest.raises(TypeError, match="relu: expected a function computing max"):
    methods.with_relu_rule(small(MLP), jnp.tanh)


@pytest.mark.parametrize("name", METHODS)
def test_core_equals_the_method_and_leaves_the_model_alone(name):
  """The registered core, called eagerly (no jit), on checked inputs."""
  model = randomize_biases(small(CNN))
  images, targets = images_for(signed=True), jnp.array([0, 4, 9])
  core = methods.core(METHODS[name], model, images)
  np.testing.assert_allclose(core(model, images, targets), METHODS[name](model, images, targets),
                             rtol=1e-5, atol=1e-7)
  assert model.activation is relu  # the core swapped the rule on a copy


@pytest.mark.parametrize("name", METHODS)
def test_no_retracing_on_new_images_or_targets(name):
  model = small(MLP)
  images = images_for()
  METHODS[name](model, images, jnp.array([0, 1, 2]))
  with compilations() as compiles:
    for seed, t in ((1, [3, 4, 5]), (2, [6, 7, 8])):
      METHODS[name](model, images_for(seed=seed), jnp.array(t))
  assert compiles == []


@pytest.mark.parametrize("name", METHODS)
def test_bad_input(name):
  with pytest.raises(ValueError, match="NCHW"):
    METHODS[name](small(MLP), np.zeros((2, 1, 28, 28), np.float32), [0, 1])
  with pytest.raises(ValueError, match=r"\[0, 10\)"):
    METHODS[name](small(MLP), np.zeros((2, 28, 28, 1), np.float32), [0, 10])
