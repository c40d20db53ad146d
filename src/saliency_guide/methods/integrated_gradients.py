r"""Integrated Gradients: the gradient integrated along the straight path from a baseline.

.. math::

   \mathrm{IG}_i(x) = (x_i - x'_i) \int_0^1
     \frac{\partial f_c\big(x' + \alpha (x - x')\big)}{\partial x_i}\, d\alpha
   \approx (x_i - x'_i) \sum_{k=1}^{n} w_k\,
     \frac{\partial f_c\big(x' + \alpha_k (x - x')\big)}{\partial x_i}.

:func:`integrated_gradients_plain` is the sum above in a few lines;
:func:`integrated_gradients` computes the same sum in chunks of path points
(``methods/_path_engine.py``), and the tests pin the two together.

References:
  M. Sundararajan, A. Taly, Q. Yan. *Axiomatic Attribution for Deep Networks.*
  ICML 2017. arXiv:1703.01365.

  P. Sturmfels, S. Lundberg, S.-I. Lee. *Visualizing the Impact of Feature
  Attribution Baselines.* Distill, 2020. doi:10.23915/distill.00022.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from saliency_guide.methods._cores import Core, register
from saliency_guide.methods._path_engine import path_attributions
from saliency_guide.methods._random import flat_random
from saliency_guide.methods.gradients import _logit_gradient, _target_logits
from saliency_guide.validation import (
    check_array,
    check_choice,
    check_flag,
    check_inputs,
    check_key,
    check_number,
    check_positive_int,
)

__all__ = [
    "BASELINES",
    "QUADRATURE_RULES",
    "integrated_gradients",
    "integrated_gradients_plain",
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
  check_flag("return_delta", return_delta)
  c = _prepare(model, images, baseline=baseline, steps=steps, method=method, key=key, sigma=sigma,
               internal_batch_size=internal_batch_size)
  baselines, key, alphas, weights = c.operands
  static = dict(c.static)
  if static["baseline"] is not None:  # a named baseline, made once here
    baselines = _baseline_jit(static["baseline"], images, key, static["sigma"])
  attributions, delta = _integrated_gradients(
      model, images, targets, baselines, alphas, weights, per_pass=static["per_pass"]
  )
  return (attributions, delta) if return_delta else attributions


def integrated_gradients_plain(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    baseline: jax.Array | float | None = None,
    steps: int = 64,
    method: str = "gausslegendre",
) -> jax.Array:
  r"""Integrated Gradients in a few lines: every path point at once, one gradient call.

  The same sum as :func:`integrated_gradients`, written to be read: it holds
  all ``steps × B`` path points (and the backward pass all their activations)
  in memory at once, which :func:`integrated_gradients` avoids. The tests pin
  the two together.

  Args:
    model: a classifier returning logits ``(B, classes)``.
    images: float array ``(B, H, W, C)`` (NHWC), finite values.
    targets: integer array ``(B,)``, the class to explain for each image.
    baseline: ``None`` (black) or a float array broadcastable as in
      :func:`integrated_gradients` (named baselines: :func:`make_baseline`).
    steps: number of quadrature nodes :math:`n`.
    method: quadrature rule, one of :data:`QUADRATURE_RULES`.

  Returns:
    float32 array ``(B, H, W, C)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> from saliency_guide import methods
    >>> model = MLP(rngs=nnx.Rngs(0))
    >>> x, t = jnp.full((2, 28, 28, 1), 0.5), jnp.array([3, 7])
    >>> plain = methods.integrated_gradients_plain(model, x, t, steps=8)
    >>> engine = methods.integrated_gradients(model, x, t, steps=8)
    >>> bool(jnp.allclose(plain, engine, atol=1e-6))
    True
  """
  images, targets = check_inputs(model, images, targets)
  x0 = 0.0 if baseline is None else check_array("baseline", baseline, images.shape)
  alphas, weights = quadrature(method, steps)
  alphas = jnp.asarray(alphas, jnp.float32)[:, None, None, None, None]
  path = x0 + alphas * (images - x0)  # (steps, B, H, W, C): every point of every path
  points = path.reshape(-1, *images.shape[1:])  # (steps · B, H, W, C)
  grads = _logit_gradient(model, points, jnp.tile(targets, steps)).reshape(path.shape)
  weights = jnp.asarray(weights, jnp.float32)
  return (images - x0) * jnp.einsum("k,k...->...", weights, grads)  # weighted sum


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
  mapped from :math:`[-1, 1]` to :math:`[0, 1]`.) These degrees give the usual
  orders of convergence only for smooth integrands: along the path through a
  ReLU/max-pool network the integrand is piecewise constant, and every rule
  converges as :math:`1/n`.

  **Difference from Captum.** Captum's ``riemann_trapezoid`` uses the nodes
  :math:`k/(n-1)` (``linspace(0, 1, n)``) with the step :math:`1/n` of its
  other Riemann rules, halved at both ends: weights
  :math:`\frac1{2n}, \frac1n, \dots, \frac1n, \frac1{2n}`, which sum to
  :math:`(n-1)/n`. That is :math:`(n-1)/n` times the rule here, so its
  completeness error tends to :math:`1/n` of the logit difference instead of
  zero. The other four rules have Captum's nodes and weights.

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
  if method == "riemann_trapezoid" and n < 2:
    raise ValueError(
        f"steps: expected an integer >= 2 for method='riemann_trapezoid' (it evaluates both "
        f"ends of the path), got {n}"
    )
  return _quadrature(method, n)


def _quadrature(method: str, n: int) -> tuple[np.ndarray, np.ndarray]:
  """:func:`quadrature` on checked arguments."""
  k = np.arange(n, dtype=np.float64)
  if method == "riemann_left":
    return k / n, np.full(n, 1.0 / n)
  if method == "riemann_right":
    return (k + 1) / n, np.full(n, 1.0 / n)
  if method == "riemann_middle":
    return (k + 0.5) / n, np.full(n, 1.0 / n)
  if method == "riemann_trapezoid":
    weights = np.full(n, 1.0 / (n - 1))
    weights[[0, -1]] /= 2
    return k / (n - 1), weights
  nodes, weights = np.polynomial.legendre.leggauss(n)
  return (nodes + 1) / 2, weights / 2


# --------------------------------------------------------------------------------------
# Baselines.
# --------------------------------------------------------------------------------------


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
  :func:`~saliency_guide.methods.expected_gradients`) to integrate over the
  distribution.

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
  images = jnp.asarray(images, jnp.float32)
  if images.ndim != 4:
    raise ValueError(f"images: expected rank 4 (B, H, W, C), got shape {tuple(images.shape)}")
  name, key, sigma = _check_named_baseline(name, key, sigma)
  return _baseline_jit(name, images, key, sigma)


def _check_named_baseline(
    name: str, key: Any, sigma: Any
) -> tuple[str, jax.Array | None, float]:
  """``(name, key, sigma)`` checked: ``key`` only for a random baseline, ``sigma`` defaulted."""
  check_choice("baseline", name, BASELINES)
  sigma = _DEFAULT_SIGMA.get(name, 0.0) if sigma is None else check_number("sigma", sigma)
  key = check_key(key, f"the {name!r} baseline") if name in _RANDOM_BASELINES else None
  return name, key, sigma


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
  """Traceable body of :func:`make_baseline` (arguments already checked)."""
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


# --------------------------------------------------------------------------------------
# The core (on checked arguments).
# --------------------------------------------------------------------------------------


def _integrated_gradients_core(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    operands: tuple[Any, Any, jax.Array, jax.Array],
    *,
    baseline: str | None,
    sigma: float,
    per_pass: int,
) -> jax.Array:
  """Traceable core of :func:`integrated_gradients`: the attributions only.

  ``operands = (baselines, key, alphas, weights)``. A named ``baseline`` is
  made here from the images given (under SmoothGrad: from each noisy copy, as
  calling :func:`integrated_gradients` on it would); otherwise ``baselines``
  holds one row per image, tiled if the images are ``n`` copies of the batch.
  """
  baselines, key, alphas, weights = operands
  batch, steps = images.shape[0], alphas.shape[0]
  if baseline is not None:
    baselines = _baseline(baseline, images, key, sigma)
  elif baselines.shape[0] != batch:
    baselines = jnp.tile(baselines, (batch // baselines.shape[0], 1, 1, 1))
  return path_attributions(
      model, images, targets, baselines,
      jnp.broadcast_to(jnp.arange(batch)[:, None], (batch, steps)),
      jnp.broadcast_to(alphas, (batch, steps)), weights, per_pass,
  )


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
  """Jitted :func:`integrated_gradients`: ``(attributions, completeness delta)``.

  The quadrature nodes and weights are arguments, not constants, so that every
  rule with the same number of steps shares one compiled function; the
  completeness delta costs two forward passes and is always computed.
  """
  attributions = _integrated_gradients_core(
      model, images, targets, (baselines, None, alphas, weights),
      baseline=None, sigma=0.0, per_pass=per_pass,
  )
  gap = _target_logits(model, images, targets) - _target_logits(model, baselines, targets)
  return attributions, attributions.sum(axis=(1, 2, 3)) - gap


def _prepare(
    model: nnx.Module,
    images: jax.Array,
    *,
    baseline: str | jax.Array | float | None = None,
    steps: int = 64,
    method: str = "gausslegendre",
    key: jax.Array | None = None,
    sigma: float | None = None,
    internal_batch_size: int = 64,
) -> Core:
  """The options of :func:`integrated_gradients` checked, as a :class:`Core`."""
  del model
  alphas, weights = quadrature(method, steps)
  per_pass = check_positive_int("internal_batch_size", internal_batch_size)
  if isinstance(baseline, str):  # made by the core, from the images it is given
    name, key, sigma = _check_named_baseline(baseline, key, sigma)
    baselines = None
  else:  # an array; key and sigma are ignored
    name, key, sigma = None, None, 0.0
    baselines = (jnp.zeros_like(images) if baseline is None
                 else check_array("baseline", baseline, images.shape))
  # float32 on the host: converting on the device would compile a program per number of steps.
  operands = (baselines, key, alphas.astype(np.float32), weights.astype(np.float32))
  static = (("baseline", name), ("sigma", sigma), ("per_pass", per_pass))
  return Core(_integrated_gradients_core, static, operands)


register(integrated_gradients, _prepare)
