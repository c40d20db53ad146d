"""Tests of the CAM variants (saliency_guide.methods.cam_variants).

* HiResCAM: = Grad-CAM on a GAP head at its last layer (its defining identity), differs
  from it where the gradient varies over the locations; hand-computed on a quadratic head
  (gradient at A, not 2A; no averaging over the locations).
* Layer-CAM: = Grad-CAM when every gradient is positive and constant; ReLU on the
  *gradients* (a channel with a negative weight drops out, by hand); non-negative maps;
  class-discriminative.
* Eigen-CAM: a NumPy SVD reference with the documented sign rule (centred and not);
  the same map for every target; the sign makes the map correlate positively with the
  centred channel sum; uncentred non-negative maps give a non-negative map.
* Ablation-CAM: an independent reference that zeroes a channel by zeroing its conv
  weights (not through the package's perturbation), both weight conventions; the
  closed form on a GAP head; the sign flip of the relative weights for a negative logit.
* Any NNX model through layer paths; the cores are registered.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from feature_map_models import captured, digits, quadratic_head, small, tiny_gap
from saliency_guide import methods
from saliency_guide.models import CNN, GapCNN
from user_models import BlockGap, block_cnn_like

VARIANTS = {"layer_cam": methods.layer_cam, "hires_cam": methods.hires_cam,
            "eigen_cam": methods.eigen_cam, "ablation_cam": methods.ablation_cam}


def rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# --- HiResCAM --------------------------------------------------------------------------------


@pytest.mark.parametrize("upsample", [False, True])
def test_hires_cam_is_grad_cam_on_a_gap_head(upsample):
  model, x, t = small(GapCNN), digits(), jnp.array([0, 9])
  for relu in (False, True):
    hires = methods.hires_cam(model, x, t, upsample=upsample, relu=relu)
    grad = methods.grad_cam(model, x, t, upsample=upsample, relu=relu)
    np.testing.assert_allclose(hires, grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(("model_cls", "layer"), [(GapCNN, "conv2"), (CNN, "conv2")])
def test_hires_cam_differs_from_grad_cam_where_the_gradient_varies(model_cls, layer):
  model, x, t = small(model_cls), digits(), jnp.array([0, 9])
  hires = methods.hires_cam(model, x, t, layer=layer, upsample=False, relu=False)
  grad = methods.grad_cam(model, x, t, layer=layer, upsample=False, relu=False)
  assert rel(hires, grad) > 0.05


def _quadratic_expected(model, a, c, positive):
  z = a.shape[0] * a.shape[1]
  v, u = np.asarray(model.v[...]), np.asarray(model.u[...])
  grad = 2 * v[:, c] * a / z + u[:, c] / z  # dy^c/dA^k_ij at A, (2, 2, K)
  if positive:
    grad = np.maximum(grad, 0)
  return (grad * a).sum(-1), (np.maximum(2 * v[:, c] * 2 * a / z + u[:, c] / z, 0)
                              if positive else 2 * v[:, c] * 2 * a / z + u[:, c] / z)


@pytest.mark.parametrize("name", ["hires_cam", "layer_cam"])
def test_elementwise_weights_by_hand_on_a_quadratic_head(name):
  # y^c = sum_k v_kc mean(A_k^2) + u_kc mean(A_k): the gradient varies over the locations
  # and depends on A, so averaging it (Grad-CAM) or taking it at 2A would both be wrong.
  model = quadratic_head()
  x = jnp.array([[1.0, 2.0], [3.0, -1.0]]).reshape(1, 2, 2, 1)
  a = np.stack([np.maximum(x[0, ..., 0], 0), np.maximum(0.5 - x[0, ..., 0], 0)], -1)
  for c in (0, 1):
    expected, grad_at_2a = _quadratic_expected(model, a, c, positive=name == "layer_cam")
    got = VARIANTS[name](model, x, jnp.array([c]), upsample=False, relu=False)[0]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert np.abs((grad_at_2a * a).sum(-1) - expected).max() > 0.05  # the slip is visible
    grad_cam = methods.grad_cam(model, x, jnp.array([c]), upsample=False, relu=False)[0]
    assert np.abs(np.asarray(grad_cam) - expected).max() > 0.05  # not Grad-CAM


# --- Layer-CAM --------------------------------------------------------------------------------


def test_layer_cam_is_grad_cam_when_every_gradient_is_positive_and_constant():
  # TinyGap: A^0 = relu(x), A^1 = relu(0.5 - x), GAP head, Z = 4: dy^c/dA^k_ij = w^c_k / 4.
  model = tiny_gap()
  x = jnp.array([[1.0, 2.0], [3.0, -1.0]]).reshape(1, 2, 2, 1)
  # class 0: w = (1, 2), both positive -> Layer-CAM = Grad-CAM
  np.testing.assert_allclose(
      methods.layer_cam(model, x, jnp.array([0]), upsample=False, relu=False),
      methods.grad_cam(model, x, jnp.array([0]), upsample=False, relu=False), atol=1e-7)
  # class 1: w = (-1, 3): the ReLU on the gradients drops channel 0 -> (3/4) A^1
  a1 = np.maximum(0.5 - np.asarray(x[0, ..., 0]), 0)
  got = methods.layer_cam(model, x, jnp.array([1]), upsample=False, relu=False)[0]
  np.testing.assert_allclose(got, 0.75 * a1, atol=1e-7)
  grad = methods.grad_cam(model, x, jnp.array([1]), upsample=False, relu=False)[0]
  assert np.abs(np.asarray(grad) - 0.75 * a1).max() > 0.1


def test_layer_cam_is_non_negative_and_class_discriminative():
  model, x = small(CNN), digits()
  a = methods.layer_cam(model, x, jnp.array([0, 1]), layer="conv1", relu=False)
  b = methods.layer_cam(model, x, jnp.array([5, 7]), layer="conv1", relu=False)
  assert float(a.min()) >= 0 and float(a.max()) > 0
  assert rel(a, b) > 0.05


# --- Eigen-CAM --------------------------------------------------------------------------------


def _eigen_reference(a, center):
  """NumPy, float64: project on the first right singular vector, sum of v1 >= 0."""
  a = np.asarray(a, np.float64)
  out = []
  for maps in a:
    o = maps.reshape(-1, maps.shape[-1])
    if center:
      o = o - o.mean(axis=0)
    _, _, vt = np.linalg.svd(o)
    v1 = vt[0] if vt[0].sum() >= 0 else -vt[0]
    out.append((o @ v1).reshape(maps.shape[:2]))
  return np.stack(out)


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("layer", ["conv1", "conv2"])
def test_eigen_cam_is_the_first_principal_component(center, layer):
  model, x, t = small(CNN), digits(), jnp.array([0, 9])
  got = methods.eigen_cam(model, x, t, layer=layer, upsample=False, relu=False, center=center)
  a = captured(model, x, layer)
  expected = _eigen_reference(a, center)
  assert rel(got, expected) < 1e-4
  if not center:  # non-negative maps: the Perron vector, a non-negative map
    assert float(got.min()) >= -1e-5 * float(got.max())
  else:  # the sign rule: positive correlation with the centred sum of the channels
    total = np.asarray(a).sum(-1)
    total = total - total.mean(axis=(1, 2), keepdims=True)
    assert ((np.asarray(got) * total).sum(axis=(1, 2)) > 0).all()
    # the first component carries the largest share of the variance: sigma_1^2
    o = np.asarray(a, np.float64).reshape(2, -1, a.shape[-1])
    o = o - o.mean(axis=1, keepdims=True)
    top = np.linalg.svd(o, compute_uv=False)[:, 0] ** 2
    np.testing.assert_allclose((np.asarray(got, np.float64) ** 2).sum(axis=(1, 2)), top,
                               rtol=1e-4)


def test_eigen_cam_is_the_same_for_every_target():
  model, x = small(GapCNN), digits()
  maps = [methods.eigen_cam(model, x, jnp.array([c, 9 - c])) for c in range(10)]
  for m in maps[1:]:
    np.testing.assert_array_equal(m, maps[0])


# --- Ablation-CAM -----------------------------------------------------------------------------


def _zeroed_channel(model, k):
  """A copy of the CNN whose conv2 channel k is identically zero (weights and bias zeroed)."""
  graphdef, state = nnx.split(model)
  copy = nnx.merge(graphdef, jax.tree.map(lambda v: v, state))
  kernel = np.array(copy.conv2.kernel[...])
  bias = np.array(copy.conv2.bias[...])
  kernel[..., k], bias[k] = 0.0, 0.0
  copy.conv2.kernel[...] = jnp.asarray(kernel)
  copy.conv2.bias[...] = jnp.asarray(bias)
  return copy


@pytest.mark.parametrize("weights", ["relative", "drop"])
def test_ablation_cam_against_zeroed_conv_weights(weights):
  # Independent of the package's perturbation machinery: channel k of conv2 (after its
  # ReLU) is zero when its kernel and bias are; relu(0) = 0.
  model, x = small(CNN), digits()
  t = jnp.argmax(model(x), axis=-1)
  y = np.asarray(model(x))[np.arange(2), np.asarray(t)]
  a = np.asarray(captured(model, x, "conv2"), np.float64)
  ablated = np.stack([np.asarray(_zeroed_channel(model, k)(x))[np.arange(2), np.asarray(t)]
                      for k in range(a.shape[-1])], axis=1)  # (B, K)
  drop = y[:, None] - ablated
  w = drop / y[:, None] if weights == "relative" else drop
  expected = np.einsum("bk,bhwk->bhw", w, a)
  got = methods.ablation_cam(model, x, t, layer="conv2", upsample=False, relu=False,
                             weights=weights)
  assert rel(got, expected) < 1e-4


def test_ablation_cam_closed_form_on_a_gap_head():
  # y^c = sum_k w^c_k mean(A^k) + b^c: zeroing A^k lowers y^c by w^c_k mean(A^k) exactly.
  model, x, t = small(GapCNN), digits(), jnp.array([0, 9])
  a = np.asarray(captured(model, x, "conv3"), np.float64)
  w = np.asarray(model.head.kernel[...], np.float64)[:, np.asarray(t)].T  # (B, K)
  expected = np.einsum("bk,bhwk->bhw", w * a.mean(axis=(1, 2)), a)
  got = methods.ablation_cam(model, x, t, upsample=False, relu=False, weights="drop")
  np.testing.assert_allclose(got, expected, atol=1e-5 * np.abs(expected).max())


def test_relative_weights_flip_sign_with_a_negative_logit():
  model, x = small(GapCNN), digits()
  logits = model(x)
  t = jnp.argmin(logits, axis=-1)  # the rejected class
  y = np.asarray(logits)[np.arange(2), np.asarray(t)]
  assert (y < 0).all()
  rel_map = methods.ablation_cam(model, x, t, upsample=False, relu=False)
  drop = methods.ablation_cam(model, x, t, upsample=False, relu=False, weights="drop")
  np.testing.assert_allclose(np.asarray(rel_map) * y[:, None, None], drop, atol=1e-5)


# --- Any model, registered cores ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_submodule_path_equals_exposed_name(name):
  package = small(CNN)
  user = block_cnn_like(package)
  x, t = digits(), jnp.array([2, 5])
  ours = VARIANTS[name](package, x, t, layer="conv2", upsample=False, relu=False)
  theirs = VARIANTS[name](user, x, t, layer="block2", upsample=False, relu=False)
  assert rel(theirs, ours) < 1e-5


def test_hires_cam_on_a_user_gap_model_by_path():
  model = BlockGap(rngs=nnx.Rngs(0))
  x, t = digits(), jnp.array([1, 4])
  np.testing.assert_allclose(
      methods.hires_cam(model, x, t, layer="blocks.1", upsample=False, relu=False),
      methods.grad_cam(model, x, t, layer=model.blocks[1], upsample=False, relu=False),
      atol=1e-6, rtol=1e-5)


def test_cores_are_registered():
  model, x = small(GapCNN), digits()
  c = methods.core(methods.ablation_cam, model, x, weights="drop", upsample=False)
  assert c.fn.__name__ == "_ablation_cam_core" and ("weights", "drop") in c.static
  for name, method in VARIANTS.items():
    assert methods.core(method, model, x).fn.__name__ == f"_{name}_core"
