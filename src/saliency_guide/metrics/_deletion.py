r"""Deletion and insertion curves (Petsiuk et al., 2018), their areas, and the random baseline.

A map ranks the pixels. **Deletion** replaces them by a *substrate*, most
important first, and records the target-class probability after each step: a
good ranking makes it collapse early, so a **low** area under the curve is
good. **Insertion** starts from the substrate and puts the pixels back in the
same order: the probability should rise early, a **high** area is good.
Either curve can also take the pixels **least relevant first** (``order="lerf"``;
the two orders as compared by Tomsett et al., 2020), which reverses which area
is good (:func:`higher_is_better`); with one substrate, LeRF deletion is MoRF
insertion read backwards (the same images). :func:`perturbation_curves` records
the logit and the probability from one pass of the model, and
:func:`~saliency_guide.metrics.compare_to_random` says, digit by digit and with
its uncertainty, whether a map's areas beat those of a random ranking.

All the steps of a batch are one compiled function: the perturbed images of
every step are built from the pixel ranks with a comparison (``rank < n_k``)
and fed to the model ``internal_batch_size`` images per forward pass through
``lax.map``, so memory is bounded whatever the number of steps.

The substrate matters on MNIST. Its background is exactly 0, so with the
``"zeros"`` substrate deleting a background pixel changes nothing: deletion
only ever removes ink, and a map that is zero off the ink (gradient × input,
Integrated Gradients from a black baseline) spends no step on the background
by construction, whatever the model uses. The metric then rewards the *form*
of the method, not its faithfulness. A blurred copy of the image or a grey
equal to the dataset mean changes background pixels too.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from saliency_guide.methods.gradients import target_logits
from saliency_guide.metrics._common import _rank_pixels, pixel_scores
from saliency_guide.validation import (
    check_array,
    check_choice,
    check_flag,
    check_inputs,
    check_key,
    check_maps,
    check_number,
    check_positive_int,
    describe,
)

__all__ = [
    "ORDERS",
    "SCORES",
    "SUBSTRATES",
    "Curves",
    "auc",
    "deletion",
    "higher_is_better",
    "insertion",
    "make_substrate",
    "perturbation_curves",
    "random_attributions",
]

SUBSTRATES = ("zeros", "blur", "mean")
"""Named substrates of :func:`deletion`/:func:`insertion` (see :func:`make_substrate`)."""

SCORES = ("probability", "logit")
"""What the curves record: the target-class softmax probability, or its logit."""

ORDERS = ("morf", "lerf")
"""The order pixels are taken in: most relevant first (Petsiuk et al.) or least relevant first."""

CURVES = ("deletion", "insertion")

_DEFAULT_BLUR_SIGMA = 3.0


class Curves(NamedTuple):
  """Deletion or insertion curves of a batch (a NamedTuple: a JAX pytree).

  Attributes:
    fractions: ``(S + 1,)`` fraction of pixels deleted (inserted) at each
      step, from 0 to 1.
    scores: ``(B, S + 1)`` the target-class score after each step.
    auc: ``(B,)`` area under each curve (trapezoid rule over ``fractions``).
  """

  fractions: jax.Array
  scores: jax.Array
  auc: jax.Array


def auc(fractions: jax.Array, scores: jax.Array) -> jax.Array:
  r"""Area under curves by the trapezoid rule: :math:`\sum_k \tfrac12(s_k + s_{k+1})\,\Delta t_k`.

  Args:
    fractions: ``(S + 1,)`` increasing abscissae (from 0 to 1 for a curve of
      :func:`deletion`; the area of a constant curve :math:`s` is then :math:`s`).
    scores: ``(..., S + 1)`` ordinates.

  Returns:
    ``(...)`` areas.

  Raises:
    TypeError: ``fractions`` or ``scores`` is not an array.
    ValueError: ``fractions`` is not 1-D with at least 2 entries, or the last
      axis of ``scores`` does not have one score per fraction.

  Example:
    >>> import jax.numpy as jnp
    >>> float(auc(jnp.array([0.0, 0.5, 1.0]), jnp.array([1.0, 0.0, 0.0])))
    0.25
  """
  for name, value in (("fractions", fractions), ("scores", scores)):
    if not hasattr(value, "shape") or not hasattr(value, "dtype"):
      raise TypeError(f"{name}: expected an array, got {describe(value)}")
  if fractions.ndim != 1 or fractions.shape[0] < 2:
    raise ValueError(f"fractions: expected a 1-D array (S + 1,) of at least 2 abscissae, got "
                     f"shape {tuple(fractions.shape)}")
  if scores.ndim < 1 or scores.shape[-1] != fractions.shape[0]:
    raise ValueError(f"scores: expected shape (..., {fractions.shape[0]}), one score per entry "
                     f"of fractions (shape {tuple(fractions.shape)}), got shape "
                     f"{tuple(scores.shape)}")
  return _auc(fractions, scores)


def _auc(fractions: jax.Array, scores: jax.Array) -> jax.Array:
  """:func:`auc` on checked arguments (also called inside ``jit``)."""
  widths = jnp.diff(fractions)
  return ((scores[..., 1:] + scores[..., :-1]) / 2 * widths).sum(axis=-1)


def higher_is_better(curve: str, order: str = "morf") -> bool:
  """Whether a **high** area under a ``curve`` taken in ``order`` marks a faithful map.

  ======================  ==========================  =========================
  curve                   ``"morf"`` (most first)     ``"lerf"`` (least first)
  ======================  ==========================  =========================
  ``"deletion"``          low is good: score falls    high is good: score stays
  ``"insertion"``         high is good: score rises   low is good: score stays low
  ======================  ==========================  =========================

  Args:
    curve: ``"deletion"`` or ``"insertion"``.
    order: ``"morf"`` or ``"lerf"`` (see :data:`ORDERS`).

  Returns:
    ``True`` if a higher area is better.

  Raises:
    ValueError: an unknown curve or order.

  Example:
    >>> higher_is_better("deletion"), higher_is_better("deletion", "lerf")
    (False, True)
  """
  check_choice("curve", curve, CURVES)
  check_choice("order", order, ORDERS)
  return (curve == "insertion") == (order == "morf")


def _check_images(images: Any) -> jax.Array:
  """``images`` as a float32 ``(B, H, W, C)`` array, else an error naming ``images``."""
  if not hasattr(images, "shape") or not hasattr(images, "dtype"):
    raise TypeError(f"images: expected a float array (B, H, W, C), got {describe(images)}")
  if images.ndim != 4:
    raise ValueError(f"images: expected rank 4 (B, H, W, C), got shape {tuple(images.shape)}")
  return jnp.asarray(images, jnp.float32)


def _blur(images: jax.Array, sigma: float) -> jax.Array:
  return dm_pix.gaussian_blur(images, sigma, kernel_size=2 * math.ceil(3 * sigma) + 1)


def make_substrate(
    images: jax.Array, substrate: str | float | jax.Array = "blur", *, blur_sigma: float = 3.0
) -> jax.Array:
  """The image each pixel is replaced by (deletion) or taken from (insertion).

  * ``"zeros"``: black. On MNIST that is the background itself (see the module
    notes for why it biases the metric).
  * ``"blur"``: the image blurred by a Gaussian of standard deviation
    ``blur_sigma`` pixels (Petsiuk et al. use a blur for insertion). At the
    default 3 px a digit becomes a faint blob: its position and mass remain,
    its shape is gone.
  * ``"mean"``: a constant image equal to the mean pixel value of ``images``
    (all images, pixels and channels; about 0.13 for MNIST digits), i.e. the
    dataset mean when ``images`` is the dataset. To use another set's mean,
    pass it as a number.
  * a number, one image ``(H, W, C)`` or ``(1, H, W, C)``, or an array of the
    images' shape: used as given (a finite float array; nothing else is broadcast).

  Args:
    images: ``(B, H, W, C)`` float images.
    substrate: a name from :data:`SUBSTRATES`, a number or an array.
    blur_sigma: standard deviation of the ``"blur"`` substrate, in pixels.

  Returns:
    float32 array of the shape of ``images``.

  Raises:
    TypeError, ValueError: ``images`` is not an array of rank 4, ``substrate``
      an unknown name or an array of another shape, ``blur_sigma`` not a
      finite number > 0.

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.zeros((1, 28, 28, 1)).at[0, 14, 14, 0].set(1.0)
    >>> blurred = make_substrate(x, "blur")
    >>> blurred.shape, round(float(blurred.sum()), 3)  # blurring keeps the mass
    ((1, 28, 28, 1), 1.0)
  """
  return _make_substrate(_check_images(images), substrate, blur_sigma=blur_sigma)


def _make_substrate(
    images: jax.Array, substrate: str | float | jax.Array, *, blur_sigma: float
) -> jax.Array:
  """:func:`make_substrate` on checked ``images`` (float32 ``(B, H, W, C)``)."""
  if isinstance(substrate, str):
    check_choice("substrate", substrate, SUBSTRATES)
    if substrate == "zeros":
      return jnp.zeros_like(images)
    if substrate == "mean":
      return jnp.full_like(images, images.mean())
    return _blur(images, check_number("blur_sigma", blur_sigma, hint=" (pixels)"))
  return check_array("substrate", substrate, images.shape)


def random_attributions(key: jax.Array, images: jax.Array) -> jax.Array:
  """A uniformly random ranking of the pixels: the baseline every map should beat.

  Args:
    key: a JAX PRNG key.
    images: ``(B, H, W, C)`` images (only the shape is used).

  Returns:
    float32 array ``(B, H, W)`` of independent uniform scores.

  Raises:
    TypeError: ``key`` is not a PRNG key, ``images`` not an array.
    ValueError: ``images`` is not of rank 4.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> random_attributions(jax.random.key(0), jnp.zeros((2, 28, 28, 1))).shape
    (2, 28, 28)
  """
  key = check_key(key, "random_attributions")
  if not hasattr(images, "shape"):
    raise TypeError(f"images: expected an array (B, H, W, C), got {describe(images)}")
  if len(images.shape) != 4:
    raise ValueError(f"images: expected rank 4 (B, H, W, C), got shape {tuple(images.shape)}")
  return jax.random.uniform(key, tuple(images.shape[:3]))


def _counts(pixels: int, steps: int) -> np.ndarray:
  """Pixels removed after each of the ``steps + 1`` steps: 0, ..., all of them."""
  return np.round(np.arange(steps + 1) * pixels / steps).astype(np.int32)


@functools.partial(
    jax.jit, static_argnames=("steps", "insert", "score_names", "per_pass", "absolute", "lerf")
)
def _curves(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    scores: jax.Array,
    fill: jax.Array,
    key: jax.Array,
    *,
    steps: int,
    insert: bool,
    score_names: tuple[str, ...],
    per_pass: int,
    absolute: bool,
    lerf: bool = False,
) -> tuple[Curves, ...]:
  """Jitted core of :func:`deletion` and :func:`insertion` on validated inputs.

  One forward pass per perturbed image serves every score of ``score_names``.
  """
  batch, height, width, _ = images.shape
  if lerf:  # least relevant first: rank the negated scores (ties still broken by `key`)
    scores = -(jnp.abs(scores) if absolute else scores)
    absolute = False
  ranks = _rank_pixels(scores, key, absolute=absolute)[..., None]  # (B, H, W, 1)
  counts = jnp.asarray(_counts(height * width, steps))

  def one_step(count: jax.Array) -> tuple[jax.Array, ...]:
    taken = ranks < count  # the `count` most important pixels
    x = jnp.where(taken, images, fill) if insert else jnp.where(taken, fill, images)
    if score_names == ("logit",):
      return (target_logits(model, x, targets),)
    logits = model(x)
    out = []
    for name in score_names:
      if name == "logit":
        out.append(jnp.take_along_axis(logits, targets[:, None], axis=1)[:, 0])
      else:
        log_p = jax.nn.log_softmax(logits, axis=-1)
        out.append(jnp.exp(jnp.take_along_axis(log_p, targets[:, None], axis=1)[:, 0]))
    return tuple(out)

  values = jax.lax.map(one_step, counts, batch_size=max(1, min(steps + 1, per_pass // batch)))
  fractions = counts.astype(jnp.float32) / (height * width)
  return tuple(Curves(fractions=fractions, scores=v.T, auc=_auc(fractions, v.T))  # (B, S + 1)
               for v in values)


def _run(
    insert: bool,
    model: nnx.Module,
    images: Any,
    targets: Any,
    attributions: Any,
    *,
    substrate: str | float | jax.Array,
    steps: int,
    score: str | tuple[str, ...],
    blur_sigma: float,
    absolute: bool,
    key: jax.Array | None,
    internal_batch_size: int,
    order: str,
) -> tuple[Curves, ...]:
  """Check the arguments once, then :func:`_curves` (one :class:`Curves` per score)."""
  images, targets = check_inputs(model, images, targets)
  scores = pixel_scores(check_maps("attributions", attributions, images))
  steps = check_positive_int("steps", steps)
  pixels = images.shape[1] * images.shape[2]
  if steps > pixels:
    raise ValueError(f"steps: expected at most the number of pixels ({pixels}), got {steps}")
  names = (score,) if isinstance(score, str) else score
  if not isinstance(names, tuple | list) or not names:
    raise TypeError(f"scores: expected a non-empty tuple of names from {SCORES}, got {score!r}")
  for name in names:
    check_choice("score", name, SCORES)
  check_choice("order", order, ORDERS)
  per_pass = check_positive_int("internal_batch_size", internal_batch_size)
  check_flag("absolute", absolute)
  key = jax.random.key(0) if key is None else check_key(key)
  fill = _make_substrate(images, substrate, blur_sigma=blur_sigma)
  return _curves(
      model, images, targets, scores, fill, key,
      steps=steps, insert=insert, score_names=tuple(names), per_pass=per_pass,
      absolute=absolute, lerf=order == "lerf",
  )


def perturbation_curves(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    attributions: jax.Array,
    *,
    curve: str = "deletion",
    order: str = "morf",
    scores: tuple[str, ...] = SCORES,
    substrate: str | float | jax.Array = "blur",
    steps: int = 28,
    blur_sigma: float = _DEFAULT_BLUR_SIGMA,
    absolute: bool = False,
    key: jax.Array | None = None,
    internal_batch_size: int = 2048,
) -> dict[str, Curves]:
  r"""Deletion or insertion curves of several scores at once, from one pass of the model.

  :func:`deletion` (``curve="deletion"``) or :func:`insertion`
  (``curve="insertion"``) for every score of ``scores``; each perturbed image
  :math:`x^{(k)}` goes through the model once, and its logits give every score:
  the target logit :math:`f_c(x^{(k)})` and its softmax probability
  :math:`p_c(x^{(k)}) = e^{f_c} / \sum_j e^{f_j}`. The curves are those of
  :func:`deletion`/:func:`insertion` with the same options.

  Args:
    model: a classifier returning logits.
    images: ``(B, H, W, C)`` float images.
    targets: ``(B,)`` the class whose score is tracked.
    attributions: ``(B, H, W, C)`` or ``(B, H, W)`` maps of those targets.
    curve: ``"deletion"`` or ``"insertion"``.
    order: ``"morf"`` or ``"lerf"`` (:data:`ORDERS`).
    scores: names from :data:`SCORES`.
    substrate, steps, blur_sigma, absolute, key, internal_batch_size: as for
      :func:`deletion`.

  Returns:
    score name -> :class:`Curves`.

  Raises:
    TypeError, ValueError: as :func:`deletion`, or an unknown ``curve``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> model = MLP(hidden=(16,), rngs=nnx.Rngs(0))
    >>> x = jnp.linspace(0, 1, 2 * 784).reshape(2, 28, 28, 1)
    >>> both = perturbation_curves(model, x, jnp.array([3, 7]), x, steps=4)
    >>> sorted(both), both["logit"].scores.shape
    (['logit', 'probability'], (2, 5))

  References:
    V. Petsiuk, A. Das, K. Saenko. *RISE: Randomized Input Sampling for
    Explanation of Black-box Models.* BMVC 2018. arXiv:1806.07421.
  """
  check_choice("curve", curve, CURVES)
  names = (scores,) if isinstance(scores, str) else scores
  if not isinstance(names, tuple | list) or not names:
    raise TypeError(f"scores: expected a non-empty tuple of names from {SCORES}, got {scores!r}")
  names = tuple(dict.fromkeys(names))
  out = _run(
      curve == "insertion", model, images, targets, attributions, substrate=substrate,
      steps=steps, score=names, blur_sigma=blur_sigma, absolute=absolute, key=key,
      internal_batch_size=internal_batch_size, order=order,
  )
  return dict(zip(names, out, strict=True))


def deletion(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    attributions: jax.Array,
    *,
    substrate: str | float | jax.Array = "blur",
    steps: int = 28,
    score: str = "probability",
    blur_sigma: float = _DEFAULT_BLUR_SIGMA,
    absolute: bool = False,
    key: jax.Array | None = None,
    internal_batch_size: int = 2048,
    order: str = "morf",
) -> Curves:
  r"""Deletion curves: the class probability as the top-ranked pixels are removed.

  Petsiuk et al. (2018) rank the pixels by the map and replace them by a
  substrate :math:`\tilde x`, most important first. After step :math:`k` of
  :math:`S` the :math:`n_k = \mathrm{round}(k HW / S)` top pixels are gone:

  .. math::

     x^{(k)} = m^{(k)} \odot \tilde x + (1 - m^{(k)}) \odot x, \qquad
     m^{(k)}_{hw} = [\,\mathrm{rank}(s_{hw}) < n_k\,],
     \qquad
     \mathrm{AUC} = \int_0^1 p_c\big(x^{(t)}\big)\, dt,

  with :math:`s` the per-pixel score (the map summed over channels, see
  :func:`~saliency_guide.metrics.pixel_scores`), :math:`p_c` the softmax
  probability of the target class and the integral taken by the trapezoid rule
  over :math:`t = n_k / HW`. **Lower is better**: a faithful map removes the
  evidence first. Compare with :func:`random_attributions`
  (:func:`~saliency_guide.metrics.compare_to_random`), and beware the
  ``"zeros"`` substrate on MNIST (module notes).

  With ``order="lerf"`` the pixels go **least relevant first**: the ranks are
  those of :math:`-s`, so the curve is exactly the MoRF curve of the negated
  map, and a faithful map keeps the score **high** (higher is better; see
  :func:`higher_is_better`).

  Args:
    model: a classifier returning logits.
    images: ``(B, H, W, C)`` float images.
    targets: ``(B,)`` the class whose probability is tracked.
    attributions: ``(B, H, W, C)`` or ``(B, H, W)`` maps of those targets.
    substrate: ``"blur"``, ``"zeros"``, ``"mean"``, a number or an array
      (see :func:`make_substrate`).
    steps: number of steps :math:`S` (``28`` on MNIST: 28 pixels per step).
    score: ``"probability"`` (softmax, as Petsiuk et al.) or ``"logit"``.
    blur_sigma: standard deviation of the ``"blur"`` substrate in pixels.
    absolute: rank pixels by :math:`|s|` instead of :math:`s`.
    key: PRNG key that breaks ties between equal scores at random (default
      ``jax.random.key(0)``: results are reproducible).
    internal_batch_size: perturbed images per forward pass.
    order: ``"morf"`` (most relevant first, as Petsiuk et al.) or ``"lerf"``
      (least relevant first).

  Returns:
    :class:`Curves` with ``fractions (S + 1,)``, ``scores (B, S + 1)``, ``auc (B,)``.

  Raises:
    TypeError, ValueError: bad images, targets, maps (shape, NaN), substrate,
      steps, score, order or key.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> model = MLP(hidden=(16,), rngs=nnx.Rngs(0))
    >>> x = jnp.linspace(0, 1, 2 * 784).reshape(2, 28, 28, 1)
    >>> curves = deletion(model, x, jnp.array([3, 7]), x, steps=4)
    >>> curves.scores.shape, curves.auc.shape, curves.fractions.tolist()
    ((2, 5), (2,), [0.0, 0.25, 0.5, 0.75, 1.0])

  References:
    V. Petsiuk, A. Das, K. Saenko. *RISE: Randomized Input Sampling for
    Explanation of Black-box Models.* BMVC 2018. arXiv:1806.07421.

    R. Tomsett, D. Harborne, S. Chakraborty, P. Gurram, A. Preece. *Sanity
    Checks for Saliency Metrics.* AAAI 2020. arXiv:1912.01451 (MoRF and LeRF).
  """
  check_choice("score", score, SCORES)
  return _run(
      False, model, images, targets, attributions, substrate=substrate, steps=steps,
      score=score, blur_sigma=blur_sigma, absolute=absolute, key=key,
      internal_batch_size=internal_batch_size, order=order,
  )[0]


def insertion(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    attributions: jax.Array,
    *,
    substrate: str | float | jax.Array = "blur",
    steps: int = 28,
    score: str = "probability",
    blur_sigma: float = _DEFAULT_BLUR_SIGMA,
    absolute: bool = False,
    key: jax.Array | None = None,
    internal_batch_size: int = 2048,
    order: str = "morf",
) -> Curves:
  r"""Insertion curves: the class probability as the top-ranked pixels are put back.

  The mirror image of :func:`deletion` (Petsiuk et al., 2018): start from the
  substrate :math:`\tilde x` and restore the pixels of :math:`x`, most
  important first,

  .. math::

     x^{(k)} = m^{(k)} \odot x + (1 - m^{(k)}) \odot \tilde x, \qquad
     \mathrm{AUC} = \int_0^1 p_c\big(x^{(t)}\big)\, dt,

  with the same masks :math:`m^{(k)}`. **Higher is better** (lower with
  ``order="lerf"``, which inserts the least relevant pixels first: the MoRF
  curve of the negated map). Step :math:`k` of insertion and step
  :math:`S - k` of deletion with the *reversed* ranking are the same image.

  Args:
    model: a classifier returning logits.
    images: ``(B, H, W, C)`` float images.
    targets: ``(B,)`` the class whose probability is tracked.
    attributions: ``(B, H, W, C)`` or ``(B, H, W)`` maps of those targets.
    substrate: ``"blur"`` (default, as Petsiuk et al. for insertion),
      ``"zeros"``, ``"mean"``, a number or an array (:func:`make_substrate`).
    steps: number of steps.
    score: ``"probability"`` or ``"logit"``.
    blur_sigma: standard deviation of the ``"blur"`` substrate in pixels.
    absolute: rank pixels by :math:`|s|`.
    key: PRNG key breaking ties (default ``jax.random.key(0)``).
    internal_batch_size: perturbed images per forward pass.
    order: ``"morf"`` (most relevant first) or ``"lerf"`` (least relevant first).

  Returns:
    :class:`Curves` with ``fractions (S + 1,)``, ``scores (B, S + 1)``, ``auc (B,)``.

  Raises:
    TypeError, ValueError: as :func:`deletion`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> model = MLP(hidden=(16,), rngs=nnx.Rngs(0))
    >>> x = jnp.linspace(0, 1, 784).reshape(1, 28, 28, 1)
    >>> curves = insertion(model, x, jnp.array([3]), x, substrate="zeros", steps=4)
    >>> p = jax.nn.softmax(model(x))[0, 3]
    >>> bool(jnp.isclose(curves.scores[0, -1], p))  # everything inserted: the image
    True

  References:
    V. Petsiuk, A. Das, K. Saenko. *RISE: Randomized Input Sampling for
    Explanation of Black-box Models.* BMVC 2018. arXiv:1806.07421.

    R. Tomsett, D. Harborne, S. Chakraborty, P. Gurram, A. Preece. *Sanity
    Checks for Saliency Metrics.* AAAI 2020. arXiv:1912.01451 (MoRF and LeRF).
  """
  check_choice("score", score, SCORES)
  return _run(
      True, model, images, targets, attributions, substrate=substrate, steps=steps,
      score=score, blur_sigma=blur_sigma, absolute=absolute, key=key,
      internal_batch_size=internal_batch_size, order=order,
  )[0]
