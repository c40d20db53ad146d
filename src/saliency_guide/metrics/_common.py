"""What every metric shares: per-pixel scores, pixel rankings, summary statistics.

Saliency methods return two kinds of maps: per-feature maps ``(B, H, W, C)``
(gradients, Integrated Gradients, ...) and per-pixel maps ``(B, H, W)`` (the
CAM family). Every metric first reduces a map to one **score per pixel** by
summing over channels (:func:`pixel_scores`): the total attribution a pixel
receives. On MNIST (one channel) that is the map itself.

A measurement is reported as mean ± standard error (:func:`mean_and_sem`), and a
method is said to beat a random ranking only when its paired advantage exceeds
``z`` standard errors (:func:`compare_to_random`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from saliency_guide.validation import check_flag, check_key, check_number, describe

__all__ = [
    "COMPARISON_VERDICTS",
    "RandomComparison",
    "compare_to_random",
    "comparison_rule",
    "mean_and_sem",
    "pixel_scores",
    "rank_pixels",
]

COMPARISON_VERDICTS = ("beats random", "not distinguishable from random", "worse than random")
"""The verdicts of :func:`compare_to_random`, best first."""


def pixel_scores(attributions: jax.Array) -> jax.Array:
  r"""One score per pixel: maps ``(B, H, W, C)`` summed over channels; ``(B, H, W)`` unchanged.

  .. math:: s_{b,h,w} = \sum_{c} \phi_{b,h,w,c}

  Summing keeps the sign (a pixel whose channels push the logit in opposite
  directions scores their net effect), which is what deletion, insertion and
  ROAR rank by.

  Args:
    attributions: ``(B, H, W, C)`` or ``(B, H, W)``.

  Returns:
    float32 array ``(B, H, W)``.

  Example:
    >>> import jax.numpy as jnp
    >>> pixel_scores(jnp.ones((2, 4, 4, 3))).shape
    (2, 4, 4)
    >>> float(pixel_scores(jnp.ones((2, 4, 4, 3)))[0, 0, 0])
    3.0
  """
  attributions = jnp.asarray(attributions, jnp.float32)
  if attributions.ndim == 4:
    return attributions.sum(axis=-1)
  if attributions.ndim == 3:
    return attributions
  raise ValueError(
      f"attributions: expected rank 3 (B, H, W) or 4 (B, H, W, C), got shape {attributions.shape}"
  )


def rank_pixels(scores: jax.Array, key: jax.Array, absolute: bool = False) -> jax.Array:
  """Rank of every pixel, 0 for the most important, ties broken at random.

  Pixels are ordered by decreasing score (or decreasing ``|score|``). Equal
  scores are common — gradient × input is exactly zero on the whole MNIST
  background — and a stable sort would break those ties by pixel index,
  removing the top rows of the image first; a random order among tied pixels
  (drawn from ``key``, independently per image) is the unbiased choice.

  Args:
    scores: ``(B, H, W)`` per-pixel scores.
    key: a JAX PRNG key for the tie-breaking order.
    absolute: rank by ``|score|``.

  Returns:
    int32 array ``(B, H, W)``: a permutation of ``0 .. H*W-1`` per image.

  Raises:
    TypeError: ``scores`` is not an array, ``key`` not a PRNG key, ``absolute``
      not a bool.
    ValueError: ``scores`` is not of rank 3 (sum a ``(B, H, W, C)`` map over its
      channels first: :func:`pixel_scores`).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> rank_pixels(jnp.array([[[0.1, 3.0], [-1.0, 2.0]]]), jax.random.key(0)).tolist()
    [[[2, 0], [3, 1]]]
  """
  if not hasattr(scores, "shape") or not hasattr(scores, "dtype"):
    raise TypeError(f"scores: expected an array (B, H, W) of per-pixel scores, got "
                    f"{describe(scores)}")
  if scores.ndim != 3:
    raise ValueError(f"scores: expected rank 3 (B, H, W), got shape {tuple(scores.shape)}; "
                     "sum (B, H, W, C) maps over their channels first (pixel_scores)")
  key = check_key(key, "rank_pixels (its tie-breaking)")
  return _rank_pixels(scores, key, absolute=check_flag("absolute", absolute))


@functools.partial(jax.jit, static_argnames=("absolute",))
def _rank_pixels(scores: jax.Array, key: jax.Array, absolute: bool = False) -> jax.Array:
  """Jitted core of :func:`rank_pixels` on checked arguments (also called inside ``jit``)."""
  batch = scores.shape[0]
  flat = scores.reshape(batch, -1)
  if absolute:
    flat = jnp.abs(flat)
  tiebreak = jax.random.uniform(key, flat.shape)
  # lexsort: the last key is the primary one.
  order = jax.vmap(lambda s, t: jnp.lexsort((t, -s)))(flat, tiebreak)
  ranks = jax.vmap(lambda o: jnp.zeros_like(o).at[o].set(jnp.arange(o.size, dtype=o.dtype)))(order)
  return ranks.astype(jnp.int32).reshape(scores.shape)


def mean_and_sem(values: Any, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
  r"""Mean and standard error of the mean, ignoring NaNs.

  .. math:: \bar v = \frac1n \sum_i v_i, \qquad
            \mathrm{s.e.} = \sqrt{\frac{\sum_i (v_i - \bar v)^2}{n (n - 1)}}

  Args:
    values: array of measurements; NaN entries (e.g. the rank correlation of
      a constant map) are left out.
    axis: the axis of the repeated measurements.

  Returns:
    ``(mean, sem)`` NumPy arrays (``sem`` is NaN where fewer than two values).

  Example:
    >>> m, s = mean_and_sem([1.0, 2.0, 3.0])
    >>> float(m), round(float(s), 4)
    (2.0, 0.5774)
  """
  values = np.asarray(values, np.float64)
  n = np.sum(~np.isnan(values), axis=axis)
  with np.errstate(invalid="ignore", divide="ignore"):
    mean = np.nansum(values, axis=axis) / n
    sq = np.nansum((values - np.expand_dims(mean, axis)) ** 2, axis=axis)
    sem = np.sqrt(sq / (n * (n - 1)))
  return mean, np.where(n >= 2, sem, np.nan)


@dataclasses.dataclass(frozen=True)
class RandomComparison:
  """A method's paired comparison with a random ranking (:func:`compare_to_random`).

  Attributes:
    verdict: one of :data:`COMPARISON_VERDICTS`.
    difference: mean over the pairs of (method − random), in the metric's units
      (its sign is the metric's: for deletion AUC a negative difference is good).
    difference_sem: standard error of ``difference``.
    method_mean, method_sem: the method's mean and its standard error.
    random_mean, random_sem: the random ranking's mean and its standard error.
    n: number of pairs used (pairs with a NaN are left out).
    higher_is_better: whether a higher value of the metric is better.
    z: the number of standard errors the verdict requires.
  """

  verdict: str
  difference: float
  difference_sem: float
  method_mean: float
  method_sem: float
  random_mean: float
  random_sem: float
  n: int
  higher_is_better: bool
  z: float

  @property
  def advantage(self) -> float:
    """Mean improvement over random: ``difference``, negated when lower is better."""
    return self.difference if self.higher_is_better else -self.difference

  @property
  def rule(self) -> str:
    """The decision rule, in one sentence."""
    return comparison_rule(self.z)

  def describe(self, digits: int = 3) -> str:
    """One line: both means ± s.e., the paired difference ± s.e., and the verdict."""
    f = f".{digits}f"
    return (f"{self.method_mean:{f}} ± {self.method_sem:{f}} vs random "
            f"{self.random_mean:{f}} ± {self.random_sem:{f}}; paired difference "
            f"{self.difference:+{f}} ± {self.difference_sem:{f}} (n = {self.n}, "
            f"{'higher' if self.higher_is_better else 'lower'} is better): {self.verdict}")

  def __str__(self) -> str:
    return self.describe()


def comparison_rule(z: float = 2.0) -> str:
  """The decision rule of :func:`compare_to_random` for ``z`` standard errors, as a sentence.

  Args:
    z: the number of standard errors the verdict requires, a finite number > 0.

  Returns:
    The rule as one sentence.

  Raises:
    TypeError, ValueError: ``z`` is not a finite number > 0.

  Example:
    >>> comparison_rule(2.0)[:60]
    'Per pair (digit or retraining), d = method − random, signed '
  """
  z = check_number("z", z)
  return (f"Per pair (digit or retraining), d = method − random, signed so that d > 0 is "
          f"better; a method 'beats random' when the mean of d exceeds {z:g} standard errors "
          f"of that mean, is 'worse than random' when it is below −{z:g} standard errors, "
          f"and is 'not distinguishable from random' otherwise.")


def compare_to_random(
    method_values: Any,
    random_values: Any,
    *,
    higher_is_better: bool,
    z: float = 2.0,
) -> RandomComparison:
  r"""Whether a method beats a random ranking, judged digit by digit with its uncertainty.

  Both arrays hold one value per **pair**: the same digit scored with the
  method's map and with a random ranking (deletion or insertion AUCs), or the
  same retraining seed (ROAR). With :math:`d_i = a_i - r_i`, signed by
  :math:`\sigma = +1` if higher is better and :math:`-1` otherwise,

  .. math::

     \bar g = \sigma\,\frac1n \sum_i d_i, \qquad
     \mathrm{s.e.} = \sqrt{\frac{\sum_i (d_i - \bar d)^2}{n (n - 1)}},

  the verdict is **"beats random"** if :math:`\bar g > z\,\mathrm{s.e.}`,
  **"worse than random"** if :math:`\bar g < -z\,\mathrm{s.e.}`, and
  **"not distinguishable from random"** otherwise. Pairing removes what the
  two share (how hard a digit is), so the paired s.e. is usually much smaller
  than either mean's. For :math:`n \gtrsim 30` pairs, :math:`z = 2` is about a
  5 % two-sided false-alarm rate per comparison (normal approximation): among
  many comparisons a few verdicts will be wrong, and a method within a few
  standard errors of the threshold deserves more digits, not a verdict.

  Args:
    method_values: ``(n,)`` the method's values.
    random_values: ``(n,)`` the random ranking's values on the same pairs.
    higher_is_better: whether a higher value is better (for deletion and
      insertion see :func:`~saliency_guide.metrics.higher_is_better`).
    z: standard errors the mean advantage must exceed (default 2).

  Returns:
    :class:`RandomComparison` (``str()`` of it is a one-line report, ``.rule``
    the rule as a sentence).

  Raises:
    TypeError, ValueError: arrays that are not 1-D of the same length, fewer
      than 2 pairs without NaN, an infinite value, a non-boolean
      ``higher_is_better`` or a ``z`` that is not a positive number.

  Example:
    >>> result = compare_to_random([0.30, 0.35, 0.28, 0.33], [0.50, 0.47, 0.52, 0.49],
    ...                            higher_is_better=False)
    >>> result.verdict, round(result.difference, 3)
    ('beats random', -0.18)

  References:
    R. Tomsett, D. Harborne, S. Chakraborty, P. Gurram, A. Preece. *Sanity
    Checks for Saliency Metrics.* AAAI 2020. arXiv:1912.01451 (why metric
    rankings need their uncertainty).
  """
  check_flag("higher_is_better", higher_is_better)
  z = check_number("z", z)
  pairs = []
  for name, values in (("method_values", method_values), ("random_values", random_values)):
    try:
      array = np.asarray(values, np.float64)
    except (TypeError, ValueError):
      raise TypeError(f"{name}: expected a 1-D array of numbers, got {describe(values)}") from None
    if array.ndim != 1:
      raise ValueError(f"{name}: expected a 1-D array (one value per pair), got shape "
                       f"{array.shape}")
    if np.isinf(array).any():
      raise ValueError(f"{name}: expected finite values or NaN, got {int(np.isinf(array).sum())} "
                       "infinite value(s)")
    pairs.append(array)
  method, random = pairs
  if method.shape != random.shape:
    raise ValueError(f"method_values, random_values: expected the same pairs, got "
                     f"{method.shape[0]} and {random.shape[0]} values")
  keep = ~(np.isnan(method) | np.isnan(random))
  n = int(keep.sum())
  if n < 2:
    raise ValueError(f"method_values, random_values: expected at least 2 pairs without NaN "
                     f"to estimate an uncertainty, got {n}")
  method, random = method[keep], random[keep]
  difference, difference_sem = (float(v) for v in mean_and_sem(method - random))
  advantage = difference if higher_is_better else -difference
  if advantage > z * difference_sem:
    verdict = COMPARISON_VERDICTS[0]
  elif advantage < -z * difference_sem:
    verdict = COMPARISON_VERDICTS[2]
  else:
    verdict = COMPARISON_VERDICTS[1]
  (method_mean, method_sem), (random_mean, random_sem) = (
      (float(m), float(e)) for m, e in (mean_and_sem(method), mean_and_sem(random)))
  return RandomComparison(
      verdict=verdict, difference=difference, difference_sem=difference_sem,
      method_mean=method_mean, method_sem=method_sem, random_mean=random_mean,
      random_sem=random_sem, n=n, higher_is_better=higher_is_better, z=z,
  )
