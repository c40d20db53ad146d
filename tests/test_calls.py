"""How every method treats the model it is given, across calls.

The methods pass the model itself to their compiled functions (an NNX module
is a pytree), so a call costs no module-graph walk. These tests pin what that
must not break: weights changed in place after a call are the weights the next
call uses (no stale copy baked into a compilation), the change does not
trigger a recompilation, and the caller's model is left as it was.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from model_factories import compilations
from saliency_guide import methods
from saliency_guide.models import FeatureMaps, GapCNN
from saliency_guide.validation import model_channels

METHODS = {
    "gradients": methods.gradients,
    "gradients_x_inputs": methods.gradients_x_inputs,
    "integrated_gradients": lambda m, x, t: methods.integrated_gradients(m, x, t, steps=4),
    "expected_gradients": lambda m, x, t: methods.expected_gradients(
        m, x, t, references=jnp.zeros((2, 28, 28, 1)), samples=4, key=jax.random.key(0)),
    "smoothgrad": methods.smoothgrad(methods.gradients, samples=4, key=jax.random.key(0)),
    "deconvolution": methods.deconvolution,
    "guided_backprop": methods.guided_backprop,
    "cam": methods.cam,
    "grad_cam": methods.grad_cam,
    "guided_grad_cam": methods.guided_grad_cam,
    "grad_cam_plus_plus": methods.grad_cam_plus_plus,
    "score_cam": methods.score_cam,
}


@pytest.fixture(scope="module")
def inputs():
  rng = np.random.default_rng(0)
  return jnp.asarray(rng.random((2, 28, 28, 1), np.float32)), jnp.array([3, 7])


@pytest.mark.parametrize("name", sorted(METHODS))
def test_in_place_weight_changes_are_seen_without_recompiling(name, inputs):
  method = METHODS[name]
  images, targets = inputs
  model = GapCNN(rngs=nnx.Rngs(1))
  first = method(model, images, targets)
  for conv in (model.conv1, model.conv2, model.conv3):  # change the model in place
    conv.kernel[...] = conv.kernel[...] * 1.5 + 0.01
  model.head.kernel[...] = model.head.kernel[...][:, ::-1]  # reverse the class order
  with compilations() as compiles:
    after_change = method(model, images, targets)
  assert compiles == [], "an in-place weight change recompiled the method"
  assert not np.allclose(np.asarray(first), np.asarray(after_change))
  fresh = nnx.merge(*nnx.split(model))  # a new object with the changed weights
  expected = method(fresh, images, targets)
  np.testing.assert_array_equal(np.asarray(after_change), np.asarray(expected))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_the_callers_model_is_left_as_it_was(name, inputs):
  images, targets = inputs
  model = GapCNN(rngs=nnx.Rngs(2))
  graphdef = nnx.graphdef(model)
  before = jax.tree.map(np.asarray, nnx.state(model))
  METHODS[name](model, images, targets)
  assert nnx.graphdef(model) == graphdef
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, nnx.state(model)))


class _NoFeatureLayers(FeatureMaps):
  """A FeatureMaps subclass that lists no feature layers (its conv is not exposed)."""

  def __init__(self, rngs: nnx.Rngs):
    self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
    self.head = nnx.Linear(4, 10, rngs=rngs)

  def __call__(self, x):
    return self.head(self.conv(x).mean(axis=(1, 2)))


def test_input_channels_are_checked_by_tracing_without_feature_layers():
  model = _NoFeatureLayers(nnx.Rngs(0))
  assert model.in_channels is None
  assert model_channels(model) is None  # declared nowhere: the model is traced on the images
  with pytest.raises(ValueError, match=r"could not be applied to images of shape \(2, 8, 8, 1\)"):
    methods.gradients(model, jnp.zeros((2, 8, 8, 1)), jnp.array([1, 2]))
  assert methods.gradients(model, jnp.zeros((2, 8, 8, 3)), jnp.array([1, 2])).shape == (2, 8, 8, 3)
