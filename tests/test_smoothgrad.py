"""Tests of SmoothGrad, SmoothGrad² and VarGrad (methods/smoothgrad.py).

The noise is checked through a probe "method" that returns its input: SmoothGrad
of it is the mean of the noisy inputs (≈ x) and VarGrad their variance, which
must be (noise_level × (max − min) of each image)². With zero noise every
variant reduces to the wrapped method; the same key gives the same maps. The
engine (chunks, running statistics, one compiled scan for methods with a core,
one call per chunk for other callables) is pinned to the plain version.
"""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from model_factories import (
  SHAPE,
  Linear,
  compilations,
  linear_model,
  rand,
  toy_batch,
  toy_mlp,
)
from saliency_guide import methods
from saliency_guide.methods._cores import Core, register
from saliency_guide.models import CNN


def _identity_core(model, images, targets, operands):
  del model, targets, operands
  return images


def identity(model, images, targets):
  """A probe 'method' whose map is its (noisy) input, with a core: run in the compiled scan."""
  return _identity_core(model, images, targets, None)


register(identity, lambda model, images: Core(_identity_core))


def identity_without_core(model, images, targets):
  """The same probe without a core: smoothgrad calls it once per chunk."""
  del model, targets
  return images


def gradients_without_core(model, images, targets):
  """methods.gradients behind a callable with no core: forces the per-chunk loop."""
  return methods.gradients(model, images, targets)


def without_core(method):
  """``method`` behind a callable with no core (options passed on)."""
  return lambda model, images, targets, **options: method(model, images, targets, **options)


VARIANTS = methods.SMOOTHGRAD_VARIANTS


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "method", [methods.gradients, methods.gradients_x_inputs, gradients_without_core])
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


@pytest.mark.parametrize("probe", [identity, identity_without_core])
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


# --------------------------------------------------------------------------------------
# The engine equals the plain version.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("probe", [identity, identity_without_core])
def test_engine_equals_the_plain_version_however_the_samples_are_chunked(probe, variant):
  """Chunked running statistics = the statistic of all noisy samples at once (same noise)."""
  model, _ = linear_model()
  images, targets = toy_batch()
  key, samples = jax.random.key(3), 12
  plain = methods.smoothgrad_plain(probe, model, images, targets, noise_level=0.3,
                                   samples=samples, variant=variant, key=key)
  for batch_size in (3, 12, 1000):  # 1, 4 and 12 samples per chunk
    smooth = methods.smoothgrad(probe, noise_level=0.3, samples=samples, variant=variant,
                                key=key, batch_size=batch_size)
    np.testing.assert_allclose(smooth(model, images, targets), plain, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("method", [methods.gradients, methods.integrated_gradients])
def test_engine_equals_the_plain_version_for_methods(method):
  model = toy_mlp()
  images, targets = toy_batch()
  options = {"steps": 5} if method is methods.integrated_gradients else {}
  plain = methods.smoothgrad_plain(method, model, images, targets, samples=6,
                                   key=jax.random.key(1), **options)
  smooth = methods.smoothgrad(method, samples=6, key=jax.random.key(1), batch_size=6)
  np.testing.assert_allclose(smooth(model, images, targets, **options), plain,
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", [methods.grad_cam, without_core(methods.grad_cam)])
def test_maps_without_a_channel_axis(method):
  """CAM-family maps are (B, H, W): averaged as they are, with or without a core."""
  model = CNN(channels=(2, 3), hidden=4, rngs=nnx.Rngs(0))
  images, targets = jnp.asarray(rand(0, (3, 28, 28, 1))), jnp.array([0, 5, 9])
  plain = methods.smoothgrad_plain(methods.grad_cam, model, images, targets, samples=4,
                                   key=jax.random.key(2), layer="conv1")
  smooth = methods.smoothgrad(method, samples=4, key=jax.random.key(2), batch_size=6)
  maps = smooth(model, images, targets, layer="conv1")
  assert maps.shape == images.shape[:3]
  np.testing.assert_allclose(maps, plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("probe", [identity, identity_without_core])
def test_colour_images(probe):
  """C = 3: each noisy copy keeps its own image and channels (no reshape across them)."""
  shape = (8, 8, 3)
  model = Linear(rand(0, (10, int(np.prod(shape)))), rand(1, (10,)), image_shape=shape)
  images, targets = jnp.asarray(rand(2, (2, *shape))), jnp.array([0, 1])
  plain = methods.smoothgrad_plain(probe, model, images, targets, samples=4,
                                   key=jax.random.key(0))
  smooth = methods.smoothgrad(probe, samples=4, key=jax.random.key(0), batch_size=4)
  np.testing.assert_allclose(smooth(model, images, targets), plain, rtol=1e-5, atol=1e-6)


def test_smoothgrad_of_integrated_gradients_with_options_is_one_compiled_program():
  """The IG core runs inside smoothgrad's scan: one compilation, the per-chunk loop's maps."""
  model = toy_mlp()
  images, targets = toy_batch(4)
  options = {"steps": 5, "baseline": np.full(SHAPE, 0.2, np.float32),
             "method": "riemann_middle", "internal_batch_size": 7}
  methods.integrated_gradients(model, images, targets, **options)  # the checks, compiled
  key = jax.random.key(0)
  smooth = methods.smoothgrad(methods.integrated_gradients, samples=6, key=key, batch_size=8)
  with compilations() as compiles:
    maps = smooth(model, images, targets, **options)
  assert len(compiles) == 1
  loop = methods.smoothgrad(without_core(methods.integrated_gradients), samples=6, key=key,
                            batch_size=8)
  np.testing.assert_allclose(maps, loop(model, images, targets, **options),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("baseline", ["blur", "uniform"])
def test_named_baselines_are_made_from_each_noisy_copy(baseline):
  """In the scan, a named baseline is made from the noisy images, as the per-chunk loop does."""
  model = toy_mlp()
  images, targets = toy_batch()
  options = {"steps": 4, "baseline": baseline, "key": jax.random.key(5), "sigma": 1.0}
  run = lambda method: methods.smoothgrad(  # noqa: E731
      method, samples=4, key=jax.random.key(0), batch_size=6)(model, images, targets, **options)
  np.testing.assert_allclose(run(methods.integrated_gradients),
                             run(without_core(methods.integrated_gradients)),
                             rtol=1e-5, atol=1e-6)


def test_a_baseline_per_image_is_tiled_over_the_noisy_copies():
  model = toy_mlp()
  images, targets = toy_batch()
  baseline = rand(4, images.shape)
  smooth = methods.smoothgrad(methods.integrated_gradients, samples=4, key=jax.random.key(0),
                              batch_size=12)  # 4 noisy copies of the batch per pass
  plain = methods.smoothgrad_plain(methods.integrated_gradients, model, images, targets,
                                   samples=4, key=jax.random.key(0), steps=4, baseline=baseline)
  np.testing.assert_allclose(smooth(model, images, targets, steps=4, baseline=baseline), plain,
                             rtol=1e-5, atol=1e-6)


def test_smoothgrad_of_expected_gradients_equals_the_per_chunk_loop():
  model = toy_mlp()
  images, targets = toy_batch()
  options = {"references": rand(2, (4, *SHAPE)), "samples": 5, "key": jax.random.key(4)}
  run = lambda method: methods.smoothgrad(  # noqa: E731
      method, samples=4, key=jax.random.key(0), batch_size=6)(model, images, targets, **options)
  np.testing.assert_allclose(run(methods.expected_gradients),
                             run(without_core(methods.expected_gradients)),
                             rtol=1e-5, atol=1e-6)


def test_a_smoothed_method_has_a_core_and_can_be_smoothed_again():
  model = toy_mlp()
  images, targets = toy_batch()
  inner = methods.smoothgrad(methods.gradients, samples=2, key=jax.random.key(1))
  assert isinstance(methods.core(inner, model, jnp.asarray(images)), Core)
  assert methods.core(methods.smoothgrad(identity_without_core, key=jax.random.key(1)),
                      model, jnp.asarray(images)) is None
  run = lambda method: methods.smoothgrad(  # noqa: E731
      method, samples=3, key=jax.random.key(0))(model, images, targets)
  np.testing.assert_allclose(run(inner), run(without_core(inner)), rtol=1e-5, atol=1e-6)


def test_a_users_own_callable_with_options_is_called_once_per_chunk():
  model = toy_mlp()
  images, targets = toy_batch()
  calls = []

  def scaled_gradients(model, images, targets, *, scale):
    calls.append(len(images))
    return scale * methods.gradients(model, images, targets)

  smooth = methods.smoothgrad(scaled_gradients, samples=6, key=jax.random.key(0), batch_size=6)
  maps = smooth(model, images, targets, scale=2.0)
  assert calls == [6, 6, 6]  # 2 noisy copies of the batch of 3 per call
  reference = methods.smoothgrad(methods.gradients, samples=6, key=jax.random.key(0))
  np.testing.assert_allclose(maps, 2.0 * reference(model, images, targets), rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------------------
# Properties.
# --------------------------------------------------------------------------------------


def test_same_key_same_maps_other_key_other_maps():
  model = toy_mlp()
  images, targets = toy_batch()
  run = lambda seed, method=methods.gradients: methods.smoothgrad(  # noqa: E731
      method, samples=6, key=jax.random.key(seed))(model, images, targets)
  np.testing.assert_array_equal(run(0), run(0))
  np.testing.assert_array_equal(run(0, gradients_without_core), run(0, gradients_without_core))
  assert not np.allclose(run(0), run(1))
  # The compiled scan and the per-chunk loop draw the same noise.
  np.testing.assert_allclose(run(0), run(0, gradients_without_core), rtol=1e-5, atol=1e-7)


def test_one_key_shares_the_noise_between_two_inputs_independent_keys_do_not():
  """Why the SmoothGrad page compares the maps of x and x + δ with independent keys.

  With the probe, SmoothGrad is the mean of the noisy copies. A constant shift keeps
  each image's value range, hence the noise scale: with one key the two means differ
  by exactly the shift (the noise, and its Monte Carlo error, cancel); with two keys
  they also differ by the Monte Carlo error.
  """
  model = toy_mlp()
  images, targets = toy_batch()
  shifted = images + np.float32(0.25)
  smooth = lambda seed, x: methods.smoothgrad(  # noqa: E731
      identity, samples=4, key=jax.random.key(seed))(model, x, targets)
  np.testing.assert_allclose(smooth(0, shifted) - smooth(0, images), 0.25, atol=1e-6)
  assert np.abs(smooth(1, shifted) - smooth(0, images) - 0.25).max() > 1e-2


def test_chunking_changes_nothing():
  model = toy_mlp()
  images, targets = toy_batch()
  maps = [methods.smoothgrad(methods.gradients, samples=6, key=jax.random.key(0),
                             batch_size=size)(model, images, targets) for size in (1, 9, 100)]
  np.testing.assert_allclose(maps[0], maps[1], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(maps[0], maps[2], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", [methods.gradients, methods.grad_cam])
@pytest.mark.parametrize("batch_size", [3, 1000])
def test_noise_drawn_before_the_passes_gives_bitwise_the_same_maps(monkeypatch, method,
                                                                   batch_size):
  """With the fast-conv opt-in the noisy copies are drawn before the passes: the same
  values, so the same maps, bit for bit (one chunk per sample, or all in one)."""
  engine = importlib.import_module("saliency_guide.methods.smoothgrad")  # the module
  model = CNN(channels=(2, 3), hidden=4, rngs=nnx.Rngs(0))
  images, targets = rand(0, (5, 28, 28, 1)), jnp.arange(5) % 10
  maps, asked = {}, []
  for first in (False, True):
    def choose(images, samples, first=first):
      asked.append(first)
      return first

    monkeypatch.setattr(engine, "_noise_first", choose)
    jax.clear_caches()  # the choice is made when the core is traced
    smooth = methods.smoothgrad(method, samples=6, key=jax.random.key(2),
                                variant="vargrad", batch_size=batch_size)
    maps[first] = np.asarray(smooth(model, images, targets))
  assert set(asked) == {False, True}  # both orders were traced
  assert np.array_equal(maps[False], maps[True])


def test_noise_is_drawn_first_only_with_the_opt_in_and_while_it_fits(monkeypatch):
  from saliency_guide import layers

  engine = importlib.import_module("saliency_guide.methods.smoothgrad")

  images = jnp.zeros((256, 28, 28, 1))
  monkeypatch.setattr(layers, "ynn_fusions_off", lambda: False)
  assert not engine._noise_first(images, 25)  # XLA:CPU's defaults: inside each pass
  monkeypatch.setattr(layers, "ynn_fusions_off", lambda: True)
  assert engine._noise_first(images, 25)  # 20 MB of noisy copies
  too_many = engine.NOISE_FIRST_BYTES // (images.size * 4) + 1
  assert not engine._noise_first(images, too_many)


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


def test_no_recompilation_for_new_data_weights_noise_level_key_or_variant():
  images, targets = toy_batch()
  smooth = methods.smoothgrad(methods.gradients, samples=6, key=jax.random.key(0))
  smooth(toy_mlp(0), images, targets)
  other = methods.smoothgrad(methods.gradients, samples=6, noise_level=0.3, variant="vargrad",
                             key=jax.random.key(1))
  model = toy_mlp(1)
  with compilations() as compiles:
    smooth(model, images * 2, targets[::-1])
    other(model, images, targets)
  assert compiles == []


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


def test_bad_options_of_the_wrapped_method_raise_when_called():
  smooth = methods.smoothgrad(methods.integrated_gradients, samples=2, key=jax.random.key(0))
  images, targets = toy_batch()
  with pytest.raises(ValueError, match="steps"):
    smooth(toy_mlp(), images, targets, steps=0)


@pytest.mark.parametrize("kwargs, error, words", [
    ({"samples": 0}, ValueError, "samples"),
    ({"noise_level": -0.1}, ValueError, "noise_level"),
    ({"variant": "sg"}, ValueError, "variant"),
    ({"key": None}, ValueError, "key"),
])
def test_plain_version_rejects_bad_options(kwargs, error, words):
  model = toy_mlp()
  images, targets = toy_batch()
  options = {"key": jax.random.key(0), **kwargs}
  with pytest.raises(error, match=words):
    methods.smoothgrad_plain(methods.gradients, model, images, targets, **options)
