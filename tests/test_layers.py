"""max_pool_2x2 against flax's max_pool (XLA's select_and_scatter gradient)."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from saliency_guide import layers
from saliency_guide.layers import max_pool_2x2, relu, relu_max_pool_2x2


def _reference(x):
  return nnx.max_pool(x, (2, 2), (2, 2))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), levels=st.integers(1, 4))
def test_max_pool_matches_flax_values_and_gradient_including_ties(seed, levels):
  key1, key2 = jax.random.split(jax.random.key(seed))
  # Few distinct values -> many ties inside windows, as on MNIST's zero background.
  x = jnp.floor(jax.random.uniform(key1, (2, 6, 8, 3)) * levels) / levels
  cotangent = jax.random.normal(key2, (2, 3, 4, 3))
  np.testing.assert_array_equal(max_pool_2x2(x), _reference(x))
  ours = jax.grad(lambda x: (max_pool_2x2(x) * cotangent).sum())(x)
  theirs = jax.grad(lambda x: (_reference(x) * cotangent).sum())(x)
  np.testing.assert_array_equal(ours, theirs)


def test_max_pool_tie_goes_to_first_maximum_in_row_major_order():
  x = jnp.zeros((1, 2, 2, 1))  # a four-way tie
  grad = jax.grad(lambda x: max_pool_2x2(x).sum())(x)
  np.testing.assert_array_equal(grad[0, :, :, 0], [[1.0, 0.0], [0.0, 0.0]])


def test_max_pool_gradient_is_routed_to_the_maximum_only():
  x = jnp.array([[1.0, 5.0], [2.0, 3.0]]).reshape(1, 2, 2, 1)
  grad = jax.grad(lambda x: 7.0 * max_pool_2x2(x).sum())(x)
  np.testing.assert_array_equal(grad[0, :, :, 0], [[0.0, 7.0], [0.0, 0.0]])


def test_max_pool_under_jit_and_vmap():
  x = jax.random.normal(jax.random.key(0), (3, 2, 4, 4, 2))
  out = jax.jit(jax.vmap(max_pool_2x2))(x)
  np.testing.assert_array_equal(out, jax.vmap(_reference)(x))


def test_relu_values_and_gradient_convention_at_zero():
  x = jnp.array([-1.0, 0.0, 2.0])
  np.testing.assert_array_equal(relu(x), [0.0, 0.0, 2.0])
  np.testing.assert_array_equal(jax.grad(lambda x: relu(x).sum())(x), [0.0, 0.0, 1.0])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), levels=st.integers(1, 4))
def test_fused_relu_max_pool_is_bitwise_the_composition(seed, levels):
  # Few levels, centred on zero: ties, all-negative windows and exact zeros abound.
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.integers(-levels, levels + 1, (3, 6, 8, 2)).astype(np.float32) / 2)
  cotangent = jnp.asarray(rng.normal(size=(3, 3, 4, 2)).astype(np.float32))

  def composed(x):
    return max_pool_2x2(relu(x))

  fused_out, fused_vjp = jax.vjp(relu_max_pool_2x2, x)
  plain_out, plain_vjp = jax.vjp(composed, x)
  np.testing.assert_array_equal(fused_out, plain_out)
  np.testing.assert_array_equal(fused_vjp(cotangent)[0], plain_vjp(cotangent)[0])
  np.testing.assert_array_equal(relu_max_pool_2x2(x), composed(x))  # undifferentiated


def test_fused_relu_max_pool_negative_window_gets_no_gradient():
  x = jnp.array([[-1.0, -3.0], [-2.0, -1.0]]).reshape(1, 2, 2, 1)  # tie at the maximum
  assert float(relu_max_pool_2x2(x).squeeze()) == 0.0
  grad = jax.grad(lambda x: relu_max_pool_2x2(x).sum())(x)
  np.testing.assert_array_equal(grad, jnp.zeros_like(x))


def test_fused_relu_max_pool_forward_over_reverse():
  # Grad-CAM++ differentiates the backward pass with jvp: it must match the composition.
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype(np.float32))

  def backward(f):
    return lambda x: jax.grad(lambda x: (f(x) ** 2).sum())(x)

  tangent = jnp.ones_like(x)
  _, fused = jax.jvp(backward(relu_max_pool_2x2), (x,), (tangent,))
  _, plain = jax.jvp(backward(lambda x: max_pool_2x2(relu(x))), (x,), (tangent,))
  np.testing.assert_allclose(fused, plain, rtol=1e-6, atol=1e-6)


def test_the_fused_order_is_chosen_by_the_xla_setting(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=")
  assert layers.relu_after_pool_pays() == (jax.default_backend() == "cpu")
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type= --xla_other=1")
  assert layers.relu_after_pool_pays() == (jax.default_backend() == "cpu")
  assert layers.ynn_fusions_off() == (jax.default_backend() == "cpu")
  for flags in ("", "--xla_cpu_experimental_ynn_fusion_type=all"):
    monkeypatch.setenv("XLA_FLAGS", flags)
    assert not layers.relu_after_pool_pays()
    assert not layers.ynn_fusions_off()


def test_models_fuse_only_with_the_default_relu_and_outside_a_capture(monkeypatch):
  from saliency_guide.methods import with_softplus
  from saliency_guide.models import CNN, GapCNN

  x = jnp.ones((2, 28, 28, 1))
  monkeypatch.setattr(layers, "relu_after_pool_pays", lambda: False)
  assert "relu_max_pool_2x2" not in str(jax.make_jaxpr(CNN(rngs=nnx.Rngs(0)))(x))
  monkeypatch.setattr(layers, "relu_after_pool_pays", lambda: True)
  for model in (CNN(rngs=nnx.Rngs(0)), GapCNN(rngs=nnx.Rngs(0))):
    assert str(jax.make_jaxpr(model)(x)).count("relu_max_pool_2x2") == 2
    smooth = with_softplus(model, beta=10.0)
    assert "relu_max_pool_2x2" not in str(jax.make_jaxpr(smooth)(x))
    _, captured = nnx.capture(model, nnx.Intermediate)(x)
    assert {"conv1", "conv2"} <= set(captured), sorted(captured)  # full-size maps sown


def test_every_rule_based_method_gives_the_same_maps_through_the_fused_order(monkeypatch):
  # The rule interpreters read relu_max_pool_2x2's body: with the fused order on, their
  # maps must be those of the composition (jit caches cleared: the choice is made while
  # tracing).
  from saliency_guide import methods
  from saliency_guide.models import CNN

  model = CNN(channels=(4, 8), hidden=16, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  x = jnp.asarray((rng.random((3, 28, 28, 1)) * (rng.random((3, 28, 28, 1)) > 0.6))
                  .astype(np.float32))  # zero background: tied windows
  t = jnp.array([0, 3, 7])
  calls = {
      "gradients": lambda: methods.gradients(model, x, t),
      "guided_backprop": lambda: methods.guided_backprop(model, x, t),
      "deconvolution": lambda: methods.deconvolution(model, x, t),
      "lrp": lambda: methods.lrp(model, x, t, composite="epsilon_plus_flat"),
      "deeplift": lambda: methods.deeplift(model, x, t),
      "grad_cam_plus_plus": lambda: methods.grad_cam_plus_plus(model, x, t),
  }
  maps = {}
  for fused in (False, True):
    monkeypatch.setattr(layers, "relu_after_pool_pays", lambda fused=fused: fused)
    jax.clear_caches()
    maps[fused] = {name: np.asarray(call()) for name, call in calls.items()}
  for name in calls:
    np.testing.assert_allclose(maps[True][name], maps[False][name], rtol=1e-6, atol=1e-7,
                               err_msg=name)
