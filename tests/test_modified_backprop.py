"""Tests of Deconvolution and Guided Backpropagation (saliency_guide.methods._modified_backprop).

What is pinned down:

* the two backward rules on hand-computed inputs, including the conventions at
  x = 0 (nothing passes, like the gradient of ``jax.nn.relu``) and R = 0;
* the whole-network maps against an independent layer-by-layer reference that
  applies the rule by hand between per-layer ``jax.vjp``s (MLP, CNN, GapCNN),
  which catches a rule applied to the wrong tensor, a missed ReLU or a
  modified non-ReLU layer;
* "a network with no ReLU": the methods must refuse a model that has no ReLU to
  modify (no ``activation`` attribute, or an ``activation`` that is not a ReLU,
  such as the identity), instead of silently returning the plain gradient.
  The property the maths gives for such a network — all three rules coincide —
  is tested on a CNN whose ReLUs never act (every ReLU input is positive and
  every backward signal non-negative, so each ReLU is the identity in both
  directions): there the three maps must be equal;
* guided (and deconvnet) signals are never negative below the first ReLU;
* the caller's model is untouched, and alternating rules under ``jit`` never
  reuses a compilation of the other rule.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from saliency_guide import methods
from saliency_guide.layers import max_pool_2x2, relu
from saliency_guide.methods import _modified_backprop as mb
from saliency_guide.methods._core import logit_gradient
from saliency_guide.models import CNN, MLP, GapCNN

METHODS = {"deconvolution": methods.deconvolution, "guided_backprop": methods.guided_backprop}
RULES = {"gradient": relu, "deconvolution": mb.deconv_relu, "guided_backprop": mb.guided_relu}


def small(model_cls, seed=0):
  """A fresh small model (a clone: tests may modify it; building once saves compilations)."""
  return nnx.clone(_small(model_cls, seed))


SMALL = {
    MLP: lambda rngs: MLP(hidden=(32, 16), rngs=rngs),
    CNN: lambda rngs: CNN(channels=(4, 6), hidden=12, rngs=rngs),
    GapCNN: lambda rngs: GapCNN(channels=(4, 6, 8), rngs=rngs),
}


@functools.cache
def _small(model_cls, seed):
  """Built abstractly and filled from NumPy: JAX's truncated-normal initialiser takes
  seconds to compile on the CPU for every new shape, and the tests need no particular
  initialisation, only generic weights (LeCun-normal scale, zero biases)."""
  graphdef, state = nnx.split(nnx.eval_shape(lambda: SMALL[model_cls](nnx.Rngs(0))))
  rng = np.random.default_rng(seed)

  def draw(leaf):
    if len(leaf.shape) < 2:
      return jnp.zeros(leaf.shape, leaf.dtype)
    fan_in = np.prod(leaf.shape[:-1])
    return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), leaf.dtype)

  return nnx.merge(graphdef, jax.tree.map(draw, state))


def images_for(seed=0, batch=3, signed=False):
  x = np.random.default_rng(seed).uniform(size=(batch, 28, 28, 1)).astype(np.float32)
  return jnp.asarray(2 * x - 1 if signed else x)


@functools.partial(jax.jit, static_argnums=0)
def _plain_gradient(graphdef, state, images, targets):
  return logit_gradient(nnx.merge(graphdef, state), images, targets)


def plain_gradient(model, images, targets):
  """The ordinary gradient of the target logit, jitted (eager ``jax.grad`` is slow to dispatch)."""
  return _plain_gradient(*nnx.split(model), images, targets)


def randomize_biases(model, seed=1):
  """Nonzero biases, so that ReLU masks do not merely follow the input's sign."""
  rng = np.random.default_rng(seed)
  for _, module in nnx.iter_modules(model):
    if isinstance(module, nnx.Linear | nnx.Conv):
      module.bias[...] = jnp.asarray(0.1 * rng.normal(size=module.bias.shape), jnp.float32)
  return model


# --------------------------------------------------------------------------- #
# The rules on one ReLU.                                                       #
# --------------------------------------------------------------------------- #

X = jnp.array([-2.0, -1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
R = jnp.array([3.0, -3.0, 2.0, -2.0, 0.0, 4.0, -4.0, 0.0])
# Hand-computed R_in for each rule, column by column:
#   x:       -2  -1   0   0   0   1   1   1
#   R:        3  -3   2  -2   0   4  -4   0
EXPECTED = {
    "gradient": [0, 0, 0, 0, 0, 4, -4, 0],  # R * 1[x > 0]
    "deconvolution": [3, 0, 2, 0, 0, 4, 0, 0],  # max(R, 0)
    "guided_backprop": [0, 0, 0, 0, 0, 4, 0, 0],  # max(R, 0) * 1[x > 0]
}


def backward(rule, x, r):
  _, vjp = jax.vjp(rule, x)
  return vjp(r)[0]


@pytest.mark.parametrize("name", RULES)
def test_rules_on_hand_computed_values(name):
  np.testing.assert_array_equal(backward(RULES[name], X, R), np.array(EXPECTED[name], np.float32))


@pytest.mark.parametrize("rule", [mb.deconv_relu, mb.guided_relu])
def test_forward_is_the_relu(rule):
  np.testing.assert_array_equal(rule(X), jax.nn.relu(X))


def test_mask_at_zero_matches_jax_relu_gradient():
  """1[x > 0] at x = 0: guided passes nothing, exactly like grad(jax.nn.relu)(0) = 0."""
  assert float(jax.grad(jax.nn.relu)(0.0)) == 0.0
  assert float(jax.grad(mb.guided_relu)(0.0)) == float(jax.grad(jax.nn.relu)(0.0))
  assert float(jax.grad(mb.deconv_relu)(0.0)) == 1.0  # the deconvnet ignores the mask
  assert float(jax.grad(mb.deconv_relu)(-5.0)) == 1.0


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("rule", [mb.deconv_relu, mb.guided_relu])
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
  grad = backward(relu, x, r)
  deconv = backward(mb.deconv_relu, x, r)
  guided = backward(mb.guided_relu, x, r)
  np.testing.assert_array_equal(deconv, jnp.maximum(r, 0))
  np.testing.assert_array_equal(guided, jnp.maximum(grad, 0))
  np.testing.assert_array_equal(guided, jnp.where(x > 0, deconv, 0))
  assert bool((guided >= 0).all()) and bool((deconv >= 0).all())


def test_rules_under_jit_and_vmap():
  rule_grad = jax.jit(jax.vmap(lambda x, r: backward(mb.guided_relu, x, r)))
  np.testing.assert_array_equal(
      rule_grad(jnp.stack([X, -X]), jnp.stack([R, R])),
      jnp.stack([backward(mb.guided_relu, X, R), backward(mb.guided_relu, -X, R)]),
  )


# --------------------------------------------------------------------------- #
# Whole networks against a layer-by-layer reference.                           #
# --------------------------------------------------------------------------- #


def apply_rule(name, x, r):
  """The rule written out by hand (not through the custom VJPs under test)."""
  if name == "gradient":
    return r * (x > 0)
  if name == "deconvolution":
    return jnp.maximum(r, 0)
  return jnp.maximum(r, 0) * (x > 0)


def reference(model, images, targets):
  """Every rule's maps, back-propagating the target logits layer by layer.

  Each non-ReLU stage is differentiated on its own with ``jax.vjp``; the rule
  is applied by hand at every ReLU in between. Examples of a batch do not
  interact, so one-hot cotangents give every image's map in one pass.

  Returns:
    ``{rule name: maps}`` for the names of ``RULES``.
  """
  return _reference(*nnx.split(model), images, targets)


@functools.partial(jax.jit, static_argnums=0)
def _reference(graphdef, state, images, targets):
  model = nnx.merge(graphdef, state)
  stages = []  # the vjp of a non-ReLU stage, or ("relu", its pre-activation)

  def linear(fn, h):
    out, vjp = jax.vjp(fn, h)
    stages.append(vjp)
    return out

  def act(h):
    stages.append(("relu", h))
    return jax.nn.relu(h)

  h = images
  if isinstance(model, MLP):
    h = linear(lambda h: h.reshape(h.shape[0], -1), h)
    for layer in model.hidden:
      h = act(linear(layer, h))
  else:
    h = linear(max_pool_2x2, act(linear(model.conv1, h)))
    h = linear(max_pool_2x2, act(linear(model.conv2, h)))
    if isinstance(model, CNN):
      h = act(linear(lambda h: model.dense(h.reshape(h.shape[0], -1)), h))
    else:
      h = linear(lambda h: jnp.mean(h, axis=(1, 2)), act(linear(model.conv3, h)))
  logits, head_vjp = jax.vjp(model.head, h)
  maps = {}
  for name in RULES:
    r = head_vjp(jax.nn.one_hot(targets, logits.shape[-1]))[0]
    for stage in reversed(stages):
      r = apply_rule(name, stage[1], r) if isinstance(stage, tuple) else stage(r)[0]
    maps[name] = r
  return maps


@pytest.mark.parametrize("model_cls", [MLP, CNN, GapCNN])
def test_maps_match_layer_by_layer_reference(model_cls):
  model = randomize_biases(small(model_cls))
  images = images_for(signed=True)
  targets = jnp.array([0, 4, 9])
  computed = {
      "gradient": plain_gradient(model, images, targets),
      "deconvolution": methods.deconvolution(model, images, targets),
      "guided_backprop": methods.guided_backprop(model, images, targets),
  }
  expected = reference(model, images, targets)
  for name, value in computed.items():
    np.testing.assert_allclose(value, expected[name], rtol=1e-4, atol=1e-6, err_msg=name)
  # The three rules genuinely differ on this model (so the comparison can fail).
  assert not np.allclose(computed["gradient"], computed["guided_backprop"], atol=1e-6)
  assert not np.allclose(computed["deconvolution"], computed["guided_backprop"], atol=1e-6)


@pytest.mark.parametrize("model_cls", [MLP, CNN, GapCNN])
def test_output_shape_and_dtype(model_cls):
  model = small(model_cls)
  for method in METHODS.values():
    out = method(model, images_for(), np.array([1, 2, 3]))
    assert out.shape == (3, 28, 28, 1) and out.dtype == jnp.float32
    assert bool(jnp.isfinite(out).all())


def test_mlp_deconvolution_does_not_depend_on_the_image():
  """No mask is used and an MLP has no pooling switches: the map is the same for every image."""
  model = randomize_biases(small(MLP))
  targets = jnp.array([3, 3, 3])
  maps = methods.deconvolution(model, images_for(seed=5, signed=True), targets)
  np.testing.assert_allclose(maps[0], maps[1], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(maps[0], maps[2], rtol=1e-6, atol=1e-7)
  guided = methods.guided_backprop(model, images_for(seed=5, signed=True), targets)
  assert not np.allclose(guided[0], guided[1])


# --------------------------------------------------------------------------- #
# Networks without an active ReLU.                                             #
# --------------------------------------------------------------------------- #


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
    "activation", [lambda x: x, jax.nn.gelu, lambda x: jax.nn.leaky_relu(x, 0.01), jnp.tanh]
)
@pytest.mark.parametrize("method", METHODS.values(), ids=METHODS)
def test_activation_that_is_not_a_relu_is_an_error(method, activation):
  """Replacing e.g. the identity by a ReLU would change the model: refuse."""
  model = small(MLP)
  model.activation = activation
  with pytest.raises(ValueError, match=r"model\.activation is .*not a ReLU"):
    method(model, images_for(batch=1), np.array([0]))


def test_any_implementation_of_relu_is_accepted():
  model = small(CNN)
  images, targets = images_for(signed=True), jnp.array([1, 2, 3])
  expected = methods.guided_backprop(model, images, targets)
  model.activation = lambda x: jnp.maximum(x, 0.0)
  np.testing.assert_array_equal(methods.guided_backprop(model, images, targets), expected)


# --------------------------------------------------------------------------- #
# Signs below the first ReLU.                                                  #
# --------------------------------------------------------------------------- #


class AfterConv1(nnx.Module):
  """The CNN from the input of its first ReLU on: ``relu(z1) -> pool -> conv2 -> ...``.

  Its input is the pre-activation z1 of the CNN's first ReLU, so a map of this
  module is the signal the rule sends below the CNN's first ReLU.
  """

  def __init__(self, cnn):
    self.cnn = cnn
    self.activation = relu
    self.image_shape = (28, 28, cnn.conv1.out_features)

  def __call__(self, z1):
    c, act = self.cnn, self.activation
    h = max_pool_2x2(act(z1))
    h = max_pool_2x2(act(c.conv2(h)))
    return c.head(act(c.dense(h.reshape(h.shape[0], -1))))


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 2**16))
def test_signal_below_first_relu_is_never_negative(seed):
  cnn = randomize_biases(small(CNN, seed=seed % 7), seed=seed)
  model = AfterConv1(cnn)
  z1 = cnn.conv1(images_for(seed=seed, batch=2, signed=True))
  targets = jnp.array([seed % 10, (seed + 3) % 10])
  assert bool((methods.guided_backprop(model, z1, targets) >= 0).all())
  assert bool((methods.deconvolution(model, z1, targets) >= 0).all())
  # The plain gradient does carry negative evidence there (so the check can fail).
  assert bool((plain_gradient(model, z1, targets) < 0).any())
  # Guided = gradient's mask AND positive part: zero wherever the first ReLU was off.
  guided = methods.guided_backprop(model, z1, targets)
  assert bool((jnp.where(z1 <= 0, guided, 0) == 0).all())


# --------------------------------------------------------------------------- #
# No mutation, no stale compilations.                                          #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("model_cls", [MLP, CNN, GapCNN])
def test_model_is_unchanged(model_cls):
  model = small(model_cls)
  images, targets = images_for(), jnp.array([0, 1, 2])
  graphdef, state = nnx.split(model)
  leaves = [np.array(v) for v in jax.tree.leaves(state)]
  logits = np.array(model(images))
  methods.guided_backprop(model, images, targets)
  methods.deconvolution(model, images, targets)
  methods.with_relu_rule(model, mb.guided_relu)
  assert model.activation is relu
  new_graphdef, new_state = nnx.split(model)
  assert new_graphdef == graphdef
  for old, new in zip(leaves, jax.tree.leaves(new_state), strict=True):
    np.testing.assert_array_equal(old, new)
  np.testing.assert_array_equal(model(images), logits)


def test_alternating_rules_under_jit_give_the_right_rule_each_time():
  model = randomize_biases(small(CNN))
  # A batch size no other test uses, so that the compilations counted below are new.
  images, targets = images_for(signed=True, batch=5), jnp.array([0, 4, 9, 1, 2])
  expected = reference(model, images, targets)
  before = mb._modified_gradient._cache_size()
  for name in ["guided_backprop", "deconvolution", "guided_backprop", "deconvolution"] * 2:
    np.testing.assert_allclose(
        METHODS[name](model, images, targets), expected[name], rtol=1e-4, atol=1e-6,
        err_msg=name,
    )
    # The plain gradient of the same model object stays the plain gradient.
    np.testing.assert_allclose(
        plain_gradient(model, images, targets), expected["gradient"], rtol=1e-4, atol=1e-6
    )
  assert mb._modified_gradient._cache_size() - before == 2  # one compilation per rule


def test_with_relu_rule_inside_a_users_jit():
  """with_relu_rule on a model merged inside jit (how Guided Grad-CAM reuses it)."""
  model = small(CNN)
  images, targets = images_for(), jnp.array([0, 1, 2])
  graphdef, state = nnx.split(model)

  @jax.jit
  def guided(state, images):
    m = mb.with_relu_rule(nnx.merge(graphdef, state), mb.guided_relu)
    return logit_gradient(m, images, targets)

  @jax.jit
  def deconv(state, images):
    m = mb.with_relu_rule(nnx.merge(graphdef, state), mb.deconv_relu)
    return logit_gradient(m, images, targets)

  for _ in range(2):
    np.testing.assert_allclose(
        guided(state, images), methods.guided_backprop(model, images, targets), rtol=1e-6
    )
    np.testing.assert_allclose(
        deconv(state, images), methods.deconvolution(model, images, targets), rtol=1e-6
    )


def test_with_relu_rule_replaces_an_earlier_rule():
  model = small(CNN)
  images, targets = images_for(signed=True), jnp.array([0, 1, 2])
  guided_copy = methods.with_relu_rule(model, mb.guided_relu)
  assert guided_copy.activation is mb.guided_relu and model.activation is relu
  np.testing.assert_array_equal(guided_copy(images), model(images))
  np.testing.assert_allclose(
      methods.deconvolution(guided_copy, images, targets),
      methods.deconvolution(model, images, targets),
      rtol=1e-6,
  )


def test_repeated_calls_do_not_retrace():
  model = small(MLP)
  images, targets = images_for(), jnp.array([0, 1, 2])
  methods.guided_backprop(model, images, targets)
  before = mb._modified_gradient._cache_size()
  for t in ([3, 4, 5], [6, 7, 8]):
    methods.guided_backprop(model, images, jnp.array(t))
  assert mb._modified_gradient._cache_size() == before


# --------------------------------------------------------------------------- #
# Bad input.                                                                   #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("method", METHODS.values(), ids=METHODS)
@pytest.mark.parametrize(
    ("images", "targets", "error", "match"),
    [
        (np.zeros((2, 1, 28, 28), np.float32), [0, 1], ValueError, "NCHW"),
        (np.zeros((2, 28, 28, 1), np.uint8), [0, 1], TypeError, "floating"),
        (np.zeros((28, 28, 1), np.float32), [0], ValueError, "rank 4"),
        (np.full((2, 28, 28, 1), np.nan, np.float32), [0, 1], ValueError, "NaN"),
        (np.zeros((2, 28, 28, 1), np.float32), [0], ValueError, r"targets: expected shape"),
        (np.zeros((2, 28, 28, 1), np.float32), [0, 10], ValueError, r"\[0, 10\)"),
        (np.zeros((2, 28, 28, 1), np.float32), [0.0, 1.0], TypeError, "integer"),
        (np.zeros((2, 28, 28, 1), np.float32), 3, TypeError, "scalar"),
    ],
)
def test_bad_input(method, images, targets, error, match):
  with pytest.raises(error, match=match):
    method(small(MLP), images, targets)


def test_with_relu_rule_rejects_a_non_relu_rule():
  with pytest.raises(TypeError, match="relu: expected a function computing max"):
    methods.with_relu_rule(small(MLP), jnp.tanh)
