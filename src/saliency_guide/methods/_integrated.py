"""Path methods: Integrated Gradients and Expected Gradients.

Both average the gradient of the target class logit along straight paths from a
baseline :math:`x'` to the input :math:`x`. The path is never materialised at
once: :func:`_path_attributions` runs ``lax.scan`` over chunks of path points
(``internal_batch_size`` points per forward/backward pass), inside ``lax.map``
over groups of images, so memory grows with the chunk, not with
``steps × batch``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from saliency_guide.methods.gradients import logit_gradient, target_logits
from saliency_guide.validation import (
    check_choice,
    check_inputs,
    check_positive_int,
)

__all__ = [
    "BASELINES",
    "QUADRATURE_RULES",
    "expected_gradients",
    "integrated_gradients",
    "make_baseline",
    "quadrature",
]

QUADRATURE_RULES = (
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "riemann_trapezoid",
    "gausslegendre",
)
"""Names accepted by ``integrated_gradients(method=...)`` (Captum's names)."""

BASELINES = ("black", "uniform", "blur", "gaussian")
"""Named baselines accepted by ``integrated_gradients(baseline=...)`` and :func:`make_baseline`."""

_RANDOM_BASELINES = ("uniform", "gaussian")
_DEFAULT_SIGMA = {"blur": 3.0, "gaussian": 0.15}


# --------------------------------------------------------------------------------------
# Quadrature.
# --------------------------------------------------------------------------------------


def quadrature(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
  r"""Nodes :math:`\alpha_k` and weights :math:`w_k` of a quadrature rule on :math:`[0, 1]`.

  .. math::

     \int_0^1 g(\alpha)\, d\alpha \approx \sum_{k=1}^{n} w_k\, g(\alpha_k).

  With :math:`n` = ``steps``, the rules are the textbook ones; every set of
  weights sums to 1:

  * ``"riemann_left"``: nodes :math:`\alpha_k = (k - 1)/n`, i.e.
    :math:`0, \frac1n, \dots, \frac{n-1}n`; weights :math:`w_k = \frac1n`.
    Exact for polynomials of degree 0.
  * ``"riemann_right"``: nodes :math:`\alpha_k = k/n`, i.e.
    :math:`\frac1n, \dots, 1`; weights :math:`\frac1n`. Exact for degree 0.
  * ``"riemann_middle"``: nodes :math:`\alpha_k = (k - \frac12)/n`; weights
    :math:`\frac1n`. Exact for degree 1.
  * ``"riemann_trapezoid"``: nodes :math:`\alpha_k = (k - 1)/(n - 1)`, i.e.
    :math:`0, \frac1{n-1}, \dots, 1` (needs :math:`n \ge 2`); weights
    :math:`\frac1{n-1}`, halved at both ends. Exact for degree 1.
  * ``"gausslegendre"``: nodes :math:`\alpha_k = (t_k + 1)/2` with :math:`t_k`
    the roots of the Legendre polynomial :math:`P_n`; weights
    :math:`w_k = \frac{1}{(1 - t_k^2)\, P_n'(t_k)^2}` (half the usual weights
    on :math:`[-1, 1]`). Exact for degree :math:`2n - 1`.

  (Gauss–Legendre nodes and weights from :func:`numpy.polynomial.legendre.leggauss`,
  mapped from :math:`[-1, 1]` to :math:`[0, 1]`.)

  **Difference from Captum.** Captum's ``riemann_trapezoid`` uses the nodes
  :math:`k/(n-1)` but the step weights :math:`1/n` everywhere, so its weights
  sum to :math:`(n-1)/n` and its completeness error never drops below about
  :math:`1/n` of the logit difference. The rules here are the textbook ones; the
  other four rules agree with Captum.

  Args:
    method: one of :data:`QUADRATURE_RULES`.
    steps: number of nodes :math:`n \ge 1` (:math:`\ge 2` for the trapezoid rule).

  Returns:
    ``(alphas, weights)``: two float64 NumPy arrays of shape ``(steps,)``.

  Raises:
    ValueError: unknown ``method`` or ``steps`` too small.
    TypeError: ``steps`` is not an integer.

  Example:
    >>> alphas, weights = quadrature("riemann_trapezoid", 5)
    >>> alphas.tolist(), weights.tolist()
    ([0.0, 0.25, 0.5, 0.75, 1.0], [0.125, 0.25, 0.25, 0.25, 0.125])
    >>> alphas, weights = quadrature("gausslegendre", 3)
    >>> float(weights @ alphas**5)  # exact up to degree 2 * 3 - 1 = 5
    0.1666666...
  """
  check_choice("method", method, QUADRATURE_RULES)
  n = check_positive_int("steps", steps)
  k = np.arange(n, dtype=np.float64)
  if method == "riemann_left":
    return k / n, np.full(n, 1.0 / n)
  if method == "riemann_right":
    return (k + 1) / n, np.full(n, 1.0 / n)
  if method == "riemann_middle":
    return (k + 0.5) / n, np.full(n, 1.0 / n)
  if method == "riemann_trapezoid":
    if n < 2:
      raise ValueError(
          f"steps: expected an integer >= 2 for method='riemann_trapezoid' (it evaluates both "
          f"ends of the path), got {n}"
      )
    weights = np.full(n, 1.0 / (n - 1))
    weights[[0, -1]] /= 2
    return k / (n - 1), weights
  nodes, weights = np.polynomial.legendre.leggauss(n)
  return (nodes + 1) / 2, weights / 2


# --------------------------------------------------------------------------------------
# Baselines.
# --------------------------------------------------------------------------------------


def _check_key(key: Any, purpose: str) -> jax.Array:
  """``key`` as a JAX PRNG key, else an error saying ``purpose`` needs one."""
  if key is None:
    raise ValueError(
        f"key: {purpose} is random and needs an explicit PRNG key, e.g. key=jax.random.key(0); "
        "got None"
    )
  if isinstance(key, jax.Array | np.ndarray):
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ():
      return key
    if key.dtype == np.uint32 and key.shape == (2,):
      return jnp.asarray(key)
  raise TypeError(
      f"key: expected a single PRNG key from jax.random.key(seed) (or jax.random.PRNGKey), "
      f"got {type(key).__name__}"
      + (f" of shape {tuple(key.shape)} and dtype {key.dtype}" if hasattr(key, "dtype") else "")
  )


def flat_random(sample: Any, key: jax.Array, shape: tuple[int, ...], **kwargs: Any) -> jax.Array:
  """``sample(key, shape)`` drawn as a flat vector, then reshaped.

  XLA:CPU compiles JAX's (partitionable) threefry generator in a time that grows
  with the rank of the requested shape: measured here, ~5 s for a rank-4 shape
  against ~0.5 s for the same number of values drawn flat.
  """
  return sample(key, (math.prod(shape),), **kwargs).reshape(shape)


def _value_range(images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-image minimum and maximum, each of shape ``(B, 1, 1, 1)``."""
  return (images.min(axis=(1, 2, 3), keepdims=True), images.max(axis=(1, 2, 3), keepdims=True))


def _gaussian_blur(images: jax.Array, sigma: float) -> jax.Array:
  """Separable Gaussian blur of NHWC images, edge-replicated borders."""
  radius = max(1, math.ceil(3 * sigma))
  offsets = np.arange(-radius, radius + 1, dtype=np.float64)
  kernel = np.exp(-(offsets**2) / (2 * sigma**2))
  kernel = jnp.asarray(kernel / kernel.sum(), images.dtype)
  channels = images.shape[-1]
  x = jnp.pad(images, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="edge")
  for shape in ((2 * radius + 1, 1), (1, 2 * radius + 1)):
    depthwise = jnp.tile(kernel.reshape(*shape, 1, 1), (1, 1, 1, channels))
    x = jax.lax.conv_general_dilated(
        x, depthwise, window_strides=(1, 1), padding="VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=channels,
    )
  return x


def _baseline(name: str, images: jax.Array, key: jax.Array | None, sigma: float) -> jax.Array:
  """Traceable body of :func:`make_baseline` (arguments already validated)."""
  if name == "black":
    return jnp.zeros_like(images)
  if name == "blur":
    return _gaussian_blur(images, sigma)
  low, high = _value_range(images)
  if name == "uniform":
    return low + (high - low) * flat_random(jax.random.uniform, key, images.shape)
  noise = flat_random(jax.random.normal, key, images.shape)
  return jnp.clip(images + sigma * (high - low) * noise, low, high)


_baseline_jit = jax.jit(_baseline, static_argnames=("name", "sigma"))


def _check_sigma(name: str, sigma: Any) -> float:
  if sigma is None:
    return _DEFAULT_SIGMA.get(name, 0.0)
  if isinstance(sigma, bool) or not isinstance(sigma, int | float | np.floating | np.integer):
    raise TypeError(f"sigma: expected a positive number, got {type(sigma).__name__} {sigma!r}")
  if not (math.isfinite(sigma) and sigma > 0):
    raise ValueError(f"sigma: expected a finite number > 0, got {sigma}")
  return float(sigma)


def make_baseline(
    name: str, images: jax.Array, *, key: jax.Array | None = None, sigma: float | None = None
) -> jax.Array:
  r"""A named Integrated Gradients baseline :math:`x'` for each image.

  * ``"black"``: zeros (the usual default; on MNIST, the background itself).
  * ``"uniform"``: each pixel drawn from :math:`U[\min x, \max x]`, the value
    range of its own image. Random: needs ``key``.
  * ``"blur"``: :math:`x` blurred by a Gaussian of standard deviation ``sigma``
    pixels (default 3), borders edge-replicated.
  * ``"gaussian"``: :math:`x + \sigma (\max x - \min x)\,\varepsilon`,
    :math:`\varepsilon \sim \mathcal N(0, I)`, clipped to
    :math:`[\min x, \max x]`; ``sigma`` defaults to 0.15. Random: needs ``key``.

  These are the baselines compared by Sturmfels et al. (2020). A random
  baseline is one draw; average attributions over several keys (or use
  :func:`expected_gradients`) to integrate over the distribution.

  Args:
    name: one of :data:`BASELINES`.
    images: float array ``(B, H, W, C)``.
    key: PRNG key (``jax.random.key(seed)``), required by ``"uniform"`` and
      ``"gaussian"``; the same key gives the same baseline.
    sigma: blur width in pixels (``"blur"``) or noise level as a fraction of
      each image's value range (``"gaussian"``); ignored otherwise.

  Returns:
    float32 array of the shape of ``images``.

  Raises:
    ValueError: unknown ``name``; a random baseline without ``key``; bad ``sigma``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> x = jnp.zeros((1, 28, 28, 1)).at[0, 14, 14, 0].set(1.0)
    >>> blurred = make_baseline("blur", x, sigma=1.0)
    >>> round(float(blurred.sum()), 4)  # blurring keeps the total intensity
    1.0
    >>> make_baseline("uniform", x)
    Traceback (most recent call last):
    ...
    ValueError: key: the 'uniform' baseline is random and needs an explicit PRNG key, ...

  References:
    P. Sturmfels, S. Lundberg, S.-I. Lee. *Visualizing the Impact of Feature
    Attribution Baselines.* Distill, 2020. doi:10.23915/distill.00022.
  """
  check_choice("baseline", name, BASELINES)
  images = jnp.asarray(images, jnp.float32)
  if images.ndim != 4:
    raise ValueError(f"images: expected rank 4 (B, H, W, C), got shape {tuple(images.shape)}")
  sigma = _check_sigma(name, sigma)
  if name in _RANDOM_BASELINES:
    key = _check_key(key, f"the {name!r} baseline")
  else:
    key = None
  return _baseline_jit(name, images, key, sigma)


def _check_baseline_array(baseline: Any, images: jax.Array) -> jax.Array:
  """A user-given baseline broadcast explicitly to ``images.shape``, or an error."""
  if not hasattr(baseline, "shape") or not hasattr(baseline, "dtype"):
    if isinstance(baseline, int | float) and not isinstance(baseline, bool):
      baseline = np.asarray(baseline, np.float32)
    else:
      raise TypeError(
          f"baseline: expected None, one of {BASELINES} or a float array, got "
          f"{type(baseline).__name__}"
      )
  if not jnp.issubdtype(baseline.dtype, jnp.floating):
    raise TypeError(f"baseline: expected a floating dtype, got {baseline.dtype}")
  b = images.shape[0]
  allowed = ((), images.shape[1:], (1, *images.shape[1:]), images.shape)
  if tuple(baseline.shape) not in allowed:
    raise ValueError(
        f"baseline: expected a scalar or an array of shape {images.shape[1:]}, "
        f"{(1, *images.shape[1:])} or {images.shape} (one baseline per image) to match "
        f"images of shape {images.shape}, got shape {tuple(baseline.shape)}"
    )
  baseline = jnp.asarray(baseline, jnp.float32)
  if not bool(jnp.isfinite(baseline).all()):
    raise ValueError("baseline: expected finite values, got NaN or Inf")
  del b
  return jnp.broadcast_to(baseline, images.shape)


# --------------------------------------------------------------------------------------
# The path integral.
# --------------------------------------------------------------------------------------


def _plan(batch: int, points: int, per_pass: int) -> tuple[int, int, int, int]:
  """Split ``batch × points`` gradient evaluations into passes of about ``per_pass``.

  Returns ``(groups, images_per_group, chunks, points_per_chunk)``: the batch is
  cut into ``groups`` groups of ``images_per_group`` images (padded), and each
  group's ``points`` path points into ``chunks`` chunks of ``points_per_chunk``
  (padded with zero-weight points); one pass evaluates
  ``images_per_group × points_per_chunk ≤ max(per_pass, 1 image)`` points.
  """
  if batch >= per_pass:
    groups = math.ceil(batch / per_pass)
    return groups, math.ceil(batch / groups), points, 1
  per_chunk = min(points, max(1, per_pass // batch))
  chunks = math.ceil(points / per_chunk)
  return 1, batch, chunks, math.ceil(points / chunks)


def _pad(x: jax.Array, length: int, axis: int = 0) -> jax.Array:
  pad = [(0, 0)] * x.ndim
  pad[axis] = (0, length - x.shape[axis])
  return jnp.pad(x, pad)


def _path_attributions(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    references: jax.Array,
    ref_index: jax.Array,
    alphas: jax.Array,
    weights: jax.Array,
    per_pass: int,
) -> jax.Array:
  r""":math:`\sum_k w_k (x - x'_k) \odot \nabla f_c(x'_k + \alpha_k (x - x'_k))` per image.

  The one engine behind Integrated and Expected Gradients. Point :math:`k` of
  image :math:`b` uses the baseline ``references[ref_index[b, k]]``, the
  position ``alphas[b, k]`` on the path and the weight ``weights[k]``.

  Memory: ``lax.map`` over groups of images, ``lax.scan`` over chunks of path
  points inside each group; one forward/backward pass evaluates at most
  ``max(per_pass, 1)`` points (:func:`_plan`), and only the running sum of
  each group is carried.

  Args:
    model: the classifier.
    images: ``(B, H, W, C)``.
    targets: ``(B,)``.
    references: ``(R, H, W, C)`` baselines.
    ref_index: ``(B, K)`` int indices into ``references``.
    alphas: ``(B, K)`` positions on the path, in ``[0, 1]``.
    weights: ``(K,)`` quadrature (or Monte Carlo) weights.
    per_pass: path points per forward/backward pass.

  Returns:
    ``(B, H, W, C)`` attributions.
  """
  batch, points = ref_index.shape
  groups, per_group, chunks, per_chunk = _plan(batch, points, per_pass)
  padded_batch, padded_points = groups * per_group, chunks * per_chunk
  # Padding: extra images are zeros with target 0 and are dropped at the end;
  # extra path points have weight 0.
  images = _pad(images, padded_batch).reshape(groups, per_group, *images.shape[1:])
  targets = _pad(targets, padded_batch).reshape(groups, per_group)
  ref_index = _pad(_pad(ref_index, padded_batch), padded_points, axis=1)
  alphas = _pad(_pad(alphas, padded_batch), padded_points, axis=1)
  weights = _pad(weights, padded_points)
  # (groups, chunks, points_per_chunk, images_per_group): what one scan step reads.
  ref_index = ref_index.reshape(groups, per_group, chunks, per_chunk).transpose(0, 2, 3, 1)
  alphas = alphas.reshape(groups, per_group, chunks, per_chunk).transpose(0, 2, 3, 1)
  weights = weights.reshape(chunks, per_chunk)

  def one_group(args):
    x, t, group_index, group_alphas = args  # (m, H, W, C), (m,), (chunks, k, m) twice

    def one_chunk(total, chunk):
      index, alpha, w = chunk  # (k, m), (k, m), (k,)
      start = references[index]  # (k, m, H, W, C)
      delta = x[None] - start
      path = start + alpha[..., None, None, None] * delta
      grads = logit_gradient(
          model, path.reshape(-1, *x.shape[1:]), jnp.tile(t, per_chunk)
      ).reshape(delta.shape)
      return total + jnp.einsum("k,k...->...", w, delta * grads), None

    total, _ = jax.lax.scan(one_chunk, jnp.zeros_like(x), (group_index, group_alphas, weights))
    return total

  attributions = jax.lax.map(one_group, (images, targets, ref_index, alphas))
  return attributions.reshape(padded_batch, *images.shape[2:])[:batch]


@functools.partial(jax.jit, static_argnames=("per_pass",))
def _integrated_gradients(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    baselines: jax.Array,
    alphas: jax.Array,
    weights: jax.Array,
    *,
    per_pass: int,
) -> tuple[jax.Array, jax.Array]:
  """Jitted core of :func:`integrated_gradients`: ``(attributions, completeness delta)``.

  The quadrature nodes and weights are arguments, not constants, so that every
  rule with the same number of steps shares one compiled function; the
  completeness delta costs two forward passes and is always computed.
  """
  batch, steps = images.shape[0], alphas.shape[0]
  attributions = _path_attributions(
      model, images, targets, baselines,
      jnp.broadcast_to(jnp.arange(batch)[:, None], (batch, steps)),
      jnp.broadcast_to(alphas, (batch, steps)), weights, per_pass,
  )
  gap = target_logits(model, images, targets) - target_logits(model, baselines, targets)
  return attributions, attributions.sum(axis=(1, 2, 3)) - gap


def integrated_gradients(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    baseline: str | jax.Array | float | None = None,
    steps: int = 64,
    method: str = "gausslegendre",
    key: jax.Array | None = None,
    sigma: float | None = None,
    return_delta: bool = False,
    internal_batch_size: int = 64,
) -> jax.Array | tuple[jax.Array, jax.Array]:
  r"""Integrated Gradients of the target class logit along the straight path from a baseline.

  Sundararajan et al. (2017) define the attribution of input feature :math:`i`
  as the gradient integrated along the straight line from a baseline
  :math:`x'` to the input :math:`x`:

  .. math::

     \mathrm{IntegratedGrads}_i(x) = (x_i - x'_i) \int_0^1
       \frac{\partial F\big(x' + \alpha (x - x')\big)}{\partial x_i}\, d\alpha
     \;\approx\; (x_i - x'_i) \sum_{k=1}^{n} w_k\,
       \frac{\partial F\big(x' + \alpha_k (x - x')\big)}{\partial x_i},

  with :math:`F = f_c` the target class **logit** and :math:`(\alpha_k, w_k)`
  the nodes and weights of the quadrature rule ``method`` (:func:`quadrature`).
  The exact integral satisfies *completeness*,
  :math:`\sum_i \mathrm{IntegratedGrads}_i(x) = F(x) - F(x')`; the quadrature
  error of that identity, the *completeness delta*

  .. math:: \delta = \sum_i \mathrm{IntegratedGrads}_i(x) - \big(F(x) - F(x')\big),

  is returned per example with ``return_delta=True``; use it to choose
  ``steps``.

  Memory: the ``steps × B`` path points are never materialised together; they
  are evaluated ``internal_batch_size`` at a time in a ``lax.scan``, so memory
  grows with that chunk, not with ``steps``. One compiled function
  serves every rule, baseline and model of the same shapes and ``steps``.

  Args:
    model: a classifier returning logits ``(B, classes)``.
    images: float array ``(B, H, W, C)`` (NHWC), finite values.
    targets: integer array ``(B,)``, the class to explain for each image.
    baseline: ``None`` (black, all zeros), a name from :data:`BASELINES`
      (see :func:`make_baseline`), or a float array of shape ``()``,
      ``(H, W, C)``, ``(1, H, W, C)`` or ``(B, H, W, C)``.
    steps: number of quadrature nodes :math:`n` (≥ 1; ≥ 2 for the trapezoid rule).
    method: quadrature rule, one of :data:`QUADRATURE_RULES`.
    key: PRNG key, required by the random baselines ``"uniform"`` and ``"gaussian"``.
    sigma: parameter of the ``"blur"``/``"gaussian"`` baselines (see :func:`make_baseline`).
    return_delta: also return the completeness delta :math:`\delta`, shape ``(B,)``.
    internal_batch_size: path points evaluated per forward/backward pass.

  Returns:
    float32 array ``(B, H, W, C)``; with ``return_delta=True`` a pair
    ``(attributions, delta)`` with ``delta`` of shape ``(B,)``.

  Raises:
    TypeError, ValueError: bad ``images``/``targets``, ``steps``, ``method``,
      ``baseline`` (unknown name, wrong shape or dtype), missing ``key``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> from saliency_guide.methods import integrated_gradients
    >>> model = MLP(rngs=nnx.Rngs(0))
    >>> x = jnp.linspace(0, 1, 2 * 784).reshape(2, 28, 28, 1)
    >>> maps, delta = integrated_gradients(model, x, jnp.array([3, 7]), return_delta=True)
    >>> maps.shape, delta.shape
    ((2, 28, 28, 1), (2,))

  References:
    M. Sundararajan, A. Taly, Q. Yan. *Axiomatic Attribution for Deep
    Networks.* ICML 2017. arXiv:1703.01365.

    P. Sturmfels, S. Lundberg, S.-I. Lee. *Visualizing the Impact of Feature
    Attribution Baselines.* Distill, 2020. doi:10.23915/distill.00022.
  """
  images, targets = check_inputs(model, images, targets)
  check_choice("method", method, QUADRATURE_RULES)
  steps = check_positive_int("steps", steps)
  per_pass = check_positive_int("internal_batch_size", internal_batch_size)
  if not isinstance(return_delta, bool):
    raise TypeError(f"return_delta: expected True or False, got {return_delta!r}")
  if baseline is None:
    baselines = jnp.zeros_like(images)
  elif isinstance(baseline, str):
    baselines = make_baseline(baseline, images, key=key, sigma=sigma)
  else:
    baselines = _check_baseline_array(baseline, images)
  alphas, weights = quadrature(method, steps)
  attributions, delta = _integrated_gradients(
      model, images, targets, baselines, jnp.asarray(alphas, jnp.float32),
      jnp.asarray(weights, jnp.float32), per_pass=per_pass,
  )
  return (attributions, delta) if return_delta else attributions


# --------------------------------------------------------------------------------------
# Expected Gradients.
# --------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("samples", "per_pass"))
def _expected_gradients(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    references: jax.Array,
    key: jax.Array,
    *,
    samples: int,
    per_pass: int,
) -> jax.Array:
  """Jitted core of :func:`expected_gradients` on validated inputs."""
  index_key, alpha_key = jax.random.split(key)
  shape = (images.shape[0], samples)
  ref_index = flat_random(
      jax.random.randint, index_key, shape, minval=0, maxval=references.shape[0])
  alphas = flat_random(jax.random.uniform, alpha_key, shape)
  weights = jnp.full((samples,), 1.0 / samples, images.dtype)
  return _path_attributions(
      model, images, targets, references, ref_index, alphas, weights, per_pass
  )


def expected_gradients(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    references: jax.Array,
    samples: int = 64,
    key: jax.Array,
    internal_batch_size: int = 64,
) -> jax.Array:
  r"""Expected Gradients: Integrated Gradients averaged over baselines from a reference set.

  Erion et al. (2021) replace the single baseline of Integrated Gradients by
  the data distribution :math:`D` and estimate the double integral by Monte
  Carlo sampling, one random baseline :math:`x'` and one random position
  :math:`\alpha` per sample:

  .. math::

     \phi_i(x) = \mathop{\mathbb{E}}_{x' \sim D,\ \alpha \sim U(0, 1)}
       \Big[ (x_i - x'_i)\,
       \frac{\partial f_c\big(x' + \alpha (x - x')\big)}{\partial x_i} \Big]
     \approx \frac1m \sum_{j=1}^{m} (x_i - x'^{(j)}_i)\,
       \frac{\partial f_c\big(x'^{(j)} + \alpha_j (x - x'^{(j)})\big)}{\partial x_i}.

  Completeness holds in expectation:
  :math:`\sum_i \phi_i(x) \to f_c(x) - \mathbb E_{x' \sim D}[f_c(x')]` as
  :math:`m \to \infty`. Each image draws its own baselines (uniformly, with
  replacement, from ``references``) and positions.

  Args:
    model: a classifier returning logits ``(B, classes)``.
    images: float array ``(B, H, W, C)`` (NHWC), finite values.
    targets: integer array ``(B,)``, the class to explain for each image.
    references: float array ``(R, H, W, C)``: samples of the data distribution
      :math:`D` (e.g. training images), finite values.
    samples: number of Monte Carlo samples :math:`m` per image.
    key: PRNG key (``jax.random.key(seed)``); the same key gives the same map.
    internal_batch_size: path points evaluated per forward/backward pass.

  Returns:
    float32 array ``(B, H, W, C)``.

  Raises:
    TypeError, ValueError: bad ``images``/``targets``/``references``,
      ``samples`` < 1, missing or malformed ``key``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> from saliency_guide.methods import expected_gradients
    >>> model = MLP(rngs=nnx.Rngs(0))
    >>> refs = jax.random.uniform(jax.random.key(1), (8, 28, 28, 1))
    >>> expected_gradients(model, refs[:2], jnp.array([3, 7]), references=refs, samples=16,
    ...                    key=jax.random.key(0)).shape
    (2, 28, 28, 1)

  References:
    G. Erion, J. D. Janizek, P. Sturmfels, S. M. Lundberg, S.-I. Lee. *Improving
    performance of deep learning models with axiomatic attribution priors and
    expected gradients.* Nature Machine Intelligence 3, 2021. arXiv:1906.10670.
  """
  images, targets = check_inputs(model, images, targets)
  if not hasattr(references, "shape") or not hasattr(references, "dtype"):
    raise TypeError(
        f"references: expected a float array (R, H, W, C), got {type(references).__name__}"
    )
  if not jnp.issubdtype(references.dtype, jnp.floating):
    raise TypeError(f"references: expected a floating dtype, got {references.dtype}")
  if references.ndim != 4 or tuple(references.shape[1:]) != tuple(images.shape[1:]):
    raise ValueError(
        f"references: expected shape (R, {', '.join(map(str, images.shape[1:]))}) to match "
        f"images of shape {tuple(images.shape)}, got shape {tuple(references.shape)}"
    )
  if references.shape[0] == 0:
    raise ValueError("references: expected at least one reference image, got 0")
  references = jnp.asarray(references, jnp.float32)
  if not bool(jnp.isfinite(references).all()):
    raise ValueError("references: expected finite values, got NaN or Inf")
  samples = check_positive_int("samples", samples)
  per_pass = check_positive_int("internal_batch_size", internal_batch_size)
  key = _check_key(key, "expected_gradients")
  return _expected_gradients(
      model, images, targets, references, key, samples=samples, per_pass=per_pass
  )
