r"""SmoothGrad, SmoothGrad² and VarGrad: a method's maps averaged over noisy copies of the input.

.. math::

   \hat M_c(x) = \frac1n \sum_{j=1}^{n} M_c(x + \varepsilon_j),
   \qquad \varepsilon_j \sim \mathcal N(0, \sigma^2 I),
   \qquad \sigma = \text{noise\_level} \cdot (x_{\max} - x_{\min}).

:func:`smoothgrad_plain` is that average in a few lines; :func:`smoothgrad`
computes it in chunks of noisy copies, with running statistics, in one
compiled ``lax.scan`` for every method registered in ``methods/_cores.py``;
the tests pin the two together.

References:
  D. Smilkov, N. Thorat, B. Kim, F. Viégas, M. Wattenberg. *SmoothGrad: removing
  noise by adding noise.* 2017. arXiv:1706.03825. (SmoothGrad.)

  S. Hooker, D. Erhan, P.-J. Kindermans, B. Kim. *A Benchmark for
  Interpretability Methods in Deep Neural Networks.* NeurIPS 2019.
  arXiv:1806.10758. (SmoothGrad².)

  J. Adebayo, J. Gilmer, I. Goodfellow, B. Kim. *Local Explanation Methods for
  Deep Neural Networks Lack Sensitivity to Parameter Values.* ICLR 2018 workshop.
  arXiv:1810.03307. (VarGrad; expanded into *Sanity Checks for Saliency Maps*,
  NeurIPS 2018, arXiv:1810.03292.)
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from saliency_guide import layers
from saliency_guide.methods._cores import Core, core, register
from saliency_guide.methods._random import flat_random
from saliency_guide.validation import (
    check_callable,
    check_choice,
    check_inputs,
    check_key,
    check_number,
    check_positive_int,
)

__all__ = ["SMOOTHGRAD_VARIANTS", "smoothgrad", "smoothgrad_plain"]

SMOOTHGRAD_VARIANTS = ("smoothgrad", "smoothgrad_squared", "vargrad")
"""Names accepted by ``smoothgrad(variant=...)``."""

Method = Callable[..., jax.Array]


def smoothgrad(
    method: Method,
    *,
    noise_level: float = 0.15,
    samples: int = 25,
    variant: str = "smoothgrad",
    key: jax.Array,
    batch_size: int = 256,
) -> Method:
  r"""Wrap a saliency method so that it averages its maps over noisy copies of the input.

  Smilkov et al. (2017) sharpen a map :math:`M_c(x)` by averaging it over
  :math:`n` copies of the input with Gaussian noise:

  .. math::

     \hat M_c(x) = \frac1n \sum_{j=1}^{n} M_c\big(x + \mathcal N(0, \sigma^2)\big),
     \qquad \sigma = \text{noise\_level} \cdot (x_{\max} - x_{\min}),

  with :math:`x_{\max} - x_{\min}` the value range of each input (the paper's
  "noise level" is :math:`\sigma / (x_{\max} - x_{\min})`; 10–20 % worked best
  there). With :math:`\varepsilon_j` the noise and :math:`m_j = M_c(x + \varepsilon_j)`,
  ``variant`` selects

  * ``"smoothgrad"``: :math:`\frac1n \sum_j m_j` (Smilkov et al. 2017): signed.
  * ``"smoothgrad_squared"``: :math:`\frac1n \sum_j m_j^2` (Hooker et al. 2019,
    not in Smilkov et al.'s paper): unsigned.
  * ``"vargrad"``: :math:`\frac1n \sum_j \big(m_j - \frac1n \sum_k m_k\big)^2`
    (Adebayo et al. 2018): unsigned.

  The noise is drawn from ``key``: calling the wrapped method twice gives the
  same maps. To compare the maps of two different inputs, wrap with two
  independent keys: one shared key shares the noise, and with it most of the
  Monte Carlo error, between the two maps. With ``noise_level=0`` every variant
  reduces to the wrapped method (``vargrad`` to zero).

  Noise samples go through ``method`` in chunks (``batch_size`` noisy images
  at a time) and are reduced on the fly with Welford's running mean and
  variance, so the maps' memory does not grow with ``samples`` (with the CPU's
  fast-conv opt-in, the noisy copies themselves, up to 256 MB of them, are drawn
  before the passes: measured faster there). For the package's
  methods (those with a core, :func:`~saliency_guide.methods.core`) every chunk
  runs inside one compiled ``lax.scan``; any other callable is called once per
  chunk. The wrapped method has a core too, so it can itself be wrapped.

  Args:
    method: a saliency method ``method(model, images, targets, **options)``,
      e.g. :func:`~saliency_guide.methods.gradients` or
      :func:`~saliency_guide.methods.integrated_gradients`.
    noise_level: :math:`\sigma` as a fraction of each image's value range (≥ 0).
    samples: number of noisy copies :math:`n` (≥ 1).
    variant: one of :data:`SMOOTHGRAD_VARIANTS`.
    key: PRNG key (``jax.random.key(seed)``).
    batch_size: at most this many noisy images go through ``method`` at once
      (at least one noisy copy of the batch).

  Returns:
    A method with the same signature, ``smoothed(model, images, targets,
    **options) -> (B, H, W, C)``; ``options`` are passed on to ``method``.

  Raises:
    TypeError, ValueError: ``method`` not callable, bad ``noise_level``,
      ``samples``, ``variant``, ``batch_size`` or ``key`` (here); bad ``images``
      or ``targets`` (when the returned method is called).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> from saliency_guide.methods import gradients, smoothgrad
    >>> model = MLP(rngs=nnx.Rngs(0))
    >>> x, t = jnp.linspace(0, 1, 2 * 784).reshape(2, 28, 28, 1), jnp.array([3, 7])
    >>> smooth = smoothgrad(gradients, samples=8, key=jax.random.key(0))
    >>> bool((smooth(model, x, t) == smooth(model, x, t)).all())  # same key, same map
    True
    >>> exact = smoothgrad(gradients, noise_level=0.0, samples=4, key=jax.random.key(0))
    >>> bool(jnp.allclose(exact(model, x, t), gradients(model, x, t)))
    True

  References:
    D. Smilkov, N. Thorat, B. Kim, F. Viégas, M. Wattenberg. *SmoothGrad:
    removing noise by adding noise.* 2017. arXiv:1706.03825.

    S. Hooker, D. Erhan, P.-J. Kindermans, B. Kim. *A Benchmark for
    Interpretability Methods in Deep Neural Networks.* NeurIPS 2019.
    arXiv:1806.10758. (SmoothGrad².)

    J. Adebayo, J. Gilmer, I. Goodfellow, B. Kim. *Local Explanation Methods for
    Deep Neural Networks Lack Sensitivity to Parameter Values.* ICLR 2018
    workshop. arXiv:1810.03307. (VarGrad; expanded into *Sanity Checks for
    Saliency Maps*, NeurIPS 2018, arXiv:1810.03292.)
  """
  check_callable("method", method, "a saliency method method(model, images, targets, **options)")
  noise_level = _check_noise_level(noise_level)
  samples = check_positive_int("samples", samples)
  variant = check_choice("variant", variant, SMOOTHGRAD_VARIANTS)
  batch_size = check_positive_int("batch_size", batch_size)
  key = check_key(key, "smoothgrad")
  # Operands built on the host (a device conversion would compile a program).
  level = np.float32(noise_level)
  variant_index = np.int32(SMOOTHGRAD_VARIANTS.index(variant))
  name = getattr(method, "__name__", type(method).__name__)

  def prepare(model: nnx.Module, images: jax.Array, /, **options: Any) -> Core | None:
    """The core of ``smoothed`` (``None`` if ``method`` has none): a scan over chunks."""
    inner = core(method, model, images, **options)
    if inner is None:
      return None
    static = (("fn", inner.fn), ("static", inner.static), ("samples", samples),
              ("batch_size", batch_size))
    return Core(_smoothgrad_core, static, (key, level, variant_index, inner.operands))

  def smoothed(model: nnx.Module, images: jax.Array, targets: jax.Array, **options: Any):
    images, targets = check_inputs(model, images, targets)
    c = prepare(model, images, **options)
    if c is not None:  # all chunks in one compiled call
      return c.run(model, images, targets)
    # A callable without a core: called once per chunk, with the same noise.
    per_chunk = _samples_per_chunk(samples, images.shape[0], batch_size)
    chunk_targets = jnp.tile(targets, per_chunk)
    stats = None
    for start in range(0, samples, per_chunk):
      noisy = _noisy_chunk_jit(images, key, level, jnp.asarray(start), per_chunk)
      maps = method(model, noisy, chunk_targets, **options)
      maps = maps.reshape(per_chunk, images.shape[0], *maps.shape[1:])  # (B, H, W[, C]) maps
      stats = _welford_jit(_start_stats(maps[0]) if stats is None else stats, maps)
    return _finish_jit(stats, variant_index)

  smoothed.__name__ = f"{variant}_{name}"
  smoothed.__qualname__ = smoothed.__name__
  smoothed.__doc__ = (
      f"{variant} of ``{name}`` (noise_level={noise_level}, samples={samples}); "
      "signature ``(model, images, targets, **options) -> (B, H, W, C)``."
  )
  register(smoothed, prepare)
  return smoothed


def smoothgrad_plain(
    method: Method,
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    noise_level: float = 0.15,
    samples: int = 25,
    variant: str = "smoothgrad",
    key: jax.Array,
    **options: Any,
) -> jax.Array:
  r"""SmoothGrad in a few lines: ``method`` on each noisy copy, then the statistic.

  The maps of :func:`smoothgrad` (same noise: sample :math:`j` is drawn from
  ``fold_in(key, j)``), written to be read: it keeps all ``samples`` maps in
  memory and calls ``method`` ``samples`` times, which :func:`smoothgrad`
  avoids. The tests pin the two together.

  Args:
    method: a saliency method ``method(model, images, targets, **options)``.
    model: a classifier returning logits ``(B, classes)``.
    images: float array ``(B, H, W, C)`` (NHWC), finite values.
    targets: integer array ``(B,)``, the class to explain for each image.
    noise_level: :math:`\sigma` as a fraction of each image's value range (≥ 0).
    samples: number of noisy copies :math:`n` (≥ 1).
    variant: one of :data:`SMOOTHGRAD_VARIANTS`.
    key: PRNG key (``jax.random.key(seed)``).
    **options: passed on to ``method``.

  Returns:
    float32 array ``(B, H, W, C)``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> from saliency_guide.methods import gradients, smoothgrad, smoothgrad_plain
    >>> model = MLP(rngs=nnx.Rngs(0))
    >>> x, t = jnp.linspace(0, 1, 2 * 784).reshape(2, 28, 28, 1), jnp.array([3, 7])
    >>> key = jax.random.key(0)
    >>> plain = smoothgrad_plain(gradients, model, x, t, samples=4, key=key)
    >>> engine = smoothgrad(gradients, samples=4, key=key)(model, x, t)
    >>> bool(jnp.allclose(plain, engine, rtol=1e-5, atol=1e-6))
    True

  References:
    D. Smilkov, N. Thorat, B. Kim, F. Viégas, M. Wattenberg. *SmoothGrad:
    removing noise by adding noise.* 2017. arXiv:1706.03825. The variants'
    sources (Hooker et al. 2019; Adebayo et al. 2018) are listed under
    :func:`smoothgrad`.
  """
  images, targets = check_inputs(model, images, targets)
  noise_level = _check_noise_level(noise_level)
  samples = check_positive_int("samples", samples)
  variant = check_choice("variant", variant, SMOOTHGRAD_VARIANTS)
  key = check_key(key, "smoothgrad")
  low = images.min(axis=(1, 2, 3), keepdims=True)
  high = images.max(axis=(1, 2, 3), keepdims=True)
  sigma = noise_level * (high - low)  # (B, 1, 1, 1): each image's own value range
  maps = []
  for j in range(samples):
    noise = jax.random.normal(jax.random.fold_in(key, j), images.shape)
    maps.append(method(model, images + sigma * noise, targets, **options))
  maps = jnp.stack(maps)  # (samples, B, H, W, C)
  if variant == "smoothgrad":
    return maps.mean(axis=0)
  if variant == "smoothgrad_squared":
    return (maps**2).mean(axis=0)
  return maps.var(axis=0)  # vargrad


# --------------------------------------------------------------------------------------
# The engine: chunks of noisy copies, running statistics, one lax.scan.
# --------------------------------------------------------------------------------------


def _check_noise_level(noise_level: Any) -> float:
  return check_number("noise_level", noise_level, inclusive=True,
                      hint=" (a fraction of each image's value range)")


def _samples_per_chunk(samples: int, batch: int, batch_size: int) -> int:
  """The largest divisor of ``samples`` with ``divisor × batch ≤ batch_size`` (at least 1).

  A divisor, so that every chunk is full: no padded samples to mask out of the
  running statistics.
  """
  limit = max(1, batch_size // batch)
  return max(d for d in range(1, min(samples, limit) + 1) if samples % d == 0)


def _noisy_chunk(
    images: jax.Array,
    key: jax.Array,
    noise_level: jax.Array,
    start: jax.Array,
    size: int,
) -> jax.Array:
  r"""Noise samples ``start, ..., start + size - 1``: ``(size · B, H, W, C)`` images.

  Sample :math:`j` of image :math:`b` is
  :math:`x_b + \sigma_b\, \varepsilon_{j,b}` with
  :math:`\varepsilon_j \sim \mathcal N(0, I)` drawn from ``fold_in(key, j)`` and
  :math:`\sigma_b` = ``noise_level`` × (max − min of image :math:`b`).
  """
  low = images.min(axis=(1, 2, 3), keepdims=True)
  sigma = noise_level * (images.max(axis=(1, 2, 3), keepdims=True) - low)
  keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(start + jnp.arange(size))
  noise = jax.vmap(lambda k: flat_random(jax.random.normal, k, images.shape))(keys)
  return (images[None] + sigma[None] * noise).reshape(-1, *images.shape[1:])


def _welford(
    stats: tuple[jax.Array, jax.Array, jax.Array], maps: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Add a chunk of maps, ``(size, B, H, W, C)``, to the running ``(count, mean, M2)``.

  Welford's update, one sample at a time: numerically stable, and exact when
  every sample is the same (zero noise gives back the wrapped method's map).
  """

  def add(stats, m):
    count, mean, m2 = stats
    count = count + 1
    delta = m - mean
    mean = mean + delta / count
    return (count, mean, m2 + delta * (m - mean)), None

  return jax.lax.scan(add, stats, maps)[0]


def _finish(stats: tuple[jax.Array, jax.Array, jax.Array], variant: jax.Array) -> jax.Array:
  """The map of variant number ``variant`` (index into :data:`SMOOTHGRAD_VARIANTS`).

  The variant is a traced integer, so switching variants does not recompile.
  """
  count, mean, m2 = stats
  variance = m2 / count  # 1/N, as in Adebayo et al.
  return jax.lax.switch(variant, [
      lambda: mean,  # smoothgrad
      lambda: variance + mean * mean,  # smoothgrad_squared: E[m^2]
      lambda: variance,  # vargrad
  ])


def _start_stats(maps: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Empty running statistics for maps shaped like ``maps`` (``(B, H, W[, C])``)."""
  return (jnp.zeros((), maps.dtype), jnp.zeros_like(maps), jnp.zeros_like(maps))


def _smoothgrad_core(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    operands: tuple[jax.Array, jax.Array, jax.Array, Any],
    *,
    fn: Method,
    static: tuple[tuple[str, Hashable], ...],
    samples: int,
    batch_size: int,
) -> jax.Array:
  """All noise samples in one traceable call: ``lax.scan`` over chunks of samples.

  ``fn``/``static`` and the last operand are the wrapped method's :class:`Core`;
  ``operands = (key, noise_level, variant index, the method's operands)``.
  """
  key, noise_level, variant, inner = operands
  per_chunk = _samples_per_chunk(samples, images.shape[0], batch_size)
  chunk_targets = jnp.tile(targets, per_chunk)

  def noisy_chunk(start):  # (per_chunk · B, H, W, C)
    return _noisy_chunk(images, key, noise_level, start, per_chunk)

  def chunk_maps(noisy):  # (per_chunk, B, H, W[, C]): CAM maps have no channel axis
    maps = fn(model, noisy, chunk_targets, inner, **dict(static))
    return maps.reshape(per_chunk, images.shape[0], *maps.shape[1:])

  starts = jnp.arange(0, samples, per_chunk)
  if _noise_first(images, samples):
    # Every chunk's noisy copies drawn before the passes (the same values).
    xs, draw = jax.vmap(noisy_chunk)(starts), lambda noisy: noisy
  else:
    xs, draw = starts, noisy_chunk

  def one_chunk(stats, x):
    return _welford(stats, chunk_maps(draw(x))), None

  shape = jax.eval_shape(lambda: chunk_maps(noisy_chunk(jnp.asarray(0))))
  stats, _ = jax.lax.scan(one_chunk, _start_stats(jnp.zeros(shape.shape[1:], shape.dtype)),
                          xs)
  return _finish(stats, variant)


# Up to this many bytes of noisy copies are drawn before the passes, where that pays.
NOISE_FIRST_BYTES = 256 * 2**20


def _noise_first(images: jax.Array, samples: int) -> bool:
  """Whether to draw all noisy copies before the gradient passes rather than in each.

  The same values either way (the maps are bitwise equal; the tests check). Drawing
  first measured faster with the fast-conv opt-in
  (:func:`~saliency_guide.layers.ynn_fusions_off`) and slower under XLA:CPU's defaults
  (``benchmarks/investigations/smoothgrad_noise_order.py``; the Performance page shows
  its recorded run and asserts this direction), so it is used only with the opt-in,
  and only while the copies fit in :data:`NOISE_FIRST_BYTES`.
  """
  nbytes = samples * images.size * images.dtype.itemsize
  return layers.ynn_fusions_off() and nbytes <= NOISE_FIRST_BYTES


_noisy_chunk_jit = jax.jit(_noisy_chunk, static_argnames=("size",))
_welford_jit = jax.jit(_welford)
_finish_jit = jax.jit(_finish)
