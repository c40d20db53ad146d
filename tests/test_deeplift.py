"""Tests of DeepLIFT and DeepSHAP (methods/deeplift.py) against the maths.

DeepLIFT's defining property is summation-to-delta, Σ φ = f_c(x) − f_c(x') per
image; its multipliers obey the chain rule with a linear layer's weight and a
nonlinearity's (g(z) − g(z'))/(z − z'). An independent NumPy DeepLIFT of a
two-layer ReLU network pins the rule itself; the identities with Gradient × Input
and Integrated Gradients are the ones the tutorial page measures.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from feature_map_models import MaxPoolHead, tiny_gap
from model_factories import (
    SHAPE,
    compilations,
    linear_model,
    numpy_model,
    rand,
    toy_batch,
    toy_mlp,
)
from saliency_guide import methods
from saliency_guide.models import CNN
from user_models import BlockGap, GeluNet, LayerNormNet, ResNet, UserCNN


def _gap(model, images, targets, baseline):
  rows = np.arange(len(targets))
  return np.asarray(model(images))[rows, targets] - np.asarray(model(baseline))[rows, targets]


def _small_cnn(seed=0, bias_scale=0.1):
  return numpy_model(lambda: CNN(channels=(4, 6), hidden=16, rngs=nnx.Rngs(0)), seed,
                     bias_scale)


def test_linear_model_is_the_difference_times_the_weight():
  model, weights = linear_model()
  images, targets = toy_batch()
  baseline = rand(9, SHAPE)
  np.testing.assert_allclose(
      methods.deeplift(model, images, targets, baseline=baseline),
      (images - baseline) * weights[targets].reshape(-1, *SHAPE), rtol=1e-5, atol=1e-6)


def _numpy_relu(z):
  return max(z, 0.0)


def _numpy_deeplift(model, images, targets, baseline, g=_numpy_relu):
  """Two-layer MLP with activation ``g``, DeepLIFT Rescale by hand (slow and obvious)."""
  w1 = np.asarray(model.hidden[0].kernel[...], np.float64)
  b1 = np.asarray(model.hidden[0].bias[...], np.float64)
  w2 = np.asarray(model.head.kernel[...], np.float64)
  out = []
  for x, c in zip(images, targets, strict=True):
    x, x0 = x.reshape(-1).astype(np.float64), baseline.reshape(-1).astype(np.float64)
    z, z0 = x @ w1 + b1, x0 @ w1 + b1
    rescale = np.empty_like(z)
    for j in range(len(z)):  # one hidden unit at a time
      assert abs(z[j] - z0[j]) > 1e-6  # no fallback to the derivative needed here
      rescale[j] = (g(z[j]) - g(z0[j])) / (z[j] - z0[j])
    multiplier = w1 @ (rescale * w2[:, c])
    out.append(((x - x0) * multiplier).reshape(SHAPE))
  return np.stack(out)


def _numpy_gelu(z):  # jax.nn.gelu's default tanh approximation
  return 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)))


ACTIVATIONS = {  # name: (as the model computes it, the same function in NumPy)
    "relu": (jax.nn.relu, _numpy_relu),
    "maximum": (lambda z: jnp.maximum(z, 0.0), _numpy_relu),
    "tanh": (jnp.tanh, np.tanh),
    # traced inline as x * (1 + tanh(...)) / 2: one nonlinearity of one tensor
    "gelu": (jax.nn.gelu, _numpy_gelu),
    "leaky_where": (lambda z: jnp.where(z > 0, z, 0.1 * z), lambda z: z if z > 0 else 0.1 * z),
    "silu_by_hand": (lambda z: z * jax.nn.sigmoid(z), lambda z: z / (1 + np.exp(-z))),
}


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_matches_a_numpy_deeplift_of_an_mlp(name):
  """Each activation rescaled as a whole: (g(z) − g(z')) / (z − z')."""
  activation, numpy_activation = ACTIVATIONS[name]
  model = toy_mlp(3)
  model.activation = activation
  images, targets = toy_batch()
  baseline = rand(7, SHAPE) * 0.5
  np.testing.assert_allclose(
      methods.deeplift(model, images, targets, baseline=baseline),
      _numpy_deeplift(model, images, targets, baseline, numpy_activation),
      rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize("factory", [
    lambda: _small_cnn(1),
    lambda: numpy_model(lambda: ResNet(width=4, rngs=nnx.Rngs(0))),
    lambda: numpy_model(lambda: BlockGap(rngs=nnx.Rngs(0))),
    lambda: numpy_model(lambda: GeluNet(rngs=nnx.Rngs(0))),
], ids=["cnn", "resnet_batchnorm", "nnx_max_pool", "gelu"])
def test_summation_to_delta(factory):
  model = factory()
  images = rand(0, (3, 28, 28, 1))
  targets = np.array([0, 3, 7])
  for baseline in (np.zeros((28, 28, 1), np.float32), rand(5, (28, 28, 1))):
    maps = np.asarray(methods.deeplift(model, images, targets, baseline=baseline))
    np.testing.assert_allclose(maps.sum(axis=(1, 2, 3)),
                               _gap(model, images, targets, np.broadcast_to(baseline,
                                                                            images.shape)),
                               rtol=1e-4, atol=1e-4)


def test_nnx_max_pool_and_the_packages_max_pool_give_the_same_map():
  """reduce_window_max (nnx.max_pool) and reduce_max over windows: same rule, same ties."""
  cnn = _small_cnn(2)
  user = numpy_model(lambda: UserCNN((4, 6), 16, rngs=nnx.Rngs(0)))
  for name in ("conv1", "conv2", "dense", "head"):
    getattr(user, name).kernel[...] = getattr(cnn, name).kernel[...]
    getattr(user, name).bias[...] = getattr(cnn, name).bias[...]
  images = rand(0, (2, 28, 28, 1)) * (rand(1, (2, 28, 28, 1)) > 0.6)  # ties: zero windows
  targets = np.array([0, 5])
  np.testing.assert_allclose(methods.deeplift(user, images, targets),
                             methods.deeplift(cnn, images, targets), rtol=1e-5, atol=1e-6)


def test_global_max_pooling_before_a_relu_keeps_summation_to_delta():
  """Captum's cross-max split: the reference's arg-max receives what the input's cannot."""

  class MaxThenRelu(nnx.Module):
    def __init__(self, rngs):
      self.conv = nnx.Conv(1, 3, (3, 3), padding="SAME", rngs=rngs)
      self.head = nnx.Linear(3, 4, rngs=rngs)

    def __call__(self, x):
      return self.head(jax.nn.relu(self.conv(x).max(axis=(1, 2))))

  model = numpy_model(lambda: MaxThenRelu(nnx.Rngs(0)))
  images, baseline = rand(1, (4, 28, 28, 1)) - 0.5, rand(2, (4, 28, 28, 1)) - 0.5
  targets = np.array([0, 1, 2, 3])
  maps = methods.deeplift(model, images, targets, baseline=baseline)
  np.testing.assert_allclose(np.asarray(maps).sum(axis=(1, 2, 3)),
                             _gap(model, images, targets, baseline), rtol=1e-4, atol=1e-5)


def test_max_pool_rule_routes_each_window_by_hand():
  """Global max over 2x2: y = max x, y' = max x'; the gap goes to the arg-maxes."""
  model = tiny_gap(MaxPoolHead)
  x = jnp.array([[1.0, 2.0], [3.0, -1.0]]).reshape(1, 2, 2, 1)
  maps = np.asarray(methods.deeplift(model, x, np.array([0]), baseline=0.0))
  # channel 0: relu(x) pooled to 3 at (1, 0); channel 1: relu(0.5 - x) is 1.5 at (1, 1),
  # its reference relu(0.5) = 0.5 everywhere, first arg-max (0, 0).
  w = np.array([1.0, 2.0])  # head weights of class 0
  expected = np.zeros((2, 2))
  expected[1, 0] += w[0] * 3.0  # Δ = 3 − 0 on the input's arg-max
  expected[1, 1] += w[1] * (1.5 - 0.5)  # cross max = 1.5: all to the input's arg-max
  np.testing.assert_allclose(maps[0, :, :, 0], expected, rtol=1e-6, atol=1e-6)


def test_equals_gradient_x_input_and_ig_without_biases_at_a_zero_baseline():
  """ReLU + max-pool-after-ReLU, no biases, black baseline: all three coincide."""
  model = _small_cnn(4, bias_scale=0.0)
  images, targets = rand(3, (2, 28, 28, 1)), np.array([1, 2])
  dl = methods.deeplift(model, images, targets)
  np.testing.assert_allclose(dl, methods.gradients_x_inputs(model, images, targets),
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(dl, methods.integrated_gradients(model, images, targets, steps=4),
                             rtol=1e-3, atol=1e-5)


def test_differs_from_gradient_x_input_with_biases():
  model = _small_cnn(4, bias_scale=0.3)
  images, targets = rand(3, (2, 28, 28, 1)), np.array([1, 2])
  dl = np.asarray(methods.deeplift(model, images, targets))
  gxi = np.asarray(methods.gradients_x_inputs(model, images, targets))
  assert np.linalg.norm(dl - gxi) > 1e-2 * np.linalg.norm(gxi)


def test_explains_the_target_logit_not_another_class():
  model = _small_cnn(5)
  images = rand(6, (1, 28, 28, 1))
  maps = [np.asarray(methods.deeplift(model, images, np.array([c]))) for c in (0, 1)]
  assert np.abs(maps[0] - maps[1]).max() > 1e-3
  for c, m in zip((0, 1), maps, strict=True):
    np.testing.assert_allclose(m.sum(), _gap(model, images, np.array([c]), 0 * images)[0],
                               rtol=1e-4, atol=1e-5)


def test_chunking_and_baseline_shapes_do_not_change_the_result():
  model = toy_mlp(2)
  images, targets = toy_batch(5)
  baseline = rand(4, SHAPE)
  full = methods.deeplift(model, images, targets, baseline=baseline)
  np.testing.assert_allclose(
      methods.deeplift(model, images, targets, baseline=baseline[None], internal_batch_size=2),
      full, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(
      methods.deeplift(model, images, targets, baseline=np.broadcast_to(baseline, images.shape)),
      full, rtol=1e-6, atol=1e-7)


def test_deep_shap_is_the_mean_of_deeplift_over_the_references():
  model = _small_cnn(6)
  images, targets = rand(1, (2, 28, 28, 1)), np.array([3, 4])
  refs = rand(2, (3, 28, 28, 1))
  shap = methods.deep_shap(model, images, targets, references=refs, internal_batch_size=4)
  mean = np.mean([methods.deeplift(model, images, targets, baseline=r) for r in refs], axis=0)
  np.testing.assert_allclose(shap, mean, rtol=1e-5, atol=1e-6)
  expected = (np.asarray(model(images))[np.arange(2), targets]
              - np.asarray(model(refs))[:, targets].mean(axis=0))
  np.testing.assert_allclose(np.asarray(shap).sum(axis=(1, 2, 3)), expected, rtol=1e-4,
                             atol=1e-5)


def test_unsupported_layers_are_named():
  images, targets = rand(0, (1, 28, 28, 1)), np.array([0])
  layer_norm = numpy_model(lambda: LayerNormNet(rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match=r"LayerNormNet applies .*(product|division)"):
    methods.deeplift(layer_norm, images, targets)

  class Gated(nnx.Module):
    def __init__(self, rngs):
      self.a = nnx.Linear(784, 8, rngs=rngs)
      self.b = nnx.Linear(784, 8, rngs=rngs)
      self.head = nnx.Linear(8, 10, rngs=rngs)

    def __call__(self, x):
      x = x.reshape(x.shape[0], -1)
      return self.head(self.a(x) * jax.nn.sigmoid(self.b(x)))  # a gated linear unit

  with pytest.raises(ValueError, match=r"Gated applies a product of two input-dependent"):
    methods.deeplift(Gated(nnx.Rngs(0)), images, targets)

  class GlobalMax(nnx.Module):
    def __init__(self, rngs):
      self.head = nnx.Linear(1, 10, rngs=rngs)

    def __call__(self, x):
      return self.head(jnp.sort(x.reshape(x.shape[0], -1), axis=1)[:, -1:])

  with pytest.raises(ValueError, match=r"GlobalMax applies .*sort"):
    methods.deeplift(GlobalMax(nnx.Rngs(0)), images, targets)


def test_jax_nn_activations_are_one_nonlinearity():
  class Silu(nnx.Module):
    def __init__(self, rngs):
      self.a = nnx.Linear(20, 8, rngs=rngs)
      self.head = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
      return self.head(jax.nn.silu(self.a(x.reshape(x.shape[0], -1))))

  model = numpy_model(lambda: Silu(nnx.Rngs(0)), bias_scale=0.5)
  images, targets = toy_batch()
  maps = methods.deeplift(model, images, targets, baseline=0.2)
  np.testing.assert_allclose(np.asarray(maps).sum(axis=(1, 2, 3)),
                             _gap(model, images, targets, np.full_like(images, 0.2)),
                             rtol=1e-4, atol=1e-5)


def test_in_place_weight_changes_are_seen_without_recompiling():
  model = _small_cnn(7)
  images, targets = rand(2, (2, 28, 28, 1)), np.array([3, 7])
  first = methods.deeplift(model, images, targets)
  model.head.kernel[...] = model.head.kernel[...][:, ::-1]  # reverse the class order
  with compilations() as compiles:
    after = methods.deeplift(model, images, targets)
  assert compiles == [], "an in-place weight change recompiled DeepLIFT"
  assert not np.allclose(np.asarray(first), np.asarray(after))
  np.testing.assert_array_equal(
      np.asarray(after), np.asarray(methods.deeplift(nnx.merge(*nnx.split(model)), images,
                                                     targets)))


def test_composes_with_smoothgrad_through_its_core():
  """SmoothGrad runs the registered core on n copies of the batch: baselines are tiled."""
  model = toy_mlp(1)
  images, targets = toy_batch(2)
  baseline = rand(3, (2, *SHAPE))
  smoothed = methods.smoothgrad(methods.deeplift, samples=3, key=jax.random.key(0))
  maps = smoothed(model, images, targets, baseline=baseline)
  plain = methods.smoothgrad_plain(methods.deeplift, model, images, targets, samples=3,
                                   key=jax.random.key(0), baseline=baseline)
  np.testing.assert_allclose(maps, plain, rtol=1e-5, atol=1e-6)
