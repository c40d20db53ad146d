"""The one quantity every method explains: the target class logit.

Saliency methods explain :math:`f_c(x)`, the **pre-softmax** score of the
target class :math:`c`, never the training loss (whose gradient has the opposite
sign and mixes in every other class through the softmax).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["logit_gradient", "target_logits"]


def target_logits(model: nnx.Module, images: jax.Array, targets: jax.Array) -> jax.Array:
  r"""The target logits :math:`f_{c_b}(x_b)` of a batch, shape ``(B,)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> target_logits(MLP(rngs=nnx.Rngs(0)), jnp.zeros((2, 28, 28, 1)), jnp.array([0, 1])).shape
    (2,)
  """
  logits = model(images)
  return jnp.take_along_axis(logits, targets[:, None], axis=1)[:, 0]


def logit_gradient(model: nnx.Module, images: jax.Array, targets: jax.Array) -> jax.Array:
  r""":math:`\partial f_{c_b}(x_b) / \partial x_b` for every image of a batch, shape of ``images``.

  Examples of a batch do not interact in these models, so the gradient of the
  *sum* of the target logits with respect to the batch is the batch of
  per-example gradients (one backward pass instead of ``B``).

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> logit_gradient(MLP(rngs=nnx.Rngs(0)), jnp.zeros((2, 28, 28, 1)), jnp.array([0, 1])).shape
    (2, 28, 28, 1)
  """
  return jax.grad(lambda x: target_logits(model, x, targets).sum())(images)
