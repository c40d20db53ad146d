r"""DeepLIFT (Rescale rule) and DeepSHAP: multipliers back-propagated against a reference.

.. math::

   \phi_i(x) = (x_i - x'_i)\, m_{\Delta x_i \Delta t}, \qquad
   \sum_i \phi_i(x) = f_c(x) - f_c(x'),

with the multipliers :math:`m` back-propagated by the chain rule, a linear
layer's transpose and, at each elementwise nonlinearity :math:`y = g(z)`,
:math:`\Delta y / \Delta z` (the Rescale rule). DeepSHAP averages DeepLIFT over
references drawn from the data. The rules at each layer are in
``methods/_deeplift_rules.py``.

References:
  A. Shrikumar, P. Greenside, A. Kundaje. *Learning Important Features Through
  Propagating Activation Differences.* ICML 2017. arXiv:1704.02685.

  S. M. Lundberg, S.-I. Lee. *A Unified Approach to Interpreting Model
  Predictions.* NeurIPS 2017. arXiv:1705.07874.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from saliency_guide.methods._cores import Core, register
from saliency_guide.methods._deeplift_rules import paired_forward
from saliency_guide.validation import (
    check_array,
    check_choice,
    check_image_batch,
    check_inputs,
    check_positive_int,
)

__all__ = ["DEEPLIFT_RULES", "deep_shap", "deeplift"]

DEEPLIFT_RULES: tuple[str, ...] = ("rescale",)
"""Rules accepted by ``deeplift(rule=...)`` and ``deep_shap(rule=...)``."""


def deeplift(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    baseline: jax.Array | float = 0.0,
    rule: str = "rescale",
    internal_batch_size: int = 64,
) -> jax.Array:
  r"""DeepLIFT attributions of the target class logit against a reference input (Rescale rule).

  Shrikumar et al. (2017) explain the difference :math:`\Delta t = f_c(x) -
  f_c(x')` between the logit of the input and that of a reference
  :math:`x'`. Every neuron gets a difference-from-reference :math:`\Delta z`,
  and the *multipliers* :math:`m_{\Delta z \Delta t}` obey a chain rule, as
  derivatives do:

  .. math::

     m_{\Delta x_i \Delta t} = \sum_j m_{\Delta x_i \Delta z_j}\, m_{\Delta z_j \Delta t},
     \qquad
     m_{\Delta z \Delta y} = \frac{g(z) - g(z')}{z - z'} \ \text{for}\ y = g(z)
     \ \text{(Rescale)},

  a linear layer's multiplier being its weight. The attribution is
  :math:`\phi_i = (x_i - x'_i)\, m_{\Delta x_i \Delta t}` and they sum to the
  difference (*summation-to-delta*): :math:`\sum_i \phi_i = f_c(x) - f_c(x')`.
  Where :math:`|z - z'| < 10^{-10}` the multiplier is the derivative
  :math:`g'(z)`. Max pooling follows Captum's rule (see the tutorial page).
  Supported: convolutions, dense layers, sums, average and max pooling,
  BatchNorm in eval mode, residual additions, and elementwise nonlinearities of
  one tensor (ReLU, ``jnp.maximum(x, 0)``, tanh, sigmoid, the ``jax.nn``
  activations); anything else is an error naming it.

  Args:
    model: a classifier returning logits ``(B, classes)``.
    images: float array ``(B, H, W, C)`` (NHWC), finite values.
    targets: integer array ``(B,)``, the class to explain for each image.
    baseline: the reference :math:`x'`: a number (a constant image; 0 is
      black) or a float array of shape ``(H, W, C)``, ``(1, H, W, C)`` or
      ``(B, H, W, C)``.
    rule: the nonlinearities' rule, one of :data:`DEEPLIFT_RULES`.
    internal_batch_size: (input, reference) pairs per forward/backward pass.

  Returns:
    float32 array ``(B, H, W, C)`` summing, per image, to
    :math:`f_c(x) - f_c(x')`.

  Raises:
    TypeError, ValueError: bad ``images``, ``targets``, ``baseline``, ``rule``
      or ``internal_batch_size``; when traced, a layer without a DeepLIFT rule.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> from saliency_guide.methods import deeplift
    >>> model = MLP(rngs=nnx.Rngs(0))
    >>> x = jax.random.uniform(jax.random.key(0), (2, 28, 28, 1))
    >>> maps = deeplift(model, x, jnp.array([3, 7]))
    >>> gap = model(x)[jnp.arange(2), jnp.array([3, 7])] - model(0 * x)[:, jnp.array([3, 7])]
    >>> bool(jnp.allclose(maps.sum(axis=(1, 2, 3)), jnp.diag(gap), atol=1e-4))
    True

  References:
    A. Shrikumar, P. Greenside, A. Kundaje. *Learning Important Features Through
    Propagating Activation Differences.* ICML 2017. arXiv:1704.02685.
  """
  images, targets = check_inputs(model, images, targets)
  return _prepare(model, images, baseline=baseline, rule=rule,
                  internal_batch_size=internal_batch_size).run(model, images, targets)


def deep_shap(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    references: jax.Array,
    rule: str = "rescale",
    internal_batch_size: int = 64,
) -> jax.Array:
  r"""DeepSHAP: DeepLIFT averaged over a distribution of references.

  Lundberg and Lee (2017) replace DeepLIFT's single reference by samples
  :math:`x'^{(1)}, \dots, x'^{(R)}` of the data distribution :math:`D` and
  average (the DeepSHAP of the SHAP package, Captum's ``DeepLiftShap``):

  .. math::

     \phi_i(x) = \frac1R \sum_{r=1}^{R} \mathrm{DeepLIFT}_i\big(x; x'^{(r)}\big),
     \qquad
     \sum_i \phi_i(x) = f_c(x) - \frac1R \sum_{r=1}^R f_c\big(x'^{(r)}\big).

  Every image is explained against every reference (no sampling: the result
  is deterministic; cost :math:`B \times R` DeepLIFT pairs).

  Args:
    model: a classifier returning logits ``(B, classes)``.
    images: float array ``(B, H, W, C)`` (NHWC), finite values.
    targets: integer array ``(B,)``, the class to explain for each image.
    references: float array ``(R, H, W, C)``: samples of the data distribution
      :math:`D` (e.g. training images), finite values.
    rule: the nonlinearities' rule, one of :data:`DEEPLIFT_RULES`.
    internal_batch_size: (input, reference) pairs per forward/backward pass.

  Returns:
    float32 array ``(B, H, W, C)``.

  Raises:
    TypeError, ValueError: bad ``images``, ``targets``, ``references``,
      ``rule`` or ``internal_batch_size``; when traced, a layer without a
      DeepLIFT rule.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> from saliency_guide.methods import deep_shap
    >>> model = MLP(rngs=nnx.Rngs(0))
    >>> refs = jax.random.uniform(jax.random.key(1), (8, 28, 28, 1))
    >>> deep_shap(model, refs[:2], jnp.array([3, 7]), references=refs).shape
    (2, 28, 28, 1)

  References:
    S. M. Lundberg, S.-I. Lee. *A Unified Approach to Interpreting Model
    Predictions.* NeurIPS 2017. arXiv:1705.07874.

    A. Shrikumar, P. Greenside, A. Kundaje. *Learning Important Features Through
    Propagating Activation Differences.* ICML 2017. arXiv:1704.02685.
  """
  images, targets = check_inputs(model, images, targets)
  return _prepare_shap(model, images, references=references, rule=rule,
                       internal_batch_size=internal_batch_size).run(model, images, targets)


def _pair_attributions(
    model: nnx.Module, images: jax.Array, baselines: jax.Array, targets: jax.Array
) -> jax.Array:
  """DeepLIFT of one batch of (image, baseline) pairs: :math:`(x - x')\\, m`."""

  def objective(pair):  # both members' target logits, as Captum back-propagates
    logits = paired_forward(model, pair)  # (2, B, classes)
    return jnp.take_along_axis(logits, targets[None, :, None], axis=2).sum()

  multipliers = jax.grad(objective)(jnp.stack([images, baselines]))[0]
  return (images - baselines) * multipliers


def _chunked(model: nnx.Module, images: jax.Array, baselines: jax.Array, targets: jax.Array,
             per_pass: int) -> jax.Array:
  """:func:`_pair_attributions` over groups of ``per_pass`` pairs (``lax.map``)."""
  n = images.shape[0]
  if n <= per_pass:
    return _pair_attributions(model, images, baselines, targets)
  groups = -(-n // per_pass)
  pad = groups * per_pass - n

  def grouped(a):
    a = jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]) if pad else a
    return a.reshape(groups, per_pass, *a.shape[1:])

  maps = jax.lax.map(lambda g: _pair_attributions(model, *g),
                     (grouped(images), grouped(baselines), grouped(targets)))
  return maps.reshape(groups * per_pass, *images.shape[1:])[:n]


def _deeplift_core(
    model: nnx.Module, images: jax.Array, targets: jax.Array, operands: jax.Array, *,
    rule: str, per_pass: int,
) -> jax.Array:
  """Traceable core of :func:`deeplift`; ``operands`` are the baselines ``(B, H, W, C)``."""
  del rule  # one rule so far
  baselines = operands
  if baselines.shape[0] != images.shape[0]:  # a wrapper's n copies of the B images
    baselines = jnp.tile(baselines, (images.shape[0] // baselines.shape[0], 1, 1, 1))
  return _chunked(model, images, baselines, targets, per_pass)


def _deep_shap_core(
    model: nnx.Module, images: jax.Array, targets: jax.Array, operands: jax.Array, *,
    rule: str, per_pass: int,
) -> jax.Array:
  """Traceable core of :func:`deep_shap`; ``operands`` are the references ``(R, H, W, C)``."""
  del rule
  references = operands
  b, r = images.shape[0], references.shape[0]
  inputs = jnp.repeat(images, r, axis=0)  # image-major: (b0 r0, b0 r1, ..., b1 r0, ...)
  baselines = jnp.tile(references, (b, 1, 1, 1))
  maps = _chunked(model, inputs, baselines, jnp.repeat(targets, r), per_pass)
  return maps.reshape(b, r, *images.shape[1:]).mean(axis=1)


def _prepare(
    model: nnx.Module,
    images: jax.Array,
    *,
    baseline: jax.Array | float = 0.0,
    rule: str = "rescale",
    internal_batch_size: int = 64,
) -> Core:
  """The options of :func:`deeplift` checked, as a :class:`Core`."""
  del model
  baselines = check_array("baseline", baseline, images.shape)
  rule = check_choice("rule", rule, DEEPLIFT_RULES)
  per_pass = check_positive_int("internal_batch_size", internal_batch_size)
  return Core(_deeplift_core, (("rule", rule), ("per_pass", per_pass)), baselines)


def _prepare_shap(
    model: nnx.Module,
    images: jax.Array,
    *,
    references: jax.Array,
    rule: str = "rescale",
    internal_batch_size: int = 64,
) -> Core:
  """The options of :func:`deep_shap` checked, as a :class:`Core`."""
  del model
  references = check_image_batch("references", references, like=images)
  rule = check_choice("rule", rule, DEEPLIFT_RULES)
  per_pass = check_positive_int("internal_batch_size", internal_batch_size)
  return Core(_deep_shap_core, (("rule", rule), ("per_pass", per_pass)), references)


register(deeplift, _prepare)
register(deep_shap, _prepare_shap)
