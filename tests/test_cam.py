"""Tests of CAM (saliency_guide.methods.cam).

* CAM on a hand-computed tiny global-average-pooling model (literal numbers),
  and the identity "mean of the map + bias = logit" for any input (hypothesis);
* CAM on GapCNN is the head's weights applied to the captured maps;
* on a model of the user's own (a block module and a dense layer not named
  'head'), CAM takes w^c_k from the gradient and gives the same literal numbers;
* models and layers without a CAM are refused: a head that is not dense on
  GAP(last layer), caught structurally or, for same-shaped impostors, on the
  logits themselves (the core skips that check of values).
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

from feature_map_models import (
  TINY_IMAGE,
  MaxPoolHead,
  captured,
  digits,
  numpy_init,
  quadratic_head,
  set_param,
  small,
  tiny_gap,
)
from saliency_guide import methods
from saliency_guide.models import CNN, GapCNN


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
  assert methods.cam(model, x, t).shape == (2, 28, 28)


def test_errors_cam():
  x, t = digits(), jnp.array([1, 2])
  with pytest.raises(ValueError, match=r"global average pooling.*CNN's 'conv2' has 6 channels"):
    methods.cam(small(CNN), x, t)
  with pytest.raises(ValueError, match="exists only there"):
    methods.cam(small(GapCNN), x, t, layer="conv2")
  # Same shapes as a GAP model, but global max pooling: caught on the logits themselves.
  with pytest.raises(ValueError, match="relative error"):
    methods.cam(tiny_gap(MaxPoolHead), TINY_IMAGE, jnp.array([0]))


def test_core_skips_the_check_on_the_logits_but_not_the_structural_ones():
  x = digits()
  model = tiny_gap(MaxPoolHead)
  core = methods.core(methods.cam, model, TINY_IMAGE)
  assert core(model, TINY_IMAGE, jnp.array([0])).shape == (1, 2, 2)
  with pytest.raises(ValueError, match="exists only there"):
    methods.core(methods.cam, small(GapCNN), x, layer="conv2")


class _Block(nnx.Module):
  def __init__(self, rngs):
    self.conv = nnx.Conv(1, 2, kernel_size=(1, 1), rngs=rngs)

  def __call__(self, x):
    return jax.nn.relu(self.conv(x))


class _UserTinyGap(nnx.Module):
  """TinyGap written by a user: a conv + ReLU block, GAP, a dense layer named 'out'."""

  def __init__(self, rngs):
    self.block = _Block(rngs)
    self.out = nnx.Linear(2, 3, rngs=rngs)

  def __call__(self, x):
    return self.out(self.block(x).mean(axis=(1, 2)))


def test_cam_on_a_users_gap_model_takes_the_weights_from_the_gradient():
  model = numpy_init(lambda: _UserTinyGap(nnx.Rngs(0)))
  reference = tiny_gap()
  set_param(model.block.conv.kernel, reference.conv.kernel[...])
  set_param(model.block.conv.bias, reference.conv.bias[...])
  set_param(model.out.kernel, reference.head.kernel[...])
  set_param(model.out.bias, reference.head.bias[...])
  for c in range(3):
    want = methods.cam(reference, TINY_IMAGE, jnp.array([c]), upsample=False)
    np.testing.assert_allclose(methods.cam(model, TINY_IMAGE, jnp.array([c]), upsample=False),
                               want, atol=1e-6)  # the default layer: "block"
    np.testing.assert_allclose(methods.cam(model, TINY_IMAGE, jnp.array([c]), layer=model.block,
                                           upsample=False), want, atol=1e-6)
  # The conv's own output is before the ReLU: the gradient varies with the ReLU's mask.
  with pytest.raises(ValueError, match=r"at layer 'block.conv', the gradient of the target logit "
                                       r"with respect to A varies over locations.*use grad_cam"):
    methods.cam(model, TINY_IMAGE, jnp.array([0]), layer="block.conv")


def test_cam_refuses_a_head_that_is_not_affine_in_the_maps():
  # y = sum_k v_k mean(A_k^2) + u_k mean(A_k): no 'head', so CAM tests the gradient and the
  # logit itself; both conditions fail. The core skips these checks of values.
  model = quadratic_head()
  with pytest.raises(ValueError, match=r"varies over locations .* and the target logit is not "
                                       r"affine in A"):
    methods.cam(model, TINY_IMAGE, jnp.array([1]))
  core = methods.core(methods.cam, model, TINY_IMAGE)
  assert core(model, TINY_IMAGE, jnp.array([1])).shape == (1, 2, 2)
