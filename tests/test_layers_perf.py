"""The fast layers compute what plain XLA ops and autodiff compute.

``saliency_guide.layers`` replaces the models' convolutions and max-pooling by
versions with hand-written backward passes (for speed). These tests pin them to
the plain operations: ``lax.conv_general_dilated`` and ``lax.reduce_window``
differentiated by JAX, whose max-pool gradient (``select_and_scatter``) sends a
window's gradient to its first maximum. Maps of whole models must agree to a
relative L2 error of 1e-5, on inputs full of ties (zero backgrounds, as on MNIST).
"""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

from saliency_guide import layers
from saliency_guide.methods import (
  gradients,
  guided_backprop,
  guided_relu,
  integrated_gradients,
  quadrature,
)
from saliency_guide.models import CNN, GapCNN

DN = ("NHWC", "HWIO", "NHWC")


def plain_conv(x, kernel):
  return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=DN)


def plain_pool(x):
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def rel_l2(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def mnist_like(seed: int, batch: int) -> np.ndarray:
  """Digits-like images: a zero background (ties in every pooling window) and a bright blob."""
  rng = np.random.default_rng(seed)
  images = np.zeros((batch, 28, 28, 1), np.float32)
  for image in images:
    top, left = rng.integers(4, 14, size=2)
    image[top:top + 11, left:left + 9, 0] = rng.uniform(size=(11, 9))
  return images


# ------------------------------------------------------------------------------------
# Convolutions.
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "out", "size"),
    [
        ((2, 7, 5, 1), 4, 3),  # one input channel: conv_one_channel
        ((2, 5, 8, 3), 4, 3),  # several: conv_same
        ((1, 9, 7, 2), 6, 5),
    ],
)
def test_conv_matches_lax_and_autodiff(shape, out, size):
  kx, kk, kg = jax.random.split(jax.random.key(sum(shape) + out + size), 3)
  x = jax.random.normal(kx, shape)
  kernel = jax.random.normal(kk, (size, size, shape[-1], out))
  g = jax.random.normal(kg, (*shape[:3], out))
  fast = layers.conv_one_channel if shape[-1] == 1 else layers.conv_same

  @jax.jit
  def both(x, kernel, g):
    y, vjp = jax.vjp(fast, x, kernel)
    y_ref, vjp_ref = jax.vjp(plain_conv, x, kernel)
    return (y, *vjp(g)), (y_ref, *vjp_ref(g))

  mine, ref = both(x, kernel, g)
  for a, b in zip(mine, ref, strict=True):  # output, input gradient, kernel gradient
    assert rel_l2(a, b) <= 1e-6
  # Called without differentiation (a forward-only program) the primal runs instead of
  # the forward rule of the custom VJP: it must give the same convolution.
  assert rel_l2(jax.jit(fast)(x, kernel), ref[0]) <= 1e-6


def test_conv_forward_over_reverse_matches():
  """Second derivatives (Grad-CAM++ takes them) go through the hand-written backward passes."""
  kx, kv, k1, k2 = jax.random.split(jax.random.key(0), 4)
  x = jax.random.normal(kx, (2, 6, 6, 1))
  v = jax.random.normal(kv, x.shape)
  kernel1 = jax.random.normal(k1, (3, 3, 1, 4))
  kernel2 = jax.random.normal(k2, (3, 3, 4, 4))

  def smooth(conv1, conv2, pool):
    return lambda x: jnp.sum(jnp.tanh(pool(conv2(jnp.tanh(conv1(x, kernel1)), kernel2))) ** 2)

  fast = smooth(layers.conv_one_channel, layers.conv_same, layers.max_pool_2x2)
  ref = smooth(plain_conv, plain_conv, plain_pool)
  hvp, hvp_ref = jax.jit(lambda x, v: tuple(jax.jvp(jax.grad(f), (x,), (v,))[1]
                                            for f in (fast, ref)))(x, v)
  assert rel_l2(hvp, hvp_ref) <= 1e-5


@pytest.mark.parametrize(
    "call",
    [
        dict(window_strides=(2, 2), padding="SAME"),
        dict(window_strides=(1, 1), padding="VALID"),
        dict(window_strides=(1, 1), padding="SAME", rhs_dilation=(2, 2)),
        dict(window_strides=(1, 1), padding=((0, 2), (1, 1))),
    ],
)
def test_conv_general_dilated_passes_other_calls_to_lax(call):
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))
  mine = layers.conv_general_dilated(x, kernel, dimension_numbers=DN, **call)
  ref = lax.conv_general_dilated(x, kernel, dimension_numbers=DN, **call)
  np.testing.assert_array_equal(mine, ref)


def test_conv_general_dilated_takes_the_fast_path_for_the_models_convs(monkeypatch):
  calls = []
  monkeypatch.setattr(layers, "conv_same", lambda x, k: calls.append("same") or plain_conv(x, k))
  monkeypatch.setattr(layers, "conv_one_channel",
                      lambda x, k: calls.append("one") or plain_conv(x, k))
  model = GapCNN(channels=(2, 3, 4), rngs=nnx.Rngs(0))
  jax.eval_shape(model, jnp.zeros((1, 28, 28, 1)))  # traces the forward pass, compiles nothing
  assert calls == ["one", "same", "same"]


def test_models_keep_plain_conv_parameters():
  state = nnx.state(CNN(rngs=nnx.Rngs(0)), nnx.Param)
  assert state["conv1"]["kernel"].shape == (3, 3, 1, 32)
  assert state["conv2"]["kernel"].shape == (3, 3, 32, 64)
  assert state["conv2"]["bias"].shape == (64,)


# ------------------------------------------------------------------------------------
# Max-pooling: XLA's tie rule.
# ------------------------------------------------------------------------------------


@jax.jit
def _pool_both(x, g):
  y, vjp = jax.vjp(layers.max_pool_2x2, x)
  y_ref, vjp_ref = jax.vjp(plain_pool, x)
  return y, vjp(g)[0], y_ref, vjp_ref(g)[0]


@settings(max_examples=40, deadline=None)
@given(
    x=hnp.arrays(np.float32, st.sampled_from([(1, 2, 2, 1), (2, 4, 6, 3)]),
                 elements=st.sampled_from([0.0, 1.0, 2.0, -1.0])),  # ties everywhere
    seed=st.integers(0, 2**16),
)
def test_max_pool_matches_xla_including_ties(x, seed):
  b, h, w, c = x.shape
  g = np.random.default_rng(seed).normal(size=(b, h // 2, w // 2, c)).astype(np.float32)
  y, grad, y_ref, grad_ref = _pool_both(x, g)
  np.testing.assert_array_equal(y, y_ref)
  np.testing.assert_array_equal(grad, grad_ref)


def test_max_pool_tie_goes_to_the_first_maximum_in_row_major_order():
  x = jnp.zeros((1, 2, 2, 1))
  grad = jax.grad(lambda x: layers.max_pool_2x2(x).sum())(x)
  np.testing.assert_array_equal(grad[0, :, :, 0], [[1.0, 0.0], [0.0, 0.0]])
  x = jnp.array([[0.0, 1.0], [1.0, 1.0]]).reshape(1, 2, 2, 1)
  grad = jax.grad(lambda x: layers.max_pool_2x2(x).sum())(x)
  np.testing.assert_array_equal(grad[0, :, :, 0], [[0.0, 1.0], [0.0, 0.0]])


# ------------------------------------------------------------------------------------
# Whole models: the maps of the methods against plain autodiff.
# ------------------------------------------------------------------------------------


def reference_logits(model, x, relu=jax.nn.relu):
  """The model's forward pass with plain ``lax`` convolutions and ``reduce_window`` pooling."""

  def conv(layer, x):
    return plain_conv(x, layer.kernel[...]) + layer.bias[...]

  x = plain_pool(relu(conv(model.conv1, x)))
  x = plain_pool(relu(conv(model.conv2, x)))
  if isinstance(model, GapCNN):
    x = relu(conv(model.conv3, x)).mean(axis=(1, 2))
  else:
    x = relu(model.dense(x.reshape(x.shape[0], -1)))
  return model.head(x)


def reference_gradient(model, x, t, relu=jax.nn.relu):
  def total(x):
    return jnp.take_along_axis(reference_logits(model, x, relu), t[:, None], axis=1).sum()

  return jax.grad(total)(x)


@pytest.fixture(scope="module", params=["cnn", "gap_cnn"])
def model(request):
  if request.param == "cnn":
    return CNN(channels=(8, 16), hidden=32, rngs=nnx.Rngs(0))
  return GapCNN(channels=(8, 16, 16), rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def digits():
  return jnp.asarray(mnist_like(1, 6)), jnp.arange(6) % 10


def test_logits_match_the_plain_model(model, digits):
  x, _ = digits
  assert rel_l2(model(x), reference_logits(model, x)) <= 1e-6


def test_gradients_match_plain_autodiff(model, digits):
  x, t = digits
  assert rel_l2(gradients(model, x, t), reference_gradient(model, x, t)) <= 1e-5


def test_guided_backprop_matches_plain_autodiff_with_the_guided_rule(model, digits):
  x, t = digits
  ref = reference_gradient(model, x, t, relu=guided_relu)
  assert rel_l2(guided_backprop(model, x, t), ref) <= 1e-5


def test_integrated_gradients_in_lax_scan_match_plain_autodiff(model, digits):
  """IG runs the backward pass inside ``lax.scan``, where the layout of the conv differs."""
  x, t = digits
  steps = 8
  alphas, weights = quadrature("riemann_middle", steps)
  ref = sum(w * reference_gradient(model, a * x, t) for a, w in zip(alphas, weights, strict=True))
  mine = integrated_gradients(model, x, t, steps=steps, method="riemann_middle",
                              internal_batch_size=6)
  assert rel_l2(mine, x * ref) <= 1e-5


def test_kernel_gradients_for_training_match(model, digits):
  x, t = digits
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def loss(params, forward):
    logits = forward(nnx.merge(graphdef, params, rest), x)
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), t[:, None], axis=1).mean()

  mine = jax.grad(loss)(params, lambda m, x: m(x))
  ref = jax.grad(loss)(params, reference_logits)
  for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(ref), strict=True):
    assert rel_l2(a, b) <= 1e-5
