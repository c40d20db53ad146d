"""Tests of Score-CAM (saliency_guide.methods.score_cam).

* against a channel-by-channel loop written with NumPy, including a dead
  (constant) channel, whose weight must be exactly 0;
* the final ReLU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from feature_map_models import captured, digits, small
from saliency_guide import methods
from saliency_guide.models import CNN, GapCNN


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
