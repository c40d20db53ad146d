"""Tests of Score-CAM (saliency_guide.methods.score_cam).

* against a channel-by-channel loop written with NumPy, including a dead
  (constant) channel, whose weight must be exactly 0;
* the final ReLU;
* the alternative channel weights of the authors' code (probabilities) and of
  pytorch-grad-cam (a softmax over channels), against the same loop.
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


@pytest.mark.parametrize("weights", ["probability", "channel_softmax"])
def test_score_cam_alternative_weights_against_channel_loop(weights):
  # The authors' code (probability of the masked input, no baseline, a constant channel
  # skipped) and pytorch-grad-cam (a softmax of the masked logits over the channels).
  model = small(CNN)
  model.conv2.kernel[..., 0] = 0.0  # a constant channel
  model.conv2.bias[..., 0] = 0.3
  x, t = digits(), jnp.array([3, 6])
  a = np.asarray(captured(model, x, "conv2"))
  scores = np.zeros((2, a.shape[-1]))
  for k in range(a.shape[-1]):
    up = np.asarray(jax.image.resize(a[..., k], (2, 28, 28), "bilinear"))
    low, high = up.min(axis=(1, 2), keepdims=True), up.max(axis=(1, 2), keepdims=True)
    mask = np.where(high > low, (up - low) / np.where(high > low, high - low, 1), 0)
    logits = np.asarray(model(jnp.asarray(np.asarray(x) * mask[..., None])), np.float64)
    if weights == "probability":
      p = np.exp(logits - logits.max(-1, keepdims=True))
      p /= p.sum(-1, keepdims=True)
      scores[:, k] = np.where(high[:, 0, 0] > low[:, 0, 0], p[np.arange(2), np.asarray(t)], 0)
    else:
      scores[:, k] = logits[np.arange(2), np.asarray(t)]
  if weights == "channel_softmax":
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    scores /= scores.sum(-1, keepdims=True)
    np.testing.assert_allclose(scores.sum(-1), 1.0, rtol=1e-6)
  else:
    assert np.all(scores[:, 0] == 0) and np.all((scores >= 0) & (scores < 1)) and scores.max() > 0
  expected = np.einsum("bk,bhwk->bhw", scores, a)
  got = methods.score_cam(model, x, t, upsample=False, relu=False, weights=weights)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_score_cam_weights_option():
  model, x, t = small(GapCNN), digits(), jnp.array([0, 2])
  np.testing.assert_array_equal(methods.score_cam(model, x, t, weights="logit"),
                                methods.score_cam(model, x, t))
  core = methods.core(methods.score_cam, model, x, weights="probability")
  assert dict(core.static)["weights"] == "probability"
  with pytest.raises(ValueError, match="weights"):
    methods.score_cam(model, x, t, weights="softmax")
