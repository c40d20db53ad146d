"""Tests of the machinery every class-activation method shares (methods._feature_maps).

* ``layer_score`` adds a *zero* perturbation: its value is the logit and its
  auxiliary output the captured maps, for a short name and for a submodule path;
* short names are the maps a model exposes, a submodule object its own output;
* the upsampling's pixel-centre alignment on a ramp;
* shapes with and without upsampling for every layer;
* the checks every method shares (no feature maps, unknown layer, bad flags,
  bad images/targets), in the public functions and in the registered cores;
* each registered core equals its method; no retracing on new images of the
  same shape.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import user_models as um
from feature_map_models import METHODS, TINY_IMAGE, digits, quadratic_head, small
from model_factories import compilations
from saliency_guide import methods
from saliency_guide.methods._feature_maps import (
  check_layer,
  feature_maps,
  layer_score,
  map_shape,
  upsample_maps,
)
from saliency_guide.models import CNN, MLP, GapCNN


def test_layer_score_perturbation_is_zero():
  model = quadratic_head()
  score = layer_score(model, TINY_IMAGE, jnp.array([0]), "feat")
  value, a = score(jnp.zeros(map_shape(model, TINY_IMAGE, "feat")))
  np.testing.assert_allclose(value, model(TINY_IMAGE)[0, 0], atol=1e-6)  # nothing added
  np.testing.assert_allclose(a, nnx.capture(model, nnx.Intermediate)(TINY_IMAGE)[1]["feat"]
                             .get_value()[0], atol=0)


def test_upsampling_aligns_cell_centres_with_pixel_block_centres():
  ramp = jnp.broadcast_to(jnp.arange(7.0)[None, None, :], (1, 7, 7))  # value = column index
  up = upsample_maps(ramp, (28, 28))[0, 0]
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


@pytest.mark.parametrize("name", list(METHODS))
def test_errors_common(name):
  method = METHODS[name]
  x, t = digits(), jnp.array([1, 2])
  with pytest.raises(ValueError, match="no conv feature maps"):
    method(small(MLP), x, t)
  model = small(GapCNN)
  with pytest.raises(ValueError, match=r"layer: 'head' outputs an array of shape \(2, 10\) "
                                       r"\(float32\), not feature maps \(B, h, w, K\).*"
                                       r"feature_layers: 'conv1', 'conv2', 'conv3'"):
    method(model, x, t, layer="head")
  with pytest.raises(ValueError, match=r"layer: GapCNN has no submodule at 'conv4'"):
    method(model, x, t, layer="conv4")
  with pytest.raises(TypeError, match="layer"):
    method(model, x, t, layer=3)
  with pytest.raises(TypeError, match="upsample"):
    method(model, x, t, upsample="yes")
  with pytest.raises(ValueError, match="images"):
    method(model, x.transpose(0, 3, 1, 2), t)
  with pytest.raises(ValueError, match="targets"):
    method(model, x, jnp.array([1, 10]))


@pytest.mark.parametrize("name", list(METHODS))
def test_core_checks_the_options_against_the_model(name):
  x, model = digits(), small(GapCNN)
  with pytest.raises(TypeError, match="layer"):
    methods.core(METHODS[name], model, x, layer=3)
  with pytest.raises(TypeError, match="upsample"):
    methods.core(METHODS[name], model, x, upsample="yes")
  with pytest.raises(ValueError, match=r"layer: 'head' outputs an array of shape \(2, 10\)"):
    methods.core(METHODS[name], model, x, layer="head")
  with pytest.raises(ValueError, match="no conv feature maps"):
    methods.core(METHODS[name], small(MLP), x)


@pytest.mark.parametrize("name", list(METHODS))
def test_core_equals_the_method(name):
  model, x, t = small(GapCNN), digits(), jnp.array([4, 8])
  options = {} if name in ("cam", "guided_grad_cam") else {"relu": False}
  core = methods.core(METHODS[name], model, x, **options)
  np.testing.assert_allclose(core(model, x, t), METHODS[name](model, x, t, **options),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(METHODS))
def test_no_retracing_on_new_images(name):
  model = small(GapCNN, seed=5)
  METHODS[name](model, digits(seed=10), jnp.array([1, 2]))
  with compilations() as compiles:
    METHODS[name](model, digits(seed=11), jnp.array([3, 4]))
  assert compiles == []


def test_short_names_mean_the_exposed_maps_and_objects_the_submodule_output():
  # CNN's "conv1" is the map after its ReLU (self.expose); the object cnn.conv1 is the
  # nnx.Conv itself, whose output comes before the ReLU.
  cnn, x = small(CNN), digits()
  assert check_layer(cnn, "conv1", x) == "conv1"
  assert check_layer(cnn, cnn.conv1, x) == ("conv1",)
  assert check_layer(cnn, None, x) == "conv2"
  exposed = feature_maps(cnn, x, "conv1")[1]
  pre = feature_maps(cnn, x, ("conv1",))[1]
  assert float(pre.min()) < 0
  np.testing.assert_array_equal(jax.nn.relu(pre), exposed)
  with pytest.raises(ValueError, match=r"no submodule at 'conv9'; its feature_layers: 'conv1', "
                                       r"'conv2'; submodules .* in forward order: none"):
    check_layer(cnn, "conv9", x)


def test_layer_score_at_a_path_adds_a_zero_perturbation():
  model = um.BlockGap(rngs=nnx.Rngs(0))
  x, t = digits(), jnp.array([0, 5])
  score = layer_score(model, x, t, ("blocks", 1))
  value, a = score(jnp.zeros(map_shape(model, x, ("blocks", 1))))
  np.testing.assert_allclose(value, model(x)[jnp.arange(2), t].sum(), rtol=1e-6)
  np.testing.assert_allclose(a, feature_maps(model, x, ("blocks", 1))[1], rtol=1e-6)
  # The maps enter the logits through the perturbation: its gradient is dy/dA = w / Z here.
  gradient = jax.grad(lambda p: score(p)[0])(jnp.zeros_like(a))
  kernel = model.classifier.kernel[...]
  np.testing.assert_allclose(gradient, jnp.broadcast_to(
      kernel[:, t].T[:, None, None, :] / (14 * 14), a.shape), rtol=1e-6)


def test_cnn_default_layer_is_its_last_conv_layer():
  cnn, x, t = small(CNN), digits(), jnp.array([1, 2])
  assert methods.grad_cam(cnn, x, t, layer="conv1", upsample=False).shape == (2, 28, 28)
  assert methods.grad_cam(cnn, x, t, upsample=False).shape == (2, 14, 14)
