"""Every method's un-validated core, for wrappers that compose methods.

A public method checks its arguments once and then runs a jitted *core* that
checks nothing:

.. code-block:: python

   def method(model, images, targets, **options):
     images, targets = check_inputs(model, images, targets)
     return _prepare(model, images, **options).run(model, images, targets)

``_prepare(model, images, **options)`` checks the method's options (against the
model and the already checked images) and returns a :class:`Core`. Wrappers such
as :func:`~saliency_guide.methods.smoothgrad` use that core directly: they check
``images``/``targets`` and the wrapped method's options once, then trace the core
many times inside one compiled program (a ``lax.scan`` over noise samples)
instead of calling the public method, and re-checking, once per chunk.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

import jax
from flax import nnx

from saliency_guide.validation import check_callable

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
    """The maps ``(B, H, W, C)`` (or ``(B, H, W)``) of checked ``images`` and ``targets``.

    Traceable: call it inside your own jitted function.
    """
    return self.fn(model, images, targets, self.operands, **dict(self.static))

  def run(self, model: nnx.Module, images: jax.Array, targets: jax.Array) -> jax.Array:
    """The same maps from one compiled call (compiled once per ``fn``, options and shapes)."""
    return _run(self.fn, self.static, model, images, targets, self.operands)


@functools.partial(jax.jit, static_argnames=("fn", "static"))
def _run(fn, static, model, images, targets, operands):
  return fn(model, images, targets, operands, **dict(static))


# Weak keys: a wrapper such as ``smoothgrad(...)`` registers each method it returns,
# and the entry goes when that method does.
_PREPARE: weakref.WeakKeyDictionary[Callable[..., Any], Callable[..., Core | None]] = (
    weakref.WeakKeyDictionary()
)


def register(method: Callable[..., Any], prepare: Callable[..., Core | None]) -> None:
  """Record ``prepare(model, images, **options) -> Core`` as the core of the public ``method``.

  ``prepare`` may return ``None`` where the method has no core for these options
  (e.g. a SmoothGrad of a callable without one).
  """
  _PREPARE[method] = prepare


def core(
    method: Callable[..., Any], model: nnx.Module, images: jax.Array, /, **options: Any
) -> Core | None:
  """The :class:`Core` of a registered ``method`` with ``options`` checked, else ``None``.

  ``model`` and ``images`` are those the core will explain (``images`` already
  checked): some options are checked against them (a layer name against the
  model's layers, a baseline array against the images' shape). The first three
  arguments are positional-only, so that an option named ``method`` (the
  quadrature rule of Integrated Gradients) passes through.

  Args:
    method: a public saliency method, e.g. :func:`~saliency_guide.methods.grad_cam`.
    model: the classifier.
    images: checked images ``(B, H, W, C)``.
    **options: the method's keyword options.

  Returns:
    The :class:`Core`, or ``None`` if ``method`` registered none (a user's own
    function).

  Raises:
    TypeError: ``method`` is not callable.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide import methods
    >>> from saliency_guide.models import CNN
    >>> model, x = CNN(rngs=nnx.Rngs(0)), jnp.zeros((1, 28, 28, 1))
    >>> c = core(methods.grad_cam, model, x, layer="conv1")
    >>> c.fn.__name__, c.static
    ('_grad_cam_core', (('layer', 'conv1'), ('upsample', True), ('relu', True),
     ('counterfactual', False)))
    >>> c(model, x, jnp.array([3])).shape  # traceable; c.run(...) compiles it
    (1, 28, 28)
  """
  check_callable("method", method, "a saliency method of saliency_guide.methods (or your own "
                 "function method(model, images, targets, **options))")
  try:
    prepare = _PREPARE.get(method)
  except TypeError:  # a callable that takes no weak reference cannot have been registered
    prepare = None
  return None if prepare is None else prepare(model, images, **options)
