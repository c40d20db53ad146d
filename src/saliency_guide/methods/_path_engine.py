r"""The path engine behind Integrated Gradients and Expected Gradients.

.. math::

   \phi(x) = \sum_k w_k\, (x - x'_k) \odot \nabla f_c\big(x'_k + \alpha_k (x - x'_k)\big),

evaluated ``per_pass`` path points at a time (``lax.scan`` over chunks of
points inside ``lax.map`` over groups of images), so that memory grows with
the chunk, not with ``steps × batch``. The tests pin it to
:func:`~saliency_guide.methods.integrated_gradients.integrated_gradients_plain`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from saliency_guide.methods.gradients import _logit_gradient

__all__ = ["path_attributions"]


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


def path_attributions(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    references: jax.Array,
    ref_index: jax.Array,
    alphas: jax.Array,
    weights: jax.Array,
    per_pass: int,
) -> jax.Array:
  r"""The sum over path points of every image, in chunks of ``per_pass`` points.

  .. math::

     \phi(x) = \sum_k w_k\, (x - x'_k)
       \odot \nabla f_c\big(x'_k + \alpha_k (x - x'_k)\big).

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
  layout = (groups, per_group, chunks, per_chunk)
  ref_index = ref_index.reshape(layout).transpose(0, 2, 3, 1)
  alphas = alphas.reshape(layout).transpose(0, 2, 3, 1)
  weights = weights.reshape(chunks, per_chunk)

  def one_group(args):
    x, t, group_index, group_alphas = args  # (m, H, W, C), (m,), (chunks, k, m) twice

    def one_chunk(total, chunk):
      index, alpha, w = chunk  # (k, m), (k, m), (k,)
      start = references[index]  # (k, m, H, W, C)
      delta = x[None] - start
      path = start + alpha[..., None, None, None] * delta
      grads = _logit_gradient(
          model, path.reshape(-1, *x.shape[1:]), jnp.tile(t, per_chunk)
      ).reshape(delta.shape)
      return total + jnp.einsum("k,k...->...", w, delta * grads), None

    chunks_of_group = (group_index, group_alphas, weights)
    total, _ = jax.lax.scan(one_chunk, jnp.zeros_like(x), chunks_of_group)
    return total

  attributions = jax.lax.map(one_group, (images, targets, ref_index, alphas))
  return attributions.reshape(padded_batch, *images.shape[2:])[:batch]
