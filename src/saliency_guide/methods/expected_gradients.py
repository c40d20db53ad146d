r"""Expected Gradients: Integrated Gradients averaged over baselines drawn from the data.

.. math::

   \phi_i(x) = \mathop{\mathbb{E}}_{x' \sim D,\ \alpha \sim U(0, 1)}
     \Big[ (x_i - x'_i)\,
     \frac{\partial f_c\big(x' + \alpha (x - x')\big)}{\partial x_i} \Big],

estimated by Monte Carlo with the path engine of Integrated Gradients
(``methods/_path_engine.py``).

References:
  G. Erion, J. D. Janizek, P. Sturmfels, S. M. Lundberg, S.-I. Lee. *Improving
  performance of deep learning models with axiomatic attribution priors and
  expected gradients.* Nature Machine Intelligence 3, 2021. arXiv:1906.10670.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from saliency_guide.methods._cores import Core, register
from saliency_guide.methods._path_engine import path_attributions
from saliency_guide.methods._random import flat_random
from saliency_guide.validation import (
    check_image_batch,
    check_inputs,
    check_key,
    check_positive_int,
)

__all__ = ["expected_gradients"]


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
  core = _prepare(model, images, references=references, samples=samples, key=key,
                  internal_batch_size=internal_batch_size)
  return core.run(model, images, targets)


def _expected_gradients_core(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    operands: tuple[jax.Array, jax.Array],
    *,
    samples: int,
    per_pass: int,
) -> jax.Array:
  """Traceable core of :func:`expected_gradients`; ``operands = (references, key)``."""
  references, key = operands
  index_key, alpha_key = jax.random.split(key)
  shape = (images.shape[0], samples)
  ref_index = flat_random(
      jax.random.randint, index_key, shape, minval=0, maxval=references.shape[0])
  alphas = flat_random(jax.random.uniform, alpha_key, shape)
  weights = jnp.full((samples,), 1.0 / samples, images.dtype)
  return path_attributions(
      model, images, targets, references, ref_index, alphas, weights, per_pass
  )


def _prepare(
    model: nnx.Module,
    images: jax.Array,
    *,
    references: jax.Array,
    samples: int = 64,
    key: jax.Array,
    internal_batch_size: int = 64,
) -> Core:
  """The options of :func:`expected_gradients` checked, as a :class:`Core`."""
  del model
  references = check_image_batch("references", references, like=images)
  samples = check_positive_int("samples", samples)
  per_pass = check_positive_int("internal_batch_size", internal_batch_size)
  key = check_key(key, "expected_gradients")
  static = (("samples", samples), ("per_pass", per_pass))
  return Core(_expected_gradients_core, static, (references, key))


register(expected_gradients, _prepare)
