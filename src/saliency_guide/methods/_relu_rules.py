r"""Swapping the backward rule of every ReLU of a model (Deconvolution, Guided Backprop).

A modified-backpropagation method is the gradient of the target logit taken on a
copy of the model whose ReLUs are replaced by a :func:`jax.custom_vjp` ReLU
(:func:`~saliency_guide.methods.deconv_relu`,
:func:`~saliency_guide.methods.guided_relu`): same forward pass, different
backward rule. The models of :mod:`saliency_guide.models` call every ReLU
through an attribute named ``activation``; :func:`replace_relus` sets it on a
copy. An ``activation`` that is not a ReLU (checked numerically, so any
implementation of :math:`\max(x, 0)` is accepted), or a model with none, is an
error rather than a silent plain gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from saliency_guide import layers

__all__ = ["ACTIVATION_ATTRIBUTE", "replace_relus", "with_relu_rule"]

Activation = Callable[[jax.Array], jax.Array]

#: The attribute a model calls its ReLUs through (see :mod:`saliency_guide.models`).
ACTIVATION_ATTRIBUTE = "activation"

_KNOWN_RELUS = (layers.relu, jax.nn.relu)
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


def replace_relus(model: nnx.Module, relu: Activation) -> nnx.Module:
  """A copy of ``model`` whose ``activation`` attributes are ``relu`` (``relu`` is not checked).

  The traceable part of :func:`with_relu_rule`, for the methods' cores (inside
  ``jax.jit`` the copy costs nothing once traced). The model's ``activation``
  attributes are checked here, while the core is traced: a method's ``prepare``
  does not see the model.

  Raises:
    ValueError: ``model`` has no ``activation`` attribute, or one that is not a ReLU.
  """
  copy = nnx.clone(model)
  for module in _relu_modules(copy):
    setattr(module, ACTIVATION_ATTRIBUTE, relu)
  return copy


def with_relu_rule(model: nnx.Module, relu: Activation) -> nnx.Module:
  r"""A copy of ``model`` in which every ReLU uses ``relu`` (and its backward rule).

  Every submodule attribute named ``activation`` (how the models of
  :mod:`saliency_guide.models` call their ReLUs) is set to ``relu`` on a copy;
  ``model`` itself is not modified. Works eagerly and inside ``jax.jit`` (on a
  model rebuilt in the traced function). The forward pass of the copy equals
  that of ``model``.

  Args:
    model: an ``nnx.Module`` whose ReLUs are called through ``activation``
      attributes.
    relu: the replacement, a function computing :math:`\max(x, 0)`, typically
      :func:`~saliency_guide.methods.guided_relu` or
      :func:`~saliency_guide.methods.deconv_relu`.

  Returns:
    The modified copy.

  Raises:
    ValueError: ``model`` has no ``activation`` attribute, or one that is not a
      ReLU.
    TypeError: ``relu`` does not compute :math:`\max(x, 0)`.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> from saliency_guide.layers import relu
    >>> from saliency_guide.methods import guided_relu
    >>> model = MLP(hidden=(8,), rngs=nnx.Rngs(0))
    >>> guided = with_relu_rule(model, guided_relu)
    >>> guided.activation is guided_relu, model.activation is relu
    (True, True)
    >>> x = jnp.ones((1, 28, 28, 1))
    >>> bool(jnp.array_equal(guided(x), model(x)))  # same forward pass
    True
  """
  if not _is_relu(relu):
    raise TypeError(
        f"relu: expected a function computing max(x, 0) (e.g. guided_relu or deconv_relu), "
        f"got {getattr(relu, '__name__', repr(relu))!s}"
    )
  return replace_relus(model, relu)
