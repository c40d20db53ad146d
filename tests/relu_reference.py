"""Shared by the Deconvolution, Guided Backprop and ReLU-rule tests: small models and a reference.

The reference back-propagates the target logit layer by layer with one
``jax.vjp`` per non-ReLU stage and applies each rule *by hand* at every ReLU in
between (not through the custom VJPs under test), which catches a rule applied
to the wrong tensor, a missed ReLU or a modified non-ReLU layer.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from model_factories import numpy_model
from saliency_guide import methods
from saliency_guide.layers import max_pool_2x2, relu
from saliency_guide.methods import logit_gradient
from saliency_guide.models import CNN, MLP, GapCNN

METHODS = {"deconvolution": methods.deconvolution, "guided_backprop": methods.guided_backprop}
RULES = {"gradient": relu, "deconvolution": methods.deconv_relu,
         "guided_backprop": methods.guided_relu}

SMALL = {
    MLP: lambda: MLP(hidden=(32, 16), rngs=nnx.Rngs(0)),
    CNN: lambda: CNN(channels=(4, 6), hidden=12, rngs=nnx.Rngs(0)),
    GapCNN: lambda: GapCNN(channels=(4, 6, 8), rngs=nnx.Rngs(0)),
}

# One ReLU: forward inputs x, signals R from above, and R_in by hand for each rule.
#   x:       -2  -1   0   0   0   1   1   1
#   R:        3  -3   2  -2   0   4  -4   0
X = jnp.array([-2.0, -1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
R = jnp.array([3.0, -3.0, 2.0, -2.0, 0.0, 4.0, -4.0, 0.0])
EXPECTED = {
    "gradient": [0, 0, 0, 0, 0, 4, -4, 0],  # R * 1[x > 0]
    "deconvolution": [3, 0, 2, 0, 0, 4, 0, 0],  # max(R, 0)
    "guided_backprop": [0, 0, 0, 0, 0, 4, 0, 0],  # max(R, 0) * 1[x > 0]
}


def backward(rule, x, r):
  """The signal ``rule`` sends below a ReLU with forward input ``x`` given ``r`` from above."""
  _, vjp = jax.vjp(rule, x)
  return vjp(r)[0]


def small(model_cls, seed=0):
  """A fresh small model (a clone: tests may modify it; building once saves compilations)."""
  return nnx.clone(_small(model_cls, seed))


@functools.cache
def _small(model_cls, seed):
  """Weights drawn by NumPy (no JAX initialiser compiles), zero biases."""
  return numpy_model(SMALL[model_cls], seed, bias_scale=0.0)


def images_for(seed=0, batch=3, signed=False):
  x = np.random.default_rng(seed).uniform(size=(batch, 28, 28, 1)).astype(np.float32)
  return jnp.asarray(2 * x - 1 if signed else x)


@functools.partial(jax.jit, static_argnums=0)
def _plain_gradient(graphdef, state, images, targets):
  return logit_gradient(nnx.merge(graphdef, state), images, targets)


def plain_gradient(model, images, targets):
  """The ordinary gradient of the target logit, jitted (eager ``jax.grad`` is slow to dispatch)."""
  return _plain_gradient(*nnx.split(model), images, targets)


def randomize_biases(model, seed=1):
  """Nonzero biases, so that ReLU masks do not merely follow the input's sign."""
  rng = np.random.default_rng(seed)
  for _, module in nnx.iter_modules(model):
    if isinstance(module, nnx.Linear | nnx.Conv):
      module.bias[...] = jnp.asarray(0.1 * rng.normal(size=module.bias.shape), jnp.float32)
  return model


def _apply_rule(name, x, r):
  """The rule written out by hand (not through the custom VJPs under test)."""
  if name == "gradient":
    return r * (x > 0)
  if name == "deconvolution":
    return jnp.maximum(r, 0)
  return jnp.maximum(r, 0) * (x > 0)


def reference(model, images, targets):
  """Every rule's maps, back-propagating the target logits layer by layer.

  Each non-ReLU stage is differentiated on its own with ``jax.vjp``; the rule
  is applied by hand at every ReLU in between. Examples of a batch do not
  interact, so one-hot cotangents give every image's map in one pass.

  Returns:
    ``{rule name: maps}`` for the names of ``RULES``.
  """
  return _reference(*nnx.split(model), images, targets)


@functools.partial(jax.jit, static_argnums=0)
def _reference(graphdef, state, images, targets):
  model = nnx.merge(graphdef, state)
  stages = []  # the vjp of a non-ReLU stage, or ("relu", its pre-activation)

  def linear(fn, h):
    out, vjp = jax.vjp(fn, h)
    stages.append(vjp)
    return out

  def act(h):
    stages.append(("relu", h))
    return jax.nn.relu(h)

  h = images
  if isinstance(model, MLP):
    h = linear(lambda h: h.reshape(h.shape[0], -1), h)
    for layer in model.hidden:
      h = act(linear(layer, h))
  else:
    h = linear(max_pool_2x2, act(linear(model.conv1, h)))
    h = linear(max_pool_2x2, act(linear(model.conv2, h)))
    if isinstance(model, CNN):
      h = act(linear(lambda h: model.dense(h.reshape(h.shape[0], -1)), h))
    else:
      h = linear(lambda h: jnp.mean(h, axis=(1, 2)), act(linear(model.conv3, h)))
  logits, head_vjp = jax.vjp(model.head, h)
  maps = {}
  for name in RULES:
    r = head_vjp(jax.nn.one_hot(targets, logits.shape[-1]))[0]
    for stage in reversed(stages):
      r = _apply_rule(name, stage[1], r) if isinstance(stage, tuple) else stage(r)[0]
    maps[name] = r
  return maps


def check_against_reference(name, model_cls):
  """``METHODS[name]`` on a small model with biases equals the reference, and differs from
  the plain gradient (so that the comparison can fail)."""
  model = randomize_biases(small(model_cls))
  images = images_for(signed=True)
  targets = jnp.array([0, 4, 9])
  expected = reference(model, images, targets)
  got = METHODS[name](model, images, targets)
  np.testing.assert_allclose(got, expected[name], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(plain_gradient(model, images, targets), expected["gradient"],
                             rtol=1e-4, atol=1e-6)
  assert not np.allclose(got, expected["gradient"], atol=1e-6)
