"""Occlusion and RISE pinned to their definitions (Zeiler & Fergus 2014; Petsiuk et al. 2018).

The references here are slow and obvious NumPy loops: one window (or one mask) at a
time, written from the papers' and Captum's text, not from the package's code.
Agreement with Captum's ``Occlusion`` on the trained models is in
``benchmarks/references/occlusion.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.transform import resize

from model_factories import CLASSES, SHAPE, Linear, linear_model, rand, toy_batch, toy_mlp
from saliency_guide import methods
from saliency_guide.methods.occlusion import _draws, _rise_geometry

KEY = jax.random.key(0)


def logits(model, x):
  return np.asarray(model(jnp.asarray(x, jnp.float32)), np.float64)


def window_positions(size: int, window: int, stride: int) -> list[int]:
  """Captum's rule read literally: start at 0, step by ``stride`` until the axis is covered."""
  tops, top = [], 0
  while True:
    tops.append(top)
    if top + window >= size:
      return tops
    top += stride


def occlusion_loop(model, images, targets, window, stride, baseline) -> np.ndarray:
  """One window at a time: the drop of the target logit, averaged over covering windows."""
  images = np.asarray(images, np.float64)
  batch, height, width, _ = images.shape
  baseline = np.broadcast_to(np.asarray(baseline, np.float64), images.shape)
  rows = np.arange(batch)
  before = logits(model, images)[rows, targets]
  total = np.zeros((batch, height, width))
  count = np.zeros((height, width))
  for top in window_positions(height, window[0], stride[0]):
    for left in window_positions(width, window[1], stride[1]):
      inside = np.zeros((height, width), bool)
      inside[top:top + window[0], left:left + window[1]] = True  # cut at the edge
      occluded = np.where(inside[None, :, :, None], baseline, images)
      drop = before - logits(model, occluded)[rows, targets]
      total += drop[:, None, None] * inside
      count += inside
  assert count.min() >= 1, "every pixel is covered by a window"
  return total / count


# --------------------------------------------------------------------------------------
# Occlusion
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("window", "stride"), [
    ((1, 1), (1, 1)),
    ((2, 2), (1, 1)),
    ((2, 3), (2, 2)),  # the last column window is cut at the edge (3 + 2 > 5)
    ((3, 2), (2, 1)),  # the last row window is cut (2 + 3 > 4)
    ((4, 5), (3, 7)),  # the whole image: the stride does not matter
    ((4, 1), (1, 1)),
])
def test_occlusion_matches_a_loop_over_windows(window, stride):
  model = toy_mlp()
  images, targets = toy_batch(3)
  expected = occlusion_loop(model, images, targets, window, stride, 0.0)
  got = methods.occlusion(model, images, targets, window=window, stride=stride)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_occlusion_baselines_scalar_shared_and_per_image():
  model = toy_mlp()
  images, targets = toy_batch(3)
  per_image = rand(5, images.shape)
  for baseline in (0.3, per_image[0], per_image[:1], per_image):
    expected = occlusion_loop(model, images, targets, (2, 2), (1, 2), baseline)
    got = methods.occlusion(model, images, targets, window=2, stride=(1, 2), baseline=baseline)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_occlusion_of_a_linear_model_with_a_one_pixel_window_is_weight_times_difference():
  # phi_u = f_c(x) - f_c(x with pixel u set to b) = sum over channels of w_c,u (x_u - b_u).
  rng = np.random.default_rng(1)
  shape = (4, 5, 3)
  weights = rng.normal(size=(CLASSES, int(np.prod(shape)))).astype(np.float32)
  model = Linear(weights, rng.normal(size=CLASSES), image_shape=shape)
  images, targets = rand(2, (3, *shape)), np.array([2, 0, 1])
  baseline = rand(3, shape)
  got = methods.occlusion(model, images, targets, window=1, baseline=baseline)
  w = weights[targets].reshape(3, *shape)
  np.testing.assert_allclose(got, (w * (images - baseline)).sum(-1), rtol=1e-4, atol=1e-5)


def test_occlusion_is_a_drop_so_evidence_for_the_class_is_positive():
  # A linear model with positive weights on class 0: covering any pixel of a positive
  # image lowers the logit, so every value is positive (a sign slip would make them < 0).
  weights = np.zeros((CLASSES, int(np.prod(SHAPE))), np.float32)
  weights[0] = 1.0
  model = Linear(weights, np.zeros(CLASSES))
  images = rand(0, (2, *SHAPE)) + 0.1
  got = np.asarray(methods.occlusion(model, images, np.array([0, 0]), window=2))
  assert (got > 0).all()
  got = np.asarray(methods.occlusion(model, images, np.array([1, 1]), window=2))
  np.testing.assert_array_equal(got, 0.0)  # class-specific: class 1 ignores every pixel


def test_occlusion_explains_the_target_logit_not_a_loss_or_another_class():
  model, weights = linear_model()
  images = rand(4, (2, *SHAPE))
  a = methods.occlusion(model, images, np.array([0, 0]), window=1)
  b = methods.occlusion(model, images, np.array([2, 2]), window=1)
  difference = (weights[0] - weights[2]).reshape(SHAPE)[..., 0] * images[..., 0]
  np.testing.assert_allclose(a - b, difference, rtol=1e-4, atol=1e-5)


def test_one_window_over_the_whole_image_gives_the_logit_drop_to_the_baseline():
  model = toy_mlp()
  images, targets = toy_batch(3)
  got = methods.occlusion(model, images, targets, window=SHAPE[:2], baseline=0.5)
  rows = np.arange(3)
  drop = logits(model, images)[rows, targets] - logits(model, np.full_like(images, 0.5))[
      rows, targets]
  np.testing.assert_allclose(got, np.broadcast_to(drop[:, None, None], got.shape), rtol=1e-5,
                             atol=1e-6)


def test_occlusion_does_not_depend_on_how_windows_are_batched():
  model = toy_mlp()
  images, targets = toy_batch(3)
  one = methods.occlusion(model, images, targets, window=2, batch_size=1)  # 1 window per pass
  many = methods.occlusion(model, images, targets, window=2, batch_size=7)  # 2, padded chunk
  np.testing.assert_allclose(one, many, rtol=1e-6, atol=1e-6)


def test_occlusion_refuses_windows_that_leave_pixels_uncovered():
  model = toy_mlp()
  images, targets = toy_batch(3)
  with pytest.raises(ValueError, match="stride"):
    methods.occlusion(model, images, targets, window=2, stride=3)
  with pytest.raises(ValueError, match="window"):
    methods.occlusion(model, images, targets, window=(5, 2))


# --------------------------------------------------------------------------------------
# RISE
# --------------------------------------------------------------------------------------


def paper_masks(key, n, size, cell, p) -> np.ndarray:
  """The masks rebuilt as the authors' ``generate_masks`` does, from the same draws.

  ``skimage.transform.resize`` of the binary grid to ``(s + 1) * C`` pixels, bilinear
  (``order=1, mode='reflect', anti_aliasing=False``), then the crop at the shift.
  """
  cell_size, _ = _rise_geometry(size, cell)
  grids, dys, dxs = (np.asarray(v) for v in _draws(key, n, cell, p, cell_size))
  up = [(s + 1) * c for s, c in zip(cell, cell_size, strict=True)]
  masks = []
  for grid, dy, dx in zip(grids, dys, dxs, strict=True):
    big = resize(grid.astype(np.float64), up, order=1, mode="reflect", anti_aliasing=False)
    masks.append(big[dy:dy + size[0], dx:dx + size[1]])
  return np.stack(masks)


@pytest.mark.parametrize(("size", "cell"), [((28, 28), (7, 7)), ((4, 5), (2, 3)),
                                            ((9, 6), (4, 1))])
def test_rise_masks_are_the_papers_upsampled_shifted_grids(size, cell):
  masks = np.asarray(methods.rise_masks(KEY, size, masks=6, cell=cell, p=0.4))
  expected = paper_masks(KEY, 6, size, cell, 0.4)
  np.testing.assert_allclose(masks, expected, atol=1e-6)


def test_rise_masks_keep_each_pixel_with_probability_p():
  masks = np.asarray(methods.rise_masks(KEY, (28, 28), masks=4000, cell=7, p=0.3))
  assert 0 <= masks.min() and masks.max() <= 1
  # E[M(u)] = p at every pixel (interpolation weights sum to 1); the mean over 4000 masks
  # and 784 pixels has a standard error far below 0.01.
  assert abs(masks.mean() - 0.3) < 0.01
  assert np.abs(masks.mean(0) - 0.3).max() < 0.06


def rise_loop(model, images, targets, masks, p, score) -> np.ndarray:
  """sum_i f_c(x ⊙ M_i) M_i / (N p), one mask at a time."""
  rows = np.arange(len(images))
  total = np.zeros(images.shape[:3])
  for mask in masks:
    z = logits(model, np.asarray(images, np.float64) * mask[None, :, :, None])
    if score == "probability":
      z = np.exp(z - z.max(1, keepdims=True))
      z = z / z.sum(1, keepdims=True)
    total += z[rows, targets][:, None, None] * mask
  return total / (len(masks) * p)


@pytest.mark.parametrize("score", ["logit", "probability"])
def test_rise_matches_a_loop_over_masks(score):
  model = toy_mlp()
  images, targets = toy_batch(3)
  n, cell, p = 50, (2, 2), 0.6
  masks = np.asarray(methods.rise_masks(KEY, SHAPE[:2], masks=n, cell=cell, p=p), np.float64)
  expected = rise_loop(model, images, targets, masks, p, score)
  got = methods.rise(model, images, targets, masks=n, cell=cell, p=p, key=KEY, score=score,
                     batch_size=16)  # 5 masks per pass, the last chunk padded
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_rise_with_every_cell_kept_is_the_score_of_the_image_everywhere():
  model = toy_mlp()
  images, targets = toy_batch(3)
  got = methods.rise(model, images, targets, masks=3, cell=2, p=1.0, key=KEY)
  score = logits(model, images)[np.arange(3), targets]
  np.testing.assert_allclose(got, np.broadcast_to(score[:, None, None], got.shape), rtol=1e-5)


def test_rise_is_reproducible_and_independent_of_batching_but_not_of_the_key():
  model = toy_mlp()
  images, targets = toy_batch(3)
  a = methods.rise(model, images, targets, masks=40, cell=2, key=KEY, batch_size=3)
  b = methods.rise(model, images, targets, masks=40, cell=2, key=KEY, batch_size=1000)
  c = methods.rise(model, images, targets, masks=40, cell=2, key=jax.random.key(1))
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-3


def test_rise_is_class_specific_and_probability_scores_stay_in_range():
  model = toy_mlp()
  images, _ = toy_batch(3)
  a = methods.rise(model, images, np.array([0, 0, 0]), masks=40, cell=2, key=KEY)
  b = methods.rise(model, images, np.array([1, 1, 1]), masks=40, cell=2, key=KEY)
  assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3
  prob = np.asarray(methods.rise(model, images, np.array([0, 1, 2]), masks=40, cell=2, p=0.5,
                                 key=KEY, score="probability"))
  assert prob.min() >= 0 and prob.max() <= 1 / 0.5  # each term f M / p <= 1 / p
