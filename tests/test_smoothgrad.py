"""Tests of SmoothGrad, SmoothGrad² and VarGrad.

The noise is checked through a probe "method" that returns its input: SmoothGrad
of it is the mean of the noisy inputs (≈ x) and VarGrad their variance, which
must be (noise_level × (max − min) of each image)². With zero noise every
variant reduces to the wrapped method; the same key gives the same maps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_factories import (
  SHAPE,
  linear_model,
  rand,
  toy_batch,
  toy_mlp,
)
from saliency_guide import methods
from saliency_guide.methods import _smoothgrad


def identity(model, images, targets):
  """A probe 'method' whose map is its (noisy) input; run in smoothgrad's compiled scan."""
  del model, targets
  return images


identity.traceable = identity


def identity_untraceable(model, images, targets):
  """The same probe without a traceable core: smoothgrad calls it once per chunk."""
  del model, targets
  return images


def untraceable_gradients(model, images, targets):
  """methods.gradients without its traceable core: forces the per-chunk loop."""
  return methods.gradients(model, images, targets)


VARIANTS = methods.SMOOTHGRAD_VARIANTS


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "method", [methods.gradients, methods.gradients_x_inputs, untraceable_gradients])
def test_zero_noise_gives_the_wrapped_method(method, variant):
  model = toy_mlp()
  images, targets = toy_batch()
  plain = method(model, images, targets)
  smooth = methods.smoothgrad(
      method, noise_level=0.0, samples=6, variant=variant, key=jax.random.key(0))
  expected = {"smoothgrad": plain, "smoothgrad_squared": plain**2, "vargrad": 0 * plain}
  np.testing.assert_allclose(smooth(model, images, targets), expected[variant],
                             rtol=1e-6, atol=1e-12)


def test_zero_noise_with_options_passed_to_integrated_gradients():
  model = toy_mlp()
  images, targets = toy_batch()
  baseline = jnp.full(SHAPE, 0.2)
  plain = methods.integrated_gradients(model, images, targets, steps=5, baseline=baseline)
  smooth = methods.smoothgrad(
      methods.integrated_gradients, noise_level=0.0, samples=3, key=jax.random.key(0))
  np.testing.assert_allclose(
      smooth(model, images, targets, steps=5, baseline=baseline), plain, rtol=1e-6)


@pytest.mark.parametrize("probe", [identity, identity_untraceable])
def test_noise_standard_deviation_is_noise_level_times_each_images_range(probe):
  """The variance of the noisy inputs is (noise_level · (max − min))², image by image."""
  images = jnp.asarray(rand(1, (3, *SHAPE)) * np.array([1.0, 0.2, 3.0]).reshape(3, 1, 1, 1))
  spread = np.asarray(images.max(axis=(1, 2, 3)) - images.min(axis=(1, 2, 3)))
  model, _ = linear_model()
  targets = np.array([0, 1, 2])
  mean = methods.smoothgrad(probe, noise_level=0.2, samples=400, key=jax.random.key(2))
  var = methods.smoothgrad(probe, noise_level=0.2, samples=400, variant="vargrad",
                           key=jax.random.key(2))
  noise_sd = 0.2 * spread
  np.testing.assert_allclose(
      mean(model, images, targets), images,
      atol=5 * float(noise_sd.max()) / np.sqrt(400))
  measured = np.asarray(var(model, images, targets)).mean(axis=(1, 2, 3))
  np.testing.assert_allclose(measured, noise_sd**2, rtol=0.05)


def test_running_statistics_match_a_direct_computation():
  """Welford's chunked mean and variance equal NumPy's on the same noisy samples."""
  model, _ = linear_model()
  images, targets = toy_batch()
  key, samples = jax.random.key(3), 12
  noisy = np.asarray(_smoothgrad._noisy_chunk(
      images, key, jnp.float32(0.3), jnp.asarray(0), samples)).reshape(samples, *images.shape)
  for variant, expected in [("smoothgrad", noisy.mean(0)), ("vargrad", noisy.var(0)),
                            ("smoothgrad_squared", (noisy**2).mean(0))]:
    for batch_size in (3, 12, 1000):  # 1, 4 and 12 samples per chunk
      smooth = methods.smoothgrad(identity_untraceable, noise_level=0.3, samples=samples,
                                  variant=variant,
                                  key=key, batch_size=batch_size)
      np.testing.assert_allclose(smooth(model, images, targets), expected, rtol=2e-5, atol=1e-6)


def test_same_key_same_maps_other_key_other_maps():
  model = toy_mlp()
  images, targets = toy_batch()
  run = lambda seed, method=methods.gradients: methods.smoothgrad(  # noqa: E731
      method, samples=6, key=jax.random.key(seed))(model, images, targets)
  np.testing.assert_array_equal(run(0), run(0))
  np.testing.assert_array_equal(run(0, untraceable_gradients), run(0, untraceable_gradients))
  assert not np.allclose(run(0), run(1))
  # The compiled scan and the per-chunk loop draw the same noise.
  np.testing.assert_allclose(run(0), run(0, untraceable_gradients), rtol=1e-5, atol=1e-7)


def test_chunking_changes_nothing():
  model = toy_mlp()
  images, targets = toy_batch()
  maps = [methods.smoothgrad(methods.gradients, samples=6, key=jax.random.key(0),
                             batch_size=size)(model, images, targets) for size in (1, 9, 100)]
  np.testing.assert_allclose(maps[0], maps[1], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(maps[0], maps[2], rtol=1e-5, atol=1e-7)


@settings(max_examples=10, deadline=None)
@given(noise=st.floats(0.0, 2.0), seed=st.integers(0, 2**31 - 1))
def test_linear_model_gradient_is_unchanged_by_any_noise(noise, seed):
  """The gradient of a linear logit is W[c] everywhere: SmoothGrad = W[c], VarGrad = 0."""
  model, weights = linear_model()
  images, targets = toy_batch()
  key = jax.random.key(seed)
  smooth = methods.smoothgrad(methods.gradients, noise_level=noise, samples=6, key=key)
  var = methods.smoothgrad(methods.gradients, noise_level=noise, samples=6, key=key,
                           variant="vargrad")
  np.testing.assert_allclose(
      smooth(model, images, targets), weights[targets].reshape(-1, *SHAPE), rtol=1e-5)
  np.testing.assert_allclose(var(model, images, targets), 0.0, atol=1e-9)


def test_squared_and_vargrad_are_unsigned_and_related():
  """SmoothGrad² = VarGrad + SmoothGrad² of the mean: E[m²] = Var[m] + E[m]²."""
  model = toy_mlp()
  images, targets = toy_batch()
  maps = {v: methods.smoothgrad(methods.gradients, samples=6, variant=v,
                                key=jax.random.key(0))(model, images, targets)
          for v in VARIANTS}
  assert float(maps["smoothgrad_squared"].min()) >= 0 and float(maps["vargrad"].min()) >= 0
  np.testing.assert_allclose(
      maps["smoothgrad_squared"], maps["vargrad"] + maps["smoothgrad"] ** 2, rtol=1e-4,
      atol=1e-8)


def test_no_recompilation_on_a_second_call():
  images, targets = toy_batch()
  smooth = methods.smoothgrad(methods.gradients, samples=6, key=jax.random.key(0))
  smooth(toy_mlp(0), images, targets)
  size = _smoothgrad._smoothgrad_traced._cache_size()
  smooth(toy_mlp(1), images * 2, np.array([2, 2, 0]))
  # Another noise level, key or variant reuses the compiled function too.
  methods.smoothgrad(methods.gradients, samples=6, noise_level=0.3, variant="vargrad",
                     key=jax.random.key(1))(toy_mlp(0), images, targets)
  assert _smoothgrad._smoothgrad_traced._cache_size() == size


def test_the_returned_method_is_named_after_what_it_wraps():
  smooth = methods.smoothgrad(methods.gradients_x_inputs, variant="vargrad",
                              key=jax.random.key(0))
  assert smooth.__name__ == "vargrad_gradients_x_inputs"


@pytest.mark.parametrize(("kwargs", "error", "words"), [
    ({"method": "gradients"}, TypeError, ["method", "str"]),
    ({"noise_level": -0.1}, ValueError, ["noise_level", ">= 0"]),
    ({"noise_level": float("nan")}, ValueError, ["noise_level"]),
    ({"noise_level": "15%"}, TypeError, ["noise_level"]),
    ({"samples": 0}, ValueError, ["samples", ">= 1"]),
    ({"samples": 2.5}, TypeError, ["samples"]),
    ({"variant": "smoothgrad2"}, ValueError, ["variant", "'vargrad'"]),
    ({"key": None}, ValueError, ["key", "PRNG key"]),
    ({"key": 0}, TypeError, ["key"]),
    ({"batch_size": 0}, ValueError, ["batch_size"]),
])
def test_bad_arguments_raise_when_wrapping(kwargs, error, words):
  args = {"method": methods.gradients, "key": jax.random.key(0), **kwargs}
  method = args.pop("method")
  with pytest.raises(error) as info:
    methods.smoothgrad(method, **args)
  for word in words:
    assert word in str(info.value)


@pytest.mark.parametrize(("images", "targets", "error", "word"), [
    (np.zeros((2, 1, 4, 5), np.float32), [0, 1], ValueError, "images"),
    (np.zeros((2, 4, 5, 1), np.uint8), [0, 1], TypeError, "images"),
    (np.full((2, 4, 5, 1), np.nan, np.float32), [0, 1], ValueError, "images"),
    (np.zeros((2, 4, 5, 1), np.float32), [0, 3], ValueError, "targets"),
    (np.zeros((2, 4, 5, 1), np.float32), [0], ValueError, "targets"),
])
def test_bad_inputs_raise_when_called(images, targets, error, word):
  smooth = methods.smoothgrad(methods.gradients, samples=2, key=jax.random.key(0))
  with pytest.raises(error, match=word):
    smooth(toy_mlp(), images, np.asarray(targets))
