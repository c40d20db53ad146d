r"""Modified backpropagation: Deconvolution and Guided Backpropagation.

Both methods are the gradient of the target logit computed with a *different
backward rule at every ReLU*; every other layer (convolutions, max-pooling
switches, dense layers, global average pooling) back-propagates as usual. With
:math:`x` the forward input of a ReLU and :math:`R` the signal arriving at its
output from above, the signal sent below is

.. list-table::
   :header-rows: 1

   * - rule
     - :math:`R_\text{in}`
   * - gradient
     - :math:`R \cdot \mathbb{1}[x > 0]`
   * - Deconvolution (Zeiler & Fergus, 2014)
     - :math:`\max(R, 0)` (the forward mask is ignored)
   * - Guided Backpropagation (Springenberg et al., 2015)
     - :math:`\max(R, 0) \cdot \mathbb{1}[x > 0]`

The rules are :func:`jax.custom_vjp` ReLUs (:func:`deconv_relu`,
:func:`guided_relu`) whose forward pass is the ordinary ReLU. A method copies
the model *inside* its jitted function (the module is a pytree argument of
:func:`jax.jit`, so the traced function receives a fresh object) and assigns
the rule to every submodule attribute named ``activation`` (the models in
:mod:`saliency_guide.models` call every ReLU through it), then takes the
ordinary ``jax.grad`` of the target logit. The caller's model is never
modified, and the rule is a static argument of the compiled function, so
switching rules can never reuse a stale compilation.

Conventions at the kink, fixed and tested: the forward mask is
:math:`\mathbb{1}[x > 0]`, so at :math:`x = 0` nothing passes, exactly like the
gradient of :func:`jax.nn.relu`; at :math:`R = 0` every rule sends :math:`0`.

Only ReLUs reached through an ``activation`` attribute are modified. An
``activation`` that is not a ReLU (checked numerically on a probe, so any
implementation of :math:`\max(x, 0)` is accepted) is an error: replacing it by a
ReLU would change the model's forward pass. A model with no ``activation``
attribute at all is an error too, rather than a silent plain gradient.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from saliency_guide import layers
from saliency_guide.methods.gradients import logit_gradient
from saliency_guide.validation import check_inputs

__all__ = [
    "deconv_relu",
    "deconvolution",
    "guided_backprop",
    "guided_relu",
    "with_relu_rule",
]

Activation = Callable[[jax.Array], jax.Array]

#: The attribute a model calls its ReLUs through (see :mod:`saliency_guide.models`).
ACTIVATION_ATTRIBUTE = "activation"


# --------------------------------------------------------------------------- #
# The two backward rules.                                                      #
# --------------------------------------------------------------------------- #


@jax.custom_vjp
def deconv_relu(x: jax.Array) -> jax.Array:
  r"""ReLU whose backward pass is the deconvnet rule of Zeiler & Fergus (2014).

  Forward: :math:`\max(x, 0)`, the ordinary ReLU. Backward: the signal
  :math:`R` arriving from above is rectified and the forward mask is ignored,

  .. math:: R_\text{in} = \max(R, 0),

  so a unit that was *off* in the forward pass still passes a positive signal
  (the deconvnet "unpools and rectifies" the signal, it does not differentiate).
  At :math:`R = 0` the result is :math:`0`.

  Args:
    x: any float array.

  Returns:
    ``max(x, 0)``, same shape and dtype as ``x``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> x = jnp.array([-1.0, 0.0, 2.0, 3.0])
    >>> _, vjp = jax.vjp(deconv_relu, x)
    >>> vjp(jnp.array([1.0, 1.0, 1.0, -1.0]))[0]  # the mask is ignored
    Array([1., 1., 1., 0.], dtype=float32)

  References:
    Zeiler & Fergus, *Visualizing and Understanding Convolutional Networks*,
    ECCV 2014, arXiv:1311.2901.
  """
  return jax.nn.relu(x)


def _deconv_relu_fwd(x):
  return jax.nn.relu(x), None  # the rule does not depend on x: nothing to save


def _deconv_relu_bwd(_, g):
  return (jnp.maximum(g, 0),)


deconv_relu.defvjp(_deconv_relu_fwd, _deconv_relu_bwd)


@jax.custom_vjp
def guided_relu(x: jax.Array) -> jax.Array:
  r"""ReLU whose backward pass is the guided-backpropagation rule (Springenberg et al., 2015).

  Forward: :math:`\max(x, 0)`, the ordinary ReLU. Backward: the signal passes
  only where the unit was on in the forward pass (the gradient's mask) *and* the
  signal from above is positive (the deconvnet's rectification),

  .. math:: R_\text{in} = \max(R, 0) \cdot \mathbb{1}[x > 0].

  At :math:`x = 0` the mask is :math:`0`, as in the gradient of
  :func:`jax.nn.relu`; at :math:`R = 0` the result is :math:`0`.

  Args:
    x: any float array.

  Returns:
    ``max(x, 0)``, same shape and dtype as ``x``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> x = jnp.array([-1.0, 0.0, 2.0, 3.0])
    >>> _, vjp = jax.vjp(guided_relu, x)
    >>> vjp(jnp.array([1.0, 1.0, 1.0, -1.0]))[0]  # mask AND positive signal
    Array([0., 0., 1., 0.], dtype=float32)

  References:
    Springenberg, Dosovitskiy, Brox & Riedmiller, *Striving for Simplicity: The
    All Convolutional Net*, ICLR workshop 2015, arXiv:1412.6806.
  """
  return jax.nn.relu(x)


def _guided_relu_fwd(x):
  return jax.nn.relu(x), x > 0  # save the boolean mask, not x: 4x less memory


def _guided_relu_bwd(on, g):
  return (jnp.where(on, jnp.maximum(g, 0), jnp.zeros_like(g)),)


guided_relu.defvjp(_guided_relu_fwd, _guided_relu_bwd)


# --------------------------------------------------------------------------- #
# Swapping the rule into a copy of a model.                                    #
# --------------------------------------------------------------------------- #

_KNOWN_RELUS = (layers.relu, jax.nn.relu, deconv_relu, guided_relu)
_MISSING = object()
_PROBE = np.array([-3.0, -1.0, -0.25, 0.0, 0.25, 1.0, 3.0], np.float32)


def _is_relu(fn: object) -> bool:
  """Whether ``fn`` computes ``max(x, 0)``: known ReLUs, else a numerical probe."""
  if any(fn is known for known in _KNOWN_RELUS):
    return True
  if not callable(fn):
    return False
  try:
    with jax.ensure_compile_time_eval():  # concrete even while a jit is tracing
      out = np.asarray(fn(jnp.asarray(_PROBE)))
  except Exception:  # anything that cannot run on a float array is not a ReLU
    return False
  return out.shape == _PROBE.shape and np.array_equal(out, np.maximum(_PROBE, 0))


def _describe_path(path: tuple) -> str:
  return "model" + "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in path)


def _relu_modules(model: nnx.Module) -> list[nnx.Module]:
  """The submodules (``model`` included) whose ``activation`` is a ReLU.

  Raises:
    ValueError: an ``activation`` attribute is not a ReLU, or there is none.
  """
  found = []
  for path, module in nnx.iter_modules(model):
    fn = getattr(module, ACTIVATION_ATTRIBUTE, _MISSING)
    if fn is _MISSING:
      continue
    if not _is_relu(fn):
      raise ValueError(
          f"model: {_describe_path(path)}.{ACTIVATION_ATTRIBUTE} is "
          f"{getattr(fn, '__name__', repr(fn))!s}, not a ReLU (max(x, 0)); modified "
          "backward rules are defined for ReLUs only, and replacing it by a ReLU would "
          "change the model's forward pass"
      )
    found.append(module)
  if not found:
    raise ValueError(
        f"model: {type(model).__name__} has no replaceable ReLU (no submodule has an "
        f"'{ACTIVATION_ATTRIBUTE}' attribute), so a modified backward rule cannot be "
        "applied and the result would silently be the plain gradient; call every ReLU "
        f"as self.{ACTIVATION_ATTRIBUTE}(x) with self.{ACTIVATION_ATTRIBUTE} = "
        "saliency_guide.layers.relu, as the models in saliency_guide.models do"
    )
  return found


def _check_rule(relu: object) -> None:
  if not _is_relu(relu):
    raise TypeError(
        f"relu: expected a function computing max(x, 0) (e.g. guided_relu or deconv_relu), "
        f"got {getattr(relu, '__name__', repr(relu))!s}"
    )


def with_relu_rule(model: nnx.Module, relu: Activation) -> nnx.Module:
  r"""A copy of ``model`` in which every ReLU uses ``relu`` (and its backward rule).

  Every submodule attribute named ``activation`` (how the models of
  :mod:`saliency_guide.models` call their ReLUs) is set to ``relu`` on a copy;
  ``model`` itself is not modified. Works eagerly and inside ``jax.jit`` (on a
  model rebuilt in the traced function), so other methods, such
  as Guided Grad-CAM, can reuse it. The forward pass of the copy equals that of
  ``model``.

  Args:
    model: an ``nnx.Module`` whose ReLUs are called through ``activation``
      attributes.
    relu: the replacement, a function computing :math:`\max(x, 0)`, typically
      :func:`guided_relu` or :func:`deconv_relu`.

  Returns:
    The modified copy.

  Raises:
    ValueError: ``model`` has no ``activation`` attribute, or one that is not a
      ReLU.
    TypeError: ``relu`` does not compute :math:`\max(x, 0)`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> from saliency_guide.layers import relu
    >>> model = MLP(hidden=(8,), rngs=nnx.Rngs(0))
    >>> guided = with_relu_rule(model, guided_relu)
    >>> guided.activation is guided_relu, model.activation is relu
    (True, True)
    >>> x = jnp.ones((1, 28, 28, 1))
    >>> bool(jnp.array_equal(guided(x), model(x)))  # same forward pass
    True
  """
  _check_rule(relu)
  copy = nnx.clone(model)
  for module in _relu_modules(copy):
    setattr(module, ACTIVATION_ATTRIBUTE, relu)
  return copy


@functools.partial(jax.jit, static_argnames=("relu",))
def _modified_gradient(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    relu: Activation,
) -> jax.Array:
  """The target-logit gradient with every ReLU's backward rule replaced by ``relu``'s.

  ``relu`` is static: each rule has its own compiled function, and calls with
  the same rule, graph and shapes reuse it.
  """
  for module in _relu_modules(model):
    setattr(module, ACTIVATION_ATTRIBUTE, relu)
  return logit_gradient(model, images, targets)


def _modified_backprop(model, images, targets, relu):
  images, targets = check_inputs(model, images, targets)
  # A model without replaceable ReLUs fails while ``_modified_gradient`` traces
  # (same module paths in the message); a compiled call skips the module walk.
  return _modified_gradient(model, images, targets, relu)


# --------------------------------------------------------------------------- #
# The public methods.                                                          #
# --------------------------------------------------------------------------- #


def deconvolution(model: nnx.Module, images: jax.Array, targets: jax.Array) -> jax.Array:
  r"""Deconvnet saliency (Zeiler & Fergus, 2014): the logit's gradient with rectified ReLUs.

  The map is the backward pass of the target logit :math:`f_c` in which every
  ReLU sends down the rectified signal, whatever its forward input was:

  .. math::

     R^{(L)} = \frac{\partial f_c}{\partial a^{(L)}}, \qquad
     R^{(l)}_\text{in} = \max\!\big(R^{(l)}, 0\big), \qquad
     \text{map} = R^{(0)} \in \mathbb{R}^{H \times W \times C},

  while convolutions (transposed filters), max-pooling (the forward "switches")
  and dense layers back-propagate as in the gradient. Zeiler & Fergus
  reconstruct a single feature map layer by layer with a deconvnet; here the
  same rules are applied to the whole network, from the logit down, as in
  Springenberg et al. (2015).

  Args:
    model: a classifier returning logits whose ReLUs are called through
      ``activation`` attributes (``MLP``, ``CNN``, ``GapCNN``).
    images: float array ``(B, H, W, C)``, NHWC.
    targets: integer array ``(B,)``, the class whose logit is explained.

  Returns:
    Float32 array of the shape of ``images``.

  Raises:
    ValueError, TypeError: bad ``images``/``targets`` (see ``check_inputs``), or
      a model without a replaceable ReLU.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import CNN
    >>> model = CNN(channels=(4, 8), hidden=16, rngs=nnx.Rngs(0))
    >>> maps = deconvolution(model, jnp.ones((2, 28, 28, 1)), jnp.array([3, 7]))
    >>> maps.shape
    (2, 28, 28, 1)

  References:
    Zeiler & Fergus, *Visualizing and Understanding Convolutional Networks*,
    ECCV 2014, arXiv:1311.2901.
  """
  return _modified_backprop(model, images, targets, deconv_relu)


def guided_backprop(model: nnx.Module, images: jax.Array, targets: jax.Array) -> jax.Array:
  r"""Guided Backpropagation (Springenberg et al., 2015): gradient ∧ deconvnet at every ReLU.

  The map is the backward pass of the target logit :math:`f_c` in which every
  ReLU with forward input :math:`x^{(l)}` passes the signal only where the
  unit was on *and* the signal is positive:

  .. math::

     R^{(L)} = \frac{\partial f_c}{\partial a^{(L)}}, \qquad
     R^{(l)}_\text{in} = \max\!\big(R^{(l)}, 0\big) \cdot \mathbb{1}\big[x^{(l)} > 0\big], \qquad
     \text{map} = R^{(0)} \in \mathbb{R}^{H \times W \times C},

  while convolutions, max-pooling and dense layers back-propagate as in the
  gradient.

  Args:
    model: a classifier returning logits whose ReLUs are called through
      ``activation`` attributes (``MLP``, ``CNN``, ``GapCNN``).
    images: float array ``(B, H, W, C)``, NHWC.
    targets: integer array ``(B,)``, the class whose logit is explained.

  Returns:
    Float32 array of the shape of ``images``.

  Raises:
    ValueError, TypeError: bad ``images``/``targets`` (see ``check_inputs``), or
      a model without a replaceable ReLU.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import CNN
    >>> model = CNN(channels=(4, 8), hidden=16, rngs=nnx.Rngs(0))
    >>> maps = guided_backprop(model, jnp.ones((2, 28, 28, 1)), jnp.array([3, 7]))
    >>> maps.shape
    (2, 28, 28, 1)

  References:
    Springenberg, Dosovitskiy, Brox & Riedmiller, *Striving for Simplicity: The
    All Convolutional Net*, ICLR workshop 2015, arXiv:1412.6806.
  """
  return _modified_backprop(model, images, targets, guided_relu)
