"""Tests of the randomisation tests (saliency_guide.metrics, Adebayo et al., 2018).

What is pinned down:

* parameter_layers: the layers in the order the forward pass uses them, whatever
  their names or the order of assignment; a clear error when the default input
  does not fit the model;
* randomize_layers: every parameter of a selected layer is redrawn (from the
  initialisers given), every other one is kept, the caller's model is untouched;
  a layer's draw depends only on the key and its name;
* randomized_models: cascading step k re-initialises exactly the top k layers,
  independent step k exactly the k-th from the top, each copy being exactly
  randomize_layers of those layers (so a layer keeps its random weights from one
  step to the next);
* model_randomization: a model-independent "method" scores 1 at every step (the
  test flags it), the gradient does not; the method compiles once for all the
  copies; batches give the maps of one call; data_randomization likewise; the
  result records its mode and its per-step mean ± s.e.;
* randomization_verdict (the issue's "done when"): a map that ignores the weights
  "fails" at every step of the cascading and the independent test; plain gradients
  of a linear model and of an MLP, over 100 random images, "pass" once their weights
  are re-drawn; the rule on constructed similarities (passes / fails / inconclusive at
  the stated bounds, how a test's steps combine in each mode, NaN is inconclusive);
* bad input raises errors naming the argument.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saliency_guide import metrics
from saliency_guide.methods import logit_gradient
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


def model_of(model_cls):
  return nnx.clone(_model(model_cls))


def numpy_normal(key, shape, dtype):
  """An initialiser drawn by NumPy from the JAX key: each new shape would otherwise cost a
  multi-second compilation of JAX's random sampler on the CPU."""
  seed = np.asarray(jax.random.key_data(key)).ravel()
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), dtype)


FAST = {"kernel_init": numpy_normal, "bias_init": numpy_normal}


def params_by_layer(model):
  """``{layer name: {param name: NumPy copy}}``."""
  out = {}
  for path, param in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    layer = "/".join(str(p) for p in path[:-1])
    out.setdefault(layer, {})[str(path[-1])] = np.array(param[...])
  return out


def assert_same_params(a, b):
  for layer, params in params_by_layer(a).items():
    for name, value in params.items():
      np.testing.assert_array_equal(value, params_by_layer(b)[layer][name], f"{layer}.{name}")


def images(batch=4, seed=0):
  return jax.random.uniform(jax.random.key(seed), (batch, 28, 28, 1))


@jax.jit
def _gradient(graphdef, state, x, t):
  return logit_gradient(nnx.merge(graphdef, state), x, t)


def gradient(model, x, t):
  """The gradient of the target logit, jitted the way the package's methods are."""
  return _gradient(*nnx.split(model), x, t)


# ---------------------------------------------------------------------------------------
# The layers of a model.
# ---------------------------------------------------------------------------------------


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
  assert metrics.parameter_layers(model, X) == expected
  assert metrics.parameter_layers(nnx.clone(model), X) == expected  # clones store keys sorted
  assert metrics.parameter_layers(model) == expected  # the default input: one MNIST digit


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
  assert metrics.parameter_layers(model, X) == ("c_in", "b_mid", "a_out", "unused")


def test_parameter_layers_default_input_error():
  model = nnx.eval_shape(lambda: nnx.Linear(5, 2, rngs=nnx.Rngs(0)))  # takes (B, 5)
  with pytest.raises(ValueError, match="pass an example batch as images="):
    metrics.parameter_layers(model)
  assert metrics.parameter_layers(model, jax.ShapeDtypeStruct((3, 5), jnp.float32)) == ("",)


# ---------------------------------------------------------------------------------------
# Randomised copies.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_cls", [MLP, CNN, GapCNN])
def test_randomize_changes_selected_layers_and_no_other(model_cls):
  model = model_of(model_cls)
  before = params_by_layer(model)
  layers = metrics.parameter_layers(model, X)
  selected = layers[-2:]
  random = metrics.randomize_layers(model, selected, jax.random.key(0), **FAST)
  after = params_by_layer(random)
  for name in layers:
    for key, value in before[name].items():
      if name in selected:
        assert not np.array_equal(after[name][key], value), (name, key)
      else:
        np.testing.assert_array_equal(after[name][key], value, err_msg=f"{name}.{key}")
  assert_same_params(model, _model(model_cls))  # the original is untouched
  assert random is not model


def test_randomize_leaves_numpy_parameters_untouched():
  # Checkpoints load parameters as NumPy arrays (saliency_guide.zoo); a clone shares them,
  # so writing into them in place would randomise the caller's model too.
  model = MLP(hidden=(8,), rngs=nnx.Rngs(0))
  state = nnx.state(model, nnx.Param)
  nnx.replace_by_pure_dict(state, jax.tree.map(np.array, nnx.to_pure_dict(state)))
  nnx.update(model, state)
  assert isinstance(model.head.kernel.get_value(), np.ndarray)
  before = params_by_layer(model)
  for _, copy in metrics.randomized_models(model, jax.random.key(0), **FAST):
    assert not np.array_equal(copy.head.kernel[...], before["head"]["kernel"])
  for layer, params in params_by_layer(model).items():
    for name, value in params.items():
      np.testing.assert_array_equal(value, before[layer][name], f"{layer}.{name}")


def test_randomized_values_follow_the_initialisers():
  model = model_of(CNN)
  random = metrics.randomize_layers(model, ["dense"], jax.random.key(1))
  kernel = np.asarray(random.dense.kernel[...])
  fan_in = kernel.shape[0]
  # LeCun normal: truncated normal with standard deviation 1 / sqrt(fan_in).
  assert abs(kernel.std() * np.sqrt(fan_in) - 1) < 0.05
  np.testing.assert_array_equal(random.dense.bias[...], 0)
  zeros = metrics.randomize_layers(
      model, ["dense"], jax.random.key(1), kernel_init=jax.nn.initializers.zeros
  )
  np.testing.assert_array_equal(zeros.dense.kernel[...], 0)


def test_randomize_is_deterministic_and_per_layer():
  model = model_of(MLP)
  key = jax.random.key(3)
  one = metrics.randomize_layers(model, ["head"], key, **FAST)
  two = metrics.randomize_layers(model, ["hidden/1", "head"], key, **FAST)
  np.testing.assert_array_equal(one.head.kernel[...], two.head.kernel[...])
  np.testing.assert_array_equal(one.head.bias[...], two.head.bias[...])
  assert not np.array_equal(one.head.kernel[...], one.head.bias[...][:, None])
  other = metrics.randomize_layers(model, ["head"], jax.random.key(4), **FAST)
  assert not np.array_equal(one.head.kernel[...], other.head.kernel[...])


def test_randomized_model_runs_and_changes_outputs():
  model = model_of(CNN)
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 28, 28, 1)), jnp.float32)
  random = metrics.randomize_layers(model, ["head"], jax.random.key(0), **FAST)
  assert random(x).shape == (2, 10)
  assert not np.allclose(random(x), model(x))


@pytest.mark.parametrize("model_cls", [CNN, GapCNN])
def test_cascading_randomization_changes_exactly_the_top_layers(model_cls):
  model = model_of(model_cls)
  before = params_by_layer(model)
  top_down = metrics.parameter_layers(model)[::-1]
  steps = metrics.randomized_models(model, jax.random.key(0), **FAST)
  assert [name for name, _ in steps] == list(top_down)
  for k, (_, random) in enumerate(steps, start=1):
    after = params_by_layer(random)
    for j, name in enumerate(top_down):
      for key, value in before[name].items():  # every parameter, biases too
        assert (not np.array_equal(after[name][key], value)) == (j < k), (k, name, key)
    # Exactly randomize_layers of the top k: a layer keeps its random weights at every step.
    assert_same_params(random, metrics.randomize_layers(model, top_down[:k], jax.random.key(0),
                                                        **FAST))
  assert_same_params(model, _model(model_cls))  # the caller's model is untouched


def test_independent_randomization_changes_exactly_one_layer():
  model = model_of(CNN)
  before = params_by_layer(model)
  steps = metrics.randomized_models(model, jax.random.key(7), mode="independent", **FAST)
  assert [name for name, _ in steps] == ["head", "dense", "conv2", "conv1"]
  for name, copy in steps:
    after = params_by_layer(copy)
    for layer in before:
      same = all(np.array_equal(v, after[layer][k]) for k, v in before[layer].items())
      assert same == (layer != name), (name, layer)
    assert_same_params(copy, metrics.randomize_layers(model, [name], jax.random.key(7), **FAST))


def test_randomized_models_with_explicit_layers():
  steps = metrics.randomized_models(model_of(MLP), jax.random.key(0), layers=["hidden/1", "head"],
                                    **FAST)
  assert [name for name, _ in steps] == ["head", "hidden/1"]


def test_layer_name_and_key_errors():
  model = model_of(MLP)
  with pytest.raises(TypeError, match="layers: expected a sequence of layer names"):
    metrics.randomize_layers(model, "head", jax.random.key(0))
  with pytest.raises(TypeError, match="layers: expected a sequence of layer names"):
    metrics.randomized_models(model, jax.random.key(0), mode="independent", layers="head")
  with pytest.raises(ValueError, match=r"unknown \['conv9'\]"):
    metrics.randomize_layers(model, ["conv9"], jax.random.key(0))
  with pytest.raises(ValueError, match="unknown"):
    metrics.randomized_models(model, jax.random.key(0), layers=["head", "nope"])
  with pytest.raises(ValueError, match="mode: expected one of"):
    metrics.randomized_models(model, jax.random.key(0), mode="top")
  with pytest.raises(TypeError, match="key: expected a single PRNG key"):
    metrics.randomized_models(model, ["head"])  # a layer list where the key goes
  with pytest.raises(TypeError, match="key: expected a single PRNG key"):
    metrics.randomize_layers(model, ["head"], 0)
  metrics.randomize_layers(model, ["head"], jax.random.PRNGKey(0), **FAST)  # legacy keys work


# ---------------------------------------------------------------------------------------
# The tests of a method.
# ---------------------------------------------------------------------------------------


def test_model_randomization_flags_a_model_independent_method_and_not_the_gradient():
  model = MLP(hidden=(32, 16), rngs=nnx.Rngs(0))
  x = images(3)
  t = jnp.array([1, 2, 3])
  edge = lambda m, x, t: x  # noqa: E731  (an "explanation" that ignores the model)
  result = metrics.model_randomization(edge, model, x, t, key=jax.random.key(0))
  assert result.steps == ("head", "hidden/1", "hidden/0")
  for value in result.similarity:
    assert value.shape == (3, 3)
    np.testing.assert_allclose(value, 1.0, atol=1e-5)
  grad = metrics.model_randomization(gradient, model, x, t, key=jax.random.key(0))
  # With every layer re-drawn the gradient map is unrelated to the original one
  # (whereas after the head alone it may still correlate, depending on the draw).
  assert float(jnp.abs(grad.similarity.rank_correlation[-1]).max()) < 0.5
  assert float(jnp.abs(grad.similarity.rank_correlation).mean()) < 0.9
  np.testing.assert_allclose(grad.original, gradient(model, x, t)[..., 0], rtol=1e-6)
  independent = metrics.model_randomization(gradient, model, x, t, key=jax.random.key(0),
                                             mode="independent", layers=["hidden/0", "head"])
  assert independent.steps == ("head", "hidden/0")
  # The top layer alone: cascading and independent agree at step 1.
  np.testing.assert_allclose(independent.maps[0], grad.maps[0], rtol=1e-6)


def test_model_randomization_is_the_rank_correlation_of_the_copies_maps():
  model = MLP(hidden=(16,), rngs=nnx.Rngs(0))
  x, t = images(3), jnp.array([4, 5, 6])
  result = metrics.model_randomization(gradient, model, x, t, key=jax.random.key(1))
  for (name, copy), maps, rho in zip(metrics.randomized_models(model, jax.random.key(1)),
                                     result.maps, result.similarity.abs_rank_correlation,
                                     strict=True):
    np.testing.assert_array_equal(maps, gradient(copy, x, t)[..., 0], err_msg=name)
    np.testing.assert_array_equal(
        rho, metrics.rank_correlation(gradient(model, x, t), gradient(copy, x, t), absolute=True))


def test_model_randomization_compiles_the_method_once():
  traces = []

  @jax.jit
  def core(graphdef, state, x, t):
    traces.append(1)
    return logit_gradient(nnx.merge(graphdef, state), x, t)

  def method(model, x, t):
    return core(*nnx.split(model), x, t)

  model = CNN(channels=(4, 6), hidden=12, rngs=nnx.Rngs(0))
  metrics.model_randomization(method, model, images(2), jnp.array([0, 1]), key=jax.random.key(0))
  assert len(traces) == 1


def test_randomization_in_batches_equals_one_call():
  model = MLP(hidden=(16,), rngs=nnx.Rngs(0))
  x, t = images(4), jnp.array([0, 1, 2, 3])
  whole = metrics.model_randomization(gradient, model, x, t, key=jax.random.key(0))
  batched = metrics.model_randomization(gradient, model, x, t, key=jax.random.key(0),
                                        batch_size=3)
  np.testing.assert_allclose(batched.maps, whole.maps, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(batched.original, whole.original, rtol=1e-5, atol=1e-7)
  with pytest.raises(ValueError, match="batch_size: expected an integer >= 1"):
    metrics.data_randomization(gradient, model, model, x, t, batch_size=0)


def test_data_randomization():
  model = MLP(hidden=(16,), rngs=nnx.Rngs(0))
  x, t = images(2), jnp.array([0, 1])
  same = metrics.data_randomization(gradient, model, model, x, t)
  assert same.steps == ("labels",)
  for value in same.similarity:
    np.testing.assert_allclose(value, 1.0, atol=1e-5)
  other = metrics.data_randomization(gradient, model, MLP(hidden=(16,), rngs=nnx.Rngs(5)), x, t)
  assert float(jnp.abs(other.similarity.rank_correlation).max()) < 0.5


def test_randomization_bad_input():
  model = CNN(channels=(4, 6), hidden=12, rngs=nnx.Rngs(0))
  x, t = images(1), jnp.array([0])
  with pytest.raises(ValueError, match="mode: expected one of"):
    metrics.model_randomization(gradient, model, x, t, key=jax.random.key(0), mode="top")
  with pytest.raises(ValueError, match="layers: expected names"):
    metrics.model_randomization(gradient, model, x, t, key=jax.random.key(0), layers=["fc9"])
  with pytest.raises(TypeError, match="method: expected a saliency method"):
    metrics.model_randomization("gradients", model, x, t, key=jax.random.key(0))
  with pytest.raises(TypeError, match="random_model"):
    metrics.data_randomization(gradient, model, "model", x, t)
  with pytest.raises(ValueError, match="targets"):
    metrics.data_randomization(gradient, model, model, x, jnp.array([0, 1]))


def test_result_mode_and_stats():
  model = MLP(hidden=(16,), rngs=nnx.Rngs(0))
  x, t = images(5), jnp.arange(5)
  for mode in metrics.RANDOMIZATION_MODES:
    result = metrics.model_randomization(gradient, model, x, t, key=jax.random.key(0), mode=mode)
    assert result.mode == mode
  data = metrics.data_randomization(gradient, model, MLP(hidden=(16,), rngs=nnx.Rngs(1)), x, t)
  assert data.mode == "labels"
  for field in metrics.Similarity._fields:
    mean, sem = result.stats(field)
    assert mean.shape == sem.shape == (2,)
    expected = metrics.mean_and_sem(np.asarray(getattr(result.similarity, field)), axis=1)
    np.testing.assert_array_equal(mean, expected[0])
    np.testing.assert_array_equal(sem, expected[1])
  np.testing.assert_array_equal(result.stats()[0], result.stats("abs_rank_correlation")[0])
  with pytest.raises(ValueError, match="field: expected one of 'rank_correlation'"):
    result.stats("spearman")


# ---------------------------------------------------------------------------------------
# The verdict.
# ---------------------------------------------------------------------------------------


def linear_model():
  """A linear classifier: its logit gradient is a column of its weights, whatever the image."""
  return MLP(hidden=(), rngs=nnx.Rngs(0))


def copy_image(model, x, t):
  return x  # an "explanation" that ignores the model


def squared_edges(model, x, t):
  """A fixed non-trivial function of the input alone (horizontal differences, squared)."""
  return jnp.square(jnp.diff(x, axis=2, append=0.0))


@pytest.mark.parametrize("method", [copy_image, squared_edges])
@pytest.mark.parametrize("mode", ["cascading", "independent"])
def test_a_map_that_ignores_the_weights_fails_at_every_step(method, mode):
  model = MLP(hidden=(32, 16), rngs=nnx.Rngs(0))
  x = images(100)
  t = jnp.arange(100) % 10
  result = metrics.model_randomization(method, model, x, t, key=jax.random.key(0), mode=mode)
  verdict = metrics.randomization_verdict(result)
  assert verdict.mode == mode
  assert verdict.steps == ("head", "hidden/1", "hidden/0")
  assert verdict.per_step == ("fails", "fails", "fails")
  assert verdict.verdict == "fails"
  for field in metrics.Similarity._fields:
    assert metrics.randomization_verdict(result, field=field).verdict == "fails", field


@pytest.mark.parametrize("mode", ["cascading", "independent"])
def test_gradients_of_a_linear_model_decorrelate_when_its_weights_are_redrawn(mode):
  model = linear_model()
  x = images(100)
  t = jnp.arange(100) % 10
  result = metrics.model_randomization(gradient, model, x, t, key=jax.random.key(0), mode=mode)
  assert result.steps == ("head",)
  # The map is the target's weight column, the re-drawn one is independent of it.
  np.testing.assert_allclose(result.original[3], model.head.kernel[...][:, 3].reshape(28, 28),
                             rtol=1e-6)
  verdict = metrics.randomization_verdict(result)
  assert verdict.per_step == ("passes",) and verdict.verdict == "passes"
  assert abs(verdict.mean[0]) < 0.1  # independent Gaussian columns: rho ~ 0


def test_gradients_of_an_mlp_pass_the_cascade():
  model = MLP(hidden=(32, 16), rngs=nnx.Rngs(0))
  x = images(100)
  t = jnp.arange(100) % 10
  result = metrics.model_randomization(gradient, model, x, t, key=jax.random.key(0))
  verdict = metrics.randomization_verdict(result)
  assert verdict.per_step[-1] == "passes"  # every layer re-drawn
  assert verdict.verdict == "passes"
  assert verdict.mean[-1] + 2 * verdict.sem[-1] < metrics.RANDOMIZATION_THRESHOLD


def synthetic(*steps, mode="cascading"):
  """A RandomizationResult whose every similarity field holds the given per-image values."""
  values = jnp.asarray(np.array(steps, np.float32))
  n_steps, n_images = values.shape
  sim = metrics.Similarity(*([values] * len(metrics.Similarity._fields)))
  names = ("labels",) if mode == "labels" else tuple(f"layer{k}" for k in range(n_steps))
  zeros = jnp.zeros((n_images, 14, 14))
  return metrics.RandomizationResult(steps=names, original=zeros,
                                     maps=jnp.zeros((n_steps, n_images, 14, 14)),
                                     similarity=sim, mode=mode)


def values_with(mean, sem, n=100):
  """n values of exactly this mean and standard error (half at mean - d, half at mean + d)."""
  d = sem * np.sqrt(n - 1)  # sample variance n d^2 / (n - 1); s.e. sqrt(variance / n)
  return [mean - d] * (n // 2) + [mean + d] * (n // 2)


def test_the_rule_at_its_bounds():
  # mean 0.4, s.e. 0.04: with z = 2 the interval [0.32, 0.48] is below 0.5 (passes); with
  # z = 3 [0.28, 0.52] straddles it (inconclusive).
  result = synthetic(values_with(0.4, 0.04))
  mean, sem = result.stats()
  np.testing.assert_allclose([mean[0], sem[0]], [0.4, 0.04], rtol=1e-5)
  assert metrics.randomization_verdict(result).verdict == "passes"
  assert metrics.randomization_verdict(result, z=3.0).verdict == "inconclusive"
  assert metrics.randomization_verdict(result, threshold=0.3).verdict == "fails"
  assert metrics.randomization_verdict(result, threshold=0.3, z=3.0).verdict == "inconclusive"
  assert metrics.randomization_verdict(result, z=0.0).verdict == "passes"


def test_inconclusive_when_the_interval_straddles_the_threshold():
  # Half the digits at 0.2, half at 0.8: mean 0.5 +- 0.03, an interval around the threshold.
  result = synthetic([0.2, 0.8] * 50)
  verdict = metrics.randomization_verdict(result)
  assert verdict.per_step == ("inconclusive",) and verdict.verdict == "inconclusive"
  assert verdict.mean[0] - 2 * verdict.sem[0] < 0.5 < verdict.mean[0] + 2 * verdict.sem[0]


def test_undefined_similarities_are_inconclusive():
  nan = float("nan")
  result = synthetic([nan] * 10, [0.1] + [nan] * 9, [0.1, 0.1] + [nan] * 8)
  mean, sem = result.stats()
  assert np.isnan(mean[0]) and np.isnan(sem[1]) and sem[2] == 0
  assert metrics.randomization_verdict(result).per_step == (
      "inconclusive", "inconclusive", "passes")


PASS, FAIL, MID = [0.1, 0.12] * 50, [0.9, 0.92] * 50, [0.2, 0.8] * 50


@pytest.mark.parametrize(
    ("mode", "steps", "per_step", "verdict"),
    [
        # Cascading: the last step (every layer randomised) decides.
        ("cascading", (FAIL, FAIL, PASS), ("fails", "fails", "passes"), "passes"),
        ("cascading", (PASS, PASS, FAIL), ("passes", "passes", "fails"), "fails"),
        ("cascading", (PASS, MID), ("passes", "inconclusive"), "inconclusive"),
        # Independent: every layer must pass; any failure fails.
        ("independent", (PASS, PASS, PASS), ("passes",) * 3, "passes"),
        ("independent", (PASS, MID, PASS), ("passes", "inconclusive", "passes"), "inconclusive"),
        ("independent", (PASS, MID, FAIL), ("passes", "inconclusive", "fails"), "fails"),
        ("labels", (PASS,), ("passes",), "passes"),
        ("labels", (FAIL,), ("fails",), "fails"),
    ],
)
def test_how_steps_combine(mode, steps, per_step, verdict):
  result = metrics.randomization_verdict(synthetic(*steps, mode=mode))
  assert result.per_step == per_step
  assert result.verdict == verdict
  assert result.verdict in metrics.RANDOMIZATION_VERDICTS


def test_the_rule_is_stated():
  verdict = metrics.randomization_verdict(synthetic(PASS, PASS), field="hog", threshold=0.3, z=1.5)
  assert (verdict.field, verdict.threshold, verdict.z) == ("hog", 0.3, 1.5)
  assert verdict.rule.startswith("A step passes (the map changed) when the mean HOG similarity "
                                 "over the 100 images plus 1.5 standard errors is below 0.3")
  assert verdict.rule.endswith("the fully randomised model.")
  rules = {mode: metrics.randomization_verdict(synthetic(PASS, mode=mode)).rule
           for mode in ("cascading", "independent", "labels")}
  assert "every layer passes" in rules["independent"]
  assert "permuted labels" in rules["labels"]
  assert metrics.RANDOMIZATION_THRESHOLD == 0.5
  assert "0.5" in rules["cascading"]


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"field": "spearman"}, ValueError, "field: expected one of"),
        ({"threshold": 1.5}, ValueError, "threshold: expected a finite number > -1.0 and <= 1"),
        ({"threshold": -1.0}, ValueError, "threshold"),
        ({"threshold": float("nan")}, ValueError, "threshold"),
        ({"threshold": "0.5"}, TypeError, "threshold"),
        ({"z": -1.0}, ValueError, "z: expected a finite number >= 0.0"),
        ({"z": float("inf")}, ValueError, "z: expected"),
        ({"z": True}, TypeError, "z: expected"),
    ],
)
def test_verdict_bad_options(options, error, match):
  with pytest.raises(error, match=match):
    metrics.randomization_verdict(synthetic(PASS), **options)


def test_verdict_bad_result():
  with pytest.raises(TypeError, match="result: expected a RandomizationResult"):
    metrics.randomization_verdict({"steps": ()})
  bad = dataclasses.replace(synthetic(PASS), mode="shuffled")
  with pytest.raises(ValueError, match=r"result\.mode: expected one of"):
    metrics.randomization_verdict(bad)


def test_signed_rank_correlation_is_judged_on_both_tails():
  """An inverted map survived the randomisation as much as an unchanged one."""
  inverted = [-0.9, -0.92] * 50
  assert metrics.randomization_verdict(synthetic(inverted)).verdict == "fails"
  assert metrics.randomization_verdict(synthetic([-0.2, -0.8] * 50)).verdict == "inconclusive"
  assert metrics.randomization_verdict(synthetic(PASS)).verdict == "passes"
  # The absolute fields are judged on the upper tail only.
  assert metrics.randomization_verdict(
      synthetic(inverted), field="abs_rank_correlation").verdict == "passes"
  assert "below −0.5" in metrics.randomization_verdict(synthetic(PASS)).rule
