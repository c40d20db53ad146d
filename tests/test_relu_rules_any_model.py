"""Deconvolution and Guided Backprop on models the package does not define (issue 18).

The rule is applied by re-evaluating the model's jaxpr (``methods._relu_rules``),
without any convention in the model's code. Checked here:

* on every user architecture of ``user_models`` that has ReLUs (ResNet with
  BatchNorm in eval mode and residual blocks in an ``nnx.List``, LayerNormNet
  with ``nnx.relu``, ``jnp.maximum(x, 0)`` and average pooling, BlockGap,
  UserCNN, WideFirst, a Linen model through ``nnx.bridge``), both maps equal a
  reference built by editing the model's own code to call the rule's ReLU
  where the model calls its ReLU (the forward functions below), and the rule
  is applied at exactly the model's ReLUs (not at LayerNorm's variance clip);
* a user's copy of the package ``CNN`` gives the package ``CNN``'s maps;
* every spelling of a ReLU takes the rule (``jax.nn.relu``, ``nnx.relu``,
  ``saliency_guide.layers.relu``, ``jnp.maximum`` either way round or against
  ``zeros_like``, ``jnp.clip(x, 0)``, inside ``jax.jit``, ``jax.checkpoint``,
  ``lax.scan``, ``lax.cond``, ``nnx.scan``, ``nnx.remat``, ``nnx.jit``, or a
  ReLU that already has another rule);
* activations without a rule (GELU, SiLU, softplus, ELU, tanh, sigmoid, leaky
  ReLU, ReLU6, ``jnp.where``) are refused with their name; a ReLU inside a
  custom derivative or a while loop is refused; ``jnp.maximum`` of two tensors,
  against a non-zero constant, or of parameters alone is not a ReLU;
* the caller's model is unchanged, and compilations happen once per rule.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen, nnx

import user_models
from model_factories import compilations, numpy_model
from relu_reference import METHODS, images_for, plain_gradient
from saliency_guide import layers, methods
from saliency_guide.methods import logit_gradient
from saliency_guide.models import CNN
from saliency_guide.validation import check_inputs
from user_models import (
  BlockGap,
  GeluNet,
  LayerNormNet,
  ResNet,
  UserCNN,
  WideFirst,
  user_cnn_like,
  with_random_batch_stats,
)

RULES = {"deconvolution": methods.deconv_relu, "guided_backprop": methods.guided_relu}

# --------------------------------------------------------------------------- #
# References: each user model's forward pass, edited to call ``act`` at its    #
# ReLUs (``act=jax.nn.relu`` is the model itself, checked below).              #
# --------------------------------------------------------------------------- #


def _gap(x):
  return x.mean(axis=(1, 2))


def resnet_forward(m, x, act):
  x = act(m.bn(m.stem(x)))
  for b in m.blocks:
    y = act(b.bn1(b.conv1(x)))
    y = b.bn2(b.conv2(y))
    shortcut = x if b.project is None else b.project(x)
    x = act(y + shortcut)
  return m.head(_gap(x))


def layer_norm_net_forward(m, x, act):
  x = act(m.norm(m.conv1(x)))  # was nnx.relu
  x = nnx.avg_pool(x, (2, 2), strides=(2, 2))
  x = act(m.conv2(x))  # was jnp.maximum(., 0)
  return m.out(x.reshape(x.shape[0], -1))


def block_gap_forward(m, x, act):
  x = act(m.blocks[0].conv(x))
  x = nnx.max_pool(x, (2, 2), strides=(2, 2))
  x = act(m.blocks[1].conv(x))
  return m.classifier(_gap(x))


def user_cnn_forward(m, x, act):
  x = nnx.max_pool(act(m.conv1(x)), (2, 2), strides=(2, 2))
  x = nnx.max_pool(act(m.conv2(x)), (2, 2), strides=(2, 2))
  x = act(m.dense(x.reshape(x.shape[0], -1)))
  return m.head(x)


def wide_first_forward(m, x, act):
  x = act(m.stem(x))
  x = act(m.body(x))
  return m.head(_gap(x))


class _LinenEdited(linen.Module):
  """``user_models._LinenCNN`` with ``act`` where it calls ``linen.relu``."""

  act: object

  @linen.compact
  def __call__(self, x):
    x = self.act(linen.Conv(6, (3, 3), padding="SAME", name="conv")(x))
    x = x.mean(axis=(1, 2))
    return linen.Dense(10, name="head")(x)


def linen_forward(m, x, act):
  params = {name: {key: getattr(m, name)[key][...] for key in ("kernel", "bias")}
            for name in ("conv", "head")}
  return _LinenEdited(act).apply({"params": params}, x)


def _linen_model():
  """``user_models._LinenCNN`` through ``nnx.bridge``, keeping no random streams."""
  model = nnx.bridge.ToNNX(user_models._LinenCNN())
  nnx.bridge.lazy_init(model, jnp.zeros((1, 28, 28, 1)), rngs=nnx.Rngs(0))
  return model


def _user(cls, seed=0):
  """``cls`` with NumPy-drawn weights, biases N(0, 0.1²), non-trivial BatchNorm statistics."""
  return with_random_batch_stats(numpy_model(lambda: cls(rngs=nnx.Rngs(0)), seed), seed)


@functools.cache
def _models():
  return {
      "ResNet": (_user(ResNet), resnet_forward, 5),
      "LayerNormNet": (_user(LayerNormNet), layer_norm_net_forward, 2),
      "BlockGap": (_user(BlockGap), block_gap_forward, 2),
      "UserCNN": (_user(lambda rngs: UserCNN((4, 6), 12, rngs=rngs)), user_cnn_forward, 3),
      "WideFirst": (_user(WideFirst), wide_first_forward, 2),
      "Linen": (_linen_model(), linen_forward, 1),
  }


def user_model(name):
  """A fresh copy of a user model (tests may modify it), its edited forward, its ReLU count."""
  model, forward, relus = _models()[name]
  return nnx.clone(model), forward, relus


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _edited_gradient(forward, act, graphdef, state, images, targets):
  model = nnx.merge(graphdef, state)

  def total(x):
    logits = forward(model, x, act)
    return jnp.take_along_axis(logits, targets[:, None], axis=1).sum()

  return jax.grad(total)(images)


def edited_gradient(forward, act, model, images, targets):
  """The gradient of the target logits through ``forward`` with ``act`` at the ReLUs."""
  return _edited_gradient(forward, act, *nnx.split(model), images, targets)


# --------------------------------------------------------------------------- #
# The user architectures.                                                      #
# --------------------------------------------------------------------------- #

NAMES = ["ResNet", "LayerNormNet", "BlockGap", "UserCNN", "WideFirst", "Linen"]


@pytest.mark.parametrize("name", NAMES)
def test_edited_forward_is_the_model(name):
  """The references are faithful copies: with the plain ReLU they are the model."""
  model, forward, _ = user_model(name)
  images = images_for(seed=1, batch=2, signed=True)
  np.testing.assert_allclose(forward(model, images, jax.nn.relu), model(images),
                             rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", NAMES)
def test_maps_equal_the_edited_model(name, method):
  model, forward, _ = user_model(name)
  images, targets = images_for(seed=2, signed=True), jnp.array([0, 4, 9])
  expected = edited_gradient(forward, RULES[method], model, images, targets)
  got = METHODS[method](model, images, targets)
  scale = float(jnp.abs(expected).max())
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * scale)
  # The rule changed something, so that the comparison can fail.
  gradient = edited_gradient(forward, jax.nn.relu, model, images, targets)
  assert not np.allclose(got, gradient, rtol=1e-3, atol=1e-3 * scale)


def counting_relu():
  """A ReLU that records the shape of every array it is applied to (while tracing)."""
  seen = []

  def relu(x):
    seen.append(tuple(x.shape))
    return jax.nn.relu(x)

  return relu, seen


@pytest.mark.parametrize("name", NAMES)
def test_the_rule_is_applied_at_exactly_the_models_relus(name):
  """ResNet 1 + 2 x 2, UserCNN 3, ...; LayerNormNet's variance clip max(var, 0) is not one."""
  model, _, relus = user_model(name)
  relu, seen = counting_relu()
  wrapped = methods.with_relu_rule(model, relu)
  seen.clear()  # with_relu_rule probed it once
  jax.eval_shape(lambda x: wrapped(x), jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32))
  assert len(seen) == relus, seen
  assert all(shape[0] == 2 for shape in seen)  # activations, not parameters


def test_a_users_copy_of_the_package_cnn_gives_its_maps():
  cnn = numpy_model(lambda: CNN(channels=(4, 6), hidden=12, rngs=nnx.Rngs(0)), 3)
  user = user_cnn_like(cnn)
  images, targets = images_for(seed=4, signed=True), jnp.array([1, 5, 8])
  np.testing.assert_allclose(user(images), cnn(images), rtol=1e-5, atol=1e-5)
  smooth_guided = methods.smoothgrad(methods.guided_backprop, samples=3, key=jax.random.key(0))
  for method in [*METHODS.values(), smooth_guided]:
    expected = method(cnn, images, targets)
    np.testing.assert_allclose(method(user, images, targets), expected, rtol=1e-4,
                               atol=1e-5 * float(jnp.abs(expected).max()))


def test_the_callers_model_is_unchanged():
  model, _, _ = user_model("ResNet")
  graphdef, state = nnx.split(model)
  before = [np.asarray(a) for a in jax.tree.leaves(state)]
  images, targets = images_for(), jnp.array([0, 1, 2])
  for method in METHODS.values():
    method(model, images, targets)
  wrapped = methods.with_relu_rule(model, methods.guided_relu)
  np.testing.assert_array_equal(wrapped(images), model(images))
  assert wrapped.model is model
  graphdef_after, state_after = nnx.split(model)
  assert graphdef_after == graphdef
  for a, b in zip(before, jax.tree.leaves(state_after), strict=True):
    np.testing.assert_array_equal(a, b)


def test_one_compilation_per_rule_and_none_for_new_images():
  model, _, _ = user_model("ResNet")
  # A batch size no other test uses, so that the compilations counted below are new.
  images, targets = images_for(seed=5, batch=7), jnp.arange(7)
  check_inputs(model, images, targets)
  with compilations() as compiles:
    for name in ["guided_backprop", "deconvolution"] * 2:
      METHODS[name](model, images, targets)
  assert len(compiles) == 2
  images, targets = images_for(seed=6, batch=7), jnp.asarray(np.arange(7)[::-1].copy())
  with compilations() as compiles:
    for name in METHODS:
      METHODS[name](model, images, targets)
  assert compiles == []


# --------------------------------------------------------------------------- #
# Spellings of a ReLU.                                                         #
# --------------------------------------------------------------------------- #


class Spelled(nnx.Module):
  """conv → ``act`` → conv → ``act`` → GAP → dense, with ``act`` any spelling of a ReLU."""

  def __init__(self, act, *, rngs):
    self.conv1 = nnx.Conv(1, 4, (3, 3), padding="SAME", rngs=rngs)
    self.conv2 = nnx.Conv(4, 4, (3, 3), strides=2, padding="SAME", rngs=rngs)
    self.head = nnx.Linear(4, 10, rngs=rngs)
    self.act = act

  def __call__(self, x):
    x = self.act(self.conv1(x))
    x = self.act(self.conv2(x))
    return self.head(_gap(x))


class Scanned(Spelled):
  """The second conv + ReLU applied twice in a ``lax.scan`` (shared weights)."""

  def __init__(self, act, *, rngs):
    super().__init__(act, rngs=rngs)
    self.conv2 = nnx.Conv(4, 4, (3, 3), padding="SAME", rngs=rngs)

  def __call__(self, x):
    def step(h, _):
      return self.act(self.conv2(h)), None

    x, _ = jax.lax.scan(step, self.act(self.conv1(x)), None, length=2)
    return self.head(_gap(x))


class Branched(Spelled):
  """A ``lax.cond`` on the input picks one of two conv + ReLU branches."""

  def __call__(self, x):
    x = self.act(self.conv1(x))
    x = jax.lax.cond(x.mean() > 0.1, lambda h: self.act(self.conv2(h)),
                     lambda h: self.act(-self.conv2(h)), x)
    return self.head(_gap(x))


def _jitted_relu(x):
  return jnp.maximum(x, 0)


SPELLINGS = {
    "jax.nn.relu": jax.nn.relu,
    "nnx.relu": nnx.relu,
    "layers.relu": layers.relu,
    "maximum(x, 0)": lambda x: jnp.maximum(x, 0),
    "maximum(0.0, x)": lambda x: jnp.maximum(0.0, x),
    "maximum(x, zeros_like(x))": lambda x: jnp.maximum(x, jnp.zeros_like(x)),
    "clip(x, 0)": lambda x: jnp.clip(x, 0),
    "jit": jax.jit(_jitted_relu),
    "checkpoint": jax.checkpoint(jax.nn.relu),
    "another rule": methods.deconv_relu,
}


@functools.cache
def _spelled(cls, seed=0):
  return numpy_model(lambda: cls(jax.nn.relu, rngs=nnx.Rngs(0)), seed)


def spelled(cls, act):
  model = nnx.clone(_spelled(cls))
  model.act = act
  return model


def _reference(model, images, targets, rule):
  """The same model with its code calling ``rule`` at the ReLUs."""
  return plain_gradient(spelled(type(model), rule), images, targets)


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_spelling_of_a_relu_takes_the_rule(spelling):
  model = spelled(Spelled, SPELLINGS[spelling])
  images, targets = images_for(seed=7, signed=True), jnp.array([2, 3, 4])
  np.testing.assert_array_equal(model(images), spelled(Spelled, jax.nn.relu)(images))
  got = methods.guided_backprop(model, images, targets)
  np.testing.assert_allclose(got, _reference(model, images, targets, methods.guided_relu),
                             rtol=1e-5, atol=1e-7)
  assert not np.allclose(got, plain_gradient(model, images, targets), atol=1e-6)


@pytest.mark.parametrize("cls", [Scanned, Branched])
@pytest.mark.parametrize("method", METHODS)
def test_relus_inside_scan_and_cond_take_the_rule(cls, method):
  model = spelled(cls, jax.nn.relu)
  images, targets = images_for(seed=8, signed=True), jnp.array([2, 3, 4])
  got = METHODS[method](model, images, targets)
  np.testing.assert_allclose(got, _reference(model, images, targets, RULES[method]),
                             rtol=1e-5, atol=1e-7)
  assert not np.allclose(got, plain_gradient(model, images, targets), atol=1e-6)


class NnxBlock(nnx.Module):
  def __init__(self, rngs):
    self.conv = nnx.Conv(4, 4, (3, 3), padding="SAME", rngs=rngs)
    self.act = nnx.relu

  def __call__(self, x):
    return self.act(self.conv(x))


class NnxTransforms(nnx.Module):
  """ReLUs inside NNX's own transforms: ``nnx.scan`` over stacked blocks, ``nnx.remat``,
  ``nnx.jit``."""

  def __init__(self, rngs):
    self.stem = nnx.Conv(1, 4, (3, 3), padding="SAME", rngs=rngs)

    @nnx.split_rngs(splits=2)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def stacked(rngs):
      return NnxBlock(rngs)

    self.stacked = stacked(rngs)
    self.block = NnxBlock(rngs)
    self.head = nnx.Linear(4, 10, rngs=rngs)
    self.act = jax.nn.relu

  def __call__(self, x):
    x = self.act(self.stem(x))

    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
    def step(x, block):
      return block(x)

    x = step(x, self.stacked)
    x = nnx.remat(lambda block, x: block(x))(self.block, x)
    x = nnx.jit(lambda block, x: block(x))(self.block, x)
    return self.head(_gap(x))


@pytest.mark.parametrize("method", METHODS)
def test_relus_inside_nnx_transforms_take_the_rule(method):
  model = numpy_model(lambda: NnxTransforms(nnx.Rngs(0)), 2)
  images, targets = images_for(seed=10, batch=2, signed=True), jnp.array([3, 6])
  edited = nnx.clone(model)  # the model's code calling the rule at its ReLUs
  for module in (edited, edited.stacked, edited.block):
    module.act = RULES[method]
  rule = methods.with_relu_rule(model, RULES[method])
  np.testing.assert_array_equal(rule(images), model(images))
  got = jax.jit(logit_gradient)(rule, images, targets)
  np.testing.assert_allclose(got, _merged_gradient(*nnx.split(edited), images, targets),
                             rtol=1e-5, atol=1e-7)
  plain = _merged_gradient(*nnx.split(model), images, targets)
  assert not np.allclose(got, plain, atol=1e-6)


@functools.partial(jax.jit, static_argnums=0)
def _merged_gradient(graphdef, state, images, targets):
  """The plain gradient; NNX transforms need the model's state traced with the images."""

  def total(x, state):
    logits = nnx.merge(graphdef, state)(x)
    return jnp.take_along_axis(logits, targets[:, None], axis=1).sum()

  value, vjp = jax.vjp(total, images, state)
  return vjp(jnp.ones_like(value))[0]


# --------------------------------------------------------------------------- #
# What is refused, and what is not a ReLU.                                     #
# --------------------------------------------------------------------------- #

NO_RULE = {
    "gelu": (jax.nn.gelu, "jax.nn.gelu"),
    "exact gelu": (lambda x: jax.nn.gelu(x, approximate=False), "jax.nn.gelu"),
    "nnx.gelu": (nnx.gelu, "jax.nn.gelu"),
    "silu": (jax.nn.silu, "silu"),
    "swish": (nnx.swish, "silu"),
    "softplus": (jax.nn.softplus, "softplus"),
    "elu": (jax.nn.elu, "elu"),
    "tanh": (jnp.tanh, "tanh"),
    "sigmoid": (jax.nn.sigmoid, "sigmoid"),
    "leaky_relu": (lambda x: jax.nn.leaky_relu(x, 0.01), "leaky_relu"),
    "relu6": (jax.nn.relu6, "relu6"),
    "where": (lambda x: jnp.where(x > 0, x, 0.0), r"an activation written with jnp\.where"),
}


@pytest.mark.parametrize("activation", NO_RULE)
def test_an_activation_without_a_rule_is_named(activation):
  act, name = NO_RULE[activation]
  model = spelled(Spelled, act)
  for method in METHODS.values():
    with pytest.raises(ValueError, match=rf"Spelled applies {name}.* at .*"
                                         r"test_relu_rules_any_model\.py.*defined for ReLUs"):
      method(model, images_for(batch=1), jnp.array([0]))


def test_gelu_net_is_refused_naming_gelu_and_the_line():
  model = GeluNet(rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"GeluNet applies jax\.nn\.gelu at .*user_models\.py"):
    methods.guided_backprop(model, images_for(batch=1), jnp.array([0]))


@jax.custom_jvp
def _relu_with_own_jvp_inside(x):
  return 2.0 * jax.nn.relu(x)


_relu_with_own_jvp_inside.defjvp(lambda p, t: (_relu_with_own_jvp_inside(*p), 2.0 * t[0]))


def _relu_in_while(x):
  return jax.lax.while_loop(lambda c: c[0] < 1, lambda c: (c[0] + 1, jax.nn.relu(c[1])),
                            (0, x))[1]


@pytest.mark.parametrize(("act", "where"), [(_relu_with_own_jvp_inside, "custom-derivative"),
                                            (_relu_in_while, "while")])
def test_a_relu_the_rule_cannot_reach_is_refused(act, where):
  with pytest.raises(ValueError, match=f"ReLU inside .*{where}"):
    methods.guided_backprop(spelled(Spelled, act), images_for(batch=1), jnp.array([0]))


class MaxOfTwo(nnx.Module):
  """``jnp.maximum`` of two activations, then one ReLU (``relu=False``: none)."""

  def __init__(self, relu=True, *, rngs):
    self.a = nnx.Conv(1, 4, (3, 3), padding="SAME", rngs=rngs)
    self.b = nnx.Conv(1, 4, (3, 3), padding="SAME", rngs=rngs)
    self.scale = nnx.Param(jnp.array([0.5, -1.0, 2.0, 1.0]))
    self.head = nnx.Linear(4, 10, rngs=rngs)
    self.relu = relu

  def __call__(self, x, act=jax.nn.relu):
    h = jnp.maximum(self.a(x), self.b(x))  # of two tensors: not a ReLU
    h = jnp.maximum(h, 0.5) * jnp.maximum(self.scale[...], 0)  # non-zero / parameters only
    if self.relu:
      h = act(h - 1.0)
    return self.head(_gap(h))


def test_maximum_of_two_tensors_is_not_a_relu():
  model = numpy_model(lambda: MaxOfTwo(rngs=nnx.Rngs(0)), 1)
  images, targets = images_for(seed=9, signed=True), jnp.array([1, 2, 3])
  relu, seen = counting_relu()
  wrapped = methods.with_relu_rule(model, relu)
  seen.clear()
  jax.eval_shape(lambda x: wrapped(x), images)
  assert seen == [(3, 28, 28, 4)]  # the one ReLU only
  graphdef, state = nnx.split(model)
  for method, rule in [(methods.guided_backprop, methods.guided_relu),
                       (methods.deconvolution, methods.deconv_relu)]:

    def edited(x, rule=rule):
      logits = nnx.merge(graphdef, state)(x, act=rule)
      return jnp.take_along_axis(logits, targets[:, None], axis=1).sum()

    np.testing.assert_allclose(method(model, images, targets), jax.grad(edited)(images),
                               rtol=1e-5, atol=1e-7)


def test_a_model_whose_only_maxima_are_not_relus_is_refused():
  model = numpy_model(lambda: MaxOfTwo(relu=False, rngs=nnx.Rngs(0)), 1)
  for method in METHODS.values():
    with pytest.raises(ValueError, match="no replaceable ReLU"):
      method(model, images_for(batch=1), jnp.array([0]))
