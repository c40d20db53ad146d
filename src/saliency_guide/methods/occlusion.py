r"""Occlusion (Zeiler & Fergus, 2014) and RISE (Petsiuk et al., 2018): maps from perturbed copies.

Both methods only *evaluate* the model, on many perturbed copies of each image, and
need no gradient. Occlusion slides a window :math:`W_k` over the image and gives each
pixel the average drop of the target logit over the windows that cover it:

.. math::

   \phi_u(x) = \frac{1}{|\{k : u \in W_k\}|} \sum_{k : u \in W_k}
     \big[f_c(x) - f_c(x \odot (1 - 1_{W_k}) + b \odot 1_{W_k})\big].

RISE keeps random smooth masks :math:`M_i \in [0, 1]^{H \times W}` and averages them
weighted by the score of the masked image, normalised by the keep probability:

.. math::

   S_c(u) = \frac{1}{N p} \sum_{i=1}^{N} f_c(x \odot M_i)\, M_i(u).

References:
  M. D. Zeiler, R. Fergus. *Visualizing and Understanding Convolutional Networks.*
  ECCV 2014. arXiv:1311.2901.

  V. Petsiuk, A. Das, K. Saenko. *RISE: Randomized Input Sampling for Explanation
  of Black-box Models.* BMVC 2018. arXiv:1806.07421.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from saliency_guide.methods._cores import Core, register
from saliency_guide.validation import (
    check_array,
    check_choice,
    check_inputs,
    check_key,
    check_number,
    check_positive_int,
    describe,
)

__all__ = ["RISE_SCORES", "occlusion", "rise", "rise_masks"]

#: The scores :func:`rise` can weight its masks with: ``"logit"`` (default), the
#: target logit :math:`f_c(x \odot M_i)`, or ``"probability"``, the target's softmax
#: probability (what the RISE paper and its code use).
RISE_SCORES = ("logit", "probability")


def _target_logits(model: nnx.Module, x: jax.Array, targets: jax.Array) -> jax.Array:
  """``f_c(x)`` for each row: ``(N,)`` logits of ``targets`` (``(N,)``)."""
  return jnp.take_along_axis(model(x), targets[:, None], axis=1)[:, 0]


def _target_probabilities(model: nnx.Module, x: jax.Array, targets: jax.Array) -> jax.Array:
  """``softmax(f(x))_c`` for each row."""
  p = jax.nn.softmax(model(x), axis=-1)
  return jnp.take_along_axis(p, targets[:, None], axis=1)[:, 0]


def _per_pass(batch_size: int, batch: int, total: int) -> int:
  """Perturbations per forward pass: ``batch_size // batch``, at least 1, at most ``total``."""
  return max(1, min(total, batch_size // batch))


# --------------------------------------------------------------------------------------
# Occlusion
# --------------------------------------------------------------------------------------


def _window_starts(size: int, window: int, stride: int) -> np.ndarray:
  """Captum's window positions along one axis: ``0, s, 2s, ...`` until the axis is covered.

  ``ceil((size - window) / stride) + 1`` windows; the last one may stick out past the
  edge, and is then cut to the image (it covers fewer than ``window`` pixels).

  Example:
    >>> _window_starts(28, 4, 2)[-3:], _window_starts(10, 4, 3)
    (array([20, 22, 24]), array([0, 3, 6]))
    >>> _window_starts(10, 4, 4)  # the last window covers pixels 8 and 9 only
    array([0, 4, 8])
  """
  return np.arange(-(-(size - window) // stride) + 1) * stride


def _pair(name: str, value: Any) -> tuple[int, int]:
  """An int or a pair of ints ``(h, w)``, each ≥ 1, as a pair."""
  if isinstance(value, tuple | list):
    if len(value) != 2:
      raise ValueError(f"{name}: expected an integer or a pair (h, w), got {value!r}")
    return (check_positive_int(f"{name}[0]", value[0]), check_positive_int(f"{name}[1]", value[1]))
  if isinstance(value, bool) or not isinstance(value, int | np.integer):
    raise TypeError(f"{name}: expected an integer or a pair of integers (h, w), got "
                    f"{describe(value)}")
  value = check_positive_int(name, value)
  return value, value


def _occlusion_core(
    model: nnx.Module, images: jax.Array, targets: jax.Array, operands: jax.Array, *,
    window: tuple[int, int], stride: tuple[int, int], batch_size: int,
) -> jax.Array:
  """Traceable core of :func:`occlusion`; ``operands`` = the baseline (one row or one per image)."""
  baselines = operands
  batch, height, width, _ = images.shape
  if baselines.shape[0] != batch:  # one baseline for all, or the images are n copies
    baselines = jnp.tile(baselines, (batch // baselines.shape[0], 1, 1, 1))
  (h, w), (sh, sw) = window, stride
  starts_h, starts_w = _window_starts(height, h, sh), _window_starts(width, w, sw)
  # The windows, row-major, padded with empty ones (top = height) to whole chunks.
  tops = np.repeat(starts_h, len(starts_w))
  lefts = np.tile(starts_w, len(starts_h))
  n = len(tops)
  per_pass = _per_pass(batch_size, batch, n)
  chunks = -(-n // per_pass)
  tops = np.pad(tops, (0, chunks * per_pass - n), constant_values=height)
  lefts = np.pad(lefts, (0, chunks * per_pass - n), constant_values=width)
  rows, cols = jnp.arange(height), jnp.arange(width)

  def occluded_logits(corners):  # (per_pass,) tops and lefts -> (per_pass, B) logits
    top, left = corners
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + h)  # (k, H)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + w)  # (k, W)
    inside = (in_rows[:, :, None] & in_cols[:, None, :])[:, None, :, :, None]  # (k, 1, H, W, 1)
    x = jnp.where(inside, baselines[None], images[None])  # (k, B, H, W, C)
    x = x.reshape(per_pass * batch, *images.shape[1:])
    return _target_logits(model, x, jnp.tile(targets, per_pass)).reshape(per_pass, batch)

  corners = (jnp.asarray(tops.reshape(chunks, per_pass)),
             jnp.asarray(lefts.reshape(chunks, per_pass)))
  occluded = jax.lax.map(occluded_logits, corners).reshape(-1, batch)[:n]  # (n, B)
  drops = _target_logits(model, images, targets)[None] - occluded  # f_c(x) - f_c(x_k)
  drops = drops.T.reshape(batch, len(starts_h), len(starts_w))
  # Window (i, j) covers rows[i] x cols[j]: the sum over windows is a product of two
  # small 0/1 matrices with the drops, and so is the count of windows per pixel.
  cover_h = ((np.arange(height) >= starts_h[:, None])
             & (np.arange(height) < starts_h[:, None] + h)).astype(np.float32)  # (nh, H)
  cover_w = ((np.arange(width) >= starts_w[:, None])
             & (np.arange(width) < starts_w[:, None] + w)).astype(np.float32)  # (nw, W)
  total = jnp.einsum("bij,ih,jw->bhw", drops, cover_h, cover_w,
                     precision=jax.lax.Precision.HIGHEST)
  count = cover_h.sum(0)[:, None] * cover_w.sum(0)[None, :]  # (H, W), >= 1 everywhere
  return total / count


def occlusion(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    window: int | tuple[int, int] = 4,
    stride: int | tuple[int, int] = 1,
    baseline: float | jax.Array = 0.0,
    batch_size: int = 1024,
) -> jax.Array:
  r"""Occlusion (Zeiler & Fergus, 2014): the target logit's drop when a window is covered.

  A window of ``window`` pixels (all channels) slides over the image with step
  ``stride``; at each position :math:`k` the pixels :math:`W_k` under it are replaced by
  the ``baseline`` :math:`b` and the drop of the target logit is recorded. Each pixel
  gets the average drop over the windows that cover it (Captum's ``Occlusion``):

  .. math::

     \phi_u(x) = \frac{1}{|\{k : u \in W_k\}|} \sum_{k : u \in W_k}
       \big[f_c(x) - f_c(x \odot (1 - 1_{W_k}) + b \odot 1_{W_k})\big].

  Positive: covering the pixel's neighbourhood *lowers* the logit (evidence for the
  class); negative: it raises it.

  **Window positions** (as in Captum): along each axis the windows start at
  :math:`0, s, 2s, \ldots` until the axis is covered, i.e. :math:`\lceil (H - h) / s
  \rceil + 1` positions; the last window is cut at the image's edge when it sticks
  out. Hence ``stride`` may not exceed ``window`` (pixels between windows would be
  covered by none), except along an axis the window spans entirely. With
  ``window=1`` and a linear model, :math:`\phi = w_c \odot (x - b)` (summed over
  channels).

  Every occluded copy goes through the model in compiled batches of at most
  ``batch_size`` images (``jax.lax.map`` over chunks of window positions): memory
  does not grow with the number of windows.

  Args:
    model: a classifier (any Flax NNX model returning logits).
    images: float array ``(B, H, W, C)``, NHWC.
    targets: integer array ``(B,)``, the class whose logit is explained.
    window: the window's height and width in pixels: an int (square) or ``(h, w)``,
      at most the image's size; it covers every channel.
    stride: the step between window positions: an int or ``(s_h, s_w)``, at most the
      window along an axis the window does not span entirely.
    baseline: what replaces the covered pixels: a number, or an array of shape
      ``(H, W, C)``, ``(1, H, W, C)`` or ``(B, H, W, C)``.
    batch_size: at most this many occluded images per forward pass (at least one
      occluded copy of the batch).

  Returns:
    float32 array ``(B, H, W)``: one value per pixel (the window spans the channels).

  Raises:
    ValueError: a window larger than the image or with a side < 1, a stride larger
      than the window, a baseline of another shape or non-finite, bad ``images`` or
      ``targets``.
    TypeError: ``window``/``stride`` not integers, ``baseline`` not a number or array.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import CNN
    >>> model = CNN(channels=(4, 8), hidden=16, rngs=nnx.Rngs(0))
    >>> x, t = jnp.ones((2, 28, 28, 1)), jnp.array([3, 7])
    >>> occlusion(model, x, t, window=(4, 6), stride=2).shape
    (2, 28, 28)
    >>> f = lambda z: model(z)[jnp.arange(2), t]  # the target logits
    >>> whole = occlusion(model, x, t, window=28)  # one window: f_c(x) - f_c(0) everywhere
    >>> bool(jnp.allclose(whole[:, 5, 5], f(x) - f(0 * x), atol=1e-6))
    True

  References:
    M. D. Zeiler, R. Fergus. *Visualizing and Understanding Convolutional Networks.*
    ECCV 2014. arXiv:1311.2901.

    M. Ancona, E. Ceolini, C. Öztireli, M. Gross. *Towards better understanding of
    gradient-based attribution methods for Deep Neural Networks.* ICLR 2018.
    arXiv:1711.06104. (The averaging over overlapping windows; Captum's definition.)
  """
  images, targets = check_inputs(model, images, targets)
  core = _prepare_occlusion(model, images, window=window, stride=stride, baseline=baseline,
                            batch_size=batch_size)
  return core.run(model, images, targets)


def _prepare_occlusion(
    model: nnx.Module, images: jax.Array, *, window: Any = 4, stride: Any = 1,
    baseline: Any = 0.0, batch_size: int = 1024,
) -> Core:
  """The options of :func:`occlusion` checked against the images, as a :class:`Core`."""
  del model
  window, stride = _pair("window", window), _pair("stride", stride)
  size = tuple(images.shape[1:3])
  for axis, n, win, step in zip(("height", "width"), size, window, stride, strict=True):
    if win > n:
      raise ValueError(f"window: expected at most the image's size {size}, got {window} "
                       f"(the {axis} {win} > {n})")
    if step > win and win < n:
      raise ValueError(
          f"stride: expected at most the window {window} along each axis the window does "
          f"not span (else pixels between windows are covered by none), got {stride}")
  batch_size = check_positive_int("batch_size", batch_size)
  value = baseline
  if isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
    value = np.full((1, *images.shape[1:]), value, np.float32)
  elif not hasattr(value, "shape"):
    raise TypeError(f"baseline: expected a number or a float array broadcastable to "
                    f"{tuple(images.shape)}, got {describe(value)}")
  one = tuple(value.shape) in ((), tuple(images.shape[1:]), (1, *images.shape[1:]))
  value = check_array("baseline", value, images.shape)
  baselines = value[:1] if one else value
  static = (("window", window), ("stride", stride), ("batch_size", batch_size))
  return Core(_occlusion_core, static, baselines)


register(occlusion, _prepare_occlusion)


# --------------------------------------------------------------------------------------
# RISE
# --------------------------------------------------------------------------------------


def _upsample_matrix(cells: int, size: int) -> np.ndarray:
  """``(size, cells)``: bilinear upsampling of ``cells`` values to ``size`` pixels.

  Half-pixel centres, the values mirrored about the first and last centres beyond
  them: ``skimage.transform.resize(order=1, mode="reflect")``, which the paper's code
  uses (the tests compare the two).
  """
  centre = (np.arange(size) + 0.5) * cells / size - 0.5
  if cells == 1:
    return np.ones((size, 1), np.float32)
  centre = np.abs(centre)  # mirrored about the first centre ...
  centre = np.where(centre > cells - 1, 2 * (cells - 1) - centre, centre)  # ... and the last
  low = np.floor(centre).astype(int)
  high = np.minimum(low + 1, cells - 1)
  frac = centre - low
  matrix = np.zeros((size, cells), np.float64)
  matrix[np.arange(size), low] += 1 - frac
  matrix[np.arange(size), high] += frac
  return matrix.astype(np.float32)


def _rise_geometry(size: tuple[int, int], cell: tuple[int, int]) -> tuple[Any, ...]:
  """Cell sizes ``C = ceil(H / s)`` and the two upsampling matrices ``((s+1)C, s)``."""
  cell_size = tuple(-(-n // s) for n, s in zip(size, cell, strict=True))
  up = tuple(_upsample_matrix(s, (s + 1) * c) for s, c in zip(cell, cell_size, strict=True))
  return cell_size, up


def _draws(key: jax.Array, masks: int, cell: tuple[int, int], p: float,
           cell_size: tuple[int, int]) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The random part of ``masks`` masks: grids ``(N, s_h, s_w)`` (1 = kept), shifts ``(N,)``.

  Drawn at once as flat vectors (a few bytes per mask; XLA:CPU compiles the random
  generator much faster for rank-1 shapes, ``methods/_random.py``), so the masks do
  not depend on how they are later batched.
  """
  grid_key, y_key, x_key = jax.random.split(key, 3)
  grids = jax.random.bernoulli(grid_key, p, (masks * cell[0] * cell[1],))
  grids = grids.reshape(masks, *cell).astype(jnp.float32)
  dy = jax.random.randint(y_key, (masks,), 0, cell_size[0])
  dx = jax.random.randint(x_key, (masks,), 0, cell_size[1])
  return grids, dy, dx


def _upsampled(grids: jax.Array, dy: jax.Array, dx: jax.Array, size: tuple[int, int],
               cell: tuple[int, int]) -> jax.Array:
  """Grids ``(k, s_h, s_w)`` upsampled to ``(s+1) C`` pixels and cropped at the shifts."""
  _, (up_h, up_w) = _rise_geometry(size, cell)

  def one(grid, y, x):  # bilinear upsampling is linear: U_h G U_w^T, rows cut at the shift
    rows = jax.lax.dynamic_slice_in_dim(jnp.asarray(up_h), y, size[0])  # (H, s_h)
    cols = jax.lax.dynamic_slice_in_dim(jnp.asarray(up_w), x, size[1])  # (W, s_w)
    return jnp.einsum("hi,ij,wj->hw", rows, grid, cols, precision=jax.lax.Precision.HIGHEST)

  return jax.vmap(one)(grids, dy, dx)


def _masks(key: jax.Array, masks: int, size: tuple[int, int], cell: tuple[int, int],
           p: float) -> jax.Array:
  """The ``masks`` masks drawn from ``key``: ``(N, H, W)``."""
  cell_size, _ = _rise_geometry(size, cell)
  return _upsampled(*_draws(key, masks, cell, p, cell_size), size, cell)


def _rise_core(
    model: nnx.Module, images: jax.Array, targets: jax.Array, operands: jax.Array, *,
    masks: int, cell: tuple[int, int], p: float, score: str, batch_size: int,
) -> jax.Array:
  """Traceable core of :func:`rise`; ``operands`` = the PRNG key."""
  key = operands
  batch = images.shape[0]
  size = tuple(images.shape[1:3])
  per_pass = _per_pass(batch_size, batch, masks)
  chunks = -(-masks // per_pass)
  scores_of = _target_probabilities if score == "probability" else _target_logits
  chunk_targets = jnp.tile(targets, per_pass)
  cell_size, _ = _rise_geometry(size, cell)
  # The grids and shifts of every mask (small); padded with empty grids to whole chunks.
  padding = chunks * per_pass - masks
  grids, dy, dx = (jnp.pad(v, [(0, padding)] + [(0, 0)] * (v.ndim - 1)).reshape(
      chunks, per_pass, *v.shape[1:]) for v in _draws(key, masks, cell, p, cell_size))
  kept = (jnp.arange(chunks * per_pass) < masks).reshape(chunks, per_pass)

  def add_chunk(total, chunk):
    grid, y, x, keep = chunk
    m = _upsampled(grid, y, x, size, cell)  # (k, H, W), the same masks for every image
    masked = (images[None] * m[:, None, :, :, None]).reshape(per_pass * batch,
                                                              *images.shape[1:])
    s = scores_of(model, masked, chunk_targets).reshape(per_pass, batch)
    s = jnp.where(keep[:, None], s, 0.0)  # the last chunk's padding counts 0
    return total + jnp.einsum("kb,khw->bhw", s, m, precision=jax.lax.Precision.HIGHEST), None

  total = jnp.zeros((batch, *size), jnp.float32)
  total, _ = jax.lax.scan(add_chunk, total, (grids, dy, dx, kept))
  return total / (masks * p)


def _check_p(p: Any) -> float:
  p = check_number("p", p, hint=" (the probability of keeping a grid cell), at most 1")
  if p > 1:
    raise ValueError(f"p: expected a probability of keeping a grid cell in (0, 1], got {p}")
  return p


def _check_cell(cell: Any, size: tuple[int, int]) -> tuple[int, int]:
  cell = _pair("cell", cell)
  if cell[0] > size[0] or cell[1] > size[1]:
    raise ValueError(f"cell: expected a grid of at most the image's size {size} cells, "
                     f"got {cell}")
  return cell


def rise_masks(
    key: jax.Array,
    size: tuple[int, int],
    *,
    masks: int = 4000,
    cell: int | tuple[int, int] = 7,
    p: float = 0.5,
) -> jax.Array:
  r"""The masks :math:`M_1, \ldots, M_N` :func:`rise` draws from ``key``, ``(N, H, W)``.

  Each mask is a random binary grid of :math:`s_h \times s_w` cells, each cell kept
  (1) with probability :math:`p`, upsampled bilinearly to
  :math:`(s+1)\,C` pixels per axis, :math:`C = \lceil H / s \rceil` the cell size, and
  cropped to :math:`H \times W` at a random offset in :math:`[0, C)` per axis (the
  paper's code, ``eclique/RISE``): smooth masks in :math:`[0, 1]` whose cell edges
  fall anywhere. The masks depend only on ``key``, ``masks``, ``cell``, ``p`` and
  ``size``.

  Args:
    key: PRNG key (``jax.random.key(seed)``), the one given to :func:`rise`.
    size: the images' ``(H, W)``.
    masks: :math:`N`, the number of masks (≥ 1).
    cell: the grid's :math:`s`: cells per axis, an int or ``(s_h, s_w)``, at most ``size``.
    p: the probability of keeping a cell, in ``(0, 1]``.

  Returns:
    float32 array ``(N, H, W)`` with values in ``[0, 1]``.

  Example:
    >>> import jax
    >>> m = rise_masks(jax.random.key(0), (28, 28), masks=64, cell=7, p=0.5)
    >>> m.shape, bool((m >= 0).all() & (m <= 1).all())
    ((64, 28, 28), True)

  References:
    V. Petsiuk, A. Das, K. Saenko. *RISE: Randomized Input Sampling for Explanation
    of Black-box Models.* BMVC 2018. arXiv:1806.07421.
  """
  key = check_key(key, "rise_masks")
  size = _pair("size", size)
  masks = check_positive_int("masks", masks)
  cell = _check_cell(cell, size)
  p = _check_p(p)
  return _masks_jit(key, masks, size, cell, p)


_masks_jit = jax.jit(_masks, static_argnames=("masks", "size", "cell", "p"))


def rise(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    masks: int = 4000,
    cell: int | tuple[int, int] = 7,
    p: float = 0.5,
    key: jax.Array,
    score: str = "logit",
    batch_size: int = 1024,
) -> jax.Array:
  r"""RISE (Petsiuk et al., 2018): random masks averaged, weighted by the masked image's score.

  :math:`N` random smooth masks :math:`M_i \in [0, 1]^{H \times W}` (:func:`rise_masks`:
  a random :math:`s \times s` grid of cells kept with probability :math:`p`, upsampled
  bilinearly and shifted at random) multiply the image, and each pixel gets the
  average of the masks weighted by the target's score on the masked image:

  .. math::

     S_c(u) = \frac{1}{\mathbb{E}[M]\,N} \sum_{i=1}^{N} f_c(x \odot M_i)\, M_i(u),
     \qquad \mathbb{E}[M] = p,

  a Monte Carlo estimate of :math:`\mathbb{E}_M[f_c(x \odot M)\, M(u)] / p`, which for
  binary masks is :math:`\mathbb{E}[f_c(x \odot M) \mid M(u) = 1]`: the expected score
  when pixel :math:`u` is kept. Every pixel therefore carries a large common offset,
  about :math:`\mathbb{E}_M[f_c(x \odot M)]`; what differs between pixels is the
  covariance of the score with keeping them (see the tutorial).

  ``score`` selects :math:`f_c` (:data:`RISE_SCORES`): the target **logit** (default,
  the quantity every method of this package explains), or its softmax
  **probability**, the paper's choice (bounded in :math:`[0, 1]`, so one confident
  mask cannot dominate the sum, but saturated near 1 for masks that keep enough).

  The same masks serve every image of the batch; they are drawn from ``key`` (the
  grids and shifts of all :math:`N` at once, a few bytes each), so the map does not
  depend on ``batch_size``. Masked copies go
  through the model in compiled batches of at most ``batch_size`` images (a
  ``jax.lax.scan`` that accumulates the weighted sum): memory does not grow with
  :math:`N`. The Monte Carlo error shrinks like :math:`1/\sqrt{N}`.

  Args:
    model: a classifier (any Flax NNX model returning logits).
    images: float array ``(B, H, W, C)``, NHWC; masking multiplies every channel (a
      masked pixel becomes 0).
    targets: integer array ``(B,)``, the class explained.
    masks: :math:`N`, the number of random masks (≥ 1).
    cell: the grid's :math:`s`, cells per axis: an int or ``(s_h, s_w)``, at most the
      image size (each cell covers about :math:`\lceil H / s \rceil` pixels).
    p: the probability of keeping a cell, in ``(0, 1]``.
    key: PRNG key (``jax.random.key(seed)``); the same key gives the same map.
    score: ``"logit"`` (default) or ``"probability"``.
    batch_size: at most this many masked images per forward pass (at least one
      masked copy of the batch).

  Returns:
    float32 array ``(B, H, W)``.

  Raises:
    ValueError: ``masks`` < 1, a grid finer than the image, ``p`` outside ``(0, 1]``,
      an unknown ``score``, a missing key, bad ``images`` or ``targets``.
    TypeError: a malformed key, non-integer ``masks`` or ``cell``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import CNN
    >>> model = CNN(channels=(4, 8), hidden=16, rngs=nnx.Rngs(0))
    >>> x, t = jnp.ones((2, 28, 28, 1)), jnp.array([3, 7])
    >>> s = rise(model, x, t, masks=64, key=jax.random.key(0))
    >>> s.shape, bool((s == rise(model, x, t, masks=64, key=jax.random.key(0))).all())
    ((2, 28, 28), True)

  References:
    V. Petsiuk, A. Das, K. Saenko. *RISE: Randomized Input Sampling for Explanation
    of Black-box Models.* BMVC 2018. arXiv:1806.07421.
  """
  images, targets = check_inputs(model, images, targets)
  core = _prepare_rise(model, images, masks=masks, cell=cell, p=p, key=key, score=score,
                       batch_size=batch_size)
  return core.run(model, images, targets)


def _prepare_rise(
    model: nnx.Module, images: jax.Array, *, masks: int = 4000, cell: Any = 7, p: float = 0.5,
    key: Any = None, score: str = "logit", batch_size: int = 1024,
) -> Core:
  """The options of :func:`rise` checked, as a :class:`Core`."""
  del model
  masks = check_positive_int("masks", masks)
  cell = _check_cell(cell, tuple(images.shape[1:3]))
  p = _check_p(p)
  key = check_key(key, "rise")
  score = check_choice("score", score, RISE_SCORES)
  batch_size = check_positive_int("batch_size", batch_size)
  static = (("masks", masks), ("cell", cell), ("p", p), ("score", score),
            ("batch_size", batch_size))
  return Core(_rise_core, static, key)


register(rise, _prepare_rise)

