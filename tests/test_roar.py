"""Tests of ROAR (saliency_guide.metrics.roar) on a synthetic task where the answer is known.

The task: the class is the brightness of a fixed 4x4 patch (dark for class 0,
bright for class 1) on a noisy background, so the patch's 16 pixels hold all
the information. Pinned down:

* roar_rankings: each ranking is a permutation of the pixels per image that
  puts the oracle's patch first, the same for a method and for its maps given
  precomputed;
* t = 0 reproduces the accuracy of the same training recipe run directly, and
  the oracle's point that recipe run on the images with the patch replaced;
* removing the 16 patch pixels (an oracle ranking) drops accuracy to chance,
  while removing as many random pixels does not;
* fractions, repeats and the result's layout; ``remove_top_pixels`` replaces
  exactly round(t * H * W) pixels by the fill value;
* the replacement value is the training images' mean (not 0);
* with several retrainings, accuracy is reported as mean ± s.e. per fraction,
  and the paired verdict (by retraining seed) says the oracle beats random;
  with one retraining there is no uncertainty and no verdict;
* bad configuration and input raise errors naming the field.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saliency_guide import metrics
from saliency_guide.models import MLP
from saliency_guide.training import TrainConfig, accuracy, train

PATCH = (slice(12, 16), slice(12, 16))


def patch_data(n, seed):
  rng = np.random.default_rng(seed)
  x = 0.5 * rng.random((n, 28, 28, 1), np.float32)
  y = rng.integers(0, 2, n).astype(np.int32)
  x[:, PATCH[0], PATCH[1], 0] = y[:, None, None].astype(np.float32)
  return x, y


def oracle(model, images, targets):
  """The patch, whatever the image: the pixels that hold the class."""
  mask = jnp.zeros(images.shape[1:3]).at[PATCH].set(1.0)
  return jnp.broadcast_to(mask, images.shape[:3])


def reversed_oracle(model, images, targets):
  """The patch last: its pixels are the least important."""
  return -oracle(model, images, targets)


def tiny_mlp(rngs):
  return MLP(hidden=(32,), rngs=rngs)


CONFIG = metrics.ROARConfig(
    fractions=(16 / 784,), train_size=None, test_size=None, model=tiny_mlp, epochs=4,
    batch_size=32, learning_rate=5e-3,
)


@pytest.fixture(scope="module")
def result():
  train_data, test_data = patch_data(384, 0), patch_data(256, 1)
  model = tiny_mlp(nnx.Rngs(9))
  return metrics.roar(model, {"oracle": oracle}, train_data, test_data, config=CONFIG)


def test_t0_reproduces_the_baseline_accuracy(result):
  (x, y), (xt, yt) = patch_data(384, 0), patch_data(256, 1)
  direct = tiny_mlp(nnx.Rngs(CONFIG.seed))
  train(direct, x, y, config=TrainConfig(epochs=4, batch_size=32, learning_rate=5e-3,
                                         seed=CONFIG.seed), progress=False)
  expected = accuracy(direct, xt, yt)
  assert expected > 0.95
  # Same recipe and seed: the same model, up to floating-point noise.
  assert abs(result.accuracy["oracle"][0, 0] - expected) <= 0.01
  np.testing.assert_array_equal(result.accuracy["oracle"][:, 0], result.accuracy["random"][:, 0])


def test_rankings_put_the_oracle_patch_first():
  train_data, test_data = patch_data(384, 0), patch_data(256, 1)
  model = tiny_mlp(nnx.Rngs(9))
  rankings = metrics.roar_rankings(model, {"oracle": oracle}, train_data, test_data,
                                   config=CONFIG)
  assert set(rankings.ranks) == set(rankings.attribution_seconds) == {"oracle", "random"}
  patch = np.zeros((28, 28), bool)
  patch[PATCH] = True
  for ranks, n in zip(rankings.ranks["oracle"], (384, 256), strict=True):
    ranks = np.asarray(ranks)
    assert ranks.shape == (n, 28, 28) and ranks.dtype == np.int32
    np.testing.assert_array_equal(np.sort(ranks.reshape(n, -1), axis=1),
                                  np.broadcast_to(np.arange(784), (n, 784)))
    assert np.all(ranks[:, patch] < 16)  # the 16 patch pixels are removed first
  random = np.asarray(rankings.ranks["random"][0])
  assert not np.all(random[:, patch] < 16)
  # Maps given precomputed rank exactly like the method that computes them.
  (train_x, train_y), (test_x, test_y) = CONFIG.subsets(train_data, test_data)
  given = metrics.roar_rankings(
      model, {"oracle": (oracle(None, train_x, train_y), oracle(None, test_x, test_y))},
      train_data, test_data, config=dataclasses.replace(CONFIG, random_baseline=False))
  for a, b in zip(given.ranks["oracle"], rankings.ranks["oracle"], strict=True):
    np.testing.assert_array_equal(a, b)


def test_a_point_of_the_curve_is_the_recipe_on_the_modified_images(result):
  (x, y), (xt, yt) = patch_data(384, 0), patch_data(256, 1)
  fill = x.mean(axis=(0, 1, 2))  # the oracle removes exactly the patch, in every image
  for images in (x, xt):
    images[:, PATCH[0], PATCH[1], :] = fill
  direct = tiny_mlp(nnx.Rngs(CONFIG.seed))
  train(direct, x, y, config=TrainConfig(epochs=4, batch_size=32, learning_rate=5e-3,
                                         seed=CONFIG.seed), progress=False)
  assert abs(result.accuracy["oracle"][0, 1] - accuracy(direct, xt, yt)) <= 0.01


def test_oracle_removal_destroys_the_information_and_random_does_not(result):
  assert result.fractions.tolist() == [0.0, 16 / 784]
  assert result.accuracy["oracle"][0, 1] < 0.65  # chance is 0.5
  assert result.accuracy["random"][0, 1] > 0.9


def test_fill_is_the_training_mean_not_zero(result):
  x, _ = patch_data(384, 0)
  assert result.fill_value == pytest.approx(float(x.mean()), rel=1e-5)
  assert result.fill_value > 0.1
  assert set(result.attribution_seconds) == {"oracle", "random"}
  assert "fractions" in result.config.describe()


def test_remove_top_pixels_replaces_exactly_the_top_fraction():
  x = jax.random.uniform(jax.random.key(0), (3, 28, 28, 1)) + 1.0  # never equal to the fill
  maps = jax.random.normal(jax.random.key(1), (3, 28, 28, 1))
  for t in (0.0, 0.1, 0.5, 1.0):
    out = metrics.remove_top_pixels(x, maps, t, fill=-1.0)
    removed = np.asarray(out == -1.0)[..., 0]
    assert removed.sum(axis=(1, 2)).tolist() == [round(t * 784)] * 3
    if 0 < t < 1:  # the removed pixels are those with the largest scores
      kept = np.asarray(maps)[..., 0][~removed].reshape(3, -1)
      gone = np.asarray(maps)[..., 0][removed].reshape(3, -1)
      assert np.all(gone.min(axis=1) >= kept.max(axis=1))
    np.testing.assert_array_equal(np.asarray(out)[~np.asarray(out == -1.0)],
                                  np.asarray(x)[~np.asarray(out == -1.0)])


def test_repeats_and_mean():
  train_data, test_data = patch_data(64, 0), patch_data(32, 1)
  config = metrics.ROARConfig(fractions=(0.5,), model=tiny_mlp, epochs=1, batch_size=32,
                              repeats=2, random_baseline=False)
  out = metrics.roar(tiny_mlp(nnx.Rngs(0)), {"oracle": oracle}, train_data, test_data,
                     config=config)
  assert out.accuracy["oracle"].shape == (2, 2)
  assert set(out.accuracy) == {"oracle"}
  np.testing.assert_allclose(out.mean()["oracle"], out.accuracy["oracle"].mean(axis=0))


def test_stats_and_the_paired_verdict_against_random():
  train_data, test_data = patch_data(192, 0), patch_data(128, 1)
  config = dataclasses.replace(CONFIG, repeats=3)
  out = metrics.roar(tiny_mlp(nnx.Rngs(0)), {"oracle": oracle, "reversed": reversed_oracle},
                     train_data, test_data, config=config)
  stats = out.stats()
  assert set(stats) == {"oracle", "reversed", "random"}
  for name, (mean, sem) in stats.items():
    np.testing.assert_allclose(mean, out.accuracy[name].mean(axis=0))
    np.testing.assert_allclose(sem[1:], out.accuracy[name][:, 1:].std(axis=0, ddof=1) / np.sqrt(3))
  areas = out.areas()
  np.testing.assert_allclose(
      areas["oracle"], 0.5 * (out.accuracy["oracle"][:, 0] + out.accuracy["oracle"][:, 1])
      * out.fractions[1])
  verdict = out.compare_to_random("oracle")
  assert verdict.verdict == "beats random", verdict
  assert verdict.n == 3 and not verdict.higher_is_better
  at = out.compare_to_random("oracle", fraction=16 / 784)
  np.testing.assert_allclose(at.difference, np.mean(out.accuracy["oracle"][:, 1]
                                                    - out.accuracy["random"][:, 1]))
  assert at.verdict == "beats random"
  # Removing the 16 least informative pixels first leaves the patch: no worse than random.
  assert out.compare_to_random("reversed").verdict != "beats random"
  with pytest.raises(ValueError, match="name: expected one of"):
    out.compare_to_random("random")
  with pytest.raises(ValueError, match="fraction: expected one of"):
    out.compare_to_random("oracle", fraction=0.5)


def test_one_retraining_has_no_uncertainty(result):
  _, sem = result.stats()["oracle"]
  assert np.isnan(sem).all()
  with pytest.raises(ValueError, match="at least 2 retrainings"):
    result.compare_to_random("oracle")


def test_full_config():
  full = metrics.ROARConfig.full("gap_cnn")
  assert full.train_size is None and full.test_size is None and full.repeats == 5
  with pytest.raises(ValueError, match="model: expected one of"):
    metrics.ROARConfig.full("resnet")


@pytest.mark.parametrize(
    ("field", "value", "error", "match"),
    [
        ("fractions", (1.5,), ValueError, "fractions: expected numbers in"),
        ("fractions", (), TypeError, "fractions: expected a non-empty tuple"),
        ("fractions", "0.5", TypeError, "fractions"),
        ("epochs", 0, ValueError, "epochs: expected an integer >= 1"),
        ("train_size", 1.5, TypeError, "train_size"),
        ("repeats", 0, ValueError, "repeats"),
        ("model", "resnet", ValueError, "model: expected one of"),
        ("model", 3, TypeError, "model: expected a model name or a callable"),
        ("fill", "zeros", ValueError, "fill: expected 'mean', 'mask' or a finite number"),
        ("fill", float("nan"), ValueError, "fill"),
        ("learning_rate", -1.0, ValueError, "learning_rate"),
    ],
)
def test_bad_config(field, value, error, match):
  config = metrics.ROARConfig(**{field: value})
  with pytest.raises(error, match=match):
    metrics.roar(tiny_mlp(nnx.Rngs(0)), {"oracle": oracle}, patch_data(64, 0), patch_data(8, 1),
                 config=config)


def test_bad_input():
  model = tiny_mlp(nnx.Rngs(0))
  data = patch_data(64, 0)
  with pytest.raises(ValueError, match="'random' is reserved"):
    metrics.roar(model, {"random": oracle}, data, data, config=CONFIG)
  with pytest.raises(TypeError, match=r"methods\[.x.\]: expected a saliency method or a pair"):
    metrics.roar(model, {"x": "gradients"}, data, data, config=CONFIG)
  with pytest.raises(TypeError, match="methods: expected a mapping"):
    metrics.roar(model, [oracle], data, data, config=CONFIG)
  with pytest.raises(TypeError, match="config: expected a ROARConfig"):
    metrics.roar(model, {"o": oracle}, data, data, config={"epochs": 1})
  with pytest.raises(ValueError, match="train_data images: expected NHWC shape"):
    metrics.roar(model, {"o": oracle}, (data[0][:, :, :, 0], data[1]), data, config=CONFIG)
  with pytest.raises(TypeError, match="test_data labels: expected integer class indices"):
    metrics.roar(model, {"o": oracle}, data, (data[0], data[1].astype(float)), config=CONFIG)
  with pytest.raises(ValueError, match="train_data: expected at least batch_size"):
    metrics.roar(model, {"o": oracle}, patch_data(16, 0), data, config=CONFIG)
  with pytest.raises(ValueError, match="fraction: expected a number in"):
    metrics.remove_top_pixels(data[0], data[0], 2.0, fill=0.0)
  with pytest.raises(ValueError, match="attributions: expected shape"):
    metrics.remove_top_pixels(data[0], data[0][:, :4], 0.5, fill=0.0)


def test_precomputed_maps_and_the_mask_leak_diagnostic(result):
  train_data, test_data = patch_data(384, 0), patch_data(256, 1)
  (train_x, train_y), (test_x, test_y) = CONFIG.subsets(train_data, test_data)
  maps = (oracle(None, train_x, train_y), oracle(None, test_x, test_y))
  model = tiny_mlp(nnx.Rngs(9))
  given = metrics.roar(model, {"oracle": maps}, train_data, test_data,
                       config=dataclasses.replace(CONFIG, random_baseline=False))
  np.testing.assert_array_equal(given.accuracy["oracle"], result.accuracy["oracle"])
  # The oracle's mask is the same patch for every image: it carries no class.
  leak = metrics.roar(model, {"oracle": maps}, train_data, test_data,
                      config=dataclasses.replace(CONFIG, fill="mask"))
  assert np.isnan(leak.fill_value)
  assert leak.accuracy["oracle"][0, 1] < 0.65
  # A ranking that puts the patch first only for class 1 leaks the label through its shape.
  leaky = (np.asarray(maps[0]) * train_y[:, None, None],
           np.asarray(maps[1]) * test_y[:, None, None])
  leak = metrics.roar(model, {"leaky": leaky}, train_data, test_data,
                      config=dataclasses.replace(CONFIG, fill="mask", random_baseline=False))
  assert leak.accuracy["leaky"][0, 1] > 0.95
  with pytest.raises(ValueError, match=r"methods\['oracle'\]: expected train maps of shape"):
    metrics.roar(model, {"oracle": (maps[0][:10], maps[1])}, train_data, test_data,
                 config=CONFIG)
