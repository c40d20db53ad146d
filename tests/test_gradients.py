"""Tests of Gradients (methods/gradients.py) against the maths.

For a linear model f(x) = W vec(x) + b the gradient of logit c is the row W[c]
whatever x is; explaining the loss instead, or a softmax inside the method,
would mix in the other rows and change with x. A one-hidden-layer ReLU network
has a hand-computable gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from model_factories import CLASSES, SHAPE, Linear, compilations, linear_model, numpy_model, rand
from saliency_guide import methods
from saliency_guide.models import CNN, MLP


@pytest.fixture(scope="module")
def cnn() -> CNN:
  return numpy_model(lambda: CNN(rngs=nnx.Rngs(0)))


def with_new_weights(model: nnx.Module, scale: float) -> nnx.Module:
  """Same architecture, other weights (without another random initialisation)."""
  graphdef, state = nnx.split(model)
  return nnx.merge(graphdef, jax.tree.map(lambda a: a * scale, state))


images_strategy = st.lists(
    st.floats(0.0, 1.0, width=32), min_size=2 * int(np.prod(SHAPE)),
    max_size=2 * int(np.prod(SHAPE)),
).map(lambda v: np.asarray(v, np.float32).reshape(2, *SHAPE))
targets_strategy = st.lists(st.integers(0, CLASSES - 1), min_size=2, max_size=2).map(
    lambda v: np.asarray(v, np.int32)
)


@settings(max_examples=25, deadline=None)
@given(images=images_strategy, targets=targets_strategy)
def test_linear_model_gradient_is_the_weight_row(images, targets):
  model, weights = linear_model()
  maps = methods.gradients(model, images, targets)
  np.testing.assert_allclose(maps, weights[targets].reshape(2, *SHAPE), rtol=1e-6)


def test_explains_the_logit_not_the_loss_or_the_probability():
  """Changing the other classes' weights must not change the map of class c.

  The gradient of the cross-entropy loss, -(1 - p_c) W[c] + sum_{j != c} p_j W[j],
  and of the softmax probability p_c both depend on every row of W (and would
  flip or scale the sign of the map); the logit's gradient is W[c] alone.
  """
  model, weights = linear_model()
  images = np.full((1, *SHAPE), 0.5, np.float32)
  targets = np.array([1])
  before = methods.gradients(model, images, targets)
  other = weights.copy()
  other[[0, 2]] *= -3.0
  after = methods.gradients(Linear(other, np.zeros(CLASSES)), images, targets)
  np.testing.assert_array_equal(before, after)
  np.testing.assert_allclose(before[0].ravel(), weights[1], rtol=1e-6)
  # The loss gradient really is different here, so the assertion above can fail.
  def loss(x):
    return -jax.nn.log_softmax(model(x))[0, 1]
  assert not np.allclose(jax.grad(loss)(jnp.asarray(images)), before, atol=1e-3)


def test_one_hidden_layer_relu_network_by_hand():
  """f_c(x) = V[c] relu(U x + a) + b_c has gradient U^T (V[c] ⊙ 1[U x + a > 0])."""
  model = numpy_model(
      lambda: MLP(hidden=(6,), num_classes=CLASSES, image_shape=SHAPE, rngs=nnx.Rngs(0)), seed=3)
  images = rand(1, (3, *SHAPE))
  targets = np.array([0, 2, 1])
  u, a = np.asarray(model.hidden[0].kernel[...]), np.asarray(model.hidden[0].bias[...])
  v = np.asarray(model.head.kernel[...])  # (hidden, classes)
  flat = np.asarray(images).reshape(3, -1)
  active = (flat @ u + a > 0).astype(np.float32)  # (B, hidden)
  expected = (active * v[:, targets].T) @ u.T  # (B, H*W*C)
  maps = methods.gradients(model, images, targets)
  np.testing.assert_allclose(np.asarray(maps).reshape(3, -1), expected, rtol=1e-5, atol=1e-6)


def test_examples_of_a_batch_do_not_interact(cnn):
  x = rand(2, (3, 28, 28, 1))
  targets = np.array([1, 5, 7])
  batched = methods.gradients(cnn, x, targets)
  single = methods.gradients(cnn, x[1:2], targets[1:2])
  np.testing.assert_allclose(batched[1:2], single, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", [methods.gradients, methods.gradients_x_inputs])
def test_no_recompilation_for_new_data_or_new_weights(cnn, method):
  x = rand(5, (2, 28, 28, 1))
  method(cnn, x, np.array([0, 1], np.int32))
  other = with_new_weights(cnn, 0.5)
  with compilations() as compiles:
    method(other, x + 0.5, np.array([3, 2], np.int32))
    method(cnn, x * 2, np.array([9, 9], np.int32))
  assert compiles == []


BAD_INPUTS = [
    # (images, targets, error, words that the message must contain)
    (np.zeros((28, 28, 1), np.float32), [0], ValueError, ["images", "rank 4"]),
    (np.zeros((2, 1, 28, 28), np.float32), [0, 1], ValueError, ["images", "NCHW"]),
    (np.zeros((2, 28, 28, 1), np.uint8), [0, 1], TypeError, ["images", "floating"]),
    (np.full((2, 28, 28, 1), np.nan, np.float32), [0, 1], ValueError, ["images", "finite"]),
    (np.zeros((2, 28, 28, 1), np.float32), [0, 10], ValueError, ["targets", "[0, 10)"]),
    (np.zeros((2, 28, 28, 1), np.float32), [-1, 0], ValueError, ["targets", "[0, 10)"]),
    (np.zeros((2, 28, 28, 1), np.float32), [0], ValueError, ["targets", "shape (2,)"]),
    (np.zeros((2, 28, 28, 1), np.float32), [0.0, 1.0], TypeError, ["targets", "integer"]),
]


@pytest.mark.parametrize("method", [methods.gradients, methods.gradients_x_inputs,
                                    methods.logit_gradient, methods.target_logits])
@pytest.mark.parametrize(("images", "targets", "error", "words"), BAD_INPUTS)
def test_bad_inputs_raise_errors_naming_the_argument(cnn, method, images, targets, error, words):
  with pytest.raises(error) as info:
    method(cnn, images, np.asarray(targets))
  for word in words:
    assert word in str(info.value)


def test_the_public_helpers_check_and_match_the_cores_the_methods_use(cnn):
  from saliency_guide.methods.gradients import _logit_gradient, _target_logits

  x, t = rand(7, (3, 28, 28, 1)), jnp.array([0, 4, 9])
  np.testing.assert_array_equal(methods.logit_gradient(cnn, x, t), _logit_gradient(cnn, x, t))
  np.testing.assert_array_equal(methods.target_logits(cnn, x, t), _target_logits(cnn, x, t))
  np.testing.assert_array_equal(methods.target_logits(cnn, x, t),
                                jnp.take_along_axis(cnn(x), t[:, None], axis=1)[:, 0])
  with pytest.raises(TypeError, match="model: expected a Flax NNX module"):
    methods.logit_gradient("cnn", x, t)
  with pytest.raises(ValueError, match=r"targets: expected class indices in \[0, 10\)"):
    methods.target_logits(cnn, x, t + 1)


def test_the_public_helpers_can_be_jitted(cnn):
  """Inside jit the static checks run at trace time; the maps are those of the eager call."""
  x, t = rand(8, (2, 28, 28, 1)), jnp.array([3, 5])
  np.testing.assert_array_equal(jax.jit(methods.logit_gradient)(cnn, x, t),
                                methods.gradients(cnn, x, t))
  graphdef, state = nnx.split(cnn)
  logits = jax.jit(lambda s, x, t: methods.target_logits(nnx.merge(graphdef, s), x, t))
  np.testing.assert_array_equal(logits(state, x, t), methods.target_logits(cnn, x, t))
  with pytest.raises(ValueError, match="images: expected rank 4"):
    jax.jit(methods.logit_gradient)(cnn, x[..., 0], t)


def test_core_names_a_method_that_is_not_callable(cnn):
  x = jnp.zeros((1, 28, 28, 1))
  with pytest.raises(TypeError, match=r"method: expected a saliency method of "
                     r"saliency_guide\.methods .*got str 'gradients'"):
    methods.core("gradients", cnn, x)
  assert methods.core(lambda m, i, t: i, cnn, x) is None  # a user's own method: no core
  assert methods.core(methods.gradients, cnn, x).fn.__name__ == "_gradients_core"
