"""Tests of XRAI (saliency_guide.methods.xrai).

* the greedy selection against a slow, obvious NumPy port of PAIR's ``_xrai`` and
  ``_xrai_fast`` written here (random attributions, random overlapping rectangles,
  several area thresholds and ``min_pixel_diff``): maps to float32 rounding, ranks
  exactly; the agreement with PAIR's package itself is a reference case
  (benchmarks/references/xrai.py);
* defining identities: the map preserves the attribution's sum (each added region and
  the uncovered rest get their mean), ranks order the gains, ties go to the first
  region, a partition gives each segment its mean;
* the hand-computed greedy example where the overlap matters (full ≠ fast);
* the base attribution: black/white Integrated Gradients averaged, exact on a linear
  model, (x − (min + max)/2) · w, so a wrong sign, a softmax or a single baseline fail;
* the segmentation: PAIR's order and dilation, the scaled settings, the grid.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from model_factories import SHAPE, linear_model, numpy_model, toy_batch, toy_mlp
from saliency_guide import methods
from saliency_guide.models import MLP

# --------------------------------------------------------------------------------------
# A slow NumPy port of PAIR's saliency 0.2.1 core/xrai.py (_xrai, _xrai_fast).
# --------------------------------------------------------------------------------------


def _gain(mask, attr):
  return -np.inf if not mask.any() else attr[mask].mean()


def reference_full(attr, segs, area_threshold=1.0, min_pixel_diff=50):
  out = np.full(attr.shape, -np.inf)
  current = np.zeros(attr.shape, bool)
  remaining = dict(enumerate(segs))
  trace = []
  while current.mean() <= area_threshold:
    best_gain, best_key, drop = -np.inf, None, []
    for key, mask in remaining.items():
      if np.sum(mask & ~current) < min_pixel_diff:
        drop.append(key)
        continue
      gain = _gain(mask & ~current, attr)
      if gain > best_gain:
        best_gain, best_key = gain, key
    for key in drop:
      del remaining[key]
    if not remaining:
      break
    diff = remaining.pop(best_key) & ~current
    trace.append((diff, best_gain))
    out[diff] = best_gain
    current |= diff
  return _reference_finish(attr, out, trace)


def reference_fast(attr, segs, min_pixel_diff=50):
  out = np.full(attr.shape, -np.inf)
  current = np.zeros(attr.shape, bool)
  trace = []
  for mask in sorted(segs, key=lambda m: -_gain(m, attr)):  # stable, as PAIR's
    diff = mask & ~current
    if diff.sum() < min_pixel_diff:
      continue
    trace.append((diff, _gain(diff, attr)))
    out[diff] = trace[-1][1]
    current |= mask
  return _reference_finish(attr, out, trace)


def _reference_finish(attr, out, trace):
  uncovered = out == -np.inf
  out[uncovered] = _gain(uncovered, attr)
  masks = [m for m, _ in sorted(trace, key=lambda t: -t[1])]
  if uncovered.any():
    masks.append(uncovered)
  ranks = np.zeros(attr.shape, int)
  for i, mask in enumerate(masks):
    ranks[mask] = i + 1
  return out, ranks


def random_problem(seed, batch=3, side=12, regions=14):
  rng = np.random.default_rng(seed)
  attr = rng.normal(size=(batch, side, side)).astype(np.float32)
  segs = np.zeros((batch, regions, side, side), bool)
  for b in range(batch):
    for r in range(regions - 1):  # the last region of each image stays empty (padding)
      top, left = rng.integers(0, side - 2, size=2)
      h, w = rng.integers(2, side // 2 + 2, size=2)
      segs[b, r, top:top + h, left:left + w] = True
  segs[:, 3] = segs[:, 1]  # an exact duplicate: the tie goes to region 1
  return attr, segs


def xrai_on(attr, segs, **options):
  """XRAI of given attributions and segments, on images of their shape (model unused)."""
  batch, h, w = attr.shape
  return methods.xrai(mlp_for(h, w, 1), np.zeros((batch, h, w, 1), np.float32),
                      np.zeros(batch, np.int32), base_attributions=attr, segments=segs,
                      return_ranks=True, **options)


@functools.cache
def mlp_for(h, w, c):
  """A small MLP for (h, w, c) images (NumPy-drawn weights: no random-init compile)."""
  return numpy_model(lambda: MLP(hidden=(4,), num_classes=3, image_shape=(h, w, c),
                                 rngs=nnx.Rngs(0)))


@pytest.mark.parametrize("area_threshold, min_pixel_diff",
                         [(1.0, 1), (1.0, 5), (0.5, 1), (0.3, 3)])
def test_full_matches_numpy_port_of_pair(area_threshold, min_pixel_diff):
  attr, segs = random_problem(0)
  maps, ranks = xrai_on(attr, segs, area_threshold=area_threshold,
                        min_pixel_diff=min_pixel_diff)
  for b in range(len(attr)):
    want, want_ranks = reference_full(attr[b], list(segs[b]), area_threshold, min_pixel_diff)
    np.testing.assert_allclose(maps[b], want, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(ranks[b], want_ranks)


@pytest.mark.parametrize("min_pixel_diff", [1, 6])
def test_fast_matches_numpy_port_of_pair(min_pixel_diff):
  attr, segs = random_problem(1)
  maps, ranks = xrai_on(attr, segs, algorithm="fast", min_pixel_diff=min_pixel_diff,
                        area_threshold=0.2)  # ignored by the fast algorithm, as in PAIR
  for b in range(len(attr)):
    want, want_ranks = reference_fast(attr[b], list(segs[b]), min_pixel_diff)
    np.testing.assert_allclose(maps[b], want, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(ranks[b], want_ranks)


@pytest.mark.parametrize("algorithm", ["full", "fast"])
def test_map_preserves_the_attribution_sum_and_ranks_order_gains(algorithm):
  attr, segs = random_problem(2)
  maps, ranks = xrai_on(attr, segs, algorithm=algorithm, min_pixel_diff=1,
                        area_threshold=0.6)
  np.testing.assert_allclose(maps.sum(axis=(1, 2)), attr.sum(axis=(1, 2)), rtol=1e-5,
                             atol=1e-4)
  for b in range(len(attr)):
    values = [float(maps[b][ranks[b] == r][0]) for r in range(1, ranks[b].max() + 1)]
    rest = algorithm == "full" or not segs[b].any(axis=0).all()  # uncovered pixels: last
    added = values[:-1] if rest else values
    assert added == sorted(added, reverse=True)  # rank 1 = the highest gain


def test_partition_gives_each_segment_its_mean():
  rng = np.random.default_rng(3)
  attr = rng.normal(size=(2, 8, 8)).astype(np.float32)
  segs = methods.grid_segments(np.zeros((2, 8, 8, 1), np.float32), cells=4)
  maps, ranks = xrai_on(attr, segs, min_pixel_diff=1)
  blocks = attr.reshape(2, 2, 4, 2, 4).mean(axis=(2, 4))
  np.testing.assert_allclose(maps, np.repeat(np.repeat(blocks, 4, 1), 4, 2), rtol=1e-6)
  order = np.argsort(-blocks.reshape(2, 4), axis=1)
  for b in range(2):
    for rank, cell in enumerate(order[b]):
      assert (ranks[b, (cell // 2) * 4, (cell % 2) * 4] == rank + 1)


def test_overlap_by_hand_full_differs_from_fast():
  # Attribution: a row [9, 9, 0, 0, 1, 1]; regions A = {0..3} (mean 4.5),
  # B = {0, 1} (mean 9), C = {2..5} (mean 0.5).
  attr = np.array([[[9, 9, 0, 0, 1, 1]]], np.float32)
  segs = np.zeros((1, 3, 1, 6), bool)
  segs[0, 0, 0, :4] = segs[0, 1, 0, :2] = segs[0, 2, 0, 2:] = True
  # Full: B (gain 9), then C adds {2..5} at 0.5 while A adds {2, 3} at 0: C first.
  maps, ranks = xrai_on(attr, segs, min_pixel_diff=1)
  np.testing.assert_allclose(maps[0, 0], [9, 9, 0.5, 0.5, 0.5, 0.5])
  np.testing.assert_array_equal(ranks[0, 0], [1, 1, 2, 2, 2, 2])
  # Fast: order by the gains on the empty selection, B (9), A (4.5), C (0.5):
  # A adds {2, 3} at 0, then C adds {4, 5} at 1.
  maps, ranks = xrai_on(attr, segs, min_pixel_diff=1, algorithm="fast")
  np.testing.assert_allclose(maps[0, 0], [9, 9, 0, 0, 1, 1])
  np.testing.assert_array_equal(ranks[0, 0], [1, 1, 3, 3, 2, 2])


def test_area_threshold_stops_and_fills_the_rest_with_its_mean():
  attr = np.array([[[4, 3, 2, 1, 0, -1, -2, -3]]], np.float32)
  segs = methods.grid_segments(np.zeros((1, 1, 8, 1), np.float32), cells=1)
  # Pixels are added best first while at most 3/8 is covered: the 4th step makes 4/8.
  maps, ranks = xrai_on(attr, segs, min_pixel_diff=1, area_threshold=3 / 8)
  np.testing.assert_allclose(maps[0, 0], [4, 3, 2, 1, -1.5, -1.5, -1.5, -1.5])
  np.testing.assert_array_equal(ranks[0, 0], [1, 2, 3, 4, 5, 5, 5, 5])


def test_regions_adding_too_few_pixels_are_dropped():
  attr = np.array([[[5, 0, 0, 0]]], np.float32)
  segs = np.zeros((1, 2, 1, 4), bool)
  segs[0, 0, 0, 0] = True  # 1 pixel, gain 5: below min_pixel_diff=2
  segs[0, 1, 0, :] = True  # 4 pixels, gain 1.25
  maps, _ = xrai_on(attr, segs, min_pixel_diff=2)
  np.testing.assert_allclose(maps[0, 0], [1.25] * 4)
  maps, _ = xrai_on(attr, segs, min_pixel_diff=1)
  np.testing.assert_allclose(maps[0, 0], [5, 0, 0, 0])


def test_channels_are_aggregated_by_their_maximum():
  rng = np.random.default_rng(4)
  attr = rng.normal(size=(1, 6, 6, 3)).astype(np.float32)
  segs = methods.grid_segments(np.zeros((1, 6, 6, 3), np.float32), cells=(2, 3))
  model = mlp_for(6, 6, 3)
  x, t = np.zeros((1, 6, 6, 3), np.float32), np.zeros(1, np.int32)
  a = methods.xrai(model, x, t, base_attributions=attr, segments=segs, min_pixel_diff=1)
  b = methods.xrai(model, x, t, base_attributions=attr.max(-1), segments=segs,
                   min_pixel_diff=1)
  np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------
# The base attribution.
# --------------------------------------------------------------------------------------


def test_base_attribution_is_black_white_ig_averaged_exact_on_a_linear_model():
  model, weights = linear_model()
  x, t = toy_batch(3)
  base = methods.xrai_base_attributions(model, x, t, steps=4)
  w = weights[t].reshape(-1, *SHAPE)
  low = x.min(axis=(1, 2, 3), keepdims=True)
  high = x.max(axis=(1, 2, 3), keepdims=True)
  # IG is exact on a linear model: ((x - low) w + (x - high) w) / 2, the target row of W.
  np.testing.assert_allclose(base, (x - (low + high) / 2) * w, rtol=1e-5, atol=1e-6)


def test_default_base_is_the_base_attributions_function_and_class_sensitive():
  model = toy_mlp()
  x, t = toy_batch(3)
  segs = methods.grid_segments(x, cells=2)
  base = methods.xrai_base_attributions(model, x, t, steps=8)
  default = methods.xrai(model, x, t, segments=segs, steps=8)
  given = methods.xrai(model, x, t, segments=segs, base_attributions=base)
  np.testing.assert_allclose(default, given, rtol=1e-6)
  other = methods.xrai(model, x, (t + 1) % 3, segments=segs, steps=8)
  assert not np.allclose(default, other)


# --------------------------------------------------------------------------------------
# Segmentation.
# --------------------------------------------------------------------------------------


def bar_image():
  x = np.zeros((2, 28, 28, 1), np.float32)
  x[0, 6:22, 10:18] = 1.0
  x[1, 4:10, 4:24] = 1.0
  x[1, 16:24, 8:12] = 0.5
  return x


def test_segments_partition_each_scale_before_dilation():
  x = bar_image()
  masks = methods.xrai_segments(x, dilation_radius=0)
  scales = len(methods.FELZENSZWALB_SCALES)
  assert masks.dtype == bool and masks.shape[0] == 2
  # Every pixel lies in exactly one segment of each scale (padding masks are empty).
  np.testing.assert_array_equal(masks.sum(axis=1), np.full((2, 28, 28), scales))


def test_dilation_grows_each_mask_by_a_disk():
  from skimage.morphology import dilation, disk
  x = bar_image()[:1]
  plain = methods.xrai_segments(x, dilation_radius=0, resize=None)
  grown = methods.xrai_segments(x, dilation_radius=2, resize=None)
  assert plain.shape == grown.shape
  for m, g in zip(plain[0], grown[0], strict=True):
    np.testing.assert_array_equal(g, dilation(m, footprint=disk(2)))
  # The default: PAIR's 5 pixels of a 224-pixel image, scaled to 28 pixels: radius 1.
  np.testing.assert_array_equal(methods.xrai_segments(x, resize=None),
                                methods.xrai_segments(x, resize=None, dilation_radius=1))


def test_native_resolution_scales_the_parameters_to_the_area():
  from skimage.segmentation import felzenszwalb
  x = bar_image()[:1]
  masks = methods.xrai_segments(x, scales=(224.0,), sigma=0.8, min_size=150, resize=None,
                                dilation_radius=0)
  ratio = 28 * 28 / 224**2
  image = x[0] * 2 - 1
  labels = felzenszwalb(image, scale=224 * ratio, sigma=0.8 * np.sqrt(ratio),
                        min_size=round(150 * ratio))
  want = np.stack([labels == k for k in range(labels.max() + 1)])
  np.testing.assert_array_equal(masks[0][:len(want)], want)
  assert not masks[0][len(want):].any()


def test_grid_segments():
  masks = methods.grid_segments(np.zeros((1, 10, 10, 1), np.float32), cells=(4, 10))
  assert masks.shape == (1, 9 + 1, 10, 10)  # 3 × 3 cells (edge cells cut) + the whole image
  np.testing.assert_array_equal(masks[0, :9].sum(axis=0), np.ones((10, 10)))
  assert masks[0, 0].sum() == 16 and masks[0, 8].sum() == 4 and masks[0, 9].all()


def test_end_to_end_on_default_segments():
  model = toy_mlp()
  x, t = toy_batch(2)
  maps, ranks = methods.xrai(model, x, t, steps=4, return_ranks=True)
  assert maps.shape == ranks.shape == (2, *SHAPE[:2])
  assert maps.dtype == jnp.float32 and int(ranks.min()) == 1
  base = methods.xrai_base_attributions(model, x, t, steps=4)[..., 0]
  np.testing.assert_allclose(maps.sum(axis=(1, 2)), base.sum(axis=(1, 2)), rtol=1e-4,
                             atol=1e-5)
