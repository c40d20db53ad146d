"""Every method on models the package does not define (issue 18: "Explain your own model").

The models (``tests/user_models.py``) are ordinary Flax NNX classifiers written
without the package's conventions: residual blocks in an ``nnx.List`` with
BatchNorm in eval mode, LayerNorm and average pooling, ``jax.nn.relu`` /
``nnx.relu`` / ``jnp.maximum(x, 0)`` called directly, conv blocks before a GAP +
dense head, an attribute order that does not follow the call order, and a Linen
model through ``nnx.bridge``. Layer methods name their layer by its path in the
module tree (``"blocks.1"``) or pass the submodule itself.

Besides finite maps of the right shape, the identities that must hold are
checked numerically: Gradient × Input is the input times the gradient; the
completeness delta of Integrated Gradients is what it says; Expected Gradients
of an image against itself is zero; SmoothGrad without noise is the gradient;
Guided Backprop and Deconvolution equal the gradient of the user's own code
with its ReLUs replaced by the rule's ReLU; Grad-CAM at the last block of a GAP +
dense model is ReLU(CAM)/Z; Guided Grad-CAM is Guided Backprop × Grad-CAM; a
user's copy of the package ``CNN`` gives the package ``CNN``'s maps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import user_models
from saliency_guide import methods
from saliency_guide.models import CNN
from user_models import (
    BlockGap,
    LayerNormNet,
    LinenParts,
    ResNet,
    SoftmaxNet,
    UserCNN,
    WideFirst,
    user_cnn_like,
    with_random_batch_stats,
)

KEY = jax.random.key(0)
TARGETS = np.array([3, 8])

# name: (model factory, the layer layer methods explain, whether CAM exists there).
ARCHITECTURES = {
    "resnet": (lambda: with_random_batch_stats(ResNet(rngs=nnx.Rngs(0))), "blocks.1", True),
    "layernorm": (lambda: LayerNormNet(rngs=nnx.Rngs(1)), "conv2", False),
    "blockgap": (lambda: BlockGap(rngs=nnx.Rngs(2)), "blocks.1", True),
    "usercnn": (lambda: UserCNN((4, 6), 12, rngs=nnx.Rngs(3)), "conv2", False),
    "widefirst": (lambda: WideFirst(rngs=nnx.Rngs(4)), "body", False),
    "linen": (lambda: LinenParts(5), "features", True),
}
GAP_ARCHITECTURES = [name for name, (_, _, gap) in ARCHITECTURES.items() if gap]

PIXEL_METHODS = {
    "gradients": methods.gradients,
    "gradients_x_inputs": methods.gradients_x_inputs,
    "integrated_gradients": lambda m, x, t: methods.integrated_gradients(m, x, t, steps=8),
    "expected_gradients": lambda m, x, t: methods.expected_gradients(
        m, x, t, references=x[::-1], samples=4, key=KEY),
    "smoothgrad": lambda m, x, t: methods.smoothgrad(methods.gradients, samples=4, key=KEY)(
        m, x, t),
    "deconvolution": methods.deconvolution,
    "guided_backprop": methods.guided_backprop,
}
LAYER_METHODS = {
    "cam": methods.cam,
    "grad_cam": methods.grad_cam,
    "guided_grad_cam": methods.guided_grad_cam,
    "grad_cam_plus_plus": methods.grad_cam_plus_plus,
    "score_cam": methods.score_cam,
}

_MODELS: dict[str, nnx.Module] = {}


def model_of(name: str) -> nnx.Module:
  """The architecture's model, built once (methods never modify it)."""
  if name not in _MODELS:
    _MODELS[name] = ARCHITECTURES[name][0]()
  return _MODELS[name]


@pytest.fixture(scope="module")
def images() -> jax.Array:
  return jnp.asarray(np.random.default_rng(0).uniform(size=(2, 28, 28, 1)), jnp.float32)


LAYER_CASES = [
    pytest.param(arch, name, id=f"{arch}-{name}")
    for arch, (_, _, gap) in ARCHITECTURES.items() for name in LAYER_METHODS
    if name != "cam" or gap
]


# ---------------------------------------------------------------------------------------
# Every method, every architecture: finite maps of the right shape.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", PIXEL_METHODS)
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_pixel_methods_give_finite_maps(arch, method, images):
  maps = PIXEL_METHODS[method](model_of(arch), images, TARGETS)
  assert maps.shape == images.shape and maps.dtype == jnp.float32
  assert np.isfinite(np.asarray(maps)).all()
  assert np.abs(np.asarray(maps)).max() > 0


@pytest.mark.parametrize(("arch", "method"), LAYER_CASES)
def test_layer_methods_by_path_give_finite_maps(arch, method, images):
  layer = ARCHITECTURES[arch][1]
  maps = LAYER_METHODS[method](model_of(arch), images, TARGETS, layer=layer)
  expected = images.shape if method == "guided_grad_cam" else images.shape[:3]
  assert maps.shape == expected and maps.dtype == jnp.float32
  assert np.isfinite(np.asarray(maps)).all()
  if method in ("grad_cam", "grad_cam_plus_plus", "score_cam"):  # ReLU applied
    assert (np.asarray(maps) >= 0).all()


def test_a_layer_is_named_by_path_or_by_the_submodule_itself(images):
  model = model_of("resnet")
  by_path = methods.grad_cam(model, images, TARGETS, layer="blocks.1")
  by_object = methods.grad_cam(model, images, TARGETS, layer=model.blocks[1])
  np.testing.assert_array_equal(np.asarray(by_path), np.asarray(by_object))


# ---------------------------------------------------------------------------------------
# Identities.
# ---------------------------------------------------------------------------------------


def logits(model: nnx.Module, x: jax.Array) -> np.ndarray:
  return np.asarray(model(x))[np.arange(len(TARGETS)), TARGETS]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_gradients_x_inputs_is_the_input_times_the_gradient(arch, images):
  model = model_of(arch)
  expected = images * methods.gradients(model, images, TARGETS)
  np.testing.assert_array_equal(
      np.asarray(methods.gradients_x_inputs(model, images, TARGETS)), np.asarray(expected))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_integrated_gradients_delta_is_its_completeness_error(arch, images):
  model = model_of(arch)
  maps, delta = methods.integrated_gradients(
      model, images, TARGETS, baseline=0.0, steps=8, return_delta=True)
  gap = logits(model, images) - logits(model, jnp.zeros_like(images))
  expected = np.asarray(maps).sum(axis=(1, 2, 3)) - gap
  np.testing.assert_allclose(np.asarray(delta), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_expected_gradients_against_the_image_itself_is_zero(arch, images):
  maps = methods.expected_gradients(
      model_of(arch), images[:1], TARGETS[:1], references=images[:1], samples=4, key=KEY)
  np.testing.assert_array_equal(np.asarray(maps), 0.0)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_smoothgrad_without_noise_is_the_gradient(arch, images):
  model = model_of(arch)
  smooth = methods.smoothgrad(methods.gradients, noise_level=0.0, samples=2, key=KEY)
  np.testing.assert_allclose(
      np.asarray(smooth(model, images, TARGETS)),
      np.asarray(methods.gradients(model, images, TARGETS)), rtol=1e-6, atol=1e-7)


def _layernorm_net_code(model: LayerNormNet, x: jax.Array, relu) -> jax.Array:
  """``LayerNormNet.__call__`` as its user wrote it, each ReLU replaced by ``relu``."""
  x = relu(model.norm(model.conv1(x)))
  x = nnx.avg_pool(x, (2, 2), strides=(2, 2))
  x = relu(model.conv2(x))  # the user's jnp.maximum(x, 0)
  return model.out(x.reshape(x.shape[0], -1))


class _Namespace:
  """A module as the user's code sees it, with some names replaced."""

  def __init__(self, module, **replaced):
    self._module, self._replaced = module, replaced

  def __getattr__(self, name):
    return self._replaced[name] if name in self._replaced else getattr(self._module, name)


def with_rule(monkeypatch: pytest.MonkeyPatch, relu) -> None:
  """Make ``jax.nn.relu`` and ``linen.relu`` in ``user_models`` (only there) call ``relu``."""
  monkeypatch.setattr(user_models, "jax", _Namespace(jax, nn=_Namespace(jax.nn, relu=relu)))
  monkeypatch.setattr(user_models, "linen", _Namespace(user_models.linen, relu=relu))


RULES = {
    "guided_backprop": (methods.guided_backprop, methods.guided_relu),
    "deconvolution": (methods.deconvolution, methods.deconv_relu),
}


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_relu_rules_equal_the_users_code_with_the_rules_relu(arch, rule, images, monkeypatch):
  """The reference edits the user's code: every ReLU it calls becomes the rule's ReLU."""
  method, relu = RULES[rule]
  model = model_of(arch)
  if arch == "layernorm":  # nnx.relu and jnp.maximum(x, 0): its code, rewritten
    forward = lambda x: _layernorm_net_code(model, x, relu)  # noqa: E731
  else:  # jax.nn.relu or linen.relu, looked up in the user's module when called
    with_rule(monkeypatch, relu)
    forward = model  # not jitted: traced anew with the rule's ReLU
  take = lambda x: forward(x)[jnp.arange(len(TARGETS)), TARGETS].sum()  # noqa: E731
  expected = jax.grad(take)(images)
  monkeypatch.undo()
  np.testing.assert_allclose(
      np.asarray(method(model, images, TARGETS)), np.asarray(expected), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", GAP_ARCHITECTURES)
def test_grad_cam_at_the_last_block_of_a_gap_model_is_relu_cam_over_z(arch, images):
  model, layer = model_of(arch), ARCHITECTURES[arch][1]
  class_maps = methods.cam(model, images, TARGETS, layer=layer, upsample=False)
  grad_cam = methods.grad_cam(model, images, TARGETS, layer=layer, upsample=False)
  locations = class_maps.shape[1] * class_maps.shape[2]
  np.testing.assert_allclose(
      np.asarray(grad_cam), np.maximum(np.asarray(class_maps), 0) / locations,
      rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_guided_grad_cam_is_guided_backprop_times_grad_cam(arch, images):
  model, layer = model_of(arch), ARCHITECTURES[arch][1]
  expected = (methods.guided_backprop(model, images, TARGETS)
              * methods.grad_cam(model, images, TARGETS, layer=layer)[..., None])
  np.testing.assert_allclose(
      np.asarray(methods.guided_grad_cam(model, images, TARGETS, layer=layer)),
      np.asarray(expected), rtol=1e-5, atol=1e-7)


COPY_METHODS = {name: PIXEL_METHODS[name] for name in (
    "gradients", "gradients_x_inputs", "integrated_gradients", "expected_gradients",
    "smoothgrad", "deconvolution", "guided_backprop")}


@pytest.mark.parametrize("method", COPY_METHODS)
def test_a_users_copy_of_the_cnn_gives_the_package_cnns_maps(method, images):
  package = CNN(channels=(4, 6), hidden=12, rngs=nnx.Rngs(7))
  user = user_cnn_like(package)
  np.testing.assert_allclose(
      np.asarray(COPY_METHODS[method](user, images, TARGETS)),
      np.asarray(COPY_METHODS[method](package, images, TARGETS)), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------
# Linen, through nnx.bridge.
# ---------------------------------------------------------------------------------------


def bridged(params) -> nnx.Module:
  """The README's recipe: a Linen model wrapped with ``ToNNX`` (rngs for lazy_init only),
  its variables then replaced by the Linen ``params`` to explain."""
  model = nnx.bridge.lazy_init(
      nnx.bridge.ToNNX(user_models._LinenCNN()), jnp.zeros((1, 28, 28, 1)), rngs=nnx.Rngs(0))
  state = nnx.state(model, nnx.Param)
  nnx.replace_by_pure_dict(state, params)
  nnx.update(model, state)
  return model


def test_a_linen_model_through_the_bridge_has_the_gradients_of_linen_apply(images):
  linen = user_models._LinenCNN()
  params = linen.init(jax.random.key(1), images[:1])["params"]  # e.g. trained with Linen
  model = bridged(params)

  def linen_gradient(x):
    return jax.grad(lambda x: linen.apply({"params": params}, x)[jnp.arange(2), TARGETS].sum())(x)

  np.testing.assert_allclose(
      np.asarray(methods.gradients(model, images, TARGETS)), np.asarray(linen_gradient(images)),
      rtol=1e-6, atol=1e-7)
  maps, delta = methods.integrated_gradients(
      model, images, TARGETS, steps=8, baseline=0.0, return_delta=True)
  gap = logits(model, images) - logits(model, jnp.zeros_like(images))
  np.testing.assert_allclose(
      np.asarray(delta), np.asarray(maps).sum(axis=(1, 2, 3)) - gap, rtol=1e-4, atol=1e-5)
  smooth = methods.smoothgrad(methods.gradients, noise_level=0.0, samples=2, key=KEY)
  np.testing.assert_allclose(
      np.asarray(smooth(model, images, TARGETS)), np.asarray(linen_gradient(images)),
      rtol=1e-6, atol=1e-7)
  with pytest.MonkeyPatch.context() as patch:  # the reference: Linen's own ReLU replaced
    with_rule(patch, methods.guided_relu)
    expected = linen_gradient(images)
  np.testing.assert_allclose(
      np.asarray(methods.guided_backprop(model, images, TARGETS)), np.asarray(expected),
      rtol=1e-5, atol=1e-7)


def test_a_bridged_linen_model_that_keeps_its_rngs_is_refused_clearly(images):
  model = nnx.bridge.ToNNX(user_models._LinenCNN(), rngs=nnx.Rngs(0))  # draws on every call
  nnx.bridge.lazy_init(model, jnp.zeros((1, 28, 28, 1)))
  with pytest.raises(ValueError, match=r"model: calling it changes its own state "
                     r"\(to_nnx__rngs.default.count\).*nnx.bridge.lazy_init\(nnx.bridge.ToNNX"):
    methods.gradients(model, images, TARGETS)


def test_layer_methods_on_linen_name_a_bridged_part(images):
  """A single ``ToNNX`` is Linen inside: wrap the feature extractor as its own part."""
  model = model_of("linen")
  maps = methods.grad_cam(model, images, TARGETS, layer="features")
  assert maps.shape == images.shape[:3] and np.isfinite(np.asarray(maps)).all()
  np.testing.assert_array_equal(
      np.asarray(maps), np.asarray(methods.grad_cam(model, images, TARGETS, layer=model.features)))


# ---------------------------------------------------------------------------------------
# Bad models.
# ---------------------------------------------------------------------------------------


def _at_conv(method):
  return lambda m, x, t: method(m, x, t, layer="conv")


ALL_METHODS = {**PIXEL_METHODS, **{name: _at_conv(f) for name, f in LAYER_METHODS.items()}}


@pytest.mark.parametrize("method", ALL_METHODS)
def test_a_model_returning_probabilities_is_refused_by_every_method(method, images):
  with pytest.raises(ValueError, match=r"^model: returns probabilities \(its last operation is "
                     r"a softmax\), not logits; saliency methods explain logits.*remove the "
                     r"final softmax"):
    ALL_METHODS[method](SoftmaxNet(rngs=nnx.Rngs(0)), images, TARGETS)
