"""Tests of the class-activation methods (saliency_guide.methods._cam and ._gradcam).

What is pinned down:

* CAM on a hand-computed tiny global-average-pooling model (literal numbers),
  and the identity "mean of the map + bias = logit" for any input (hypothesis);
* Grad-CAM = ReLU(CAM) / Z on GapCNN at its last layer (the Grad-CAM paper's
  argument), with and without the ReLU and the upsampling;
* Grad-CAM's gradient is taken at the activations A, not at 2A: a model whose
  head squares the exposed map gives different, hand-computable weights at A
  and at 2A;
* the exact diagonal second and third derivatives used by Grad-CAM++ against
  central finite differences of the model in float64, on a tiny smooth model
  whose Hessian is not diagonal (so the all-ones-direction shortcut H·1 would
  fail); Grad-CAM++ against eq. 10 evaluated on those finite differences; exact
  = shortcut on ReLU models and exact != shortcut on the smooth one;
* Score-CAM against a channel-by-channel loop, including a dead channel;
* Guided Grad-CAM = guided_backprop × upsampled Grad-CAM (raw maps);
* the upsampling's pixel-centre alignment on a ramp;
* shapes with and without upsampling for every layer; errors; no retracing on
  new images of the same shape; the caller's model is left untouched.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from saliency_guide import methods
from saliency_guide.methods import _cam, _gradcam
from saliency_guide.models import CNN, MLP, FeatureMaps, GapCNN

METHODS = {
    "cam": methods.cam,
    "grad_cam": methods.grad_cam,
    "guided_grad_cam": methods.guided_grad_cam,
    "grad_cam_plus_plus": methods.grad_cam_plus_plus,
    "score_cam": methods.score_cam,
}


def numpy_init(build, seed=0):
  """``build(rngs)`` with parameters drawn by NumPy: LeCun-normal kernels, N(0, 0.1²) biases.

  The model is built abstractly (``nnx.eval_shape``) and filled from NumPy, so no JAX
  initialiser is compiled: on a busy CPU that is most of a test file's run time. The
  nonzero biases give maps and weights of both signs.
  """
  graphdef, state = nnx.split(nnx.eval_shape(lambda: build(nnx.Rngs(0))))
  rng = np.random.default_rng(seed)

  def draw(leaf):
    if len(leaf.shape) >= 2:
      scale = 1 / np.sqrt(np.prod(leaf.shape[:-1]))
    else:
      scale = 0.1
    return jnp.asarray(scale * rng.normal(size=leaf.shape), leaf.dtype)

  return nnx.merge(graphdef, jax.tree.map(draw, state))


def small(model_cls, seed=0):
  if model_cls is CNN:
    return numpy_init(lambda rngs: CNN(channels=(4, 6), hidden=12, rngs=rngs), seed)
  if model_cls is MLP:
    return numpy_init(lambda rngs: MLP(hidden=(8,), rngs=rngs), seed)
  return numpy_init(lambda rngs: GapCNN(channels=(4, 6, 8), rngs=rngs), seed)


def captured(model, images, layer):
  """The feature maps of ``layer``, through one jitted forward pass (no eager op compiles)."""
  return jax.jit(lambda model, x: _cam.feature_maps(model, x, layer)[1])(model, images)


def digits(seed=0, batch=2):
  return jnp.asarray(np.random.default_rng(seed).uniform(size=(batch, 28, 28, 1)), jnp.float32)


def set_param(param, value):
  param[...] = jnp.asarray(value, jnp.float32).reshape(param.shape)


# --------------------------------------------------------------------------- #
# Tiny hand-built models.                                                      #
# --------------------------------------------------------------------------- #


class TinyGap(FeatureMaps):
  """1×1 conv → ReLU → exposed "feat" → global average → dense head."""

  feature_layers = ("feat",)

  def __init__(self, rngs):
    self.conv = nnx.Conv(1, 2, kernel_size=(1, 1), rngs=rngs)
    self.head = nnx.Linear(2, 3, rngs=rngs)

  def __call__(self, x):
    a = self.expose("feat", jax.nn.relu(self.conv(x)))
    return self.head(a.mean(axis=(1, 2)))


def tiny_gap(cls=TinyGap):
  model = numpy_init(cls)
  set_param(model.conv.kernel, [1.0, -1.0])  # A^0 = relu(x), A^1 = relu(0.5 - x)
  set_param(model.conv.bias, [0.0, 0.5])
  set_param(model.head.kernel, [[1.0, -1.0, 0.5], [2.0, 3.0, 0.0]])  # kernel[k, c] = w^c_k
  set_param(model.head.bias, [0.1, 0.2, 0.3])
  return model


class MaxPoolHead(TinyGap):
  """Same shapes as TinyGap, but global *max* pooling: CAM does not apply."""

  def __call__(self, x):
    a = self.expose("feat", jax.nn.relu(self.conv(x)))
    return self.head(a.max(axis=(1, 2)))


class QuadraticHead(FeatureMaps):
  """y^c = sum_k v_ck mean(A_k^2) + u_ck mean(A_k): the gradient depends on A."""

  feature_layers = ("feat",)

  def __init__(self, rngs):
    self.conv = nnx.Conv(1, 2, kernel_size=(1, 1), rngs=rngs)
    self.v = nnx.Param(jnp.zeros((2, 2)))  # (K, classes)
    self.u = nnx.Param(jnp.zeros((2, 2)))

  def __call__(self, x):
    a = self.expose("feat", jax.nn.relu(self.conv(x)))
    return (a**2).mean(axis=(1, 2)) @ self.v[...] + a.mean(axis=(1, 2)) @ self.u[...]


def quadratic_head():
  model = numpy_init(QuadraticHead)
  set_param(model.conv.kernel, [1.0, -1.0])
  set_param(model.conv.bias, [0.0, 0.5])
  set_param(model.v, [[1.0, -2.0], [0.5, 1.0]])
  set_param(model.u, [[0.3, 1.0], [-1.0, 2.0]])
  return model


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
  model = numpy_init(SmoothHead)
  set_param(model.conv.bias, [0.2, 0.1, 0.3])
  model.dense.kernel[...] = 2.0 * model.dense.kernel[...]  # push tanh off its linear range
  return model


TINY_IMAGE = jnp.array([[1.0, 2.0], [3.0, -1.0]]).reshape(1, 2, 2, 1)


# --------------------------------------------------------------------------- #
# CAM.                                                                         #
# --------------------------------------------------------------------------- #


def test_cam_hand_computed():
  model = tiny_gap()
  # A^0 = relu(x) = [[1, 2], [3, 0]], A^1 = relu(0.5 - x) = [[0, 0], [0, 1.5]].
  expected = {
      0: [[1.0, 2.0], [3.0, 3.0]],  # 1 A^0 + 2 A^1
      1: [[-1.0, -2.0], [-3.0, 4.5]],  # -1 A^0 + 3 A^1
      2: [[0.5, 1.0], [1.5, 0.0]],  # 0.5 A^0 + 0 A^1
  }
  for c, m in expected.items():
    got = methods.cam(model, TINY_IMAGE, jnp.array([c]), upsample=False)
    np.testing.assert_allclose(got[0], m, atol=1e-6)
  # Logit of class 1: mean(-A^0 + 3 A^1) + 0.2 = (-1.5 / 4) + 0.2 = -0.175.
  np.testing.assert_allclose(model(TINY_IMAGE)[0, 1], -0.175, atol=1e-6)


@settings(max_examples=20, deadline=None)
@given(
    x=hnp.arrays(np.float32, (2, 3, 3, 1), elements=st.floats(-2, 2, width=32)),
    c=st.lists(st.integers(0, 2), min_size=2, max_size=2),
)
def test_cam_mean_plus_bias_is_the_logit(x, c):
  model = tiny_gap()
  targets = jnp.array(c)
  maps = methods.cam(model, x, targets, upsample=False)
  logits = model(jnp.asarray(x))[jnp.arange(2), targets]
  np.testing.assert_allclose(maps.mean(axis=(1, 2)) + model.head.bias[...][targets], logits,
                             rtol=1e-5, atol=1e-5)


def test_cam_on_gapcnn_matches_head_weights():
  model = small(GapCNN)
  x, t = digits(), jnp.array([0, 9])
  a = captured(model, x, "conv3")
  expected = jnp.einsum("bhwk,kb->bhw", a, model.head.kernel[...][:, t])
  np.testing.assert_allclose(methods.cam(model, x, t, upsample=False), expected, atol=1e-5)


# --------------------------------------------------------------------------- #
# Grad-CAM.                                                                    #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("upsample", [False, True])
def test_grad_cam_is_cam_over_z_on_gapcnn(upsample):
  model = small(GapCNN)
  x, t = digits(), jnp.array([0, 9])
  z = 7 * 7
  cam_maps = methods.cam(model, x, t, upsample=upsample)
  assert float(cam_maps.min()) < 0 < float(cam_maps.max())  # the ReLU has work to do
  signed = methods.grad_cam(model, x, t, upsample=upsample, relu=False)
  np.testing.assert_allclose(signed, cam_maps / z, atol=1e-6, rtol=1e-5)
  if not upsample:  # the ReLU acts at the layer's resolution, before resizing
    np.testing.assert_allclose(methods.grad_cam(model, x, t, upsample=False),
                               jax.nn.relu(cam_maps) / z, atol=1e-6, rtol=1e-5)


def test_grad_cam_gradient_is_taken_at_a_not_2a():
  model = quadratic_head()
  x = jnp.array([[1.0, 2.0], [3.0, -1.0]]).reshape(1, 2, 2, 1)
  a = np.stack([np.maximum(x[0, ..., 0], 0), np.maximum(0.5 - x[0, ..., 0], 0)], -1)  # (2,2,2)
  z = 4
  v, u = np.asarray(model.v[...]), np.asarray(model.u[...])

  def expected(c, at):  # Grad-CAM (no ReLU) with the gradient evaluated at `at`
    grad = 2 * v[:, c] * at / z + u[:, c] / z  # dy^c/dA_kij, (2, 2, K)
    alpha = grad.mean(axis=(0, 1))
    return (alpha * a).sum(-1)

  for c in (0, 1):
    got = methods.grad_cam(model, x, jnp.array([c]), upsample=False, relu=False)[0]
    assert np.abs(expected(c, a) - expected(c, 2 * a)).max() > 0.1  # the bug is visible
    np.testing.assert_allclose(got, expected(c, a), atol=1e-6)


def test_layer_score_perturbation_is_zero():
  model = quadratic_head()
  score = _cam.layer_score(model, TINY_IMAGE, jnp.array([0]), "feat")
  shape = _cam.map_shape(model, TINY_IMAGE, "feat")
  value, a = score(jnp.zeros(shape))
  np.testing.assert_allclose(value, model(TINY_IMAGE)[0, 0], atol=1e-6)  # nothing added
  np.testing.assert_allclose(a, nnx.capture(model, nnx.Intermediate)(TINY_IMAGE)[1]["feat"]
                             .get_value()[0], atol=0)


# --------------------------------------------------------------------------- #
# Grad-CAM++: exact derivatives.                                               #
# --------------------------------------------------------------------------- #


def finite_differences(model, images, targets, h=1e-3):
  """S', S'', S''' per element of "feat" by central differences of the model in float64."""
  with jax.enable_x64(True):
    graphdef, state = nnx.split(model)
    model = nnx.merge(graphdef, jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), state))
    images = jnp.asarray(images, jnp.float64)
    score = _cam.layer_score(model, images, targets, "feat")
    shape = _cam.map_shape(model, images, "feat")
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
  x = jnp.asarray(np.random.default_rng(3).uniform(size=(2, 5, 5, 1)), jnp.float32)
  t = jnp.array([0, 2])
  a, d1, d2, d3 = _gradcam.diagonal_derivatives(model, x, t)
  f1, f2, f3 = finite_differences(model, x, t)
  assert np.abs(f2).max() > 1e-2 and np.abs(f3).max() > 1e-2  # a genuinely smooth head
  for got, want in ((d1, f1), (d2, f2), (d3, f3)):
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, atol=1e-4 * scale)
  # The Hessian is not diagonal: H·1 (the all-ones direction) is not its diagonal.
  score = _cam.layer_score(model, x, t, "feat")
  ones = jnp.ones_like(a)
  h_ones = jax.jvp(lambda p: jax.grad(score, has_aux=True)(p)[0], (jnp.zeros_like(a),),
                   (ones,))[1]
  assert np.abs(h_ones - d2).max() > 0.1 * np.abs(d2).max()


def test_grad_cam_plus_plus_matches_equation_10():
  model = smooth_head()
  x = jnp.asarray(np.random.default_rng(3).uniform(size=(2, 5, 5, 1)), jnp.float32)
  t = jnp.array([0, 2])
  a = np.asarray(_gradcam.diagonal_derivatives(model, x, t)[0], np.float64)
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
def test_grad_cam_plus_plus_relu_network_exact_equals_shortcut(model_cls):
  model = small(model_cls)
  x, t = digits(), jnp.array([5, 7])
  layer = "conv2"  # CNN: max-pool, dense, ReLU above it; GapCNN: conv3, ReLU, GAP
  _, _, d2, d3 = _gradcam.diagonal_derivatives(model, x, t, layer=layer)
  assert float(jnp.abs(d2).max()) == 0.0 and float(jnp.abs(d3).max()) == 0.0
  exact = methods.grad_cam_plus_plus(model, x, t, layer=layer)
  np.testing.assert_array_equal(
      exact, methods.grad_cam_plus_plus(model, x, t, layer=layer, derivatives="shortcut"))
  assert float(exact.max()) > 0


def test_grad_cam_plus_plus_on_gapcnn_last_layer_closed_form():
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


# --------------------------------------------------------------------------- #
# Score-CAM and Guided Grad-CAM.                                               #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("layer", ["conv1", "conv2"])
def test_score_cam_against_channel_loop(layer):
  model = small(CNN)
  # Channel 0 is constant (zero kernel, positive bias): no region to highlight, so its
  # mask is 0, the masked input is the baseline, and its weight must be exactly 0.
  conv = getattr(model, layer)
  conv.kernel[..., 0] = 0.0
  conv.bias[..., 0] = 0.3
  x, t = digits(), jnp.array([3, 6])
  a = np.asarray(captured(model, x, layer))
  np.testing.assert_allclose(a[..., 0], 0.3)

  def logit(images):
    return np.asarray(model(jnp.asarray(images)))[np.arange(2), np.asarray(t)]

  baseline = logit(np.zeros_like(x))
  weights = np.zeros((2, a.shape[-1]))
  for k in range(a.shape[-1]):
    up = np.asarray(jax.image.resize(a[..., k], (2, 28, 28), "bilinear"))
    low, high = up.min(axis=(1, 2), keepdims=True), up.max(axis=(1, 2), keepdims=True)
    mask = np.where(high > low, (up - low) / np.where(high > low, high - low, 1), 0)
    weights[:, k] = logit(np.asarray(x) * mask[..., None]) - baseline
  assert np.all(weights[:, 0] == 0) and np.abs(weights[:, 1:]).max() > 0
  expected = np.einsum("bk,bhwk->bhw", weights, a)
  got = methods.score_cam(model, x, t, layer=layer, upsample=False, relu=False)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_score_cam_relu():
  model = small(GapCNN)
  x, t = digits(), jnp.array([0, 2])
  signed = methods.score_cam(model, x, t, upsample=False, relu=False)
  assert float(signed.min()) < 0 < float(signed.max())
  np.testing.assert_allclose(methods.score_cam(model, x, t, layer="conv3", upsample=False),
                             jax.nn.relu(signed), atol=1e-6)


@pytest.mark.parametrize("model_cls", [CNN, GapCNN])
def test_guided_grad_cam_is_the_product_of_raw_maps(model_cls):
  model = small(model_cls)
  x, t = digits(), jnp.array([0, 9])
  layer = model.feature_layers[-2]
  expected = (methods.guided_backprop(model, x, t)
              * methods.grad_cam(model, x, t, layer=layer)[..., None])
  got = methods.guided_grad_cam(model, x, t, layer=layer)
  assert got.shape == x.shape
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7 * float(jnp.abs(expected).max()))


# --------------------------------------------------------------------------- #
# Upsampling, shapes, errors, jit.                                             #
# --------------------------------------------------------------------------- #


def test_upsampling_aligns_cell_centres_with_pixel_block_centres():
  ramp = jnp.broadcast_to(jnp.arange(7.0)[None, None, :], (1, 7, 7))  # value = column index
  up = _cam.upsample_maps(ramp, (28, 28))[0, 0]
  p = np.arange(28)
  # Cell r summarises pixels 4r..4r+3 (centre 4r + 1.5): pixel p sits at cell (p + 0.5)/4 - 0.5,
  # and beyond the outermost centres the edge value is repeated.
  np.testing.assert_allclose(up, np.clip((p + 0.5) / 4 - 0.5, 0, 6), atol=1e-6)


SHAPES = {"conv1": (28, 28), "conv2": (14, 14), "conv3": (7, 7)}


@pytest.mark.parametrize("name", ["grad_cam", "grad_cam_plus_plus", "score_cam"])
def test_shapes_every_layer(name):
  model = small(GapCNN)
  x, t = digits(), jnp.array([1, 2])
  assert METHODS[name](model, x, t).shape == (2, 28, 28)
  for layer in model.feature_layers:
    low = METHODS[name](model, x, t, layer=layer, upsample=False)
    assert low.shape == (2, *SHAPES[layer])
    assert bool(jnp.isfinite(low).all()) and float(low.min()) >= 0  # after the ReLU


def test_shapes_cam_and_guided():
  model = small(GapCNN)
  x, t = digits(), jnp.array([1, 2])
  assert methods.cam(model, x, t).shape == (2, 28, 28)
  assert methods.cam(model, x, t, upsample=False).shape == (2, 7, 7)
  assert methods.guided_grad_cam(model, x, t).shape == (2, 28, 28, 1)
  cnn = small(CNN)
  assert methods.grad_cam(cnn, x, t, layer="conv1", upsample=False).shape == (2, 28, 28)
  assert methods.grad_cam(cnn, x, t, upsample=False).shape == (2, 14, 14)


@pytest.mark.parametrize("name", list(METHODS))
def test_errors_common(name):
  method = METHODS[name]
  x, t = digits(), jnp.array([1, 2])
  with pytest.raises(ValueError, match="no conv feature maps"):
    method(small(MLP), x, t)
  model = small(GapCNN)
  with pytest.raises(ValueError, match=r"layer: expected one of 'conv1', 'conv2', 'conv3', got "
                                       r"'head'"):
    method(model, x, t, layer="head")
  with pytest.raises(TypeError, match="layer"):
    method(model, x, t, layer=3)
  with pytest.raises(TypeError, match="upsample"):
    method(model, x, t, upsample="yes")
  with pytest.raises(ValueError, match="images"):
    method(model, x.transpose(0, 3, 1, 2), t)
  with pytest.raises(ValueError, match="targets"):
    method(model, x, jnp.array([1, 10]))


def test_errors_cam():
  x, t = digits(), jnp.array([1, 2])
  with pytest.raises(ValueError, match=r"global average pooling.*CNN's 'conv2' has 6 channels"):
    methods.cam(small(CNN), x, t)
  with pytest.raises(ValueError, match="exists only there"):
    methods.cam(small(GapCNN), x, t, layer="conv2")
  # Same shapes as a GAP model, but global max pooling: caught on the logits themselves.
  with pytest.raises(ValueError, match="relative error"):
    methods.cam(tiny_gap(MaxPoolHead), TINY_IMAGE, jnp.array([0]))


def test_errors_options():
  model, x, t = small(GapCNN), digits(), jnp.array([1, 2])
  with pytest.raises(ValueError, match="upsample"):
    methods.guided_grad_cam(model, x, t, upsample=False)
  with pytest.raises(ValueError, match="derivatives: expected one of 'exact', 'shortcut'"):
    methods.grad_cam_plus_plus(model, x, t, derivatives="powers")
  with pytest.raises(TypeError, match="relu"):
    methods.grad_cam(model, x, t, relu=1)


@pytest.mark.parametrize(
    ("name", "core"),
    [("cam", _cam._cam), ("grad_cam", _gradcam._grad_cam),
     ("guided_grad_cam", _gradcam._guided_grad_cam),
     ("grad_cam_plus_plus", _gradcam._grad_cam_plus_plus), ("score_cam", _cam._score_cam)],
)
def test_no_retracing_on_new_images(name, core):
  model = small(GapCNN, seed=5)
  t = jnp.array([1, 2])
  METHODS[name](model, digits(seed=10), t)
  before = core._cache_size()
  METHODS[name](model, digits(seed=11), jnp.array([3, 4]))
  assert core._cache_size() == before


def test_callers_model_untouched():
  model = small(GapCNN)
  before = jax.tree.map(np.asarray, nnx.state(model))
  x, t = digits(), jnp.array([1, 2])
  for method in METHODS.values():
    method(model, x, t)
  after = nnx.state(model)
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, after))
  assert model.activation is not methods.guided_relu
  assert not hasattr(model, "__captures__")
