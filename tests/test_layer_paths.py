"""Layers named by path on models the package does not define (issue 18), for the CAM family.

* every CAM-family method (CAM, Grad-CAM, Guided Grad-CAM, Grad-CAM++ with its
  diagonal derivatives, Score-CAM) at a layer named by its dotted path, on user
  models (a ResNet with BatchNorm in eval mode and residual blocks in an
  ``nnx.List``, a conv + ReLU block model with a GAP + dense head, a LayerNorm
  model with ``jnp.maximum``, Linen parts through ``nnx.bridge``), against
  references built from the model's own forward pass split at that layer;
* a path and the submodule object give identical maps; the default layer;
  the caller's model is not modified;
* the package's ``CNN`` and a user's copy whose conv + ReLU are block modules
  give the same maps for every method (short names vs paths);
* Grad-CAM at the last block of a GAP + dense model is ReLU(CAM) / Z; CAM on
  any GAP + linear head, refused elsewhere;
* exact third derivatives through the stand-in (nested jvp of grad) on a GELU
  model, against their closed form;
* clear errors for unknown paths, non-spatial layers, wrong types.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen, nnx

import user_models as um
from feature_map_models import small
from model_factories import compilations, numpy_model
from saliency_guide import methods
from saliency_guide.methods._feature_maps import feature_maps
from saliency_guide.models import CNN

TARGETS = jnp.array([3, 7])


def images(seed=0, batch=2):
  return jnp.asarray(np.random.default_rng(seed).uniform(size=(batch, 28, 28, 1)), jnp.float32)


def resnet():
  return um.with_random_batch_stats(numpy_model(lambda: um.ResNet(rngs=nnx.Rngs(0))))


def block_gap():
  return numpy_model(lambda: um.BlockGap(rngs=nnx.Rngs(0)))


def layer_norm_net():
  return numpy_model(lambda: um.LayerNormNet(rngs=nnx.Rngs(0)))


def linen_parts():
  return um.LinenParts(seed=0)


# Each case: a model, a layer path, and the model's own forward pass split at that layer:
# maps(model, x) -> A and rest(model, x, A) -> logits (written from the model's code).


def _stem(m, x):
  return jax.nn.relu(m.bn(m.stem(x)))


def _resnet_block1_maps(m, x):
  return m.blocks[1](m.blocks[0](_stem(m, x)))


def _resnet_block1_rest(m, x, a):
  return m.head(a.mean(axis=(1, 2)))


def _resnet_conv2_maps(m, x):
  b = m.blocks[0]
  return b.conv2(jax.nn.relu(b.bn1(b.conv1(_stem(m, x)))))


def _resnet_conv2_rest(m, x, a):
  h = _stem(m, x)
  z = jax.nn.relu(m.blocks[0].bn2(a) + h)  # the identity shortcut of block 0
  return m.head(m.blocks[1](z).mean(axis=(1, 2)))


def _block_gap_maps(m, x):
  return m.blocks[1](nnx.max_pool(m.blocks[0](x), (2, 2), strides=(2, 2)))


def _block_gap_rest(m, x, a):
  return m.classifier(a.mean(axis=(1, 2)))


def _layer_norm_maps(m, x):
  return m.conv2(nnx.avg_pool(nnx.relu(m.norm(m.conv1(x))), (2, 2), strides=(2, 2)))


def _layer_norm_rest(m, x, a):
  return m.out(jnp.maximum(a, 0).reshape(a.shape[0], -1))


CASES = {
    "resnet-blocks.1": (resnet, "blocks.1", _resnet_block1_maps, _resnet_block1_rest),
    "resnet-blocks.0.conv2": (resnet, "blocks.0.conv2", _resnet_conv2_maps, _resnet_conv2_rest),
    "blockgap-blocks.1": (block_gap, "blocks.1", _block_gap_maps, _block_gap_rest),
    "layernorm-conv2": (layer_norm_net, "conv2", _layer_norm_maps, _layer_norm_rest),
    "linen-features": (linen_parts, "features", lambda m, x: m.features(x),
                       lambda m, x, a: m.head(a)),
}
GAP_CASES = ("resnet-blocks.1", "blockgap-blocks.1", "linen-features")  # CAM exists there


@functools.partial(jax.jit, static_argnums=(0, 1))
def reference(maps, rest, model, x, t):
  """The maps A and the gradient of the target logits with respect to A, from the split."""
  a = maps(model, x)
  g = jax.grad(lambda a: jnp.take_along_axis(rest(model, x, a), t[:, None], 1).sum())(a)
  return a, g


def grad_cam_reference(a, g):
  return jnp.einsum("bk,bhwk->bhw", g.mean(axis=(1, 2)), a)


def grad_cam_plus_plus_reference(a, g):
  """Eq. 10 with S'' = S''' = 0 (every case is piecewise linear above its layer)."""
  a, g = np.asarray(a, np.float64), np.asarray(g, np.float64)
  den = 2 * g**2 + a.sum(axis=(1, 2), keepdims=True) * g**3
  alpha = np.where(den != 0, g**2 / np.where(den != 0, den, 1), 0)
  w = (alpha * np.maximum(g, 0)).sum(axis=(1, 2))
  return np.einsum("bk,bhwk->bhw", w, a)


def score_cam_reference(model, x, t, a):
  forward = jax.jit(lambda m, x: m(x))

  def logit(images):
    return np.asarray(forward(model, jnp.asarray(images, jnp.float32)))[np.arange(2), t]

  a = np.asarray(a)
  baseline = logit(np.zeros_like(x))
  weights = np.zeros((2, a.shape[-1]))
  for k in range(a.shape[-1]):
    up = np.asarray(jax.image.resize(a[..., k], (2, 28, 28), "bilinear"))
    low, high = up.min(axis=(1, 2), keepdims=True), up.max(axis=(1, 2), keepdims=True)
    mask = np.where(high > low, (up - low) / np.where(high > low, high - low, 1), 0)
    weights[:, k] = logit(np.asarray(x) * mask[..., None]) - baseline
  return np.einsum("bk,bhwk->bhw", weights, a)


def close(got, want, rtol=1e-5):
  scale = float(np.abs(np.asarray(want)).max())
  assert scale > 0
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("case", list(CASES))
def test_every_method_at_a_path_matches_the_split_forward_pass(case):
  factory, layer, maps, rest = CASES[case]
  model, x = factory(), images()
  t = np.asarray(TARGETS)
  a, g = reference(maps, rest, model, x, TARGETS)
  close(feature_maps(model, x, methods.core(methods.grad_cam, model, x, layer=layer)
                     .static[0][1])[1], a)

  # Grad-CAM, signed and with its ReLU, at the layer's resolution and upsampled.
  signed = methods.grad_cam(model, x, TARGETS, layer=layer, upsample=False, relu=False)
  close(signed, grad_cam_reference(a, g))
  assert float(signed.min()) < 0 < float(signed.max())
  close(methods.grad_cam(model, x, TARGETS, layer=layer, upsample=False),
        jax.nn.relu(grad_cam_reference(a, g)))
  gc = methods.grad_cam(model, x, TARGETS, layer=layer)
  assert gc.shape == (2, 28, 28)

  # Grad-CAM++: the diagonal derivatives (piecewise linear above: S'' = S''' = 0) and eq. 10.
  a2, d1, d2, d3 = methods.diagonal_derivatives(model, x, TARGETS, layer=layer)
  close(a2, a)
  close(d1, g)
  assert float(jnp.abs(d2).max()) == 0.0 and float(jnp.abs(d3).max()) == 0.0
  close(methods.grad_cam_plus_plus(model, x, TARGETS, layer=layer, upsample=False, relu=False),
        grad_cam_plus_plus_reference(a, g), rtol=1e-4)

  # Score-CAM against a channel loop of the model's own forward pass.
  close(methods.score_cam(model, x, TARGETS, layer=layer, upsample=False, relu=False),
        score_cam_reference(model, x, t, a), rtol=1e-4)

  # Guided Grad-CAM is the product of the raw Guided Backpropagation and Grad-CAM maps.
  ggc = methods.guided_grad_cam(model, x, TARGETS, layer=layer)
  close(ggc, methods.guided_backprop(model, x, TARGETS) * gc[..., None])

  # CAM exists exactly where the logit is a dense layer on the global average of A.
  if case in GAP_CASES:
    m = methods.cam(model, x, TARGETS, layer=layer, upsample=False)
    z = a.shape[1] * a.shape[2]
    close(m, z * grad_cam_reference(a, g))
    at_zero = jnp.take_along_axis(rest(model, x, jnp.zeros_like(a)), TARGETS[:, None], 1)[:, 0]
    logits = jnp.take_along_axis(model(x), TARGETS[:, None], 1)[:, 0]
    close(m.mean(axis=(1, 2)) + at_zero, logits)  # the mean of the map + y(0) is the logit
  else:
    with pytest.raises(ValueError, match="use grad_cam"):
      methods.cam(model, x, TARGETS, layer=layer)


def test_cam_reads_the_dense_weights_of_any_gap_head():
  model, x = block_gap(), images()
  a = reference(_block_gap_maps, _block_gap_rest, model, x, TARGETS)[0]
  kernel = model.classifier.kernel[...]  # (K, classes): w^c_k
  expected = jnp.einsum("bhwk,kb->bhw", a, kernel[:, TARGETS])
  close(methods.cam(model, x, TARGETS, upsample=False), expected)  # default layer: blocks.1


def test_grad_cam_at_the_last_block_of_a_gap_model_is_relu_cam_over_z():
  model, x = block_gap(), images()
  z = 14 * 14
  cam_maps = methods.cam(model, x, TARGETS, layer="blocks.1", upsample=False)
  assert float(cam_maps.min()) < 0 < float(cam_maps.max())  # the ReLU has work to do
  np.testing.assert_allclose(methods.grad_cam(model, x, TARGETS, layer="blocks.1", upsample=False),
                             jax.nn.relu(cam_maps) / z, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(methods.grad_cam(model, x, TARGETS, layer="blocks.1", relu=False),
                             methods.cam(model, x, TARGETS, layer="blocks.1") / z,
                             rtol=1e-5, atol=1e-7)


ALL = {
    "cam": methods.cam,
    "grad_cam": methods.grad_cam,
    "guided_grad_cam": methods.guided_grad_cam,
    "grad_cam_plus_plus": methods.grad_cam_plus_plus,
    "score_cam": methods.score_cam,
}


@pytest.mark.parametrize("name", list(ALL))
def test_path_and_object_give_identical_maps_and_leave_the_model_unchanged(name):
  model, x = resnet(), images()
  graphdef, state = nnx.split(model)
  before = jax.tree.map(np.asarray, state)
  block = model.blocks[1]
  pairs = [("blocks.1", model.blocks[1])]
  if name != "cam":
    pairs.append(("blocks.0.conv2", model.blocks[0].conv2))
  for path, module in pairs:
    by_path = ALL[name](model, x, TARGETS, layer=path)
    np.testing.assert_array_equal(by_path, ALL[name](model, x, TARGETS, layer=module))
    parts = tuple(int(p) if p.isdigit() else p for p in path.split("."))  # as iter_graph's
    np.testing.assert_array_equal(by_path, ALL[name](model, x, TARGETS, layer=parts))
    assert bool(jnp.isfinite(by_path).all())
    # Inside the caller's own jit, through the method's core.
    core = methods.core(ALL[name], model, x, layer=module)
    np.testing.assert_allclose(jax.jit(lambda m, x, t, c=core: c(m, x, t))(model, x, TARGETS),
                               by_path, rtol=1e-5, atol=1e-6)
  # The caller's model: same structure, same values, same submodule objects.
  assert nnx.graphdef(model) == graphdef
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, nnx.state(model)))
  assert model.blocks[1] is block and type(block) is um.Residual


@pytest.mark.parametrize(("factory", "default"), [
    (resnet, ("blocks", 1)),  # the last block (after its ReLU), not a conv inside it
    (block_gap, ("blocks", 1)),
    (layer_norm_net, ("conv2",)),
    (linen_parts, ("features",)),
])
def test_default_layer_is_the_last_submodule_with_maps(factory, default):
  model, x = factory(), images()
  assert methods.core(methods.grad_cam, model, x).static[0] == ("layer", default)
  np.testing.assert_array_equal(
      methods.grad_cam(model, x, TARGETS),
      methods.grad_cam(model, x, TARGETS, layer=".".join(map(str, default))))


@pytest.mark.parametrize("name", list(ALL))
def test_package_cnn_equals_a_users_block_cnn(name):
  # CNN's short names are its maps after the ReLU; BlockCNN's blocks output the same maps.
  cnn = small(CNN)
  user = um.block_cnn_like(cnn)
  x = images()
  if name == "cam":  # a dense head on flattened maps: no CAM on either
    with pytest.raises(ValueError, match="use grad_cam"):
      methods.cam(cnn, x, TARGETS)
    with pytest.raises(ValueError, match="use grad_cam"):
      methods.cam(user, x, TARGETS)
    return
  np.testing.assert_allclose(user(x), cnn(x), rtol=1e-5, atol=1e-5)
  signed = {} if name == "guided_grad_cam" else {"relu": False}  # nonzero on these weights
  for short, path in (("conv1", "block1"), ("conv2", "block2"), (None, None)):
    want = ALL[name](cnn, x, TARGETS, layer=short, **signed)
    got = ALL[name](user, x, TARGETS, layer=path, **signed)
    assert float(jnp.abs(want).max()) > 0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(jnp.abs(want).max()))


def test_exact_third_derivatives_through_the_stand_in():
  # GeluNet: y^c = sum_k W_kc mean_ij gelu(A_ijk) + b_c with A the output of "conv", so
  # S^(n) = W_kc gelu^(n)(A) / Z exactly (nested jvp of grad through the wrapped conv).
  model = numpy_model(lambda: um.GeluNet(rngs=nnx.Rngs(0)))
  x = images()
  a, d1, d2, d3 = methods.diagonal_derivatives(model, x, TARGETS, layer="conv")
  np.testing.assert_allclose(a, model.conv(x), rtol=1e-6, atol=1e-6)
  w = model.head.kernel[...][:, TARGETS].T[:, None, None, :] / (28 * 28)  # (B, 1, 1, K)
  gelu1 = jax.grad(jax.nn.gelu)
  gelu2 = jax.grad(gelu1)
  gelu3 = jax.grad(gelu2)
  for got, derivative in ((d1, gelu1), (d2, gelu2), (d3, gelu3)):
    want = w * jnp.vectorize(derivative)(a)
    close(got, want, rtol=1e-4)
  exact = methods.grad_cam_plus_plus(model, x, TARGETS, layer="conv", relu=False)
  shortcut = methods.grad_cam_plus_plus(model, x, TARGETS, layer=model.conv, relu=False,
                                        derivatives="shortcut")
  assert float(jnp.abs(exact - shortcut).max()) > 1e-3 * float(jnp.abs(exact).max())


class _LinenNet(linen.Module):
  @linen.compact
  def __call__(self, x):
    x = linen.relu(linen.Conv(6, (3, 3), padding="SAME", name="conv")(x))
    return linen.Dense(10, name="head")(x.mean(axis=(1, 2)))


def test_linen_submodules_are_reached_through_the_bridge():
  x = images()
  # A Linen model wrapped whole (no rng streams kept): its Linen submodule "conv" by path.
  model = nnx.bridge.lazy_init(nnx.bridge.ToNNX(_LinenNet()), x, rngs=nnx.Rngs(0))
  assert methods.core(methods.grad_cam, model, x, layer="conv").static[0] == ("layer", ("conv",))
  kernel, bias = model.conv["kernel"][...], model.conv["bias"][...]
  head_kernel, head_bias = model.head["kernel"][...], model.head["bias"][...]

  def maps(m, x):  # the Linen conv's output (before its ReLU)
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias

  def rest(m, x, a):
    return jax.nn.relu(a).mean(axis=(1, 2)) @ head_kernel + head_bias

  a, g = reference(maps, rest, model, x, TARGETS)
  close(methods.grad_cam(model, x, TARGETS, layer="conv", upsample=False, relu=False),
        grad_cam_reference(a, g))
  with pytest.raises(ValueError, match="use grad_cam"):  # pre-ReLU maps: no CAM
    methods.cam(model, x, TARGETS, layer="conv")
  # Linen inside a ToNNX inside an NNX module: "features.conv" is the conv before its ReLU.
  parts = linen_parts()
  pre = feature_maps(parts, x, ("features", "conv"))[1]
  np.testing.assert_array_equal(jax.nn.relu(pre), feature_maps(parts, x, ("features",))[1])
  assert methods.grad_cam(parts, x, TARGETS, layer="features.conv").shape == (2, 28, 28)
  with pytest.raises(ValueError, match=r"no submodule at 'features.nope'.*'features.conv'"):
    methods.grad_cam(parts, x, TARGETS, layer="features.nope")


class _Shared(nnx.Module):
  """A conv called twice, one never called, and a parent that reads its child's attribute."""

  def __init__(self, rngs):
    self.conv = nnx.Conv(1, 1, (3, 3), padding="SAME", rngs=rngs)
    self.unused = nnx.Conv(1, 1, (3, 3), padding="SAME", rngs=rngs)
    self.last = nnx.Conv(1, 4, (3, 3), padding="SAME", rngs=rngs)
    self.head = nnx.Linear(4, 10, rngs=rngs)

  def __call__(self, x):
    x = self.conv(jax.nn.relu(self.conv(x)))
    x = jax.nn.relu(self.last(x)) * (self.last.in_features == 1)  # read through a stand-in
    return self.head(x.mean(axis=(1, 2)))


@pytest.mark.parametrize("name", list(ALL))
def test_errors(name):
  method, model, x = ALL[name], resnet(), images()
  with pytest.raises(ValueError, match=r"ResNet has no submodule at 'blocks\.5'; submodules "
                                       r"whose output is \(B, h, w, K\) feature maps, in "
                                       r"forward order: 'stem', 'bn', .*'blocks\.1'$"):
    method(model, x, TARGETS, layer="blocks.5")
  with pytest.raises(ValueError, match=r"layer: 'head' outputs an array of shape \(2, 10\) "
                                       r"\(float32\), not feature maps \(B, h, w, K\)"):
    method(model, x, TARGETS, layer="head")
  with pytest.raises(ValueError, match=r"layer: 'head' outputs an array of shape \(2, 10\)"):
    method(model, x, TARGETS, layer=model.head)
  with pytest.raises(ValueError, match=r"'blocks\.0\.conv1\.kernel' is a Param of shape "
                                       r"\(3, 3, 8, 8\), not a submodule"):
    method(model, x, TARGETS, layer="blocks.0.conv1.kernel")
  with pytest.raises(ValueError, match=r"'blocks' is a List, not a submodule"):
    method(model, x, TARGETS, layer="blocks")
  with pytest.raises(ValueError, match=r"not a dotted submodule path"):
    method(model, x, TARGETS, layer="blocks..1")
  with pytest.raises(ValueError, match="not a submodule of ResNet"):
    method(model, x, TARGETS, layer=resnet().blocks[1])  # another model's block
  with pytest.raises(ValueError, match="the model itself"):
    method(model, x, TARGETS, layer=model)
  with pytest.raises(TypeError, match=r"layer: expected None, a layer name or dotted submodule "
                                      r"path \(str\), a path tuple"):
    method(model, x, TARGETS, layer=1.0)
  with pytest.raises(TypeError, match="layer"):
    methods.core(method, model, x, layer=["blocks", 1])
  shared = numpy_model(lambda: _Shared(nnx.Rngs(0)))
  with pytest.raises(ValueError, match=r"'conv' is called 2 times in one forward pass"):
    method(shared, x, TARGETS, layer="conv")
  with pytest.raises(ValueError, match=r"'unused' of _Shared is never called"):
    method(shared, x, TARGETS, layer=shared.unused)
  if name == "cam":  # the conv's own output, before the ReLU: no CAM
    with pytest.raises(ValueError, match="varies over locations"):
      method(shared, x, TARGETS, layer="last")
  else:  # a parent reading its child's attribute through the stand-in
    assert method(shared, x, TARGETS, layer="last").shape[:3] == (2, 28, 28)


def test_a_model_without_spatial_maps_is_refused():
  class Dense(nnx.Module):
    def __init__(self, rngs):
      self.hidden = nnx.Linear(28 * 28, 8, rngs=rngs)
      self.head = nnx.Linear(8, 10, rngs=rngs)

    def __call__(self, x):
      return self.head(jax.nn.relu(self.hidden(x.reshape(x.shape[0], -1))))

  model = numpy_model(lambda: Dense(nnx.Rngs(0)))
  with pytest.raises(ValueError, match=r"Dense has no conv feature maps: it lists no "
                                       r"feature_layers and no submodule returns \(B, h, w, K\)"):
    methods.grad_cam(model, images(), TARGETS)


def test_smoothgrad_composes_a_path_layer_and_nothing_recompiles():
  model = resnet()
  smooth = methods.smoothgrad(methods.grad_cam, samples=3, key=jax.random.key(0))
  maps = smooth(model, images(), TARGETS, layer="blocks.1")  # the core on 3 x 2 images
  assert maps.shape == (2, 28, 28) and bool(jnp.isfinite(maps).all())
  methods.grad_cam(model, images(1), TARGETS, layer="blocks.0.conv2")
  with compilations() as compiles:
    methods.grad_cam(model, images(2), jnp.array([1, 2]), layer=model.blocks[0].conv2)
    smooth(model, images(3), TARGETS, layer=model.blocks[1])
  assert compiles == []
