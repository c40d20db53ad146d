"""Tests of Grad-CAM (saliency_guide.methods.grad_cam).

* Grad-CAM = ReLU(CAM) / Z on GapCNN at its last layer (the Grad-CAM paper's
  argument), with and without the ReLU and the upsampling;
* the gradient is taken at the activations A, not at 2A: a model whose head
  squares the exposed map gives different, hand-computable weights at A and 2A.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from feature_map_models import digits, quadratic_head, small
from saliency_guide import methods
from saliency_guide.models import GapCNN


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


def test_relu_must_be_a_flag():
  with pytest.raises(TypeError, match="relu"):
    methods.grad_cam(small(GapCNN), digits(), jnp.array([1, 2]), relu=1)
