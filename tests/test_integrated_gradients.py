"""Tests of Integrated Gradients (methods/integrated_gradients.py), its quadrature and baselines.

What the maths guarantees and the tests check:
* every quadrature rule's weights sum to 1 and integrate low-degree polynomials
  exactly (Gauss–Legendre with n nodes: up to degree 2n - 1, and not 2n);
* for a linear model f(x) = W vec(x) + b, IG = (x - x') ⊙ W[c] for every rule and
  step count;
* completeness, Σ IG = f_c(x) - f_c(x') with f_c the *logit*, within 1 % on a
  CNN with 128 Gauss–Legendre steps; linearity and implementation invariance;
* the chunked engine equals the plain version (every path point at once), however
  the path is chunked (internal_batch_size).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

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
from saliency_guide.methods._path_engine import _plan
from saliency_guide.models import CNN

RULES = methods.QUADRATURE_RULES


@pytest.fixture(scope="module")
def cnn() -> CNN:
  return numpy_model(lambda: CNN(rngs=nnx.Rngs(0)))


logits_of = nnx.jit(lambda model, x: model(x))


def min_steps(rule: str) -> int:
  return 2 if rule == "riemann_trapezoid" else 1


# --------------------------------------------------------------------------------------
# Quadrature.
# --------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(rule=st.sampled_from(RULES), steps=st.integers(2, 300))
def test_quadrature_weights_sum_to_one_and_nodes_lie_in_the_unit_interval(rule, steps):
  alphas, weights = methods.quadrature(rule, steps)
  assert alphas.shape == weights.shape == (steps,)
  assert abs(weights.sum() - 1.0) < 1e-12
  assert (weights > 0).all()
  assert (alphas >= 0).all() and (alphas <= 1).all()


@pytest.mark.parametrize(("rule", "degree"), [
    ("riemann_left", 0), ("riemann_right", 0), ("riemann_middle", 1), ("riemann_trapezoid", 1),
])
@pytest.mark.parametrize("steps", [2, 3, 10])
def test_riemann_rules_are_exact_to_their_degree_and_no_further(rule, degree, steps):
  alphas, weights = methods.quadrature(rule, steps)
  for d in range(degree + 1):
    assert weights @ alphas**d == pytest.approx(1 / (d + 1), abs=1e-14)
  assert abs(weights @ alphas ** (degree + 1) - 1 / (degree + 2)) > 1e-6


@settings(max_examples=40, deadline=None)
@given(steps=st.integers(1, 30), data=st.data())
def test_gauss_legendre_is_exact_to_degree_2n_minus_1(steps, data):
  alphas, weights = methods.quadrature("gausslegendre", steps)
  degree = data.draw(st.integers(0, 2 * steps - 1))
  assert weights @ alphas**degree == pytest.approx(1 / (degree + 1), rel=1e-11)


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5, 6])
def test_gauss_legendre_error_at_degree_2n_is_the_textbook_remainder(steps):
  """∫_0^1 α^{2n} dα - Σ w_k α_k^{2n} = (n!)^4 / ((2n + 1) ((2n)!)^2) > 0."""
  alphas, weights = methods.quadrature("gausslegendre", steps)
  error = 1 / (2 * steps + 1) - weights @ alphas ** (2 * steps)
  f = math.factorial
  assert error == pytest.approx(f(steps) ** 4 / ((2 * steps + 1) * f(2 * steps) ** 2), rel=1e-6)


def test_documented_nodes_and_weights():
  np.testing.assert_allclose(methods.quadrature("riemann_left", 4)[0], [0, 0.25, 0.5, 0.75])
  np.testing.assert_allclose(methods.quadrature("riemann_right", 4)[0], [0.25, 0.5, 0.75, 1])
  np.testing.assert_allclose(
      methods.quadrature("riemann_middle", 4)[0], [0.125, 0.375, 0.625, 0.875]
  )
  alphas, weights = methods.quadrature("riemann_trapezoid", 3)
  np.testing.assert_allclose(alphas, [0, 0.5, 1])
  np.testing.assert_allclose(weights, [0.25, 0.5, 0.25])  # Captum: [1/6, 1/3, 1/6]
  alphas, weights = methods.quadrature("gausslegendre", 2)
  np.testing.assert_allclose(alphas, [0.5 - 0.5 / np.sqrt(3), 0.5 + 0.5 / np.sqrt(3)])
  np.testing.assert_allclose(weights, [0.5, 0.5])


def captum_rule(rule: str, n: int) -> tuple[np.ndarray, np.ndarray]:
  """Captum's nodes and weights (captum/attr/_utils/approximation_methods.py), restated.

  Riemann rules: step 1/n for every node, halved at both ends for the trapezoid;
  nodes linspace(0, 1, n) (trapezoid), linspace(0, 1 - 1/n, n) (left),
  linspace(1/(2n), 1 - 1/(2n), n) (middle), linspace(1/n, 1, n) (right).
  Gauss–Legendre: numpy's leggauss mapped to [0, 1].
  """
  if rule == "gausslegendre":
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return 0.5 * (1 + nodes), 0.5 * weights
  weights = np.full(n, 1 / n)
  if rule == "riemann_trapezoid":
    weights[[0, -1]] /= 2
  start, stop = {"riemann_trapezoid": (0, 1), "riemann_left": (0, 1 - 1 / n),
                 "riemann_middle": (1 / (2 * n), 1 - 1 / (2 * n)),
                 "riemann_right": (1 / n, 1)}[rule]
  return np.linspace(start, stop, n), weights


@pytest.mark.parametrize("rule", [r for r in RULES if r != "riemann_trapezoid"])
@pytest.mark.parametrize("steps", [2, 3, 7, 64])
def test_four_rules_have_captums_nodes_and_weights(rule, steps):
  alphas, weights = methods.quadrature(rule, steps)
  captum_alphas, captum_weights = captum_rule(rule, steps)
  np.testing.assert_allclose(alphas, captum_alphas, rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(weights, captum_weights, rtol=1e-12)


@pytest.mark.parametrize("steps", [2, 3, 7, 64])
def test_captums_trapezoid_is_ours_times_n_minus_1_over_n(steps):
  """Same nodes; Captum's weights (step 1/n, ends halved) sum to (n - 1)/n, ours to 1."""
  alphas, weights = methods.quadrature("riemann_trapezoid", steps)
  captum_alphas, captum_weights = captum_rule("riemann_trapezoid", steps)
  np.testing.assert_allclose(alphas, captum_alphas, rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(captum_weights, (steps - 1) / steps * weights, rtol=1e-12)
  assert captum_weights.sum() == pytest.approx((steps - 1) / steps, rel=1e-12)


@pytest.mark.parametrize(("rule", "steps", "error", "word"), [
    ("simpson", 8, ValueError, "method"),
    ("gausslegendre", 0, ValueError, "steps"),
    ("gausslegendre", 2.0, TypeError, "steps"),
    ("riemann_trapezoid", 1, ValueError, "steps"),
])
def test_quadrature_rejects_bad_arguments(rule, steps, error, word):
  with pytest.raises(error, match=word):
    methods.quadrature(rule, steps)


# --------------------------------------------------------------------------------------
# Integrated Gradients on models where the answer is known.
# --------------------------------------------------------------------------------------


class PaperSaturation(nnx.Module):
  """Logit 0 is f(x) = 1 - ReLU(1 - Σ_i x_i), Sundararajan et al.'s saturating example."""

  def __call__(self, images):
    score = 1 - jax.nn.relu(1 - images.reshape(images.shape[0], -1).sum(1))
    return jnp.stack([score, -score], axis=1)


def test_saturation_only_the_integral_is_complete():
  """Σ x = 2: the gradient at x is 0, so GxI = 0; IG recovers f(x) - f(0) = 1 exactly.

  Along the path Σ αx = 2α crosses 1 at α = 1/2: the integrand is 2 before, 0 after,
  and the midpoint rule with 8 nodes puts exactly 4 of them before the jump.
  """
  model, images = PaperSaturation(), np.full((1, *SHAPE), 2 / np.prod(SHAPE), np.float32)
  targets = np.zeros(1, np.int32)
  assert float(jnp.abs(methods.gradients_x_inputs(model, images, targets)).max()) == 0.0
  for ig in (methods.integrated_gradients, methods.integrated_gradients_plain):
    maps = ig(model, images, targets, steps=8, method="riemann_middle")
    assert float(maps.sum()) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(maps, images / 2, atol=1e-7)  # Σ x_i/2 = 1, shared evenly


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("steps", [1, 7])
def test_linear_model_ig_is_input_minus_baseline_times_weights(rule, steps):
  steps = max(steps, min_steps(rule))
  model, weights = linear_model()
  images, targets = toy_batch()
  baseline = rand(9, SHAPE)
  maps, delta = methods.integrated_gradients(
      model, images, targets, baseline=baseline, steps=steps, method=rule, return_delta=True
  )
  expected = (images - baseline) * weights[targets].reshape(-1, *SHAPE)
  np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(delta, 0, atol=1e-5)


def test_completeness_on_a_cnn_with_128_gauss_legendre_steps(cnn):
  """Σ_i IG_i = f_c(x) - f_c(x') for the logit, computed here from the model itself.

  A softmax inside the method, or the loss instead of the logit, would give
  sums equal to probability or loss differences and fail.
  """
  blobs = jnp.asarray(rand(0, (4, 7, 7, 1)) > 0.6)
  images = jax.image.resize(blobs.astype(jnp.float32), (4, 28, 28, 1), "linear")
  gaps = logits_of(cnn, images) - logits_of(cnn, jnp.zeros_like(images))
  targets = np.asarray(jnp.abs(gaps).argmax(axis=1))  # the class whose logit moves most
  gap = gaps[jnp.arange(4), targets]
  maps, delta = methods.integrated_gradients(
      cnn, images, targets, steps=128, method="gausslegendre", return_delta=True
  )
  sums = maps.sum(axis=(1, 2, 3))
  np.testing.assert_allclose(sums, gap, rtol=0.01)
  np.testing.assert_allclose(delta, sums - gap, atol=1e-4)
  # Few steps are measurably worse, so the tolerance above is not vacuous.
  _, coarse = methods.integrated_gradients(
      cnn, images, targets, steps=2, method="riemann_right", return_delta=True
  )
  assert float(jnp.abs(coarse).max()) > 0.01 * float(jnp.abs(gap).max())


def test_linearity_axiom():
  """IG of a·f + b·g equals a·IG(f) + b·IG(g) (same baseline, same path)."""

  class Mix(nnx.Module):
    def __init__(self, f, g):
      self.f, self.g, self.image_shape = f, g, SHAPE

    def __call__(self, x):
      return 2.0 * self.f(x) - 0.5 * self.g(x)

  f = toy_mlp(1)
  g = toy_mlp(2)
  images, targets = toy_batch()
  ig = lambda m: methods.integrated_gradients(m, images, targets, steps=16)  # noqa: E731
  np.testing.assert_allclose(ig(Mix(f, g)), 2.0 * ig(f) - 0.5 * ig(g), rtol=1e-4, atol=1e-6)


def test_implementation_invariance():
  """Two functionally equal networks (hidden units permuted) get the same attributions."""
  model = toy_mlp(4)
  permuted = toy_mlp(5)
  order = np.random.default_rng(0).permutation(8)
  permuted.hidden[0].kernel[...] = model.hidden[0].kernel[...][:, order]
  permuted.hidden[0].bias[...] = model.hidden[0].bias[...][order]
  permuted.head.kernel[...] = model.head.kernel[...][order]
  permuted.head.bias[...] = model.head.bias[...]
  images, targets = toy_batch()
  np.testing.assert_allclose(
      methods.integrated_gradients(model, images, targets, steps=8),
      methods.integrated_gradients(permuted, images, targets, steps=8), rtol=1e-4, atol=1e-6,
  )


# --------------------------------------------------------------------------------------
# The engine equals the plain version.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("per_pass", [1, 3, 7, 35, 1000])
def test_engine_equals_the_plain_version_however_the_path_is_chunked(rule, per_pass):
  """Batch 5 × 7 steps in passes of 1, 3, 7, 35 or 1000 points (padded), vs all at once."""
  model = toy_mlp(0)
  images, targets = toy_batch(5)
  baseline = rand(9, images.shape)  # one baseline per image
  plain = methods.integrated_gradients_plain(
      model, images, targets, baseline=baseline, steps=7, method=rule)
  maps, delta = methods.integrated_gradients(
      model, images, targets, baseline=baseline, steps=7, method=rule, return_delta=True,
      internal_batch_size=per_pass)
  np.testing.assert_allclose(maps, plain, rtol=1e-5, atol=1e-6)
  gap = logits_of(model, images) - logits_of(model, jnp.asarray(baseline))
  np.testing.assert_allclose(
      delta, plain.sum(axis=(1, 2, 3)) - gap[np.arange(5), targets], atol=1e-5)


@pytest.mark.parametrize("baseline", [None, 0.3, "image", "batch of one", "per image"])
def test_engine_equals_the_plain_version_for_every_kind_of_baseline_array(cnn, baseline):
  images = rand(1, (3, 28, 28, 1))
  targets = np.array([2, 5, 8])
  baseline = {"image": rand(2, (28, 28, 1)), "batch of one": rand(2, (1, 28, 28, 1)),
              "per image": rand(2, (3, 28, 28, 1))}.get(baseline, baseline)
  plain = methods.integrated_gradients_plain(cnn, images, targets, baseline=baseline, steps=6)
  engine = methods.integrated_gradients(
      cnn, images, targets, baseline=baseline, steps=6, internal_batch_size=5)
  np.testing.assert_allclose(engine, plain, rtol=1e-4, atol=1e-6)


def test_plan_never_exceeds_the_pass_size():
  for batch in (1, 3, 64, 100, 256):
    for points in (1, 7, 64):
      for per_pass in (1, 16, 64, 500):
        groups, per_group, chunks, per_chunk = _plan(batch, points, per_pass)
        assert groups * per_group >= batch and chunks * per_chunk >= points
        assert per_group * per_chunk <= max(per_pass, per_group)


# --------------------------------------------------------------------------------------
# Baselines.
# --------------------------------------------------------------------------------------


def test_black_baseline_is_the_default_and_gives_zero_on_zero_pixels():
  model = toy_mlp(0)
  images, targets = toy_batch()
  images[:, 0] = 0.0
  default = methods.integrated_gradients(model, images, targets, steps=4)
  black = methods.integrated_gradients(model, images, targets, steps=4, baseline="black")
  zeros = methods.integrated_gradients(model, images, targets, steps=4, baseline=0.0)
  np.testing.assert_array_equal(default, black)
  np.testing.assert_allclose(default, zeros, rtol=1e-6)
  assert float(jnp.abs(default[:, 0]).max()) == 0.0


@pytest.mark.parametrize("shape", [(), SHAPE, (1, *SHAPE), (3, *SHAPE)])
def test_baseline_shapes_that_broadcast_explicitly(shape):
  model, weights = linear_model()
  images, targets = toy_batch()
  baseline = np.full(shape, 0.25, np.float32)
  maps = methods.integrated_gradients(model, images, targets, baseline=baseline, steps=2)
  expected = (images - 0.25) * weights[targets].reshape(-1, *SHAPE)
  np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-6)


def test_named_baselines():
  images = jnp.asarray(rand(0, (2, 28, 28, 1)) * np.array([1.0, 0.5]).reshape(2, 1, 1, 1))
  low, high = images.min(axis=(1, 2, 3)), images.max(axis=(1, 2, 3))
  key = jax.random.key(1)
  uniform = methods.make_baseline("uniform", images, key=key)
  np.testing.assert_array_equal(uniform, methods.make_baseline("uniform", images, key=key))
  assert not np.allclose(uniform, methods.make_baseline("uniform", images, key=jax.random.key(2)))
  for b in range(2):
    assert low[b] <= uniform[b].min() and uniform[b].max() <= high[b]
    assert abs(float(uniform[b].mean()) - float(low[b] + high[b]) / 2) < 0.05 * float(high[b])
  gauss = methods.make_baseline("gaussian", images, key=key, sigma=0.1)
  assert float(jnp.abs(gauss - images).mean()) > 0.01
  for b in range(2):
    assert low[b] <= gauss[b].min() and gauss[b].max() <= high[b]
  np.testing.assert_array_equal(methods.make_baseline("black", images), 0.0)
  # Blur: a point spreads into a normalised Gaussian of the requested width.
  point = jnp.zeros((1, 28, 28, 1)).at[0, 14, 14, 0].set(1.0)
  blurred = methods.make_baseline("blur", point, sigma=2.0)[0, :, :, 0]
  assert float(blurred.sum()) == pytest.approx(1.0, rel=1e-5)
  rows = np.arange(28) - 14
  variance = float((blurred.sum(axis=1) * rows**2).sum())
  assert variance == pytest.approx(4.0, rel=0.02)
  np.testing.assert_allclose(blurred, blurred.T, atol=1e-7)
  # A constant image stays constant (edge-replicated borders).
  np.testing.assert_allclose(
      methods.make_baseline("blur", jnp.full((1, 9, 9, 2), 0.3)), 0.3, rtol=1e-6)


def test_random_baseline_needs_a_key_and_is_reproducible():
  model = toy_mlp(0)
  images, targets = toy_batch()
  for name in ("uniform", "gaussian"):
    with pytest.raises(ValueError, match=f"key: the '{name}' baseline is random"):
      methods.integrated_gradients(model, images, targets, baseline=name)
    first = methods.integrated_gradients(
        model, images, targets, baseline=name, key=jax.random.key(0), steps=4)
    again = methods.integrated_gradients(
        model, images, targets, baseline=name, key=jax.random.key(0), steps=4)
    other = methods.integrated_gradients(
        model, images, targets, baseline=name, key=jax.random.key(1), steps=4)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_named_baseline_equals_the_same_baseline_given_as_an_array():
  model = toy_mlp(0)
  images, targets = toy_batch()
  for name, key in (("blur", None), ("uniform", jax.random.key(3))):
    named = methods.integrated_gradients(
        model, images, targets, baseline=name, key=key, sigma=1.0 if key is None else None,
        steps=4)
    array = methods.make_baseline(name, images, key=key, sigma=1.0 if key is None else None)
    given_ = methods.integrated_gradients(model, images, targets, baseline=array, steps=4)
    np.testing.assert_allclose(named, given_, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------------------
# Compilation and bad input.
# --------------------------------------------------------------------------------------


def test_no_recompilation_for_new_data_weights_rules_or_baseline_values():
  x, t = toy_batch(2)
  methods.integrated_gradients(toy_mlp(0), x, t, steps=4)
  methods.integrated_gradients(toy_mlp(0), x, t, steps=4, baseline=jnp.ones_like(x))
  other_baseline = np.full_like(x, 0.3)
  with compilations() as compiles:
    methods.integrated_gradients(toy_mlp(1), x * 0.5, t[::-1], steps=4)
    methods.integrated_gradients(toy_mlp(2), x, t, steps=4, baseline=other_baseline)
    methods.integrated_gradients(toy_mlp(2), x, t, steps=4, method="riemann_left")
  assert compiles == []
  with compilations() as compiles:
    methods.integrated_gradients(toy_mlp(2), x, t, steps=5)  # a new number of steps compiles
  assert len(compiles) == 1


GOOD = np.zeros((2, 28, 28, 1), np.float32)


@pytest.mark.parametrize(("kwargs", "error", "words"), [
    ({"images": np.zeros((28, 28, 1), np.float32)}, ValueError, ["images", "rank 4"]),
    ({"images": np.zeros((2, 1, 28, 28), np.float32)}, ValueError, ["images", "NCHW"]),
    ({"images": np.zeros((2, 28, 28, 1), np.int32)}, TypeError, ["images", "floating"]),
    ({"images": np.full((2, 28, 28, 1), np.inf, np.float32)}, ValueError, ["images", "finite"]),
    ({"targets": np.array([0, 12])}, ValueError, ["targets", "[0, 10)"]),
    ({"targets": np.array([0, 1, 2])}, ValueError, ["targets", "shape (2,)"]),
    ({"steps": 0}, ValueError, ["steps", ">= 1"]),
    ({"steps": 1, "method": "riemann_trapezoid"}, ValueError, ["steps", ">= 2"]),
    ({"method": "trapezoid"}, ValueError, ["method", "'riemann_trapezoid'"]),
    ({"baseline": "zeros"}, ValueError, ["baseline", "'blur'"]),
    ({"baseline": np.zeros((2, 1, 28, 28), np.float32)}, ValueError,
     ["baseline", "shape (2, 1, 28, 28)"]),
    ({"baseline": np.zeros((3, 28, 28, 1), np.float32)}, ValueError, ["baseline", "(3, 28"]),
    ({"baseline": np.zeros((28, 28), np.float32)}, ValueError, ["baseline", "(28, 28)"]),
    ({"baseline": np.zeros((2, 28, 28, 1), np.int32)}, TypeError, ["baseline", "floating"]),
    ({"baseline": np.full((28, 28, 1), np.nan, np.float32)}, ValueError,
     ["baseline", "finite"]),
    ({"baseline": "uniform"}, ValueError, ["key", "PRNG key"]),
    ({"baseline": "uniform", "key": 0}, TypeError, ["key", "jax.random.key"]),
    ({"baseline": "blur", "sigma": -1.0}, ValueError, ["sigma", "> 0"]),
    ({"return_delta": 1}, TypeError, ["return_delta"]),
    ({"internal_batch_size": 0}, ValueError, ["internal_batch_size"]),
])
def test_integrated_gradients_bad_input(cnn, kwargs, error, words):
  args = {"images": GOOD, "targets": np.array([0, 1]), **kwargs}
  with pytest.raises(error) as info:
    methods.integrated_gradients(cnn, **args)
  for word in words:
    assert word in str(info.value)


@pytest.mark.parametrize("kwargs, error, words", [
    ({"steps": 0}, ValueError, "steps"),
    ({"method": "simpson"}, ValueError, "method"),
    ({"baseline": np.zeros((7, *SHAPE), np.float32)}, ValueError, "baseline"),
    ({"baseline": "black"}, TypeError, "baseline"),
])
def test_plain_version_rejects_bad_options(kwargs, error, words):
  model = toy_mlp()
  images, targets = toy_batch()
  with pytest.raises(error, match=words):
    methods.integrated_gradients_plain(model, images, targets, **kwargs)
