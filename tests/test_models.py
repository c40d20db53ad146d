"""The models' contract with the saliency methods."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saliency_guide.models import CNN, MLP, GapCNN, conv_layer_names

MODELS = [MLP, CNN, GapCNN]


def _images(n=3, seed=0):
  return jax.random.uniform(jax.random.key(seed), (n, 28, 28, 1))


@pytest.mark.parametrize("cls", MODELS)
def test_models_return_unnormalised_logits(cls):
  logits = cls(rngs=nnx.Rngs(0))(_images())
  assert logits.shape == (3, 10)
  assert logits.dtype == jnp.float32
  # Logits, not probabilities: rows do not sum to 1 and some entries are negative.
  assert not np.allclose(np.asarray(logits).sum(-1), 1.0, atol=1e-3)
  assert (np.asarray(logits) < 0).any()


@pytest.mark.parametrize("cls", MODELS)
def test_plain_call_records_nothing_warns_nothing_and_changes_nothing(cls):
  model = cls(rngs=nnx.Rngs(0))
  before = nnx.state(model)
  graphdef_before = nnx.graphdef(model)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    model(_images())
  after = nnx.state(model)
  assert nnx.graphdef(model) == graphdef_before
  jax.tree.map(np.testing.assert_array_equal, before, after)


@pytest.mark.parametrize("cls, names, shapes", [
    (CNN, ("conv1", "conv2"), [(3, 28, 28, 32), (3, 14, 14, 64)]),
    (GapCNN, ("conv1", "conv2", "conv3"), [(3, 28, 28, 32), (3, 14, 14, 64), (3, 7, 7, 128)]),
])
def test_capture_exposes_feature_maps_after_relu(cls, names, shapes):
  model = cls(rngs=nnx.Rngs(0))
  assert conv_layer_names(model) == names
  logits, maps = nnx.capture(model, nnx.Intermediate)(_images())
  np.testing.assert_allclose(logits, model(_images()), rtol=1e-6)
  for name, shape in zip(names, shapes, strict=True):
    (feature_map,) = maps[name]
    assert feature_map.shape == shape
    assert float(feature_map.min()) >= 0.0  # after the ReLU


def test_mlp_exposes_no_feature_maps():
  assert conv_layer_names(MLP(rngs=nnx.Rngs(0))) == ()


def test_perturbation_gradient_is_the_gradient_at_the_feature_map():
  """d logit / d perturbation == d head(A) / dA evaluated at the actual A (not 2A)."""
  model = GapCNN(rngs=nnx.Rngs(0))
  x = _images(2)
  _, zeros = nnx.capture(model, nnx.Perturbation)(x)
  assert all(float(jnp.abs(v.get_value()).max()) == 0.0 for v in jax.tree.leaves(
      zeros, is_leaf=lambda v: isinstance(v, nnx.Variable)))

  graphdef, state = nnx.split(model)

  def score(perturbations):
    fresh = nnx.merge(graphdef, state)  # a module of this trace level, for capture to annotate
    logits, maps = nnx.capture(fresh, nnx.Intermediate, init=perturbations)(x)
    return logits[:, 3].sum(), maps

  grads, maps = jax.grad(score, has_aux=True)(zeros)
  # For GapCNN the logit is linear in the conv3 maps: dy^c/dA^k_ij = w^c_k / Z.
  expected = jnp.broadcast_to(model.head.kernel[:, 3] / 49.0, (2, 7, 7, 128))
  np.testing.assert_allclose(grads["conv3"].get_value(), expected, rtol=1e-5, atol=1e-7)
  assert maps["conv3"][0].shape == (2, 7, 7, 128)


@pytest.mark.parametrize("cls", MODELS)
def test_activation_is_replaceable_on_a_copy(cls):
  model = cls(rngs=nnx.Rngs(0))
  x = _images()
  copy = nnx.clone(model)
  copy.activation = lambda v: v  # linear network
  assert not np.allclose(copy(x), model(x))
  assert model.activation is not copy.activation


def test_wrong_channels_is_a_clear_error():
  with pytest.raises(ValueError, match=r"images: expected NHWC shape"):
    CNN(rngs=nnx.Rngs(0))(jnp.zeros((2, 1, 28, 28)))
