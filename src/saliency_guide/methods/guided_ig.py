r"""Guided IG: an integration path that moves the features of smallest gradient first.

.. math::

   \mathrm{GuidedIG}(x) = \sum_{k=1}^{n} (x^{(k)} - x^{(k-1)}) \odot \nabla f_c(x^{(k-1)}),
   \qquad x^{(0)} = x', \quad x^{(n)} = x,

where each step of the path moves, among the features not yet at their upper
bound, the fraction with the smallest :math:`|\nabla f_c|` until the L1
distance to :math:`x` has shrunk by :math:`\lVert x - x' \rVert_1 / n`, every
feature staying within ``max_dist`` (in units of :math:`x - x'`) of the straight
line (PAIR's ``saliency`` 0.2.1, ``saliency/core/guided_ig.py``).

References:
  A. Kapishnikov, S. Venugopalan, B. Avci, B. Wedin, M. Terry, T. Bolukbasi.
  *Guided Integrated Gradients: an Adaptive Path Method for Removing Noise.*
  CVPR 2021. arXiv:2106.09788.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from saliency_guide.methods._cores import Core, register
from saliency_guide.methods._path_engine import _pad
from saliency_guide.methods.gradients import _logit_gradient
from saliency_guide.validation import (
    check_array,
    check_inputs,
    check_number,
    check_positive_int,
)

__all__ = ["guided_ig"]

# "L1 distance reached" within this fraction of the distance, when the path runs in
# float32 (a core traced without x64): float32 sums of H·W·C terms are only good to
# ~1e-7 relative, so PAIR's float64 test (rel_tol=abs_tol=1e-9) would never pass.
_L1_RTOL = 1e-5


def guided_ig(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    baseline: jax.Array | float | None = None,
    steps: int = 200,
    fraction: float = 0.25,
    max_dist: float = 0.02,
    internal_batch_size: int = 64,
) -> jax.Array:
  r"""Guided IG of the target class logit: a path that avoids high-gradient regions.

  Integrated Gradients integrates along the straight line from a baseline
  :math:`x'` to the input :math:`x`; where that line crosses regions of large
  gradient for features that matter little, the sum picks up noise.
  Kapishnikov et al. (2021) let the path adapt: at each of ``steps`` steps it
  closes :math:`1/n` of the L1 distance :math:`\lVert x - x' \rVert_1` by
  moving first the features whose gradient of :math:`F = f_c` (the target
  class **logit**) is smallest in magnitude, and accumulates

  .. math::

     \mathrm{GuidedIG}(x) = \sum_{k=1}^{n}
       \big(x^{(k)} - x^{(k-1)}\big) \odot \nabla F\big(x^{(k-1)}\big),

  a left Riemann sum along the chosen path, so
  :math:`\sum_i \mathrm{GuidedIG}_i(x) \approx F(x) - F(x')` (completeness up
  to discretisation). As in PAIR's ``saliency`` 0.2.1 (``guided_ig_impl``), step
  :math:`k` with :math:`\alpha = k/n`:

  1. every feature is kept within ``max_dist`` of the straight line:
     feature :math:`i` lies between :math:`x'_i + \alpha_{\min}(x_i - x'_i)`
     and :math:`x'_i + \alpha_{\max}(x_i - x'_i)`,
     :math:`\alpha_{\min/\max} = \alpha \mp` ``max_dist`` clipped to
     :math:`[0, 1]`; features behind are first raised to the lower bound;
  2. until the L1 distance to :math:`x` equals
     :math:`(1 - \alpha)\lVert x - x'\rVert_1`: take the features not at their
     upper bound whose :math:`|\partial F/\partial x_i|` is at most the
     ``fraction``-quantile (numpy's ``"lower"`` quantile) of :math:`|\nabla F|`
     over **all** features, features at their upper bound counted as
     :math:`+\infty`; move them all to the upper bound if that is not enough,
     else the fraction :math:`\gamma` of the way that closes the gap exactly.

  ``max_dist = 0`` is the straight line: Integrated Gradients, left Riemann
  rule. Features equal to the baseline (on MNIST with the black baseline, the
  background) never move but count in the quantile: when more than
  ``1 − fraction`` of the features are such, every movable feature is selected
  at every step and Guided IG is Integrated Gradients too.

  **Agreement with PAIR.** The path's bookkeeping (positions, L1 distances,
  :math:`\gamma`) is float64, as in PAIR (this function enables ``jax_enable_x64``
  around its compiled call; the model still sees float32 points), and "distance
  reached" is PAIR's ``math.isclose(rel_tol=1e-9, abs_tol=1e-9)``. Traced as a
  core without x64 (inside a wrapper) it falls back to float32 with a relative
  test of :math:`10^{-5}\lVert x - x'\rVert_1`. Ties: features whose
  :math:`|\partial F/\partial x_i|` equal the quantile are selected together,
  as in PAIR; a selection can still differ where a summation-order difference
  in the last bit of an L1 sum decides "distance reached" or :math:`\gamma > 1`,
  or where float32 rounding of a path point lands on a ReLU or max-pool switch.

  Memory: images are processed ``internal_batch_size`` at a time; the path is
  a ``lax.scan`` over steps (one gradient call per step for the whole group),
  each step a ``lax.while_loop`` over the selection rounds.

  Args:
    model: a classifier returning logits ``(B, classes)``.
    images: float array ``(B, H, W, C)`` (NHWC), finite values.
    targets: integer array ``(B,)``, the class to explain for each image.
    baseline: ``None`` (black, zeros) or a float array of shape ``()``,
      ``(H, W, C)``, ``(1, H, W, C)`` or ``(B, H, W, C)``.
    steps: number of steps :math:`n` of the path.
    fraction: the quantile in :math:`[0, 1]` of :math:`|\nabla F|` below which
      features are moved in a selection round.
    max_dist: how far in :math:`[0, 1]` (in :math:`\alpha`) a feature may
      leave the straight line; 0 gives Integrated Gradients, 1 no constraint.
    internal_batch_size: images per group (one gradient call per group and step).

  Returns:
    float32 array ``(B, H, W, C)``.

  Raises:
    TypeError, ValueError: bad ``images``/``targets``/``baseline``, ``steps``
      not a positive integer, ``fraction``/``max_dist`` outside :math:`[0, 1]`.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> from saliency_guide.methods import guided_ig
    >>> model = MLP(rngs=nnx.Rngs(0))
    >>> x = jnp.linspace(0, 1, 2 * 784).reshape(2, 28, 28, 1)
    >>> guided_ig(model, x, jnp.array([3, 7]), steps=16).shape
    (2, 28, 28, 1)

  References:
    A. Kapishnikov, S. Venugopalan, B. Avci, B. Wedin, M. Terry, T. Bolukbasi.
    *Guided Integrated Gradients: an Adaptive Path Method for Removing Noise.*
    CVPR 2021. arXiv:2106.09788.
  """
  images, targets = check_inputs(model, images, targets)
  core = _prepare(model, images, baseline=baseline, steps=steps, fraction=fraction,
                  max_dist=max_dist, internal_batch_size=internal_batch_size)
  with jax.enable_x64(True):  # the path's bookkeeping in float64, as PAIR's
    return core.run(model, images, targets)


def _guided_ig_group(model, x_in, x_base, t, *, steps, index, max_dist, rounds):
  """Guided IG of one group of images ``(m, H, W, C)`` (PAIR's ``guided_ig_impl``, batched)."""
  m = x_in.shape[0]
  # float64 where enabled (guided_ig enables it): the model still sees float32.
  wide = jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32
  flat = lambda a: a.reshape(m, -1).astype(wide)  # noqa: E731
  xi, xb = flat(x_in), flat(x_base)
  d = xi - xb
  movable = d != 0
  l1_total = jnp.abs(d).sum(axis=1)
  # PAIR: math.isclose(l1_target, l1, rel_tol=1e-9, abs_tol=1e-9) on float64 sums.
  rtol, atol = (1e-9, 1e-9) if wide == jnp.float64 else (_L1_RTOL, 0.0)

  def step(carry, k):
    x, attr = carry  # (m, N) each
    grad = flat(_logit_gradient(model, x.reshape(x_in.shape).astype(x_in.dtype), t))
    alpha = (k.astype(wide) + 1.0) / steps
    a_min = jnp.maximum(alpha - max_dist, 0.0)
    a_max = jnp.minimum(alpha + max_dist, 1.0)
    x_min, x_max = xb + d * a_min, xb + d * a_max
    l1_target = (l1_total * (1.0 - alpha))[:, None]
    # 1. Features behind the band are raised to its lower edge (features equal to
    #    the baseline have alpha = alpha_max, as PAIR's NaN → alpha_max).
    x_alpha = jnp.where(movable, (x - xb) / jnp.where(movable, d, 1.0), a_max)
    start = jnp.where(x_alpha < a_min, x_min, x)

    # 2. Selection rounds until the L1 distance to the input is the target.
    def round_(state):
      y, done, r = state
      l1 = jnp.abs(y - xi).sum(axis=1, keepdims=True)
      tol = jnp.maximum(rtol * jnp.maximum(jnp.abs(l1), jnp.abs(l1_target)), atol)
      close = (jnp.abs(l1 - l1_target) <= tol) | done
      g = jnp.where(y == x_max, jnp.inf, jnp.abs(grad))
      threshold = jnp.sort(g, axis=1)[:, index][:, None]  # numpy's "lower" quantile
      s = (g <= threshold) & (g != jnp.inf)
      l1_s = jnp.sum(jnp.abs(y - x_max) * s, axis=1, keepdims=True)
      gamma = jnp.where(l1_s > 0, (l1 - l1_target) / jnp.where(l1_s > 0, l1_s, 1.0), jnp.inf)
      moved = jnp.where(s, jnp.where(gamma > 1.0, x_max, y + (x_max - y) * gamma), y)
      return jnp.where(close, y, moved), close | (gamma <= 1.0), r + 1

    def more(state):
      _, done, r = state
      return ~jnp.all(done) & (r < rounds)

    end, _, _ = jax.lax.while_loop(
        more, round_, (start, jnp.zeros((m, 1), bool), jnp.asarray(0)))
    return (end, attr + (end - x) * grad), None

  (_, attr), _ = jax.lax.scan(step, (xb, jnp.zeros_like(xi)), jnp.arange(steps))
  return attr.reshape(x_in.shape).astype(x_in.dtype)


def _guided_ig_core(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    operands: jax.Array,
    *,
    steps: int,
    fraction: float,
    max_dist: float,
    per_pass: int,
) -> jax.Array:
  """Traceable core of :func:`guided_ig`; ``operands`` are the baselines ``(B, H, W, C)``."""
  baselines = operands
  batch = images.shape[0]
  if baselines.shape[0] != batch:  # n copies of the batch (wrappers)
    baselines = jnp.tile(baselines, (batch // baselines.shape[0], 1, 1, 1))
  features = math.prod(images.shape[1:])
  index = math.floor((features - 1) * fraction)  # numpy's quantile(method="lower")
  groups = math.ceil(batch / per_pass)
  per_group = math.ceil(batch / groups)
  padded = groups * per_group
  # Padding images equal their baselines (zeros): attribution zero, dropped anyway.
  group = lambda a: _pad(a, padded).reshape(groups, per_group, *a.shape[1:])  # noqa: E731
  one = functools.partial(_guided_ig_group, model, steps=steps, index=index,
                          max_dist=max_dist, rounds=features + 2)
  maps = jax.lax.map(lambda a: one(*a), (group(images), group(baselines), group(targets)))
  return maps.reshape(padded, *images.shape[1:])[:batch]


def _prepare(
    model: nnx.Module,
    images: jax.Array,
    *,
    baseline: jax.Array | float | None = None,
    steps: int = 200,
    fraction: float = 0.25,
    max_dist: float = 0.02,
    internal_batch_size: int = 64,
) -> Core:
  """The options of :func:`guided_ig` checked, as a :class:`Core`."""
  del model
  baselines = (jnp.zeros_like(images) if baseline is None
               else check_array("baseline", baseline, images.shape))
  steps = check_positive_int("steps", steps)
  fraction = check_number("fraction", fraction, inclusive=True, hint=" and <= 1")
  max_dist = check_number("max_dist", max_dist, inclusive=True, hint=" and <= 1")
  for name, value in (("fraction", fraction), ("max_dist", max_dist)):
    if value > 1:
      raise ValueError(f"{name}: expected a finite number >= 0.0 and <= 1, got {value}")
  per_pass = check_positive_int("internal_batch_size", internal_batch_size)
  static = (("steps", steps), ("fraction", fraction), ("max_dist", max_dist),
            ("per_pass", per_pass))
  return Core(_guided_ig_core, static, baselines)


register(guided_ig, _prepare)
