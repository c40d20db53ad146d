r"""Manipulated explanations: an imperceptible change of the input that moves its map.

Dombrowski et al. (2019) find, for an image :math:`x`, a perturbed image
:math:`x_\text{adv}` whose explanation :math:`h(x_\text{adv})` is close to a
chosen target map :math:`h^t` while the network's output :math:`g` barely
changes,

.. math::

   \min_{x_\text{adv}} \;
   \big\| h(x_\text{adv}) - h^t \big\|^2 + \gamma\, \big\| g(x_\text{adv}) - g(x) \big\|^2,

here with the perturbation bounded, :math:`\|x_\text{adv} - x\|_\infty \le
\epsilon`, as in Ghorbani et al. (2019). The map of a ReLU network has a zero
input-derivative almost everywhere, so the map is differentiated through the
softplus-smoothed network (:func:`~saliency_guide.methods.with_softplus`) and
evaluated on the original one. The discussion, and which methods resist, is on
the tutorial page *Manipulated explanations*.

References:
  A. Ghorbani, A. Abid, J. Zou. *Interpretation of Neural Networks is
  Fragile.* AAAI 2019. arXiv:1710.10547.

  A.-K. Dombrowski, M. Alber, C. J. Anders, M. Ackermann, K.-R. Müller,
  P. Kessel. *Explanations can be manipulated and geometry is to blame.*
  NeurIPS 2019. arXiv:1906.07983.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from saliency_guide import methods
from saliency_guide.validation import (
    check_callable,
    check_inputs,
    check_maps,
    check_number,
    check_positive_int,
    describe,
)

__all__ = ["ManipulationResult", "manipulate", "normalized_map"]


class ManipulationResult(NamedTuple):
  """What :func:`manipulate` found, image by image (a JAX pytree).

  Attributes:
    images: the manipulated images :math:`x_\\text{adv}`, ``(B, H, W, C)``.
    maps_before: the method's maps of the original images on ``model``.
    maps_after: the method's maps of the manipulated images on ``model``.
    logits_before: ``model``'s logits of the original images, ``(B, classes)``.
    logits_after: ``model``'s logits of the manipulated images.
    targets: the explained classes, ``(B,)``.
    objective: the objective before each step, ``(steps, B)``, on the network
      the map is differentiated through.
  """

  images: jax.Array
  maps_before: jax.Array
  maps_after: jax.Array
  logits_before: jax.Array
  logits_after: jax.Array
  targets: jax.Array
  objective: jax.Array

  @property
  def prediction_kept(self) -> jax.Array:
    """Whether each manipulated image keeps the original's predicted class, ``(B,)``."""
    return self.logits_after.argmax(-1) == self.logits_before.argmax(-1)


def normalized_map(maps: jax.Array) -> jax.Array:
  r"""A map as Dombrowski et al. compare maps: absolute, summed over channels, summing to one.

  .. math:: h_{ij} = \frac{\sum_c |M_{ijc}|}{\sum_{i'j'c} |M_{i'j'c}|}

  An all-zero map stays zero.

  Args:
    maps: ``(B, H, W, C)`` or ``(B, H, W)``.

  Returns:
    float32 array ``(B, H, W)``, non-negative, each map summing to 1 (or 0).

  Example:
    >>> import jax.numpy as jnp
    >>> normalized_map(jnp.array([[[1.0, -3.0]]])).tolist()
    [[[0.25, 0.75]]]
  """
  maps = jnp.abs(jnp.asarray(maps, jnp.float32))
  if maps.ndim == 4:
    maps = maps.sum(-1)
  total = maps.sum(axis=(1, 2), keepdims=True)
  return maps / jnp.where(total > 0, total, 1.0)


def manipulate(
    method: Callable[..., jax.Array],
    model: nnx.Module,
    images: jax.Array,
    target_maps: jax.Array,
    *,
    targets: jax.Array | None = None,
    options: Mapping[str, Any] | None = None,
    epsilon: float = 0.03,
    steps: int = 200,
    learning_rate: float = 2e-3,
    gamma: float = 1.0,
    beta: float | None = 100.0,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> ManipulationResult:
  r"""Perturb images imperceptibly so that their saliency maps approach target maps.

  Minimises, for each image :math:`x` (Dombrowski et al., 2019, Eq. 4, with
  the budget of Ghorbani et al., 2019),

  .. math::

     \mathcal L(x_\text{adv}) =
     \frac{\big\| h_\beta(x_\text{adv}) - h^t \big\|^2}{\| h^t \|^2}
     + \frac{\gamma}{K} \big\| f(x_\text{adv}) - f(x) \big\|^2,
     \qquad
     \|x_\text{adv} - x\|_\infty \le \epsilon,
     \quad x_\text{adv} \in [\text{low}, \text{high}],

  with :math:`h = ` :func:`normalized_map` of the method's map of the target
  class (absolute, summed over channels, summing to one), :math:`h^t` the
  normalised ``target_maps`` and :math:`f` the :math:`K` logits of ``model``
  (the output the attack must keep). :math:`h_\beta` is the map of
  ``with_softplus(model, beta)``: on a ReLU network the gradient map is
  piecewise constant in the input, its input-derivative zero almost everywhere,
  and the attack needs the smoothed network's second derivatives (Dombrowski
  et al.'s procedure). ``beta=None`` differentiates ``model`` itself (enough for
  maps that depend on the input through activations, e.g. Grad-CAM, or for a
  model that is already smooth). The map term is relative (1 for a zero map);
  the paper's fixed prefactors are this up to a rescaling of :math:`\gamma`.

  The perturbation :math:`\delta = x_\text{adv} - x` starts at zero and takes
  ``steps`` Adam steps (``optax.adam``), each followed by the projection onto
  the budget (clip :math:`\delta` to :math:`[-\epsilon, \epsilon]`, then
  :math:`x + \delta` to the value range), all in one compiled ``lax.scan``.
  The maps and logits of the result are those of ``model`` (not smoothed),
  computed by ``method`` with ``options``.

  Args:
    method: a saliency method of :mod:`saliency_guide.methods` (one with a
      core, :func:`~saliency_guide.methods.core`), e.g.
      :func:`~saliency_guide.methods.gradients`, or a
      :func:`~saliency_guide.methods.smoothgrad` of one.
    model: the classifier (returns logits).
    images: float array ``(B, H, W, C)`` in ``value_range``.
    target_maps: ``(B, H, W)`` or ``(B, H, W, C)``, the maps to aim at (only
      their normalised magnitude counts); none may be all zero.
    targets: the class whose map is manipulated, ``(B,)``; default the
      predicted class.
    options: keyword options of ``method`` (e.g. ``{"steps": 8}``), for the
      attack and for the maps of the result.
    epsilon: the budget :math:`\epsilon > 0`, per pixel, in the images' units.
    steps: number of Adam steps.
    learning_rate: Adam's step size (in the images' units).
    gamma: weight :math:`\gamma \ge 0` of the output term.
    beta: softplus sharpness of the network differentiated, or ``None`` for
      ``model`` itself.
    value_range: ``(low, high)``, the valid pixel values.

  Returns:
    :class:`ManipulationResult`.

  Raises:
    TypeError, ValueError: a method without a core, bad images, targets,
      target maps (wrong shape, an all-zero map), options or numbers, or images
      outside ``value_range`` (the messages name the argument).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide import methods
    >>> from saliency_guide.models import MLP
    >>> model = MLP(hidden=(32,), rngs=nnx.Rngs(0))
    >>> x = jax.random.uniform(jax.random.key(0), (2, 28, 28, 1))
    >>> square = jnp.zeros((2, 28, 28)).at[:, :8, :8].set(1.0)  # aim at a corner
    >>> result = manipulate(methods.gradients, model, x, square, epsilon=0.05, steps=50)
    >>> float(jnp.abs(result.images - x).max()) <= 0.05 + 1e-6
    True
    >>> corner = lambda m: normalized_map(m)[:, :8, :8].sum(axis=(1, 2))  # map mass there
    >>> bool((corner(result.maps_after) > corner(result.maps_before)).all())
    True

  References:
    A.-K. Dombrowski, M. Alber, C. J. Anders, M. Ackermann, K.-R. Müller,
    P. Kessel. *Explanations can be manipulated and geometry is to blame.*
    NeurIPS 2019. arXiv:1906.07983.

    A. Ghorbani, A. Abid, J. Zou. *Interpretation of Neural Networks is
    Fragile.* AAAI 2019. arXiv:1710.10547.
  """
  check_callable("method", method, "a saliency method method(model, images, targets, **options)")
  if options is not None and not isinstance(options, Mapping):
    raise TypeError(f"options: expected a mapping of the method's options or None, got "
                    f"{describe(options)}")
  options = dict(options or {})
  epsilon = check_number("epsilon", epsilon, hint=" (the per-pixel budget)")
  steps = check_positive_int("steps", steps)
  learning_rate = check_number("learning_rate", learning_rate)
  gamma = check_number("gamma", gamma, inclusive=True)
  low, high = _check_value_range(value_range)
  if targets is None:  # the predicted class (images checked first, for a clear message)
    images, _ = check_inputs(model, images, np.zeros(len(images), np.int32))
    targets = np.asarray(_logits(model, images).argmax(-1), np.int32)
  images, targets = check_inputs(model, images, targets)
  outside = int(_count_outside(images, low, high))
  if outside:
    raise ValueError(f"images: expected values in value_range [{low}, {high}], got {outside} "
                     "value(s) outside it; pass the images' range as value_range")
  target_maps = normalized_map(check_maps("target_maps", target_maps, images))
  if not bool((target_maps.sum(axis=(1, 2)) > 0).all()):
    raise ValueError("target_maps: expected maps with some non-zero value, got an all-zero map")
  evaluate = _core(method, model, images, options)
  if beta is None:
    attacked, through = model, evaluate
  else:
    attacked = methods.with_softplus(model, check_number("beta", beta))
    through = _core(method, attacked, images, options)
  hyper = np.asarray([epsilon, learning_rate, gamma, low, high], np.float32)
  try:
    adversarial, objective = _attack(
        through.fn, through.static, attacked, model, images, targets, through.operands,
        target_maps, hyper, steps=steps)
  except (jax.errors.UnexpectedTracerError, ValueError) as error:
    if beta is None:
      raise
    raise ValueError(
        f"beta: the method's map cannot be differentiated through with_softplus(model, "
        f"{beta}) ({type(error).__name__}: {str(error).splitlines()[0]}); a class-activation "
        "method reads the model's layers, which the smoothed model does not expose, and a "
        "smooth model has no ReLU to replace: pass beta=None to differentiate the model "
        "itself (a class-activation map depends on the input through the layer's "
        "activations, so its input-derivative is not zero)"
    ) from error
  maps_before = evaluate.run(model, images, targets)
  maps_after = evaluate.run(model, adversarial, targets)
  return ManipulationResult(
      images=adversarial, maps_before=maps_before, maps_after=maps_after,
      logits_before=_logits(model, images), logits_after=_logits(model, adversarial),
      targets=targets, objective=objective)


def _check_value_range(value_range: Any) -> tuple[float, float]:
  if not (isinstance(value_range, tuple | list) and len(value_range) == 2):
    raise TypeError(f"value_range: expected a pair (low, high), got {describe(value_range)}")
  low = check_number("value_range[0]", value_range[0], minimum=-np.inf)
  high = check_number("value_range[1]", value_range[1], minimum=low)
  return low, high


def _core(method: Callable[..., jax.Array], model: nnx.Module, images: jax.Array,
          options: dict[str, Any]) -> methods.Core:
  found = methods.core(method, model, images, **options)
  if found is None:
    raise TypeError(
        f"method: expected a saliency method of saliency_guide.methods (or a smoothgrad of "
        f"one), whose core can be differentiated, got {describe(method)}")
  return found


@jax.jit
def _logits(model: nnx.Module, images: jax.Array) -> jax.Array:
  return model(images)


@jax.jit
def _count_outside(images: jax.Array, low: float, high: float) -> jax.Array:
  return jnp.sum((images < low) | (images > high))


def _project(images: jax.Array, delta: jax.Array, epsilon: jax.Array, low: jax.Array,
             high: jax.Array) -> jax.Array:
  """:math:`\\delta` clipped to the budget, then :math:`x + \\delta` to the value range."""
  delta = jnp.clip(delta, -epsilon, epsilon)
  return jnp.clip(images + delta, low, high) - images


@functools.partial(jax.jit, static_argnames=("fn", "static", "steps"))
def _attack(
    fn: Callable[..., jax.Array],
    static: tuple[tuple[str, Hashable], ...],
    attacked: nnx.Module,
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    operands: Any,
    target_maps: jax.Array,
    hyper: jax.Array,
    *,
    steps: int,
) -> tuple[jax.Array, jax.Array]:
  """Projected Adam on the objective; returns ``(images + delta, objective (steps, B))``."""
  epsilon, learning_rate, gamma, low, high = hyper
  logits = model(images)
  target_norm = jnp.sum(target_maps**2, axis=(1, 2))

  def objective(delta):  # per image, (B,)
    x = images + delta
    h = normalized_map(fn(attacked, x, targets, operands, **dict(static)))
    map_term = jnp.sum((h - target_maps) ** 2, axis=(1, 2)) / target_norm
    output_term = jnp.mean((model(x) - logits) ** 2, axis=-1)
    return map_term + gamma * output_term

  def total(delta):
    values = objective(delta)
    return values.sum(), values  # images do not interact: the sum's gradient is per image

  optimizer = optax.adam(learning_rate)

  def step(carry, _):
    delta, state = carry
    (_, values), grad = jax.value_and_grad(total, has_aux=True)(delta)
    updates, state = optimizer.update(grad, state, delta)
    delta = _project(images, optax.apply_updates(delta, updates), epsilon, low, high)
    return (delta, state), values

  delta = jnp.zeros_like(images)
  (delta, _), values = jax.lax.scan(step, (delta, optimizer.init(delta)), length=steps)
  return images + delta, values
