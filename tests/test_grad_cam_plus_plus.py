"""Tests of Grad-CAM++ (saliency_guide.methods.grad_cam_plus_plus).

* the exact diagonal second and third derivatives against central finite
  differences of the model in float64, on a tiny smooth model whose Hessian is
  not diagonal (so the all-ones-direction shortcut H·1 would fail);
* Grad-CAM++ against eq. 10 evaluated on those finite differences; exact =
  shortcut on ReLU models and exact != shortcut on the smooth one;
* the closed form on GapCNN's last layer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from feature_map_models import captured, digits, numpy_init, set_param, small
from saliency_guide import methods
from saliency_guide.methods._feature_maps import layer_score, map_shape
from saliency_guide.models import CNN, FeatureMaps, GapCNN


class SmoothHead(FeatureMaps):
  """3×3 conv → ReLU → exposed "feat" → dense → tanh → dense: non-separable, smooth."""

  feature_layers = ("feat",)

  def __init__(self, rngs):
    self.conv = nnx.Conv(1, 3, kernel_size=(3, 3), padding="SAME", rngs=rngs)
    self.dense = nnx.Linear(5 * 5 * 3, 6, rngs=rngs)
    self.head = nnx.Linear(6, 3, rngs=rngs)

  def __call__(self, x):
    a = self.expose("feat", jax.nn.relu(self.conv(x)))
    return self.head(jnp.tanh(self.dense(a.reshape(a.shape[0], -1))))


def smooth_head():
  model = numpy_init(lambda: SmoothHead(nnx.Rngs(0)))
  set_param(model.conv.bias, [0.2, 0.1, 0.3])
  model.dense.kernel[...] = 2.0 * model.dense.kernel[...]  # push tanh off its linear range
  return model


def smooth_inputs():
  x = jnp.asarray(np.random.default_rng(3).uniform(size=(2, 5, 5, 1)), jnp.float32)
  return x, jnp.array([0, 2])


def finite_differences(model, images, targets, h=1e-3):
  """S', S'', S''' per element of "feat" by central differences of the model in float64."""
  with jax.enable_x64(True):
    graphdef, state = nnx.split(model)
    model = nnx.merge(graphdef, jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), state))
    images = jnp.asarray(images, jnp.float64)
    score = layer_score(model, images, targets, "feat")
    shape = map_shape(model, images, "feat")
    n = int(np.prod(shape))
    basis = jnp.eye(n, dtype=jnp.float64).reshape(n, *shape)  # one image's element at a time
    steps = jnp.array([-2, -1, 0, 1, 2], jnp.float64) * h
    g = jax.jit(jax.vmap(jax.vmap(lambda e, s: score(s * e)[0], (None, 0)), (0, None)))(
        basis, steps)  # (n, 5)
    first = (g[:, 3] - g[:, 1]) / (2 * h)
    second = (g[:, 3] - 2 * g[:, 2] + g[:, 1]) / h**2
    third = (g[:, 4] - 2 * g[:, 3] + 2 * g[:, 1] - g[:, 0]) / (2 * h**3)
    return [np.asarray(d).reshape(shape) for d in (first, second, third)]


def test_diagonal_derivatives_match_finite_differences():
  model = smooth_head()
  x, t = smooth_inputs()
  a, d1, d2, d3 = methods.diagonal_derivatives(model, x, t)
  f1, f2, f3 = finite_differences(model, x, t)
  assert np.abs(f2).max() > 1e-2 and np.abs(f3).max() > 1e-2  # a genuinely smooth head
  for got, want in ((d1, f1), (d2, f2), (d3, f3)):
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, atol=1e-4 * scale)
  # The Hessian is not diagonal: H·1 (the all-ones direction) is not its diagonal.
  score = layer_score(model, x, t, "feat")
  ones = jnp.ones_like(a)
  h_ones = jax.jvp(lambda p: jax.grad(score, has_aux=True)(p)[0], (jnp.zeros_like(a),),
                   (ones,))[1]
  assert np.abs(h_ones - d2).max() > 0.1 * np.abs(d2).max()


def test_grad_cam_plus_plus_matches_equation_10():
  model = smooth_head()
  x, t = smooth_inputs()
  a = np.asarray(methods.diagonal_derivatives(model, x, t)[0], np.float64)
  s1, s2, s3 = finite_differences(model, x, t)

  def reference(second, third):  # eq. 10 with Y = exp(S), e^S divided out
    den = 2 * second + a.sum(axis=(1, 2), keepdims=True) * third
    alpha = np.where(den != 0, second / np.where(den != 0, den, 1), 0)
    w = (alpha * np.maximum(s1, 0)).sum(axis=(1, 2))
    return np.einsum("bk,bhwk->bhw", w, a)

  exact = reference(s1**2 + s2, s1**3 + 3 * s1 * s2 + s3)
  shortcut = reference(s1**2, s1**3)
  got_exact = methods.grad_cam_plus_plus(model, x, t, upsample=False, relu=False)
  got_shortcut = methods.grad_cam_plus_plus(model, x, t, upsample=False, relu=False,
                                            derivatives="shortcut")
  scale = np.abs(exact).max()
  np.testing.assert_allclose(got_exact, exact, atol=1e-3 * scale)
  np.testing.assert_allclose(got_shortcut, shortcut, atol=1e-3 * scale)
  assert np.abs(exact - shortcut).max() > 0.05 * scale  # the shortcut is wrong here


@pytest.mark.parametrize("model_cls", [CNN, GapCNN])
def test_relu_network_exact_equals_shortcut(model_cls):
  model = small(model_cls)
  x, t = digits(), jnp.array([5, 7])
  layer = "conv2"  # CNN: max-pool, dense, ReLU above it; GapCNN: conv3, ReLU, GAP
  _, _, d2, d3 = methods.diagonal_derivatives(model, x, t, layer=layer)
  assert float(jnp.abs(d2).max()) == 0.0 and float(jnp.abs(d3).max()) == 0.0
  exact = methods.grad_cam_plus_plus(model, x, t, layer=layer)
  np.testing.assert_array_equal(
      exact, methods.grad_cam_plus_plus(model, x, t, layer=layer, derivatives="shortcut"))
  assert float(exact.max()) > 0


def test_gapcnn_last_layer_closed_form():
  # dy/dA^k_ij = w_k / Z everywhere, so alpha_k = 1 / (2 + sum(A^k) w_k / Z) where w_k != 0.
  model = small(GapCNN)
  x, t = digits(), jnp.array([3, 8])
  a = np.asarray(captured(model, x, "conv3"), np.float64)
  w = np.asarray(model.head.kernel[...], np.float64)[:, np.asarray(t)].T / 49  # (B, K)
  den = 2 + a.sum(axis=(1, 2)) * w
  weights = np.where(w > 0, 49 * np.maximum(w, 0) / den, 0.0)
  expected = np.maximum(np.einsum("bk,bhwk->bhw", weights, a), 0)
  got = methods.grad_cam_plus_plus(model, x, t, upsample=False)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6 * expected.max())


def test_unknown_derivatives_is_an_error():
  model, x, t = small(GapCNN), digits(), jnp.array([1, 2])
  message = "derivatives: expected one of 'exact', 'shortcut'"
  with pytest.raises(ValueError, match=message):
    methods.grad_cam_plus_plus(model, x, t, derivatives="powers")
  with pytest.raises(ValueError, match=message):
    methods.core(methods.grad_cam_plus_plus, model, x, derivatives="powers")
