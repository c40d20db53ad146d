"""The one validation module: each check names the argument, what it expected, what it got."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saliency_guide import validation as v
from saliency_guide.models import CNN
from user_models import SoftmaxNet, UserCNN, WideFirst, linen_model

SHAPE = (2, 4, 4, 1)


@pytest.mark.parametrize("value, error, message", [
    (0, ValueError, "steps: expected an integer >= 1, got 0"),
    (2.0, TypeError, "steps: expected an integer >= 1, got float 2.0"),
    (True, TypeError, "steps: expected an integer >= 1, got bool True"),
])
def test_positive_int_rejects(value, error, message):
  with pytest.raises(error, match=message):
    v.check_positive_int("steps", value)


def test_positive_int_accepts_numpy_integers():
  assert v.check_positive_int("steps", np.int64(3)) == 3


@pytest.mark.parametrize("value, kwargs, error", [
    (0.0, {}, ValueError),
    (-1.0, {"inclusive": True}, ValueError),
    (float("nan"), {}, ValueError),
    (float("inf"), {}, ValueError),
    ("1", {}, TypeError),
    (True, {}, TypeError),
    (None, {}, TypeError),
])
def test_number_rejects(value, kwargs, error):
  with pytest.raises(error, match=r"^sigma: expected a (finite )?number"):
    v.check_number("sigma", value, **kwargs)


def test_number_bounds():
  assert v.check_number("noise_level", 0, inclusive=True) == 0.0
  assert v.check_number("x", 0.5, minimum=0.25) == 0.5
  message = r"x: expected a finite number > 0.25 \(in pixels\), got 0.25"
  with pytest.raises(ValueError, match=message):
    v.check_number("x", 0.25, minimum=0.25, hint=" (in pixels)")


def test_choice_and_flag():
  assert v.check_choice("rule", "a", ("a", "b")) == "a"
  with pytest.raises(ValueError, match="rule: expected one of 'a', 'b', got 'c'"):
    v.check_choice("rule", "c", ("a", "b"))
  with pytest.raises(TypeError, match="relu: expected True or False, got 'yes'"):
    v.check_flag("relu", "yes")


def test_callable():
  assert v.check_callable("method", len, "a function") is len
  with pytest.raises(TypeError, match="method: expected a function, got int 3"):
    v.check_callable("method", 3, "a function")


def test_key_accepts_typed_and_raw_keys():
  typed = jax.random.key(0)
  assert v.check_key(typed) is typed
  raw = v.check_key(np.asarray(jax.random.PRNGKey(0)))
  assert isinstance(raw, jax.Array) and raw.shape == (2,)


@pytest.mark.parametrize("key, error, message", [
    (None, ValueError, "key: demo is random and needs an explicit PRNG key"),
    (0, TypeError, "key: expected a single PRNG key"),
    (jax.random.split(jax.random.key(0), 3), TypeError, r"key: expected a single PRNG key.*3"),
    (jnp.zeros(3, jnp.uint32), TypeError, "key: expected a single PRNG key"),
])
def test_key_rejects(key, error, message):
  with pytest.raises(error, match=message):
    v.check_key(key, "demo")


@pytest.mark.parametrize("shape", [(), SHAPE[1:], (1, *SHAPE[1:]), SHAPE])
def test_array_broadcasts_only_the_documented_shapes(shape):
  value = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
  out = v.check_array("baseline", value, SHAPE)
  assert out.shape == SHAPE and out.dtype == jnp.float32
  np.testing.assert_array_equal(out, np.broadcast_to(value, SHAPE))


@pytest.mark.parametrize("value, error, message", [
    (np.zeros((3, 4, 4, 1), np.float32), ValueError, r"got shape \(3, 4, 4, 1\)"),
    (np.zeros((4, 1), np.float32), ValueError, r"got shape \(4, 1\)"),  # would broadcast
    (np.zeros(SHAPE, np.int32), TypeError, "expected a floating dtype, got int32"),
    (np.full(SHAPE, np.nan, np.float32), ValueError, "32 NaN or Inf"),
    ("black", TypeError, "got str"),
])
def test_array_rejects(value, error, message):
  with pytest.raises(error, match=f"^baseline: .*{message}"):
    v.check_array("baseline", value, SHAPE)


def test_image_batch():
  like = jnp.zeros(SHAPE)
  assert v.check_image_batch("references", np.ones((5, 4, 4, 1), np.float64), like).dtype == (
      jnp.float32)
  with pytest.raises(ValueError, match=r"references: expected shape \(R, 4, 4, 1\)"):
    v.check_image_batch("references", np.ones((5, 4, 4, 3), np.float32), like)
  with pytest.raises(ValueError, match="references: expected at least one image, got 0"):
    v.check_image_batch("references", np.ones((0, 4, 4, 1), np.float32), like)
  with pytest.raises(ValueError, match="references: expected finite values"):
    v.check_image_batch("references", np.full((1, 4, 4, 1), np.inf, np.float32), like)


def test_maps():
  images = jnp.zeros(SHAPE)
  assert v.check_maps("maps", np.ones((2, 4, 4)), images).shape == (2, 4, 4)
  assert v.check_maps("maps", np.ones(SHAPE), images).shape == SHAPE
  with pytest.raises(ValueError, match=r"maps: expected shape \(2, 4, 4\) .* got \(2, 4\)"):
    v.check_maps("maps", np.ones((2, 4)), images)


def test_inputs_convert_and_reject():
  model = CNN(channels=(2, 2), hidden=4, rngs=nnx.Rngs(0))
  x, t = v.check_inputs(model, np.zeros((2, 28, 28, 1), np.float64), np.array([1, 2], np.int64))
  assert x.dtype == jnp.float32 and t.dtype == jnp.int32
  with pytest.raises(ValueError, match=r"targets: expected class indices in \[0, 10\)"):
    v.check_inputs(model, x, [1, 10])
  with pytest.raises(TypeError, match="targets: expected an integer array of shape"):
    v.check_inputs(model, x, 3)
  with pytest.raises(ValueError, match="images: expected finite values, got 1 NaN"):
    v.check_inputs(model, x.at[0, 0, 0, 0].set(jnp.nan), t)


# ---------------------------------------------------------------------------------------
# Any model: nothing guessed from the module tree; the model traced on the images.
# ---------------------------------------------------------------------------------------

X = np.zeros((2, 28, 28, 1), np.float32)
T = np.array([1, 2])


def test_attribute_order_does_not_decide_the_channels():
  model = WideFirst(rngs=nnx.Rngs(0))  # a 12-channel conv is met before the 1-channel stem
  assert v.model_channels(model) is None
  x, _ = v.check_inputs(model, X, T)
  assert x.shape == X.shape
  with pytest.raises(ValueError, match=r"images: the model could not be applied to images of "
                     r"shape \(2, 28, 28, 3\).*conv_general_dilated.*expected NHWC") as info:
    v.check_inputs(model, np.zeros((2, 28, 28, 3), np.float32), T)
  assert "NCHW" not in str(info.value)


@pytest.mark.parametrize("model", [UserCNN(rngs=nnx.Rngs(0)), linen_model()],
                         ids=["nnx", "linen"])
def test_channel_first_images_keep_the_nchw_hint(model):
  with pytest.raises(ValueError, match=r"shape \(2, 1, 28, 28\).*x.transpose\(0, 2, 3, 1\)"):
    v.check_inputs(model, np.zeros((2, 1, 28, 28), np.float32), T)


def test_declared_channels_are_checked_first():
  model = CNN(channels=(2, 2), hidden=4, rngs=nnx.Rngs(0))
  assert v.model_channels(model) == 1
  with pytest.raises(ValueError, match=r"expected NHWC images \(B, H, W, 1\) with 1 channel"):
    v.check_inputs(model, np.zeros((2, 28, 28, 3), np.float32), T)


class _Head(nnx.Module):
  """A dense layer on the flattened image, then ``last`` (a traced Python call counter)."""

  def __init__(self, last, outputs=10):
    self.dense = nnx.Linear(784, outputs, rngs=nnx.Rngs(0))
    self.last = last

  def __call__(self, x):
    _TRACES.append(1)
    return self.last(self.dense(x.reshape(x.shape[0], -1)))


_TRACES: list[int] = []


@pytest.mark.parametrize("last, what", [
    (jax.nn.softmax, r"probabilities \(its last operation is a softmax\)"),
    (nnx.softmax, r"probabilities \(its last operation is a softmax\)"),
    (jax.jit(jax.nn.softmax), r"probabilities \(its last operation is a softmax\)"),
    (lambda z: jnp.exp(z) / jnp.exp(z).sum(-1, keepdims=True), "probabilities .* softmax"),
    (lambda z: jax.nn.softmax(z.astype(jnp.bfloat16)).astype(jnp.float32),
     "probabilities .* softmax"),
    (jax.nn.log_softmax, r"log-probabilities \(its last operation is a log_softmax\)"),
    (lambda z: z - jax.nn.logsumexp(z, -1, keepdims=True), "log-probabilities"),
    (lambda z: jnp.log(jax.nn.softmax(z)), "log-probabilities"),
    (jax.nn.sigmoid, r"probabilities \(its last operation is a sigmoid\)"),
    (lambda z: 1 / (1 + jnp.exp(-z)), r"probabilities \(its last operation is a sigmoid\)"),
])
def test_models_returning_probabilities_are_refused(last, what):
  with pytest.raises(ValueError, match=rf"^model: returns {what}.*explain logits.*remove"):
    v.check_inputs(_Head(last), X, T)


@pytest.mark.parametrize("last", [
    lambda z: z, jax.nn.relu, jnp.exp, lambda z: z - z.mean(-1, keepdims=True),
    lambda z: z / jnp.linalg.norm(z, axis=-1, keepdims=True),
    lambda z: z / (1 + jnp.exp(-z)),  # SiLU, not a sigmoid
])
def test_logits_are_not_mistaken_for_probabilities(last):
  v.check_inputs(_Head(last), X, T)


def test_softmax_net_is_refused():
  with pytest.raises(ValueError, match=r"model: returns probabilities \(its last operation is "
                     r"a softmax\)"):
    v.check_inputs(SoftmaxNet(rngs=nnx.Rngs(0)), X, T)


@pytest.mark.parametrize("outputs, message", [
    (lambda z: z[:, None], r"model: expected logits of shape \(2, classes\) for 2 image\(s\), "
     r"got shape \(2, 1, 10\)"),
    (lambda z: z[:1], r"got shape \(1, 10\)"),
    (lambda z: (z, z), "got tuple"),
])
def test_outputs_that_are_not_logits(outputs, message):
  with pytest.raises(ValueError, match=message):
    v.check_inputs(_Head(outputs), X, T)


def _identity(z):
  return z


def test_the_model_is_traced_once_per_structure_and_shape():
  model = _Head(_identity, outputs=7)
  _TRACES.clear()
  v.check_inputs(model, X, T)
  assert len(_TRACES) == 1
  v.check_inputs(model, X + 1, T)  # new values, same shapes: cached
  v.check_inputs(_Head(_identity, outputs=7), X, T)  # another instance, same structure: cached
  assert len(_TRACES) == 1
  v.check_inputs(model, np.zeros((3, 28, 28, 1), np.float32), [0, 1, 6])  # a new shape
  assert len(_TRACES) == 2
  assert v.model_num_classes(model, jnp.zeros((3, 28, 28, 1))) == 7
  assert len(_TRACES) == 2
  with pytest.raises(ValueError, match=r"targets: expected class indices in \[0, 7\)"):
    v.check_inputs(model, X, [0, 7])


def test_a_model_whose_call_changes_its_state_is_refused():
  model = _Flatten(nnx.Sequential(nnx.Linear(784, 10, rngs=nnx.Rngs(0)),
                                  nnx.BatchNorm(10, rngs=nnx.Rngs(0))))  # training mode
  with pytest.raises(ValueError, match=r"model: calling it changes its own state \(layer.layers.1"
                     r".mean, layer.layers.1.var\).*model.eval\(\)"):
    v.check_inputs(model, X, T)
  model.eval()
  v.check_inputs(model, X, T)


def test_weights_of_another_shape_are_another_structure():
  model = nnx.Linear(784, 10, rngs=nnx.Rngs(0))
  flat = _Flatten(model)
  assert v.check_inputs(flat, X, T)[1].shape == (2,)
  flat.layer.kernel = nnx.Param(jnp.zeros((784, 3)))  # same attributes, 3 classes now
  flat.layer.bias = nnx.Param(jnp.zeros((3,)))
  with pytest.raises(ValueError, match=r"\[0, 3\)"):
    v.check_inputs(flat, X, [0, 3])


class _Flatten(nnx.Module):
  def __init__(self, layer):
    self.layer = layer

  def __call__(self, x):
    return self.layer(x.reshape(x.shape[0], -1))


# ---------------------------------------------------------------------------------------
# The model must be an NNX module; inside jit the static checks still run.
# ---------------------------------------------------------------------------------------


class Record:
  """Like zoo.Pretrained: a record holding the model."""

  def __init__(self, model):
    self.model = model


@pytest.mark.parametrize("model, hint", [
    ("cnn", r"got str 'cnn'; for a named trained model use saliency_guide.pretrained\('cnn'\)"),
    (Record(CNN(channels=(2, 2), hidden=4, rngs=nnx.Rngs(0))), r"pass its \.model"),
    (linen_model().to_nnx__module, r"wrap a Linen module first: nnx.bridge.lazy_init"),
    (lambda x: x.sum(axis=(1, 2)), r"got function"),
], ids=["string", "record", "linen", "function"])
def test_a_model_that_is_not_an_nnx_module_is_named(model, hint):
  expected = r"model: expected a Flax NNX module returning logits \(an nnx.Module\), got "
  for check in (lambda: v.check_model(model), lambda: v.check_inputs(model, X, T),
                lambda: v.model_channels(model), lambda: v.model_num_classes(model, X)):
    with pytest.raises(TypeError, match=expected) as info:
      check()
    assert info.match(hint)
  with pytest.raises(TypeError, match="random_model: expected a Flax NNX module"):
    v.check_model(model, "random_model")


def test_a_wrapped_linen_model_is_a_module():
  model = linen_model()
  assert v.check_model(model) is model
  assert v.model_num_classes(model, X) == 10


def test_inside_jit_the_static_checks_run_and_the_value_checks_cannot():
  model = CNN(channels=(2, 2), hidden=4, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(model)

  @jax.jit
  def checked(state, x, t):
    x, t = v.check_inputs(nnx.merge(graphdef, state), x, t)
    return x.sum(), t

  with pytest.raises(ValueError, match=r"images: expected rank 4"):
    checked(state, X[..., 0], T)
  with pytest.raises(ValueError, match=r"targets: expected shape \(2,\)"):
    checked(state, X, T[:1])
  with pytest.raises(TypeError, match="targets: expected integer class indices"):
    checked(state, X, T.astype(np.float32))
  # Values are unknown while tracing: NaN and out-of-range targets are not checked there.
  total, targets = checked(state, np.full_like(X, np.nan), np.array([1, 99]))
  assert np.isnan(total) and targets.dtype == jnp.int32
