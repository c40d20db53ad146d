"""Tests of Guided Grad-CAM (saliency_guide.methods.guided_grad_cam).

* the product of the raw Guided Backpropagation and upsampled Grad-CAM maps;
* ``upsample=False`` is refused (the product lives at the input's resolution),
  by the method and by its core.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from feature_map_models import digits, small
from saliency_guide import methods
from saliency_guide.models import CNN, GapCNN


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


def test_upsample_false_is_an_error():
  model, x, t = small(GapCNN), digits(), jnp.array([1, 2])
  with pytest.raises(ValueError, match="upsample"):
    methods.guided_grad_cam(model, x, t, upsample=False)
  with pytest.raises(ValueError, match="upsample"):
    methods.core(methods.guided_grad_cam, model, x, upsample=False)
