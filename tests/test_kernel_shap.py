"""Tests of KernelSHAP, LIME and exact Shapley values (saliency_guide.methods.kernel_shap).

* exact Shapley values against an independent reference: the average marginal
  contribution over all M! orders of the superpixels, written with NumPy;
* KernelSHAP converges to them (relative L2 error <= 3% at 6,400 coalitions on a
  6-superpixel MLP; the error falls at least 3x from 100 to 6,400 coalitions, 1/sqrt(S)
  predicts 8x), satisfies efficiency exactly at any sample count, and is exact on a
  linear model (the regression is then exact for any coalitions);
* the coalitions follow the Shapley kernel (sizes, pairs, uniform subsets);
* LIME recovers a linear model's effects (alpha = 0), and its weighted ridge matches
  an independent NumPy solve with the ``lime`` package's kernel;
* per-image masks (renumbered labels, null players), reproducibility, chunking, any
  NNX model, class-aware results.
"""

from __future__ import annotations

import importlib
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model_factories import CLASSES, SHAPE, linear_model, toy_batch, toy_mlp
from saliency_guide import methods

K = importlib.import_module("saliency_guide.methods.kernel_shap")
MASK = np.asarray(methods.grid_mask(4, 5, cell=(2, 2)))  # 2 x 3 = 6 superpixels


def perturbed(x, mask, keep, baseline):
  """Image ``x`` with the superpixels in ``keep`` shown and the others at ``baseline``."""
  shown = np.isin(mask, list(keep))[..., None]
  return np.where(shown, x, baseline)


def shapley_by_permutations(model, x, target, mask, baseline=0.0):
  """Shapley values as the mean marginal contribution over every order of the features."""
  labels = np.unique(mask)
  orders = list(itertools.permutations(range(labels.size)))
  images, steps = [], []
  for order in orders:
    for n in range(labels.size + 1):
      images.append(perturbed(x, mask, labels[list(order[:n])], baseline))
  v = np.asarray(model(jnp.asarray(np.stack(images), jnp.float32)))[:, target]
  v = v.reshape(len(orders), labels.size + 1)
  phi = np.zeros(labels.size)
  for row, order in zip(v, orders, strict=True):
    steps = np.diff(row)  # v(first n + 1) - v(first n)
    phi[list(order)] += steps
  return phi / len(orders)


def linear_effects(weights, x, targets, mask, baseline=0.0):
  """Per-superpixel effect of a linear model: the sum of w_c,i (x_i - b_i) over its pixels."""
  out = []
  baseline = np.broadcast_to(baseline, x.shape)
  for xi, bi, c in zip(x, baseline, targets, strict=True):
    contribution = (weights[c].reshape(SHAPE) * (xi - bi))[..., 0]
    out.append(np.bincount(mask.ravel(), weights=contribution.ravel(), minlength=mask.max() + 1))
  return np.stack(out)


def test_grid_mask_default_and_ragged_cells():
  assert np.asarray(methods.grid_mask(28, 28)).max() == 48
  np.testing.assert_array_equal(
      methods.grid_mask(3, 5, cell=2),
      [[0, 0, 1, 1, 2], [0, 0, 1, 1, 2], [3, 3, 4, 4, 5]])


def test_exact_shapley_against_permutation_reference():
  model, (x, t) = toy_mlp(), toy_batch(3)
  baseline = np.full(SHAPE, 0.25, np.float32)
  maps, phi = methods.exact_shapley(model, x, t, feature_mask=MASK, baseline=baseline,
                                    return_features=True)
  expected = np.stack([shapley_by_permutations(model, xi, ti, MASK, baseline)
                       for xi, ti in zip(x, t, strict=True)])
  np.testing.assert_allclose(phi, expected, rtol=1e-4, atol=1e-5)
  # every pixel of a superpixel carries the feature's whole value
  np.testing.assert_allclose(maps[..., 0], np.take_along_axis(
      np.asarray(phi), np.broadcast_to(MASK, (3, *MASK.shape)).reshape(3, -1), 1).reshape(
          3, *MASK.shape))


def test_per_image_masks_are_renumbered_and_null_players_get_zero():
  model, (x, t) = toy_mlp(), toy_batch(2)
  other = np.where(MASK < 3, 7, -2)  # two superpixels with arbitrary labels
  masks = np.stack([MASK, other]).astype(np.int64)
  _, phi = methods.exact_shapley(model, x, t, feature_mask=masks, return_features=True)
  assert phi.shape == (2, 6)
  expected = shapley_by_permutations(model, x[1], t[1], other)  # labels -2 then 7
  np.testing.assert_allclose(phi[1, :2], expected, rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(phi[1, 2:], 0.0)  # null players
  _, est = methods.kernel_shap(model, x, t, feature_mask=masks, samples=64,
                               key=jax.random.key(0), return_features=True)
  np.testing.assert_array_equal(est[1, 2:], 0.0)
  np.testing.assert_allclose(est[1, :2], expected, rtol=1e-4, atol=1e-5)  # 2 players: exact


def test_kernel_shap_converges_to_exact_shapley_values():
  model = toy_mlp()
  x, t = toy_batch(8, seed=1)
  exact = np.asarray(methods.exact_shapley(model, x, t, feature_mask=MASK,
                                           return_features=True)[1])
  errors = {}
  for samples in (100, 6400):
    _, phi = methods.kernel_shap(model, x, t, feature_mask=MASK, samples=samples,
                                 key=jax.random.key(samples), return_features=True)
    errors[samples] = np.linalg.norm(phi - exact) / np.linalg.norm(exact)
  assert errors[6400] <= 0.03, errors
  assert errors[100] >= 3 * errors[6400], errors


def test_kernel_shap_efficiency_is_exact_at_any_sample_count():
  model, (x, t) = toy_mlp(), toy_batch(3)
  baseline = toy_batch(3, seed=4)[0]  # one baseline per image
  _, phi = methods.kernel_shap(model, x, t, feature_mask=MASK, samples=12, baseline=baseline,
                               key=jax.random.key(3), return_features=True)
  logits = np.asarray(model(jnp.asarray(x)))[np.arange(3), t]
  base = np.asarray(model(jnp.asarray(baseline)))[np.arange(3), t]
  np.testing.assert_allclose(np.asarray(phi).sum(1), logits - base, atol=1e-5)


def test_kernel_shap_and_lime_recover_a_linear_model():
  model, weights = linear_model()
  x, t = toy_batch(3)
  expected = linear_effects(weights, x, t, MASK, baseline=0.5)
  _, phi = methods.kernel_shap(model, x, t, feature_mask=MASK, samples=64, baseline=0.5,
                               key=jax.random.key(1), return_features=True)
  np.testing.assert_allclose(phi, expected, atol=1e-5)
  _, beta = methods.lime(model, x, t, feature_mask=MASK, samples=32, baseline=0.5, alpha=0.0,
                         key=jax.random.key(1), return_features=True)
  np.testing.assert_allclose(beta, expected, atol=1e-5)
  # class-aware: another target, other effects (not the same map for every class)
  other = (t + 1) % CLASSES
  _, phi_other = methods.kernel_shap(model, x, other, feature_mask=MASK, samples=64,
                                     baseline=0.5, key=jax.random.key(1), return_features=True)
  np.testing.assert_allclose(phi_other, linear_effects(weights, x, other, MASK, 0.5),
                             atol=1e-5)


def test_coalitions_follow_the_shapley_kernel():
  counts = jnp.array([6, 4])
  z = np.asarray(K._shapley_kernel_coalitions(jax.random.key(0), counts, 20000, 6))
  assert z.shape == (2, 20000, 6)
  active = np.array([[True] * 6, [True] * 4 + [False] * 2])[:, None]
  np.testing.assert_array_equal(z[:, 0::2] ^ z[:, 1::2], np.broadcast_to(active, (2, 10000, 6)))
  assert not (z[:, 0::2] & z[:, 1::2]).any()  # each coalition, then its complement
  assert not z[1, :, 4:].any()  # the second image has 4 features
  for image, m in enumerate((6, 4)):
    size = z[image].sum(-1)
    k = np.arange(1, m)
    p = (m - 1) / (k * (m - k))
    p /= p.sum()
    observed = np.bincount(size, minlength=m + 1)[1:m] / size.size
    assert np.all(np.abs(observed - p) <= 4 * np.sqrt(p * (1 - p) / 10000)), (observed, p)
    assert size.min() >= 1 and size.max() <= m - 1
    # given its size, a coalition is a uniform subset: each feature with probability k/M
    rows = z[image, size == 2, :m]
    np.testing.assert_allclose(rows.mean(0), 2 / m, atol=0.03)


def lime_reference(z, y, kernel_width, alpha):
  """Weighted ridge with an unpenalised intercept, by an augmented normal-equation solve."""
  z = z.astype(np.float64)
  ones = np.ones(z.shape[1])
  norm = np.linalg.norm(z, axis=1) * np.linalg.norm(ones)
  cosine = np.divide(z @ ones, norm, out=np.zeros(len(z)), where=norm > 0)
  w = np.sqrt(np.exp(-((1 - cosine) ** 2) / kernel_width ** 2))  # lime_image's kernel
  design = np.hstack([np.ones((len(z), 1)), z])
  penalty = alpha * np.diag([0.0] + [1.0] * z.shape[1])
  solution = np.linalg.solve(design.T @ (w[:, None] * design) + penalty, design.T @ (w * y))
  return solution[1:]


@pytest.mark.parametrize("alpha", [1.0, 0.0])
def test_lime_regression_against_weighted_ridge(alpha):
  rng = np.random.default_rng(0)
  z = rng.random((300, 5)) < 0.5
  z[0] = True
  z[1] = False  # the empty coalition: cosine distance 1
  y = rng.normal(size=300) + z @ np.arange(5.0)
  beta = K._lime_regression(jnp.asarray(z), jnp.asarray(y, jnp.float32), jnp.asarray(5),
                            kernel_width=0.25, alpha=alpha)
  np.testing.assert_allclose(beta, lime_reference(z, y, 0.25, alpha), rtol=2e-4, atol=2e-4)


def test_reproducible_for_a_key_whatever_the_chunking():
  model, (x, t) = toy_mlp(), toy_batch(3)
  for method in (methods.kernel_shap, methods.lime):
    a = method(model, x, t, feature_mask=MASK, samples=40, key=jax.random.key(0))
    b = method(model, x, t, feature_mask=MASK, samples=40, key=jax.random.key(0),
               internal_batch_size=7)
    c = method(model, x, t, feature_mask=MASK, samples=40, key=jax.random.key(1))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(a, c)
    assert a.shape == x.shape


def test_any_nnx_model_with_the_default_grid():
  from user_models import linen_model  # a Linen CNN through nnx.bridge

  model = linen_model()
  x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
  t = np.array([1, 4])
  maps, phi = methods.kernel_shap(model, x, t, samples=100, key=jax.random.key(0),
                                  return_features=True)
  assert maps.shape == (2, 28, 28, 1) and phi.shape == (2, 49)
  logits = np.asarray(model(jnp.asarray(x)))[np.arange(2), t]
  base = np.asarray(model(jnp.zeros_like(jnp.asarray(x))))[np.arange(2), t]
  np.testing.assert_allclose(np.asarray(phi).sum(1), logits - base, rtol=1e-4, atol=1e-4)


def test_core_takes_n_copies_of_the_batch():
  """Wrappers (SmoothGrad, explain_dataset) apply a core to n stacked copies of the images."""
  model, weights = linear_model()
  x, t = toy_batch(3)
  baseline = toy_batch(3, seed=2)[0]
  expected = linear_effects(weights, x, t, MASK, baseline=baseline)
  for method in (methods.kernel_shap, methods.exact_shapley):
    options = {"key": jax.random.key(0), "samples": 64} if method is methods.kernel_shap else {}
    core = methods.core(method, model, jnp.asarray(x), feature_mask=MASK, baseline=baseline,
                        return_features=True, **options)
    _, phi = core(model, jnp.concatenate([x, x]), jnp.concatenate([t, t]))
    np.testing.assert_allclose(phi, np.concatenate([expected, expected]), atol=1e-5)
