"""The one validation module: each check names the argument, what it expected, what it got."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saliency_guide import validation as v
from saliency_guide.models import CNN

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
