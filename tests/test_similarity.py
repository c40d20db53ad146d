"""Tests of the HOG similarity (saliency_guide.metrics, Dalal & Triggs 2005; Adebayo et al. 2018).

What is pinned down:

* hog_features equals skimage.feature.hog(|s| / max|s|, block_norm="L2") for the
  default layout and another one (skipped where scikit-image is not installed);
* on hand-computable maps: a vertical edge puts all its mass in the 0° bin (a
  horizontal gradient), the same edge rotated by 90° in the 90° bin, a diagonal
  edge in the 135° bin; every block is L2-normalised; contrast and sign do not
  change the descriptor;
* hog_similarity: 1 for identical maps (and for a scaled or sign-flipped copy),
  low for unrelated noise and for an edge against its rotation, NaN for a
  constant map (no edges: as rank_correlation, which has no ranking there);
* similarity() carries it as its fifth field;
* bad input raises errors naming the argument.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from saliency_guide import metrics


def smooth_maps(batch, shape=(28, 28), seed=0):
  """Signed maps with structure at several scales (noise blurred), as saliency maps have."""
  rng = np.random.default_rng(seed)
  noise = rng.normal(size=(batch, *shape))
  return np.stack([scipy.ndimage.gaussian_filter(n, 1.5) for n in noise]).astype(np.float32)


def vertical_edge(size=28):
  return jnp.zeros((1, size, size)).at[:, :, size // 2:].set(1.0)


def bin_mass(features, orientations=9):
  """Total descriptor mass in each orientation bin."""
  return np.asarray(features).reshape(-1, orientations).sum(axis=0)


# ---------------------------------------------------------------------------------------
# The descriptor.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "layout"),
    [
        ((28, 28), {}),
        ((30, 33), {}),  # cells do not tile the map: the remainder is left out, as in skimage
        ((28, 28), {"cell_size": 4, "orientations": 6, "block_size": 3}),
    ],
)
def test_hog_features_equal_skimage(shape, layout):
  skimage_feature = pytest.importorskip("skimage.feature")
  maps = smooth_maps(3, shape)
  ours = np.asarray(metrics.hog_features(jnp.asarray(maps), **layout))
  cell = layout.get("cell_size", 7)
  block = layout.get("block_size", 2)
  for i, s in enumerate(maps):
    a = np.abs(s).astype(np.float64)
    expected = skimage_feature.hog(
        a / a.max(), orientations=layout.get("orientations", 9), pixels_per_cell=(cell, cell),
        cells_per_block=(block, block), block_norm="L2", feature_vector=True,
    )
    assert ours[i].shape == expected.shape
    np.testing.assert_allclose(ours[i], expected, atol=1e-6)


def test_edges_vote_in_the_bin_of_their_gradient():
  # A vertical edge: the gradient is horizontal (theta = 0), bin [0, 20).
  vertical = metrics.hog_features(vertical_edge())
  assert vertical.shape == (1, 3 * 3 * 2 * 2 * 9)
  mass = bin_mass(vertical)
  assert mass[0] > 0 and np.all(mass[1:] == 0)
  # Rotated by 90 degrees: the gradient is vertical (theta = 90), bin [80, 100).
  horizontal = metrics.hog_features(jnp.rot90(vertical_edge(), axes=(1, 2)))
  mass = bin_mass(horizontal)
  assert mass[4] > 0 and np.all(np.delete(mass, 4) == 0)
  # The staircase edge below the diagonal (1 where column > row): g_row = -1, g_col = +1 at
  # the edge, theta = atan2(-1, 1) mod 180 = 135 degrees, bin [120, 140); except at the two
  # corners, where the border zeroes one of the two differences (0 and 90 degrees).
  r, c = np.indices((28, 28))
  diagonal = jnp.asarray((c > r)[None], jnp.float32)
  mass = bin_mass(metrics.hog_features(diagonal))
  assert mass[6] > 0.99 * mass.sum()
  assert np.all(np.delete(mass, [0, 4, 6]) == 0)


def test_hand_computed_blocks_of_a_vertical_edge():
  # Step between columns 13 and 14: centred differences give g_col = 1 in columns 13 and 14
  # (every row: only the border *columns* have no horizontal gradient), g_row = 0.
  f = np.asarray(metrics.hog_features(vertical_edge())).reshape(3, 3, 2, 2, 9)
  assert np.all(f[..., 1:] == 0)
  # Cell columns are pixels 0-6, 7-13, 14-20, 21-27: cell columns 1 and 2 each hold 7 rows x
  # 1 column of magnitude 1 (7/49 = 1/7 in bin 0), cell columns 0 and 3 nothing.
  # Block column 1 (cells 1, 2): four equal cells, L2-normalised to 1/2 each.
  np.testing.assert_allclose(f[:, 1, :, :, 0], 0.5, atol=1e-6)
  # Block column 0 (cells 0, 1): two empty cells, two equal ones at 1/sqrt(2).
  np.testing.assert_allclose(f[:, 0, :, :, 0], [[[0, 2**-0.5]] * 2] * 3, atol=1e-6)
  np.testing.assert_allclose(f[:, 2, :, :, 0], [[[2**-0.5, 0]] * 2] * 3, atol=1e-6)
  # A block with no gradient stays zero (no division by zero): a step at column 24 only
  # reaches cell column 3, so block columns 0 and 1 are empty.
  late = jnp.zeros((1, 28, 28)).at[:, :, 24:].set(1.0)
  g = np.asarray(metrics.hog_features(late)).reshape(3, 3, 2, 2, 9)
  np.testing.assert_array_equal(g[:, :2], 0.0)
  assert np.all(g[:, 2, :, 1, 0] > 0)


def test_blocks_are_l2_normalised_and_contrast_free():
  maps = jnp.asarray(smooth_maps(2))
  f = np.asarray(metrics.hog_features(maps)).reshape(2, 9, -1)
  np.testing.assert_allclose(np.linalg.norm(f, axis=-1), 1.0, atol=1e-4)
  for factor in (1e-3, 7.0, -2.0):  # contrast and sign
    np.testing.assert_allclose(metrics.hog_features(factor * maps), f.reshape(2, -1), atol=1e-5)
  # Per-feature maps are summed over channels first.
  np.testing.assert_array_equal(metrics.hog_features(maps[..., None]), metrics.hog_features(maps))


def test_constant_map_has_a_zero_descriptor():
  for value in (0.0, 3.0):
    np.testing.assert_array_equal(metrics.hog_features(jnp.full((1, 28, 28), value)), 0.0)


# ---------------------------------------------------------------------------------------
# The similarity.
# ---------------------------------------------------------------------------------------


def test_hog_similarity_values():
  a = jnp.asarray(smooth_maps(4, seed=0))
  np.testing.assert_allclose(metrics.hog_similarity(a, a), 1.0, atol=1e-5)
  np.testing.assert_allclose(metrics.hog_similarity(a, -5 * a), 1.0, atol=1e-5)
  noise = jnp.asarray(smooth_maps(4, seed=1))
  assert float(jnp.abs(metrics.hog_similarity(a, noise)).max()) < 0.5
  white = jax.random.normal(jax.random.key(0), (4, 28, 28))
  assert float(jnp.abs(metrics.hog_similarity(white, white[::-1])).max()) < 0.5
  # An edge against the same edge turned by 90 degrees: no shared orientation.
  edge = vertical_edge()
  assert float(metrics.hog_similarity(edge, jnp.rot90(edge, axes=(1, 2)))[0]) < 0.1


def test_hog_similarity_is_nan_for_a_constant_map():
  a = jnp.asarray(smooth_maps(1))
  zero = jnp.zeros((1, 28, 28))
  assert np.isnan(float(metrics.hog_similarity(a, zero)[0]))
  assert np.isnan(float(metrics.hog_similarity(zero, zero)[0]))
  # The same convention as the rank correlation; SSIM stays finite.
  sim = metrics.similarity(a, zero)
  assert np.isnan(float(sim.hog[0])) and np.isnan(float(sim.rank_correlation[0]))
  assert np.isfinite(float(sim.ssim[0]))


def test_similarity_has_the_hog_field():
  assert metrics.Similarity._fields == (
      "rank_correlation", "abs_rank_correlation", "ssim", "abs_ssim", "hog")
  a = jnp.asarray(smooth_maps(3, seed=0))
  b = jnp.asarray(smooth_maps(3, seed=2))
  np.testing.assert_array_equal(metrics.similarity(a, b).hog, metrics.hog_similarity(a, b))


def test_hog_layout_options():
  a = jnp.asarray(smooth_maps(2))
  f = metrics.hog_features(a, cell_size=4, orientations=6, block_size=3)
  assert f.shape == (2, 5 * 5 * 3 * 3 * 6)
  assert metrics.hog_similarity(a, a, cell_size=4, orientations=6, block_size=3).shape == (2,)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: metrics.hog_features(jnp.ones((1, 13, 13))), ValueError, "at least 14x14"),
        (lambda: metrics.hog_similarity(jnp.ones((1, 13, 28)), jnp.ones((1, 13, 28))),
         ValueError, "at least 14x14"),
        (lambda: metrics.hog_features(jnp.ones((1, 28, 28)), cell_size=0), ValueError,
         "cell_size: expected an integer >= 1"),
        (lambda: metrics.hog_features(jnp.ones((1, 28, 28)), orientations="9"), TypeError,
         "orientations"),
        (lambda: metrics.hog_features(jnp.ones((1, 28, 28)), block_size=1.5), TypeError,
         "block_size"),
        (lambda: metrics.hog_features(jnp.full((1, 28, 28), jnp.nan)), ValueError, "finite"),
        (lambda: metrics.hog_features([[0.0]]), TypeError, "maps: expected an array"),
        (lambda: metrics.hog_features(jnp.ones((28, 28))), ValueError, "maps: expected rank"),
        (lambda: metrics.hog_similarity(jnp.ones((2, 28, 28)), jnp.ones((3, 28, 28))),
         ValueError, "same batch"),
    ],
)
def test_hog_bad_input(call, error, match):
  with pytest.raises(error, match=match):
    call()
