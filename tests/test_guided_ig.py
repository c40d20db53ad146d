"""Tests of Guided IG (methods/guided_ig.py) against its definition and PAIR's algorithm.

* an independent float64 NumPy reference (PAIR's guided_ig_impl written out: the
  band [α_min, α_max], the "lower" quantile over all features with features at
  their upper bound counted as +inf, the γ rule) on the logit gradient;
* max_dist = 0 is Integrated Gradients with the left Riemann rule;
* a linear model: Guided IG = (x − x') ⊙ W_c exactly (any path), so completeness;
* when more than 1 − fraction of the features equal the baseline, every movable
  feature is selected each round and Guided IG is IG (the MNIST/black degeneracy);
* the path differs from the straight line when selection is active;
* batch independence and grouping invariance.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from model_factories import linear_model, rand, toy_batch, toy_mlp
from saliency_guide import methods


def reference_guided_ig(model, image, target, baseline, steps, fraction, max_dist):
  """PAIR's guided_ig_impl, float64, one image."""
  def grad_of(z):
    return np.asarray(methods.logit_gradient(
        model, jnp.asarray(z[None], jnp.float32), jnp.asarray([target])))[0].astype(np.float64)

  x_in, x_b = np.asarray(image, np.float64), np.asarray(baseline, np.float64)
  d = x_in - x_b
  x, attr, l1_total = x_b.copy(), np.zeros_like(x_in), np.abs(d).sum()
  if l1_total == 0:
    return attr
  for k in range(steps):
    grad = grad_of(x)
    alpha = (k + 1.0) / steps
    a_min, a_max = max(alpha - max_dist, 0.0), min(alpha + max_dist, 1.0)
    x_min, x_max = x_b + d * a_min, x_b + d * a_max
    target_l1 = l1_total * (1 - (k + 1) / steps)
    start = x.copy()
    with np.errstate(divide="ignore", invalid="ignore"):
      x_alpha = np.where(d != 0, (x - x_b) / d, a_max)
    x = np.where(x_alpha < a_min, x_min, x)
    while True:
      l1 = np.abs(x - x_in).sum()
      if math.isclose(target_l1, l1, rel_tol=1e-9, abs_tol=1e-9):
        break
      g = np.where(x == x_max, np.inf, np.abs(grad))
      s = (g <= np.quantile(g, fraction, method="lower")) & (g != np.inf)
      l1_s = (np.abs(x - x_max) * s).sum()
      gamma = (l1 - target_l1) / l1_s if l1_s > 0 else np.inf
      if gamma > 1:
        x = np.where(s, x_max, x)
      else:
        x = np.where(s, x + (x_max - x) * gamma, x)
        break
    attr += (x - start) * grad
  return attr


def rel(a, b):
  return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def test_matches_numpy_reference_of_pair():
  model = toy_mlp()
  images, targets = toy_batch(3)
  baseline = rand(5, images.shape[1:])
  for options in (dict(steps=20, fraction=0.25, max_dist=0.02),
                  dict(steps=15, fraction=0.1, max_dist=1.0)):
    ours = methods.guided_ig(model, images, targets, baseline=baseline, **options)
    assert ours.shape == images.shape and ours.dtype == jnp.float32
    ref = np.stack([reference_guided_ig(model, images[b], targets[b], baseline, **options)
                    for b in range(3)])
    assert rel(ours, ref) < 1e-5


def test_max_dist_zero_is_left_riemann_ig():
  model = toy_mlp()
  images, targets = toy_batch(3)
  ours = methods.guided_ig(model, images, targets, steps=16, max_dist=0.0)
  ig = methods.integrated_gradients(model, images, targets, steps=16, method="riemann_left")
  np.testing.assert_allclose(ours, ig, rtol=1e-4, atol=1e-6)


def test_linear_model_exact_for_any_path():
  model, weights = linear_model()
  images, targets = toy_batch(3)
  baseline = rand(7, images.shape[1:])
  maps = np.asarray(methods.guided_ig(model, images, targets, baseline=baseline, steps=10,
                                      fraction=0.3, max_dist=1.0))
  expected = (images - baseline) * weights[targets].reshape(images.shape)
  np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-6)
  logits = lambda z: np.asarray(methods.target_logits(model, z, targets))  # noqa: E731
  gap = logits(images) - logits(np.broadcast_to(baseline, images.shape))
  np.testing.assert_allclose(maps.sum(axis=(1, 2, 3)), gap, rtol=1e-4, atol=1e-5)


def test_mostly_baseline_pixels_make_it_ig():
  model = toy_mlp()
  images, targets = toy_batch(3)
  images = images * (rand(9, images.shape) < 0.2)  # ~80 % of the pixels equal the baseline
  ours = methods.guided_ig(model, images, targets, steps=12, fraction=0.25)
  ig = methods.integrated_gradients(model, images, targets, steps=12, method="riemann_left")
  np.testing.assert_allclose(ours, ig, rtol=1e-4, atol=1e-6)


def test_selection_bends_the_path():
  model = toy_mlp()
  images, targets = toy_batch(3)
  baseline = rand(5, images.shape[1:])
  guided = methods.guided_ig(model, images, targets, baseline=baseline, steps=12,
                             max_dist=1.0)
  ig = methods.integrated_gradients(model, images, targets, baseline=baseline, steps=12,
                                    method="riemann_left")
  assert rel(guided, np.asarray(ig)) > 0.05


def test_batch_and_grouping_invariance():
  model = toy_mlp()
  images, targets = toy_batch(5, seed=3)
  full = methods.guided_ig(model, images, targets, steps=8, baseline=0.5)
  grouped = methods.guided_ig(model, images, targets, steps=8, baseline=0.5,
                              internal_batch_size=2)
  np.testing.assert_allclose(grouped, full, rtol=1e-6, atol=1e-7)
  alone = methods.guided_ig(model, images[2:3], targets[2:3], steps=8, baseline=0.5)
  np.testing.assert_allclose(alone[0], full[2], rtol=1e-6, atol=1e-7)
