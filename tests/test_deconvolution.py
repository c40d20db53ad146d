"""Tests of Deconvolution (saliency_guide.methods.deconvolution).

* ``deconv_relu``'s backward rule on hand-computed values: the signal from
  above is rectified and the forward mask ignored (at x = 0 and below too);
* the whole-network maps against the layer-by-layer reference of
  ``relu_reference`` (MLP, CNN, GapCNN);
* a consequence of ignoring the masks: an MLP's deconvnet map does not depend
  on the image.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from relu_reference import (
  EXPECTED,
  R,
  X,
  backward,
  check_against_reference,
  images_for,
  randomize_biases,
  small,
)
from saliency_guide import methods
from saliency_guide.models import CNN, MLP, GapCNN


def test_deconv_relu_on_hand_computed_values():
  np.testing.assert_array_equal(backward(methods.deconv_relu, X, R),
                                np.array(EXPECTED["deconvolution"], np.float32))


def test_deconv_relu_ignores_the_forward_mask():
  assert float(jax.grad(methods.deconv_relu)(0.0)) == 1.0
  assert float(jax.grad(methods.deconv_relu)(-5.0)) == 1.0


@pytest.mark.parametrize("model_cls", [MLP, CNN, GapCNN])
def test_deconvolution_matches_layer_by_layer_reference(model_cls):
  check_against_reference("deconvolution", model_cls)


def test_mlp_deconvolution_does_not_depend_on_the_image():
  """No mask is used and an MLP has no pooling switches: the map is the same for every image."""
  model = randomize_biases(small(MLP))
  targets = jnp.array([3, 3, 3])
  maps = methods.deconvolution(model, images_for(seed=5, signed=True), targets)
  np.testing.assert_allclose(maps[0], maps[1], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(maps[0], maps[2], rtol=1e-6, atol=1e-7)
  guided = methods.guided_backprop(model, images_for(seed=5, signed=True), targets)
  assert not np.allclose(guided[0], guided[1])
