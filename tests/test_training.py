"""Training loop: it learns, and it rejects bad input."""

import numpy as np
import pytest
from flax import nnx

from model_factories import compilations
from saliency_guide.models import MLP
from saliency_guide.training import TrainConfig, accuracy, cross_entropy, predict, train


def _separable(n=256, seed=0):
  """Two classes told apart by which half of the image holds the ink."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, n).astype(np.int32)
  images = np.zeros((n, 28, 28, 1), np.float32)
  for i, label in enumerate(labels):
    images[i, :, 14 * label : 14 * label + 14, 0] = rng.random((28, 14)) > 0.5
  return images, labels


def test_training_learns_a_separable_problem():
  x, y = _separable()
  model = MLP(hidden=(32,), num_classes=2, rngs=nnx.Rngs(0))
  before = accuracy(model, x, y)
  result = train(model, x, y, config=TrainConfig(epochs=3, batch_size=32), eval_data=(x, y),
                 progress=False)
  assert result.losses[-1] < result.losses[0]
  assert result.eval_accuracy == accuracy(model, x, y)
  assert result.eval_accuracy >= 0.95 > before


def test_cross_entropy_applies_softmax_once():
  logits = np.array([[2.0, 0.0, -1.0]], np.float32)
  expected = -np.log(np.exp(2.0) / np.exp(logits).sum())
  np.testing.assert_allclose(cross_entropy(logits, np.array([0])), expected, rtol=1e-6)


def test_predict_batches_give_the_same_logits():
  x, _ = _separable(50)
  model = MLP(rngs=nnx.Rngs(0))
  np.testing.assert_allclose(predict(model, x, batch_size=7), predict(model, x, batch_size=50),
                             rtol=1e-5, atol=1e-6)


def test_train_rejects_mismatched_labels_and_tiny_sets():
  x, y = _separable(40)
  with pytest.raises(ValueError, match="labels: expected shape"):
    train(MLP(rngs=nnx.Rngs(0)), x, y[:-1], progress=False)
  with pytest.raises(ValueError, match="batch_size=128"):
    train(MLP(rngs=nnx.Rngs(0)), x, y, progress=False)


def test_retraining_with_the_same_config_does_not_compile_again():
  # ROAR retrains the same architecture dozens of times: the training step must
  # be compiled once per (architecture, config), not once per call of train().
  x, y = _separable(64)
  config = TrainConfig(epochs=1, batch_size=32, seed=3)
  train(MLP(rngs=nnx.Rngs(0)), x, y, config=config, progress=False)
  with compilations() as compiles:
    train(MLP(rngs=nnx.Rngs(1)), x, y, config=config, progress=False)
  assert compiles == []


class _BatchNormNet(nnx.Module):
  """conv → BatchNorm → ReLU → global average → dense: a model with a training mode."""

  def __init__(self, *, rngs: nnx.Rngs):
    self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
    self.bn = nnx.BatchNorm(4, momentum=0.5, rngs=rngs)
    self.head = nnx.Linear(4, 2, rngs=rngs)

  def __call__(self, x):
    return self.head(nnx.relu(self.bn(self.conv(x))).mean(axis=(1, 2)))


def test_batchnorm_statistics_are_updated_in_training_mode_only():
  x, y = _separable(64)
  config = TrainConfig(epochs=1, batch_size=32)
  trained = _BatchNormNet(rngs=nnx.Rngs(0))
  trained.train()
  train(trained, x, y, config=config, progress=False)
  assert not np.allclose(trained.bn.mean[...], 0.0)  # initial running mean: zeros
  assert not np.allclose(trained.bn.var[...], 1.0)  # initial running variance: ones
  frozen = _BatchNormNet(rngs=nnx.Rngs(0))
  frozen.eval()
  train(frozen, x, y, config=config, progress=False)
  np.testing.assert_array_equal(frozen.bn.mean[...], 0.0)
  np.testing.assert_array_equal(frozen.bn.var[...], 1.0)


def test_eval_data_is_measured_in_eval_mode_and_leaves_the_statistics_alone():
  x, y = _separable(64)
  held_out = _separable(64, seed=1)
  config = TrainConfig(epochs=1, batch_size=32)
  models = []
  for eval_data in (None, held_out):
    model = _BatchNormNet(rngs=nnx.Rngs(0))
    model.train()
    result = train(model, x, y, config=config, eval_data=eval_data, progress=False)
    models.append(model)
  for name in ("mean", "var"):
    np.testing.assert_array_equal(getattr(models[0].bn, name)[...],
                                  getattr(models[1].bn, name)[...])
  assert models[1].bn.use_running_average is False  # still in training mode
  models[1].eval()
  assert result.eval_accuracy == accuracy(models[1], *held_out)


def test_until_stops_the_training_after_the_epoch_it_returns_true():
  rng = np.random.default_rng(0)
  x = rng.random((64, 28, 28, 1), np.float32)
  y = (x.mean(axis=(1, 2, 3)) > 0.5).astype(np.int32)
  seen = []

  def until(model, loss):
    seen.append((model, loss))
    return len(seen) == 3

  model = MLP(hidden=(8,), rngs=nnx.Rngs(0))
  result = train(model, x, y, progress=False, config=TrainConfig(epochs=10, batch_size=32),
                 until=until)
  assert len(result.losses) == 3 and len(seen) == 3
  assert all(m is model for m, _ in seen)
  assert [loss for _, loss in seen] == list(result.losses)
  with pytest.raises(TypeError, match="until: expected a callable"):
    train(model, x, y, progress=False, until=0.95)
