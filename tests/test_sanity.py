"""Tests of saliency_guide.sanity: model-parameter randomisation and rank correlation."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from saliency_guide import sanity
from saliency_guide.models import CNN, MLP, GapCNN

X = jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32)
CONSTRUCTORS = {
    MLP: lambda rngs: MLP(hidden=(32, 16), rngs=rngs),
    CNN: lambda rngs: CNN(channels=(4, 6), hidden=12, rngs=rngs),
    GapCNN: lambda rngs: GapCNN(channels=(4, 6, 8), rngs=rngs),
}


@functools.cache
def _model(model_cls):
  """Built abstractly and filled from NumPy (no slow truncated-normal compilations), with
  nonzero biases so that re-initialising a bias to zero is a visible change."""
  graphdef, state = nnx.split(nnx.eval_shape(lambda: CONSTRUCTORS[model_cls](nnx.Rngs(0))))
  rng = np.random.default_rng(0)
  return nnx.merge(
      graphdef,
      jax.tree.map(lambda leaf: jnp.asarray(rng.normal(size=leaf.shape), leaf.dtype), state),
  )


def numpy_normal(key, shape, dtype):
  """An initialiser drawn by NumPy from the JAX key: each new shape would otherwise cost a
  multi-second compilation of JAX's random sampler on the CPU."""
  seed = np.asarray(jax.random.key_data(key)).ravel()
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), dtype)


FAST = {"kernel_init": numpy_normal, "bias_init": numpy_normal}


def model_of(model_cls):
  return nnx.clone(_model(model_cls))


def params_by_layer(model):
  """``{layer name: {param name: numpy copy}}``."""
  return {
      name: {key: np.array(p[...]) for key, p in sanity._own_params(module)}
      for name, module in sanity._layers(model).items()
  }


@pytest.mark.parametrize(
    ("model_cls", "expected"),
    [
        (MLP, ("hidden/0", "hidden/1", "head")),
        (CNN, ("conv1", "conv2", "dense", "head")),
        (GapCNN, ("conv1", "conv2", "conv3", "head")),
    ],
)
def test_parameter_layers_in_forward_order(model_cls, expected):
  model = model_of(model_cls)
  assert sanity.parameter_layers(model, X) == expected
  assert sanity.parameter_layers(nnx.clone(model), X) == expected  # clones store keys sorted
  assert sanity.parameter_layers(model) == expected  # the default input: one MNIST digit


class Reversed(nnx.Module):
  """Layers assigned (and named) against the order in which they are used, one call jitted."""

  def __init__(self, rngs):
    self.a_out = nnx.Linear(4, 2, rngs=rngs)
    self.b_mid = nnx.Linear(4, 4, rngs=rngs)
    self.c_in = nnx.Linear(784, 4, rngs=rngs)
    self.unused = nnx.Linear(1, 1, rngs=rngs)

  def __call__(self, x):
    h = self.c_in(x.reshape(x.shape[0], -1))
    h = jax.jit(lambda k, h: h @ k)(self.b_mid.kernel[...], h) + self.b_mid.bias[...]
    return self.a_out(h)


def test_parameter_layers_follow_the_forward_pass_not_the_names():
  model = nnx.eval_shape(lambda: Reversed(nnx.Rngs(0)))
  assert sanity.parameter_layers(model, X) == ("c_in", "b_mid", "a_out", "unused")


def test_parameter_layers_default_input_error():
  model = nnx.eval_shape(lambda: nnx.Linear(5, 2, rngs=nnx.Rngs(0)))  # takes (B, 5)
  with pytest.raises(ValueError, match="pass an example batch as images="):
    sanity.parameter_layers(model)
  assert sanity.parameter_layers(model, jax.ShapeDtypeStruct((3, 5), jnp.float32)) == ("",)


@pytest.mark.parametrize("model_cls", [MLP, CNN, GapCNN])
def test_randomize_changes_selected_layers_and_no_other(model_cls):
  model = model_of(model_cls)
  before = params_by_layer(model)
  layers = sanity.parameter_layers(model, X)
  selected = layers[-2:]
  random = sanity.randomize_layers(model, selected, jax.random.key(0), **FAST)
  after = params_by_layer(random)
  for name in layers:
    for key, value in before[name].items():
      if name in selected:
        assert not np.array_equal(after[name][key], value), (name, key)
      else:
        np.testing.assert_array_equal(after[name][key], value, err_msg=f"{name}.{key}")
  # The original is untouched.
  for name, params in params_by_layer(model).items():
    for key, value in params.items():
      np.testing.assert_array_equal(value, before[name][key])
  assert random is not model


def test_randomized_values_follow_the_initialisers():
  model = model_of(CNN)
  random = sanity.randomize_layers(model, ["dense"], jax.random.key(1))
  kernel = np.asarray(random.dense.kernel[...])
  fan_in = kernel.shape[0]
  # LeCun normal: truncated normal with standard deviation 1 / sqrt(fan_in).
  assert abs(kernel.std() * np.sqrt(fan_in) - 1) < 0.05
  np.testing.assert_array_equal(random.dense.bias[...], 0)
  zeros = sanity.randomize_layers(
      model, ["dense"], jax.random.key(1), kernel_init=jax.nn.initializers.zeros
  )
  np.testing.assert_array_equal(zeros.dense.kernel[...], 0)


def test_randomize_is_deterministic_and_per_layer():
  model = model_of(MLP)
  key = jax.random.key(3)
  one = sanity.randomize_layers(model, ["head"], key, **FAST)
  two = sanity.randomize_layers(model, ["hidden/1", "head"], key, **FAST)
  np.testing.assert_array_equal(one.head.kernel[...], two.head.kernel[...])
  np.testing.assert_array_equal(one.head.bias[...], two.head.bias[...])
  assert not np.array_equal(one.head.kernel[...], one.head.bias[...][:, None])
  other = sanity.randomize_layers(model, ["head"], jax.random.key(4), **FAST)
  assert not np.array_equal(one.head.kernel[...], other.head.kernel[...])


def test_randomized_model_runs_and_changes_outputs():
  model = model_of(CNN)
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 28, 28, 1)), jnp.float32)
  random = sanity.randomize_layers(model, ["head"], jax.random.key(0), **FAST)
  assert random(x).shape == (2, 10)
  assert not np.allclose(random(x), model(x))


def test_cascading_randomization():
  model = model_of(CNN)
  before = params_by_layer(model)
  steps = sanity.cascading_randomization(model, jax.random.key(0), **FAST)
  assert [name for name, _ in steps] == ["head", "dense", "conv2", "conv1"]
  top_down = ["head", "dense", "conv2", "conv1"]
  for k, (_, random) in enumerate(steps):
    after = params_by_layer(random)
    for j, name in enumerate(top_down):
      changed = not np.array_equal(after[name]["kernel"], before[name]["kernel"])
      assert changed == (j <= k), (k, name)
    if k > 0:  # cumulative: layers randomised earlier keep their random weights
      previous = params_by_layer(steps[k - 1][1])
      for name in top_down[:k]:
        np.testing.assert_array_equal(after[name]["kernel"], previous[name]["kernel"])
  np.testing.assert_array_equal(params_by_layer(model)["head"]["kernel"], before["head"]["kernel"])


def test_cascading_randomization_with_explicit_layers():
  steps = sanity.cascading_randomization(
      model_of(MLP), jax.random.key(0), ["hidden/1", "head"], **FAST
  )
  assert [name for name, _ in steps] == ["head", "hidden/1"]


def test_layer_name_errors():
  model = model_of(MLP)
  with pytest.raises(TypeError, match="layers: expected a sequence of layer names"):
    sanity.randomize_layers(model, "head", jax.random.key(0))
  with pytest.raises(ValueError, match=r"unknown \['conv9'\]"):
    sanity.randomize_layers(model, ["conv9"], jax.random.key(0))
  with pytest.raises(ValueError, match="unknown"):
    sanity.cascading_randomization(model, jax.random.key(0), ["head", "nope"])
  with pytest.raises(TypeError, match="key: expected a JAX PRNG key"):
    sanity.cascading_randomization(model, ["head"], jax.random.key(0))  # swapped arguments
  with pytest.raises(TypeError, match="key: expected a JAX PRNG key"):
    sanity.randomize_layers(model, ["head"], 0)
  sanity.randomize_layers(model, ["head"], jax.random.PRNGKey(0), **FAST)  # legacy keys work


# --------------------------------------------------------------------------- #
# Spearman rank correlation.                                                   #
# --------------------------------------------------------------------------- #

# Few distinct values, so that ties (the hard case for ranks) are frequent.
tied = hnp.arrays(np.float32, (2, 12), elements=st.sampled_from([-2.0, -0.5, 0.0, 0.0, 1.0, 3.0]))


@settings(max_examples=50, deadline=None)
@given(tied, tied)
def test_spearman_matches_scipy_with_ties(a, b):
  rho = np.asarray(sanity.spearman_correlation(a, b))
  for i in range(2):
    if np.ptp(a[i]) == 0 or np.ptp(b[i]) == 0:
      assert np.isnan(rho[i])  # a constant map has no ranking, as in scipy
    else:
      np.testing.assert_allclose(rho[i], scipy.stats.spearmanr(a[i], b[i]).statistic, atol=1e-5)


def test_spearman_properties():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(3, 28, 28, 1)).astype(np.float32)
  np.testing.assert_allclose(sanity.spearman_correlation(a, np.exp(a)), 1, atol=1e-6)
  np.testing.assert_allclose(sanity.spearman_correlation(a, -a), -1, atol=1e-6)
  np.testing.assert_allclose(sanity.spearman_correlation(a, -a, absolute=True), 1, atol=1e-6)
  independent = sanity.spearman_correlation(a, rng.normal(size=a.shape).astype(np.float32))
  assert np.all(np.abs(independent) < 0.15)


def test_spearman_shape_errors():
  with pytest.raises(ValueError, match="same shape"):
    sanity.spearman_correlation(np.zeros((2, 4)), np.zeros((2, 5)))
  with pytest.raises(ValueError, match="same shape"):
    sanity.spearman_correlation(np.zeros(4), np.zeros(4))
