"""Tests of saliency_guide.metrics: deletion/insertion, similarity, completeness.

What is pinned down:

* deletion: on a model that reads a single pixel, the oracle map (that pixel
  first) has the hand-computed area (p0 + q) / 2S + q (S - 1) / S and beats a
  random ranking on every image; the first and last points of a curve are the
  model on the image and on the substrate; insertion with a ranking equals
  deletion with the reversed ranking read backwards (step for step, and the
  areas); the result does not depend on the chunk size; (B, H, W, C) and
  (B, H, W) maps give the same curves; ties are broken at random, not by
  index; the jitted core compiles once per shape;
* orders and scores: least-relevant-first (LeRF) curves are the
  most-relevant-first curves of the negated map, exactly (ties included), and
  LeRF deletion is MoRF insertion read backwards; perturbation_curves gives
  the logit and probability curves of deletion and insertion in one pass;
* compare_to_random: the oracle "beats random" and the reversed oracle is
  "worse than random" in every curve and order, a random ranking against
  another is "not distinguishable" (and the rule's false-alarm rate on pure
  noise is about 5 % for z = 2), pairs with a NaN are dropped;
* similarity: a map against itself scores 1 on all four measures; Spearman
  equals scipy's, ties included, and is 1 for any increasing function of a
  map; sign flips are forgiven by the absolute versions only; SSIM is
  scale-free and low for unrelated maps;
* completeness: 0 for gradient x input on a linear model and for exact IG
  there; equal to integrated_gradients' own delta; shrinking with steps;
* bad input raises errors naming the argument.

The randomisation tests are in test_randomization.py, ROAR in test_roar.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from model_factories import compilations
from saliency_guide import metrics
from saliency_guide.methods import integrated_gradients, logit_gradient
from saliency_guide.models import CNN, MLP

ROW, COL = 5, 7


class OnePixel(nnx.Module):
  """Two logits that read only pixel (ROW, COL): p_0 = sigmoid(scale (2 x - 1))."""

  def __init__(self, scale: float = 20.0):
    self.image_shape = (28, 28, 1)
    self.head = nnx.Linear(1, 2, rngs=nnx.Rngs(0))
    self.head.kernel[...] = jnp.array([[scale, -scale]])
    self.head.bias[...] = jnp.array([-scale / 2, scale / 2])

  def __call__(self, x):
    return self.head(x[:, ROW, COL, :])


class LinearModel(nnx.Module):
  def __init__(self, seed: int = 0):
    self.image_shape = (28, 28, 1)
    self.head = nnx.Linear(784, 10, rngs=nnx.Rngs(seed))

  def __call__(self, x):
    return self.head(x.reshape(len(x), -1))


def one_pixel_data(batch=16, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.random((batch, 28, 28, 1), np.float32)
  x[:, ROW, COL, 0] = 1.0
  oracle = np.zeros((batch, 28, 28), np.float32)
  oracle[:, ROW, COL] = 1.0
  return jnp.asarray(x), jnp.zeros(batch, jnp.int32), jnp.asarray(oracle)


def small_cnn(seed=0):
  return CNN(channels=(4, 6), hidden=12, rngs=nnx.Rngs(seed))


def images(batch=4, seed=0):
  return jax.random.uniform(jax.random.key(seed), (batch, 28, 28, 1))


# ---------------------------------------------------------------------------------------
# Deletion and insertion.
# ---------------------------------------------------------------------------------------


def test_deletion_oracle_on_one_pixel_model_has_hand_computed_auc_and_beats_random():
  model = OnePixel()
  x, t, oracle = one_pixel_data()
  steps = 28
  curves = metrics.deletion(model, x, t, oracle, substrate="zeros", steps=steps)
  p0 = jax.nn.sigmoid(20.0)  # pixel = 1
  q = jax.nn.sigmoid(-20.0)  # pixel = 0 (deleted)
  np.testing.assert_allclose(curves.scores[:, 0], p0, rtol=1e-6)
  np.testing.assert_allclose(curves.scores[:, 1:], q, atol=1e-7)
  expected = (p0 + q) / (2 * steps) + q * (steps - 1) / steps
  np.testing.assert_allclose(curves.auc, expected, rtol=1e-5)
  random = metrics.deletion(
      model, x, t, metrics.random_attributions(jax.random.key(1), x), substrate="zeros",
      steps=steps,
  )
  # Optimal: never worse than random (equal when random deletes the pixel first, p = 1/28).
  assert bool((curves.auc <= random.auc + 1e-7).all())
  assert float(curves.auc.mean()) < float(random.auc.mean())
  # The random ranking removes the pixel at a uniformly random step: AUC ~ 1/2 on average.
  assert 0.3 < float(random.auc.mean()) < 0.7


def test_insertion_oracle_is_the_mirror_image():
  model = OnePixel()
  x, t, oracle = one_pixel_data()
  steps = 28
  ins = metrics.insertion(model, x, t, oracle, substrate="zeros", steps=steps)
  dele = metrics.deletion(model, x, t, oracle, substrate="zeros", steps=steps)
  p0, q = jax.nn.sigmoid(20.0), jax.nn.sigmoid(-20.0)
  np.testing.assert_allclose(ins.auc, (p0 + q) / (2 * steps) + p0 * (steps - 1) / steps,
                             rtol=1e-5)
  np.testing.assert_allclose(ins.auc + dele.auc, p0 + q, rtol=1e-5)
  random = metrics.insertion(model, x, t, metrics.random_attributions(jax.random.key(1), x),
                             substrate="zeros", steps=steps)
  assert bool((ins.auc >= random.auc - 1e-7).all())
  assert float(ins.auc.mean()) > float(random.auc.mean())


@pytest.mark.parametrize("substrate", ["zeros", "blur", "mean"])
def test_insertion_equals_deletion_of_the_reversed_ranking(substrate):
  model = small_cnn()
  x, t = images(4), jnp.array([1, 4, 9, 0])
  maps = jax.random.normal(jax.random.key(2), (4, 28, 28))  # no ties
  steps = 14  # 784 / 14: every step removes exactly 56 pixels
  ins = metrics.insertion(model, x, t, maps, substrate=substrate, steps=steps)
  rev = metrics.deletion(model, x, t, -maps, substrate=substrate, steps=steps)
  np.testing.assert_allclose(ins.scores, rev.scores[:, ::-1], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ins.auc, rev.auc, rtol=1e-5)


def test_curve_end_points_are_the_image_and_the_substrate():
  model = small_cnn()
  x, t = images(4), jnp.array([3, 5, 0, 1])
  maps = jax.random.normal(jax.random.key(0), (4, 28, 28, 1))
  curves = metrics.deletion(model, x, t, maps, substrate="blur", steps=14, score="logit")
  logits = lambda z: model(z)[jnp.arange(4), t]  # noqa: E731
  np.testing.assert_allclose(curves.scores[:, 0], logits(x), rtol=1e-5)
  blurred = metrics.make_substrate(x, "blur")
  np.testing.assert_allclose(curves.scores[:, -1], logits(blurred), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(curves.fractions, np.arange(15) / 14, rtol=1e-6)
  probs = metrics.deletion(model, x, t, maps, substrate="blur", steps=14)
  np.testing.assert_allclose(probs.scores[:, 0], jax.nn.softmax(model(x))[jnp.arange(4), t],
                             rtol=1e-5)


def test_chunking_does_not_change_the_curves_and_compiles_once():
  model = small_cnn()
  x, t = images(4), jnp.array([0, 1, 2, 3])
  maps = jax.random.normal(jax.random.key(0), (4, 28, 28))
  whole = metrics.deletion(model, x, t, maps, steps=14, internal_batch_size=4096)
  chunked = metrics.deletion(model, x, t, maps, steps=14, internal_batch_size=4)
  np.testing.assert_allclose(whole.scores, chunked.scores, rtol=1e-5, atol=1e-6)
  other_images, other_model, other_maps = images(4, seed=5), small_cnn(seed=3), maps + 1.0
  with compilations() as compiles:
    metrics.deletion(model, other_images, t, other_maps, steps=14, internal_batch_size=4)
    metrics.deletion(other_model, other_images, t, maps, steps=14, internal_batch_size=4)
  assert compiles == []


def test_per_feature_and_per_pixel_maps_give_the_same_curves():
  model = small_cnn()
  x, t = images(4), jnp.array([3, 5, 0, 1])
  maps = jax.random.normal(jax.random.key(0), (4, 28, 28, 1))
  a = metrics.deletion(model, x, t, maps, steps=14)
  b = metrics.deletion(model, x, t, maps[..., 0], steps=14)
  np.testing.assert_array_equal(a.scores, b.scores)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([(1, 3, 3), (3, 28, 28)]), st.integers(0, 2**31 - 1),
       st.sampled_from([0.5, 2.0, 100.0]))
def test_rank_pixels_is_a_permutation_ordered_by_score(shape, seed, spread):
  batch = shape[0]
  scores = jax.random.normal(jax.random.key(seed), shape)
  scores = jnp.round(spread * scores)  # ties: many (spread 0.5) to few (spread 100)
  ranks = np.asarray(metrics.rank_pixels(scores, jax.random.key(seed + 1)))
  flat_r = ranks.reshape(batch, -1)
  flat_s = np.asarray(scores).reshape(batch, -1)
  for b in range(batch):
    assert sorted(flat_r[b]) == list(range(flat_s.shape[1]))
    order = np.argsort(flat_r[b])
    assert np.all(np.diff(flat_s[b][order]) <= 0)  # decreasing score along the ranks


def test_ties_are_broken_at_random_not_by_index():
  ranks = np.asarray(metrics.rank_pixels(jnp.zeros((2, 28, 28)), jax.random.key(0)))
  assert not np.array_equal(ranks[0].ravel(), np.arange(784))
  assert not np.array_equal(ranks[0], ranks[1])  # independent per image
  # Top 10 % of a constant map: spread over the image, not the first rows.
  rows = np.nonzero(ranks[0] < 78)[0]
  assert rows.max() > 14


def test_absolute_ranking():
  s = jnp.array([[[-5.0, 1.0], [2.0, 0.0]]])
  assert metrics.rank_pixels(s, jax.random.key(0), absolute=True).tolist() == [[[0, 2], [1, 3]]]
  assert metrics.rank_pixels(s, jax.random.key(0)).tolist() == [[[3, 1], [0, 2]]]


def test_substrates():
  x = images(2)
  np.testing.assert_array_equal(metrics.make_substrate(x, "zeros"), 0.0)
  np.testing.assert_allclose(metrics.make_substrate(x, "mean"), x.mean(), rtol=1e-6)
  np.testing.assert_allclose(metrics.make_substrate(x, 0.25), 0.25)
  np.testing.assert_allclose(metrics.make_substrate(x, jnp.full((28, 28, 1), 0.5)), 0.5)
  point = jnp.zeros((1, 28, 28, 1)).at[0, 14, 14, 0].set(1.0)
  blurred = metrics.make_substrate(point, "blur", blur_sigma=2.0)
  assert abs(float(blurred.sum()) - 1.0) < 1e-3
  assert float(blurred[0, 14, 14, 0]) == pytest.approx(1 / (2 * np.pi * 4), rel=0.05)


def test_auc_of_a_constant_curve_is_the_constant():
  fractions = jnp.linspace(0, 1, 11)
  np.testing.assert_allclose(metrics.auc(fractions, jnp.full((3, 11), 0.7)), 0.7, rtol=1e-6)


@pytest.mark.parametrize("curve", ["deletion", "insertion"])
@pytest.mark.parametrize("absolute", [False, True])
def test_lerf_is_morf_of_the_negated_map(curve, absolute):
  model = small_cnn()
  x, t = images(4), jnp.array([1, 4, 9, 0])
  # Rounded: many ties, so that the tie-breaking must match as well.
  maps = jnp.round(2 * jax.random.normal(jax.random.key(2), (4, 28, 28)))
  fn = getattr(metrics, curve)
  lerf = fn(model, x, t, maps, steps=14, order="lerf", absolute=absolute)
  negated = -jnp.abs(maps) if absolute else -maps
  morf = fn(model, x, t, negated, steps=14)
  np.testing.assert_array_equal(lerf.scores, morf.scores)
  # The default order is MoRF, and LeRF differs from it.
  default = fn(model, x, t, maps, steps=14, absolute=absolute)
  np.testing.assert_array_equal(default.scores,
                                fn(model, x, t, maps, steps=14, absolute=absolute,
                                   order="morf").scores)
  assert not np.allclose(default.scores, lerf.scores)


def test_lerf_deletion_is_morf_insertion_read_backwards():
  model = small_cnn()
  x, t = images(4), jnp.array([1, 4, 9, 0])
  maps = jax.random.normal(jax.random.key(2), (4, 28, 28))  # no ties
  lerf = metrics.deletion(model, x, t, maps, steps=14, order="lerf")
  ins = metrics.insertion(model, x, t, maps, steps=14)
  np.testing.assert_allclose(lerf.scores, ins.scores[:, ::-1], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(lerf.auc, ins.auc, rtol=1e-5)


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_perturbation_curves_give_every_score_of_deletion_and_insertion_in_one_pass(order):
  model = small_cnn()
  x, t = images(4), jnp.array([1, 4, 9, 0])
  maps = jax.random.normal(jax.random.key(2), (4, 28, 28))
  for curve, fn in (("deletion", metrics.deletion), ("insertion", metrics.insertion)):
    both = metrics.perturbation_curves(model, x, t, maps, curve=curve, order=order, steps=14)
    assert set(both) == {"probability", "logit"}
    for score, curves in both.items():
      alone = fn(model, x, t, maps, steps=14, score=score, order=order)
      np.testing.assert_allclose(curves.scores, alone.scores, rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(curves.auc, alone.auc, rtol=1e-5, atol=1e-6)
  one = metrics.perturbation_curves(model, x, t, maps, scores=("logit",), steps=14)
  assert set(one) == {"logit"}
  with pytest.raises(ValueError, match="curve: expected one of"):
    metrics.perturbation_curves(model, x, t, maps, curve="roar")
  with pytest.raises(ValueError, match="score: expected one of"):
    metrics.perturbation_curves(model, x, t, maps, scores=("softmax",))
  with pytest.raises(TypeError, match="scores: expected a non-empty tuple"):
    metrics.perturbation_curves(model, x, t, maps, scores=())


def test_lerf_of_the_oracle_equals_morf_of_the_reversed_oracle():
  model = OnePixel()
  x, t, oracle = one_pixel_data()
  for fn in (metrics.deletion, metrics.insertion):
    lerf = fn(model, x, t, oracle, substrate="zeros", order="lerf")
    reversed_oracle = fn(model, x, t, -oracle, substrate="zeros")
    np.testing.assert_array_equal(lerf.scores, reversed_oracle.scores)
  # LeRF deletion of the oracle removes the pixel last: the score stays at p0 until then.
  lerf = metrics.deletion(model, x, t, oracle, substrate="zeros", order="lerf")
  np.testing.assert_allclose(lerf.scores[:, :-1], jax.nn.sigmoid(20.0), rtol=1e-6)


def test_higher_is_better():
  assert metrics.higher_is_better("deletion") is False
  assert metrics.higher_is_better("insertion") is True
  assert metrics.higher_is_better("deletion", "lerf") is True
  assert metrics.higher_is_better("insertion", "lerf") is False
  with pytest.raises(ValueError, match="curve: expected one of 'deletion', 'insertion'"):
    metrics.higher_is_better("roar")
  with pytest.raises(ValueError, match="order: expected one of"):
    metrics.higher_is_better("deletion", "MoRF")


@pytest.mark.parametrize("curve", ["deletion", "insertion"])
@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_oracle_beats_random_and_reversed_oracle_is_worse(curve, order):
  model = OnePixel()
  x, t, oracle = one_pixel_data(batch=32)
  fn = getattr(metrics, curve)
  random = fn(model, x, t, metrics.random_attributions(jax.random.key(1), x), substrate="zeros",
              order=order)
  better = metrics.higher_is_better(curve, order)
  best = metrics.compare_to_random(
      fn(model, x, t, oracle, substrate="zeros", order=order).auc, random.auc,
      higher_is_better=better)
  worst = metrics.compare_to_random(
      fn(model, x, t, -oracle, substrate="zeros", order=order).auc, random.auc,
      higher_is_better=better)
  assert best.verdict == "beats random", best
  assert worst.verdict == "worse than random", worst
  assert best.advantage > 0 > worst.advantage
  assert best.n == 32 and best.z == 2.0
  # The paired s.e. is the s.e. of the per-digit differences.
  d = np.asarray(fn(model, x, t, oracle, substrate="zeros", order=order).auc) - np.asarray(
      random.auc)
  assert best.difference == pytest.approx(d.mean(), rel=1e-6)
  assert best.difference_sem == pytest.approx(scipy.stats.sem(d), rel=1e-6)


def test_random_against_random_is_not_distinguishable():
  model = OnePixel()
  x, t, _ = one_pixel_data(batch=48)
  verdicts = []
  for seed in range(10):
    a, b = (metrics.deletion(model, x, t, metrics.random_attributions(jax.random.key(k), x),
                             substrate="zeros").auc for k in (2 * seed, 2 * seed + 1))
    verdicts.append(metrics.compare_to_random(a, b, higher_is_better=False).verdict)
  # Each is wrong with probability ~5 %: at most 2 of 10 (P(>2) < 1 %).
  assert verdicts.count("not distinguishable from random") >= 8, verdicts


def test_compare_to_random_false_alarm_rate_and_power():
  rng = np.random.default_rng(0)
  random = rng.normal(size=(400, 50))
  same = random + rng.normal(size=(400, 50))  # no true difference
  alarms = [metrics.compare_to_random(a, r, higher_is_better=True).verdict
            != "not distinguishable from random" for a, r in zip(same, random, strict=True)]
  assert 0.02 < np.mean(alarms) < 0.09  # z = 2: about 5 % (t with 49 d.o.f.: 5.1 %)
  shifted = same + 0.8  # 0.8 s.d. of the difference, n = 50: power ~ 1
  verdicts = {metrics.compare_to_random(a, r, higher_is_better=True).verdict
              for a, r in zip(shifted, random, strict=True)}
  assert verdicts == {"beats random"}
  worse = {metrics.compare_to_random(a, r, higher_is_better=False).verdict
           for a, r in zip(shifted, random, strict=True)}
  assert worse == {"worse than random"}
  # A larger z is more conservative.
  loose = metrics.compare_to_random(same[0] + 0.3, random[0], higher_is_better=True, z=1.0)
  strict = metrics.compare_to_random(same[0] + 0.3, random[0], higher_is_better=True, z=10.0)
  assert strict.verdict == "not distinguishable from random"
  assert loose.difference == strict.difference


def test_compare_to_random_report_and_nan_pairs():
  result = metrics.compare_to_random([0.1, np.nan, 0.2, 0.3], [0.5, 0.5, np.nan, 0.6],
                                     higher_is_better=False)
  assert result.n == 2  # pairs with a NaN on either side are left out
  assert result.difference == pytest.approx(-0.35)  # (0.1 - 0.5 + 0.3 - 0.6) / 2
  assert result.verdict in metrics.COMPARISON_VERDICTS
  assert "beats random" in str(result) and "n = 2" in str(result)
  assert "2 standard errors" in result.rule
  assert metrics.comparison_rule(3.0) == metrics.compare_to_random(
      [1.0, 2.0], [0.0, 0.5], higher_is_better=True, z=3.0).rule


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (([0.1, 0.2], [0.1, 0.2, 0.3]), {}, ValueError, "expected the same pairs"),
        (([[0.1, 0.2]], [[0.1, 0.2]]), {}, ValueError, "method_values: expected a 1-D array"),
        (([0.1, 0.2], "random"), {}, TypeError, "random_values: expected a 1-D array"),
        (([0.1], [0.2]), {}, ValueError, "at least 2 pairs without NaN"),
        (([0.1, np.nan], [0.2, 0.3]), {}, ValueError, "at least 2 pairs without NaN"),
        (([0.1, np.inf], [0.2, 0.3]), {}, ValueError, "method_values: expected finite"),
        (([0.1, 0.2], [0.2, 0.3]), {"z": 0.0}, ValueError, "z: expected a finite number > 0"),
        (([0.1, 0.2], [0.2, 0.3]), {"z": "2"}, TypeError, "z: expected a number"),
    ],
)
def test_compare_to_random_bad_input(args, kwargs, error, match):
  with pytest.raises(error, match=match):
    metrics.compare_to_random(*args, **{"higher_is_better": True, **kwargs})
  with pytest.raises(TypeError, match="higher_is_better: expected True or False"):
    metrics.compare_to_random([0.1, 0.2], [0.2, 0.3], higher_is_better="lower")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"attributions": jnp.zeros((2, 28, 27))}, ValueError, "attributions: expected shape"),
        ({"attributions": jnp.full((2, 28, 28), jnp.nan)}, ValueError,
         "attributions: expected finite"),
        ({"attributions": jnp.zeros((2, 28, 28), jnp.int32)}, TypeError,
         "attributions: expected a floating"),
        ({"attributions": [[0.0]]}, TypeError, "attributions: expected a float array"),
        ({"substrate": "noise"}, ValueError, "substrate: expected one of"),
        ({"substrate": jnp.zeros((3, 28, 28, 1))}, ValueError,
         "substrate: expected a scalar or an array of shape"),
        ({"substrate": None}, TypeError, "substrate"),
        ({"steps": 0}, ValueError, "steps: expected an integer >= 1"),
        ({"steps": 785}, ValueError, "steps: expected at most"),
        ({"steps": 2.5}, TypeError, "steps"),
        ({"score": "softmax"}, ValueError, "score: expected one of"),
        ({"order": "random"}, ValueError, "order: expected one of 'morf', 'lerf'"),
        ({"key": 0}, TypeError, "key: expected a single PRNG key"),
        ({"blur_sigma": -1.0}, ValueError, "blur_sigma"),
        ({"absolute": 1}, TypeError, "absolute"),
        ({"internal_batch_size": 0}, ValueError, "internal_batch_size"),
        ({"targets": jnp.array([0, 10])}, ValueError, "targets"),
        ({"images": jnp.zeros((2, 1, 28, 28))}, ValueError, "NCHW"),
    ],
)
def test_deletion_bad_input(kwargs, error, match):
  args = {"images": jnp.zeros((2, 28, 28, 1)), "targets": jnp.array([0, 1]),
          "attributions": jnp.zeros((2, 28, 28))}
  options = {k: v for k, v in kwargs.items() if k not in args}
  args.update({k: v for k, v in kwargs.items() if k in args})
  for fn in (metrics.deletion, metrics.insertion):
    with pytest.raises(error, match=match):
      fn(small_cnn(), args["images"], args["targets"], args["attributions"], **options)


# ---------------------------------------------------------------------------------------
# Similarity.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 28, 28), (3, 28, 28, 1), (2, 16, 16, 3)])
def test_a_map_is_identical_to_itself(shape):
  a = jax.random.normal(jax.random.key(0), shape)
  for value in metrics.similarity(a, a):
    np.testing.assert_allclose(value, 1.0, atol=1e-5)


# Few distinct values, so that ties (the hard case for ranks) are frequent.
tied = hnp.arrays(np.float32, (2, 3, 4),
                  elements=st.sampled_from([-2.0, -0.5, 0.0, 0.0, 1.0, 3.0]))


@settings(max_examples=50, deadline=None)
@given(tied, tied)
def test_rank_correlation_equals_scipy_with_ties(a, b):
  rho = np.asarray(metrics.rank_correlation(a, b))
  for i in range(2):
    if np.ptp(a[i]) == 0 or np.ptp(b[i]) == 0:
      assert np.isnan(rho[i])  # a constant map has no ranking, as in scipy
    else:
      expected = scipy.stats.spearmanr(a[i].ravel(), b[i].ravel()).statistic
      np.testing.assert_allclose(rho[i], expected, atol=1e-5)


def test_rank_correlation_properties():
  a = jax.random.normal(jax.random.key(0), (3, 28, 28))
  b = a + 0.8 * jax.random.normal(jax.random.key(1), (3, 28, 28))
  ours = metrics.rank_correlation(a, b)
  for i in range(3):
    ref = scipy.stats.spearmanr(np.ravel(a[i]), np.ravel(b[i])).statistic
    assert float(ours[i]) == pytest.approx(ref, abs=1e-5)
  np.testing.assert_allclose(metrics.rank_correlation(a, jnp.exp(a)), 1.0, atol=1e-6)
  np.testing.assert_allclose(metrics.rank_correlation(a, -a), -1.0, atol=1e-5)
  np.testing.assert_allclose(metrics.rank_correlation(a, -a, absolute=True), 1.0, atol=1e-5)
  noise = jax.random.normal(jax.random.key(2), (3, 28, 28))
  assert float(jnp.abs(metrics.rank_correlation(a, noise)).max()) < 0.15
  # Per-feature maps are summed over channels first.
  np.testing.assert_array_equal(metrics.rank_correlation(a[..., None], b),
                                metrics.rank_correlation(a, b))


def test_ssim_is_scale_free_and_low_for_unrelated_maps():
  a = jax.random.normal(jax.random.key(0), (2, 28, 28))
  noise = jax.random.normal(jax.random.key(1), (2, 28, 28))
  np.testing.assert_allclose(metrics.ssim(a, 5 * a), 1.0, atol=1e-5)
  assert float(metrics.ssim(a, noise).max()) < 0.3
  assert float(metrics.ssim(a, -a).max()) < 0.0  # a sign flip is anti-correlated
  np.testing.assert_allclose(metrics.ssim(a, -a, absolute=True), 1.0, atol=1e-5)


def test_similarity_of_a_constant_map():
  a = jax.random.normal(jax.random.key(0), (1, 28, 28))
  zero = jnp.zeros((1, 28, 28))
  assert np.isnan(float(metrics.rank_correlation(a, zero)[0]))  # no ranking: nan, documented
  assert np.isfinite(float(metrics.ssim(a, zero)[0]))


@pytest.mark.parametrize(
    ("a", "b", "error", "match"),
    [
        (jnp.zeros((2, 28, 28)), jnp.zeros((3, 28, 28)), ValueError, "same batch"),
        (jnp.zeros((2, 28)), jnp.zeros((2, 28)), ValueError, "maps_a: expected rank"),
        ([[0.0]], jnp.zeros((2, 28, 28)), TypeError, "maps_a"),
        (jnp.zeros((1, 28, 28)), jnp.full((1, 28, 28), jnp.inf), ValueError, "finite"),
    ],
)
def test_similarity_bad_input(a, b, error, match):
  with pytest.raises(error, match=match):
    metrics.similarity(a, b)


def test_ssim_needs_11_pixels():
  with pytest.raises(ValueError, match="at least 11x11"):
    metrics.ssim(jnp.ones((1, 8, 8)), jnp.ones((1, 8, 8)))


# ---------------------------------------------------------------------------------------
# Completeness.
# ---------------------------------------------------------------------------------------


def test_completeness_of_gradient_x_input_on_a_linear_model():
  model = LinearModel()
  x, t = images(3), jnp.array([0, 4, 9])
  phi = x * logit_gradient(model, x, t)
  np.testing.assert_allclose(metrics.completeness_delta(model, x, t, phi), 0.0, atol=1e-4)
  # Against a non-zero baseline x' the complete map is (x - x') * gradient.
  base = jnp.full((28, 28, 1), 0.3)
  phi = (x - base) * logit_gradient(model, x, t)
  np.testing.assert_allclose(metrics.completeness_delta(model, x, t, phi, base), 0.0, atol=1e-4)
  wrong = metrics.completeness_delta(model, x, t, phi, 0.0)
  assert float(jnp.abs(wrong).min()) > 1e-2


def test_completeness_matches_integrated_gradients_delta_and_shrinks_with_steps():
  model = MLP(hidden=(32, 16), rngs=nnx.Rngs(0))
  for layer in (*model.hidden, model.head):  # non-zero biases: f is not homogeneous
    layer.bias[...] = 0.3 * jax.random.normal(jax.random.key(3), layer.bias.shape)
  x, t = images(3), jnp.array([0, 4, 9])
  errors = []
  for steps in (2, 64):
    maps, delta = integrated_gradients(model, x, t, steps=steps, method="riemann_middle",
                                       return_delta=True)
    ours = metrics.completeness_delta(model, x, t, maps)
    np.testing.assert_allclose(ours, delta, rtol=1e-4, atol=1e-4)
    errors.append(float(jnp.abs(ours).mean()))
  assert errors[1] < errors[0] / 10


def test_completeness_bad_input():
  model = LinearModel()
  x, t = images(1), jnp.array([0])
  with pytest.raises(ValueError, match="baselines: expected a scalar or an array of shape"):
    metrics.completeness_delta(model, x, t, x, jnp.zeros((2, 28, 28, 1)))
  with pytest.raises(TypeError, match="baselines"):
    metrics.completeness_delta(model, x, t, x, "black")
  with pytest.raises(ValueError, match="attributions: expected shape"):
    metrics.completeness_delta(model, x, t, x[:, :5])


# ---------------------------------------------------------------------------------------
# Shared helpers.
# ---------------------------------------------------------------------------------------


def test_mean_and_sem():
  values = np.array([[1.0, 2.0], [3.0, np.nan], [5.0, 4.0]])
  mean, sem = metrics.mean_and_sem(values)
  np.testing.assert_allclose(mean, [3.0, 3.0])
  np.testing.assert_allclose(sem, [scipy.stats.sem([1, 3, 5]), scipy.stats.sem([2, 4])])
  _, sem_one = metrics.mean_and_sem([1.0])
  assert np.isnan(sem_one)


def test_pixel_scores_rejects_other_ranks():
  with pytest.raises(ValueError, match="attributions: expected rank 3"):
    metrics.pixel_scores(jnp.zeros((2, 3)))

