r"""Completeness: do the attributions add up to the change in the logit?

Path methods (Integrated Gradients, Expected Gradients) satisfy the
*completeness* axiom of Sundararajan et al. (2017) exactly in the limit of
infinitely many steps: the attributions sum to the difference between the
target logit at the input and at the baseline. The residual measures the
quadrature error (and catches bugs such as explaining the probability instead
of the logit, or forgetting the :math:`(x - x')` factor).
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from saliency_guide.methods.gradients import target_logits
from saliency_guide.metrics._common import pixel_scores
from saliency_guide.validation import check_array, check_inputs, check_maps

__all__ = ["completeness_delta"]


@jax.jit
def _delta(model: nnx.Module, images: jax.Array, targets: jax.Array,
           scores: jax.Array, baselines: jax.Array) -> jax.Array:
  gap = target_logits(model, images, targets) - target_logits(model, baselines, targets)
  return scores.sum(axis=(1, 2)) - gap


def completeness_delta(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    attributions: jax.Array,
    baselines: Any = 0.0,
) -> jax.Array:
  r"""The completeness residual :math:`\sum_i \phi_i - \big(f_c(x) - f_c(x')\big)`, per image.

  .. math:: \delta = \sum_i \phi_i(x) - \big(f_c(x) - f_c(x')\big)

  with :math:`f_c` the target class **logit** and :math:`x'` the baseline.
  It is 0 for exact Integrated Gradients; with :math:`n` quadrature steps it
  shrinks as the rule converges (choose ``steps`` by it). For Expected
  Gradients pass the *mean* baseline only if the model is linear; otherwise
  :math:`\mathbb E_{x'}[f_c(x')]` is what the attributions add up to. For
  other methods the residual is simply reported, not expected to vanish
  (gradient × input has :math:`\delta = 0` only for a linear model and a zero
  baseline).

  :func:`saliency_guide.methods.integrated_gradients` with ``return_delta=True``
  returns the same quantity for its own baseline; this function checks any
  map against any baseline.

  Args:
    model: a classifier returning logits.
    images: ``(B, H, W, C)`` inputs :math:`x`.
    targets: ``(B,)`` explained classes :math:`c`.
    attributions: ``(B, H, W, C)`` or ``(B, H, W)`` maps :math:`\phi`.
    baselines: :math:`x'`: a number, one image ``(H, W, C)`` or ``(1, H, W, C)``,
      or one per image ``(B, H, W, C)`` (default 0, the black image).

  Returns:
    float32 array ``(B,)``.

  Raises:
    TypeError, ValueError: bad images, targets, maps or baselines.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.methods.gradients import logit_gradient
    >>> model = nnx.Linear(784, 10, rngs=nnx.Rngs(0))
    >>> class Linear(nnx.Module):
    ...   def __init__(self): self.head = model
    ...   def __call__(self, x): return self.head(x.reshape(len(x), -1))
    >>> f = Linear()
    >>> x, t = jnp.linspace(0, 1, 784).reshape(1, 28, 28, 1), jnp.array([4])
    >>> phi = x * logit_gradient(f, x, t)  # gradient x input: complete for a linear f
    >>> bool(jnp.abs(completeness_delta(f, x, t, phi)) < 1e-4)
    True

  References:
    M. Sundararajan, A. Taly, Q. Yan. *Axiomatic Attribution for Deep
    Networks.* ICML 2017. arXiv:1703.01365.
  """
  images, targets = check_inputs(model, images, targets)
  scores = pixel_scores(check_maps("attributions", attributions, images))
  base = check_array("baselines", baselines, images.shape)
  return _delta(model, images, targets, scores, base)

