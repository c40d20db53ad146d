"""Every method's un-validated core, for wrappers that compose methods.

A public method checks its arguments once and then runs a jitted *core* that
checks nothing. Wrappers such as :func:`~saliency_guide.methods.smoothgrad` need
that core directly: they check ``images``/``targets`` and the wrapped method's
options once, then trace the core many times inside one compiled program (a
``lax.scan`` over noise samples) instead of calling the public method, and
re-checking, once per chunk.

Each method module registers a *prepare* function: ``prepare(images, **options)``
checks the method's options against the (already checked) ``images`` and returns
a :class:`Core`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

import jax
from flax import nnx

__all__ = ["Core", "core", "register"]


class Core(NamedTuple):
  """A method with checked options: ``fn(model, images, targets, operands, **dict(static))``.

  Attributes:
    fn: a module-level, traceable function; the same object on every call, so
      that jitted wrappers taking it as a static argument compile once.
    static: hashable options, as a tuple of ``(name, value)`` pairs.
    operands: a pytree of arrays (``None`` if the method has none); arrays
      with one row per image may be applied to a batch of ``n × B`` images
      laid out as ``n`` copies of the ``B`` images (wrappers do this).
  """

  fn: Callable[..., jax.Array]
  static: tuple[tuple[str, Hashable], ...] = ()
  operands: Any = None

  def __call__(self, model: nnx.Module, images: jax.Array, targets: jax.Array) -> jax.Array:
    """The maps ``(B, H, W, C)`` (or ``(B, H, W)``) of checked ``images`` and ``targets``."""
    return self.fn(model, images, targets, self.operands, **dict(self.static))


# Weak keys: a wrapper such as ``smoothgrad(...)`` registers each method it returns,
# and the entry goes when that method does.
_PREPARE: weakref.WeakKeyDictionary[Callable[..., Any], Callable[..., Core | None]] = (
    weakref.WeakKeyDictionary()
)


def register(method: Callable[..., Any], prepare: Callable[..., Core | None]) -> None:
  """Record ``prepare(images, **options) -> Core`` as the core of the public ``method``.

  ``prepare`` may return ``None`` where the method has no core for these options
  (e.g. a SmoothGrad of a callable without one).
  """
  _PREPARE[method] = prepare


def core(method: Callable[..., Any], images: jax.Array, /, **options: Any) -> Core | None:
  """The :class:`Core` of a registered ``method`` with ``options`` checked, else ``None``.

  ``images`` are the checked images the core will explain (some options, such
  as a baseline array, are checked against their shape). ``method`` and
  ``images`` are positional-only, so that an option named ``method`` (the
  quadrature rule of Integrated Gradients) passes through.

  Example:
    >>> import jax.numpy as jnp
    >>> from saliency_guide import methods
    >>> c = core(methods.gradients, jnp.zeros((1, 28, 28, 1)))
    >>> c.fn.__name__
    '_gradients_core'
  """
  prepare = _PREPARE.get(method)
  return None if prepare is None else prepare(images, **options)
