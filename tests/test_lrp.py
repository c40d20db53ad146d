"""Tests of layer-wise relevance propagation (saliency_guide.methods.lrp).

* every rule on an MLP against an independent NumPy reference written here
  (slow, obvious, float64), biases included;
* conservation measured: the relevance at the pixels is the target logit minus
  the biases' shares (which the reference adds up layer by layer), and exactly
  the logit without biases;
* LRP-0 (and ε → 0) equals Gradient × Input on ReLU networks: CNN, GapCNN and a
  residual network with BatchNorm (folded into its convs);
* the folding ("canonisation") leaves the model's outputs unchanged;
* a hand-computed linear model (sign, the logit not the loss), class sensitivity;
* composites: presets, layer paths before "first" before kinds;
* a layer or activation without a rule is an error naming it.

Agreement with zennit and Captum on the site's trained models is in
``benchmarks/references/lrp.py``.
"""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from model_factories import numpy_model
from relu_reference import images_for, plain_gradient, randomize_biases, small
from saliency_guide import methods
from saliency_guide.layers import max_pool_2x2
from saliency_guide.methods import _lrp_rules
from saliency_guide.models import CNN, MLP, GapCNN
from user_models import GeluNet, LayerNormNet, ResNet, linen_model, with_random_batch_stats

EPS = 1e-6


# --------------------------------------------------------------------------- #
# The NumPy reference: dense layers, one rule each, relevance from the logit.  #
# --------------------------------------------------------------------------- #


def _stab(z, eps=EPS):
  return z + eps * np.where(z >= 0, 1.0, -1.0)


def reference_rule(rule, x, w, b, r, *, gamma=0.25, alpha=2.0, beta=1.0, low=0.0, high=1.0):
  """``(R_in, bias share)`` of one dense layer ``z = x @ w + b`` (x: (n,), w: (n, m))."""
  n, m = w.shape
  r_in = np.zeros(n)
  share = 0.0
  for j in range(m):
    z = x @ w[:, j] + b[j]
    if rule in ("zero", "epsilon"):
      denom = z if rule == "zero" else _stab(z, 1e-6)
      c = x * w[:, j]
      bias_part = b[j]
    elif rule == "zplus":
      c = np.maximum(x, 0) * np.maximum(w[:, j], 0) + np.minimum(x, 0) * np.minimum(w[:, j], 0)
      bias_part = max(b[j], 0.0)
      denom = _stab(c.sum() + bias_part)
    elif rule == "alphabeta":
      cp = np.maximum(x, 0) * np.maximum(w[:, j], 0) + np.minimum(x, 0) * np.minimum(w[:, j], 0)
      cn = np.maximum(x, 0) * np.minimum(w[:, j], 0) + np.minimum(x, 0) * np.maximum(w[:, j], 0)
      zp, zn = cp.sum() + max(b[j], 0.0), cn.sum() + min(b[j], 0.0)
      r_in += alpha * cp * r[j] / _stab(zp) - beta * cn * r[j] / _stab(zn)
      share += (alpha * max(b[j], 0.0) / _stab(zp) - beta * min(b[j], 0.0) / _stab(zn)) * r[j]
      continue
    elif rule == "gamma":
      if z > 0:
        wu = w[:, j] + gamma * np.maximum(w[:, j], 0)
        wl = w[:, j] + gamma * np.minimum(w[:, j], 0)
        bias_part = b[j] + gamma * max(b[j], 0.0)
      elif z < 0:
        wu = w[:, j] + gamma * np.minimum(w[:, j], 0)
        wl = w[:, j] + gamma * np.maximum(w[:, j], 0)
        bias_part = b[j] + gamma * min(b[j], 0.0)
      else:
        continue
      c = np.maximum(x, 0) * wu + np.minimum(x, 0) * wl
      denom = _stab(c.sum() + bias_part)
    elif rule == "flat":
      c, bias_part = np.ones(n), 0.0
      denom = _stab(float(n))
    elif rule == "wsquare":
      c, bias_part = w[:, j] ** 2, b[j] ** 2
      denom = _stab(c.sum() + bias_part)
    elif rule == "zbox":
      c = x * w[:, j] - low * np.maximum(w[:, j], 0) - high * np.minimum(w[:, j], 0)
      bias_part = b[j] - max(b[j], 0.0) - min(b[j], 0.0)  # = 0: zB keeps no bias share
      denom = _stab(c.sum() + bias_part)
    if denom == 0:
      continue
    r_in += c * r[j] / denom
    share += bias_part * r[j] / denom
  return r_in, share


def reference_lrp(model, image, target, rules):
  """LRP of an ``MLP`` on one image: ``(relevance of the pixels, total bias share)``."""
  layers = [*model.hidden, model.head]
  params = [(np.asarray(la.kernel[...], np.float64), np.asarray(la.bias[...], np.float64))
            for la in layers]
  a = [np.asarray(image, np.float64).reshape(-1)]
  for i, (w, b) in enumerate(params):
    z = a[-1] @ w + b
    a.append(np.maximum(z, 0) if i < len(params) - 1 else z)
  r = np.zeros_like(a[-1])
  r[target] = a[-1][target]
  shares = 0.0
  for i in reversed(range(len(params))):
    r, share = reference_rule(rules[i], a[i], *params[i], r)
    shares += share
  return r.reshape(image.shape), shares


@pytest.fixture(scope="module")
def mlp():
  return numpy_model(lambda: MLP(hidden=(12, 8), num_classes=4, image_shape=(4, 5, 1),
                                 rngs=nnx.Rngs(0)), seed=3, bias_scale=0.2)


@pytest.fixture(scope="module")
def mlp_batch():
  rng = np.random.default_rng(0)
  return rng.random((3, 4, 5, 1), dtype=np.float32), np.array([0, 2, 3], np.int32)


@pytest.mark.parametrize("rule", methods.LRP_RULES)
def test_every_rule_against_the_numpy_reference(mlp, mlp_batch, rule):
  x, t = mlp_batch
  ours = np.asarray(methods.lrp(mlp, x, t, rule=rule))
  rules = ["zbox", "epsilon", "epsilon"] if rule == "zbox" else [rule] * 3
  for b in range(len(x)):
    expected, shares = reference_lrp(mlp, x[b], t[b], rules)
    np.testing.assert_allclose(ours[b], expected, rtol=2e-4, atol=2e-6)
    # conservation, measured: sum of relevance = logit - what the biases kept
    logit = float(mlp(x[b:b + 1])[0, t[b]])
    np.testing.assert_allclose(ours[b].sum(), logit - shares, rtol=1e-4, atol=1e-5)


def test_biases_take_a_measurable_share_and_zero_biases_conserve_the_logit(mlp, mlp_batch):
  x, t = mlp_batch
  logits = np.asarray(mlp(x))[np.arange(len(t)), t]
  leaky = np.asarray(methods.lrp(mlp, x, t, rule="zero")).sum(axis=(1, 2, 3))
  assert np.abs(leaky - logits).max() > 1e-2  # the biases keep part of the logit
  unbiased = nnx.clone(mlp)
  for layer in [*unbiased.hidden, unbiased.head]:
    layer.bias[...] = jnp.zeros_like(layer.bias[...])
  logits0 = np.asarray(unbiased(x))[np.arange(len(t)), t]
  for rule in ("zero", "epsilon", "gamma", "zplus", "flat", "wsquare", "zbox"):
    total = np.asarray(methods.lrp(unbiased, x, t, rule=rule)).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(total, logits0, rtol=1e-4, err_msg=rule)


def test_linear_model_by_hand():
  """One dense layer: LRP-0 is w_c x exactly, for the logit's sign and class."""
  model = numpy_model(lambda: MLP(hidden=(), num_classes=3, image_shape=(2, 2, 1),
                                  rngs=nnx.Rngs(0)), seed=1, bias_scale=0.0)
  w = np.asarray(model.head.kernel[...])
  x = np.array([[[[1.0], [2.0]], [[-1.0], [0.5]]]], np.float32)
  for c in range(3):
    expected = (w[:, c] * x.reshape(-1)).reshape(x.shape)
    np.testing.assert_allclose(methods.lrp(model, x, np.array([c]), rule="zero"), expected,
                               rtol=1e-5, atol=1e-7)


def _gradient_x_input(model, x, t):
  return np.asarray(plain_gradient(model, x, t)) * np.asarray(x)


@pytest.mark.parametrize("cls", [CNN, GapCNN])
def test_lrp_zero_is_gradient_times_input(cls):
  model = randomize_biases(small(cls))
  x, t = images_for(seed=2), jnp.array([1, 4, 7])
  expected = _gradient_x_input(model, x, t)
  scale = np.abs(expected).max()
  np.testing.assert_allclose(methods.lrp(model, x, t, rule="zero"), expected, atol=1e-5 * scale)
  # epsilon -> 0: the same map
  np.testing.assert_allclose(methods.lrp(model, x, t, epsilon=1e-9), expected,
                             atol=1e-4 * scale)


def test_residual_batchnorm_network_folded_lrp_zero_is_gradient_times_input():
  model = with_random_batch_stats(numpy_model(lambda: ResNet(rngs=nnx.Rngs(0)), seed=4))
  x, t = images_for(seed=3, batch=2), jnp.array([2, 5])
  expected = _gradient_x_input(model, x, t)
  ours = np.asarray(methods.lrp(model, x, t, rule="zero"))
  # residual additions and global average pooling share relevance proportionally
  # (with the 1e-6 stabiliser of zennit's Norm rule)
  np.testing.assert_allclose(ours, expected, atol=2e-3 * np.abs(expected).max())
  assert np.corrcoef(ours.ravel(), expected.ravel())[0, 1] > 0.9999


def test_batchnorm_folding_leaves_the_outputs_unchanged():
  model = with_random_batch_stats(numpy_model(lambda: ResNet(rngs=nnx.Rngs(0)), seed=4))
  x = images_for(seed=5, batch=2)
  plan = _lrp_rules.plan(model, x)
  assert len(plan.folds) == 5  # the stem's and the four convs' BatchNorms of the blocks
  assert (("stem",), ("bn",)) in plan.folds
  folded = _lrp_rules.canonized(model, plan.folds)(x)
  np.testing.assert_allclose(folded, model(x), rtol=1e-5, atol=1e-5)


def test_class_sensitive_for_epsilon():
  model = randomize_biases(small(CNN))
  x = images_for(seed=6, batch=1)
  a = np.asarray(methods.lrp(model, x, jnp.array([1])))
  b = np.asarray(methods.lrp(model, x, jnp.array([2])))
  assert np.corrcoef(a.ravel(), b.ravel())[0, 1] < 0.99


def test_composites_presets_and_precedence():
  model = randomize_biases(small(CNN))
  x, t = images_for(seed=7, batch=2), jnp.array([0, 3])
  preset = methods.lrp(model, x, t, composite="epsilon_gamma_box")
  spelled = methods.lrp(model, x, t, composite={
      "conv1": "zbox", "conv": "gamma", "linear": ("epsilon", {"epsilon": 1e-6})})
  np.testing.assert_array_equal(preset, spelled)
  flat_first = methods.lrp(model, x, t, composite="epsilon_plus_flat")
  by_path = methods.lrp(model, x, t, composite={"first": "zbox", "conv1": "flat",
                                                "conv": "zplus", "linear": "epsilon"})
  np.testing.assert_array_equal(flat_first, by_path)
  zbox = methods.lrp(model, x, t, rule="zbox")
  np.testing.assert_array_equal(zbox, methods.lrp(model, x, t, composite={"first": "zbox"}))
  gamma = methods.lrp(model, x, t, rule="gamma", gamma=0.5)
  np.testing.assert_array_equal(gamma, methods.lrp(model, x, t, composite={
      "conv": ("gamma", {"gamma": 0.5}), "linear": ("gamma", {"gamma": 0.5})}))
  assert not np.allclose(gamma, methods.lrp(model, x, t, rule="gamma"))


class _PoolNet(nnx.Module):
  """An identity 1x1 conv (so the pixels' relevance is the pool's input's), ReLU, max-pool."""

  def __init__(self, pool):
    self.conv = nnx.Conv(1, 1, (1, 1), rngs=nnx.Rngs(0))
    self.conv.kernel[...] = jnp.ones_like(self.conv.kernel[...])
    self.head = nnx.Linear(4 * 4, 3, rngs=nnx.Rngs(1))
    self.pool = pool

  def __call__(self, x):
    x = self.pool(jax.nn.relu(self.conv(x)))
    return self.head(x.reshape(x.shape[0], -1))


@pytest.mark.parametrize("pool", [max_pool_2x2, lambda a: nnx.max_pool(a, (2, 2), (2, 2))])
def test_max_pooling_is_winner_take_all(pool):
  """Each 2x2 window's relevance goes to its maximum, all of it."""
  x = np.random.default_rng(9).random((2, 8, 8, 1), dtype=np.float32)
  t = jnp.array([0, 2])
  model = _PoolNet(pool)
  relevance = np.asarray(methods.lrp(model, x, t, rule="zero")).reshape(2, 4, 2, 4, 2)
  windows = x.reshape(2, 4, 2, 4, 2)
  winner = windows == windows.max(axis=(2, 4), keepdims=True)
  assert np.all(relevance[~winner] == 0)
  assert np.abs(relevance[winner]).min() > 0


@pytest.mark.parametrize(("factory", "named"), [
    (lambda: numpy_model(lambda: GeluNet(rngs=nnx.Rngs(0))), "gelu"),
    (lambda: numpy_model(lambda: LayerNormNet(rngs=nnx.Rngs(0))), "LayerNorm"),
    (linen_model, "ToNNX"),
])
def test_unsupported_layers_are_named(factory, named):
  with pytest.raises(ValueError, match=named):
    methods.lrp(factory(), images_for(batch=1), jnp.array([0]))


def test_batchnorm_not_after_a_layer_is_refused():
  class Net(nnx.Module):
    def __init__(self, rngs):
      self.conv = nnx.Conv(1, 2, (3, 3), rngs=rngs)
      self.bn = nnx.BatchNorm(2, use_running_average=True, rngs=rngs)
      self.head = nnx.Linear(2, 3, rngs=rngs)

    def __call__(self, x):
      return self.head(self.bn(jax.nn.relu(self.conv(x))).mean(axis=(1, 2)))

  with pytest.raises(ValueError, match="BatchNorm at 'bn'"):
    methods.lrp(Net(nnx.Rngs(0)), images_for(batch=1), jnp.array([0]))


def test_large_batches_are_chunked_with_the_same_result(mlp, monkeypatch):
  module = importlib.import_module("saliency_guide.methods.lrp")
  rng = np.random.default_rng(11)
  x, t = rng.random((7, 4, 5, 1), dtype=np.float32), np.arange(7, dtype=np.int32) % 4
  whole = np.concatenate([methods.lrp(mlp, x[:4], t[:4], rule="gamma"),
                          methods.lrp(mlp, x[4:], t[4:], rule="gamma")])
  monkeypatch.setattr(module, "CHUNK", 2)  # a new batch shape (7): traced with chunks of 2
  chunked = np.asarray(methods.lrp(mlp, x, t, rule="gamma"))
  np.testing.assert_allclose(chunked, whole, rtol=1e-6, atol=1e-7)
