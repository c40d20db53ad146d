"""Tests of Grad-CAM (saliency_guide.methods.grad_cam).

* Grad-CAM = ReLU(CAM) / Z on GapCNN at its last layer (the Grad-CAM paper's
  argument), with and without the ReLU and the upsampling;
* the gradient is taken at the activations A, not at 2A: a model whose head
  squares the exposed map gives different, hand-computable weights at A and 2A;
* the counterfactual variant (negated gradients): ReLU(-CAM) / Z on GapCNN, the
  hand-computed negated weights on the quadratic head, the default unchanged, and
  the option passing through core, explain_dataset and SmoothGrad.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import saliency_guide as sg
from feature_map_models import digits, quadratic_head, small
from saliency_guide import methods
from saliency_guide.models import CNN, GapCNN


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


# --- The counterfactual variant: weights from the negated gradients -------------------------


@pytest.mark.parametrize("upsample", [False, True])
def test_counterfactual_is_relu_of_minus_cam_over_z_on_gapcnn(upsample):
  # On GapCNN the weights are known: alpha_k = w^c_k / Z, so the negated weights give
  # ReLU(-M_c) / Z, the part of the CAM that counts against the class.
  model = small(GapCNN)
  x, t = digits(), jnp.array([0, 9])
  z = 7 * 7
  cam_low = methods.cam(model, x, t, upsample=False)
  got = methods.grad_cam(model, x, t, upsample=upsample, counterfactual=True)
  expected = jax.nn.relu(-cam_low) / z
  if upsample:
    expected = jax.image.resize(expected, (2, 28, 28), "bilinear")
  assert float(expected.max()) > 0  # negative evidence exists for the test to see
  np.testing.assert_allclose(got, expected, atol=1e-6, rtol=1e-5)


def test_counterfactual_is_grad_cam_with_negated_weights():
  # The quadratic head: hand-computed weights alpha; the counterfactual is ReLU(-sum alpha A).
  model = quadratic_head()
  x = jnp.array([[1.0, 2.0], [3.0, -1.0]]).reshape(1, 2, 2, 1)
  a = np.stack([np.maximum(x[0, ..., 0], 0), np.maximum(0.5 - x[0, ..., 0], 0)], -1)
  v, u = np.asarray(model.v[...]), np.asarray(model.u[...])
  for c in (0, 1):
    grad = 2 * v[:, c] * a / 4 + u[:, c] / 4  # dy^c/dA_kij at A, (2, 2, K)
    signed = (grad.mean(axis=(0, 1)) * a).sum(-1)
    target = jnp.array([c])
    got = methods.grad_cam(model, x, target, upsample=False, counterfactual=True)[0]
    np.testing.assert_allclose(got, np.maximum(-signed, 0), atol=1e-6)
    got_signed = methods.grad_cam(model, x, target, upsample=False, relu=False,
                                  counterfactual=True)[0]
    np.testing.assert_allclose(got_signed, -signed, atol=1e-6)


def test_counterfactual_default_is_grad_cam_and_negation_is_exact():
  model = small(CNN)
  x, t = digits(), jnp.array([3, 6])
  plain = methods.grad_cam(model, x, t, relu=False)
  np.testing.assert_array_equal(methods.grad_cam(model, x, t, relu=False,
                                                 counterfactual=False), plain)
  np.testing.assert_allclose(methods.grad_cam(model, x, t, relu=False, counterfactual=True),
                             -plain, rtol=1e-6, atol=1e-7 * float(jnp.abs(plain).max()))


def test_counterfactual_composes_with_wrappers():
  model = small(CNN)
  x, t = digits(), jnp.array([3, 6])
  direct = methods.grad_cam(model, x, t, counterfactual=True)
  core = methods.core(methods.grad_cam, model, x, counterfactual=True)
  assert dict(core.static)["counterfactual"] is True
  np.testing.assert_allclose(core.run(model, x, t), direct, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(
      sg.explain_dataset(methods.grad_cam, model, np.asarray(x), np.asarray(t), batch_size=1,
                         counterfactual=True), direct, rtol=1e-6, atol=1e-7)
  smooth = methods.smoothgrad(methods.grad_cam, samples=3, key=jax.random.key(0))
  plain = smooth(model, x, t, relu=False)
  negated = smooth(model, x, t, relu=False, counterfactual=True)
  np.testing.assert_allclose(negated, -plain, rtol=1e-5, atol=1e-6 * float(jnp.abs(plain).max()))


def test_counterfactual_must_be_a_flag():
  with pytest.raises(TypeError, match="counterfactual: expected True or False"):
    methods.grad_cam(small(GapCNN), digits(), jnp.array([1, 2]), counterfactual="yes")
