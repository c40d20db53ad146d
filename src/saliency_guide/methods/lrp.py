r"""Layer-wise relevance propagation (LRP; Bach et al., 2015): the logit, redistributed.

The target logit :math:`f_c(x)` is the relevance at the output; each conv or
dense layer :math:`z = Wx + b` hands the relevance of its outputs to its inputs
in proportion to their (modified) contributions,

.. math:: R_i = x'_i \sum_j \frac{w'_{ij}\, R_j}{\mathrm{stab}(z'_j)},

a rule being the choice of :math:`x'`, :math:`w'`, the bias and the
stabiliser (LRP-0, ε, γ, z⁺, αβ, flat, w², zᴮ). The relevance of the pixels is
the map. The machinery (each rule as the VJP of a :func:`jax.custom_vjp`
layer, any NNX model run with them) is in ``methods/_lrp_rules.py``; the
discussion is on the LRP tutorial page.

References:
  S. Bach, A. Binder, G. Montavon, F. Klauschen, K.-R. Müller, W. Samek. *On
  Pixel-Wise Explanations for Non-Linear Classifier Decisions by Layer-Wise
  Relevance Propagation.* PLoS ONE 10(7), 2015.

  G. Montavon, A. Binder, S. Lapuschkin, W. Samek, K.-R. Müller. *Layer-Wise
  Relevance Propagation: An Overview.* In Explainable AI, LNCS 11700, 2019.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from saliency_guide.methods import _lrp_rules
from saliency_guide.methods._cores import Core, register
from saliency_guide.validation import check_choice, check_inputs, check_number, describe

__all__ = ["LRP_COMPOSITES", "LRP_RULES", "lrp"]

LRP_RULES = _lrp_rules.RULES
"""Rule names accepted by ``lrp(rule=...)`` and as the values of a ``composite``."""

LRP_COMPOSITES = tuple(_lrp_rules.COMPOSITES)
"""The published composites (zennit's presets) accepted by ``lrp(composite=...)``."""


#: Images per reverse pass; larger batches are explained in chunks (``lax.map``).
CHUNK = 256


def _lrp_core(model: nnx.Module, images: jax.Array, targets: jax.Array, operands: None, *,
              rules: tuple, folds: tuple) -> jax.Array:
  """Traceable core of :func:`lrp` on checked inputs: the relevance of every pixel."""
  del operands
  batch = images.shape[0]
  if batch <= CHUNK:
    return _lrp_rules.relevance(model, images, targets, rules, folds)
  pad = -batch % CHUNK  # padded with copies of the last image, dropped at the end
  xs = jnp.concatenate([images, jnp.repeat(images[-1:], pad, axis=0)])
  ts = jnp.concatenate([targets, jnp.repeat(targets[-1:], pad, axis=0)])
  out = jax.lax.map(
      lambda chunk: _lrp_rules.relevance(model, chunk[0], chunk[1], rules, folds),
      (xs.reshape(-1, CHUNK, *images.shape[1:]), ts.reshape(-1, CHUNK)))
  return out.reshape(-1, *images.shape[1:])[:batch]


def lrp(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    rule: str = "epsilon",
    epsilon: float = 1e-6,
    gamma: float = 0.25,
    composite: str | Mapping[str, Any] | None = None,
) -> jax.Array:
  r"""Layer-wise relevance propagation of the target logit, with one rule or a composite.

  The relevance starts at the target logit, :math:`R^{(L)}_j = f_c(x)\,[j = c]`,
  and each ``nnx.Conv``/``nnx.Linear`` layer :math:`z_j = \sum_i x_i w_{ij} + b_j`
  passes it down by its rule (:math:`x^\pm = \max/\min(x, 0)`, likewise
  :math:`w^\pm`, :math:`b^\pm`; :math:`\mathrm{stab}(z) = z + \epsilon\,
  \mathrm{sign}(z)` with :math:`\mathrm{sign}(0) = 1`, :math:`\epsilon = 10^{-6}`
  for every rule but ε):

  * ``"zero"`` (LRP-0): :math:`R_i = \sum_j x_i w_{ij} R_j / z_j`;
  * ``"epsilon"``: the same over :math:`z_j + \epsilon\,\mathrm{sign}(z_j)`;
  * ``"gamma"``: weights and biases :math:`w + \gamma w^+`, :math:`b + \gamma b^+`
    for positive outputs (:math:`w + \gamma w^-` for negative ones; zennit's
    generalised γ rule, the original on non-negative inputs);
  * ``"zplus"`` (z⁺ = α1β0): positive contributions only,
    :math:`R_i = \sum_j (x^+_i w^+_{ij} + x^-_i w^-_{ij}) R_j / z^+_j`;
  * ``"alphabeta"`` (α = 2, β = 1): :math:`\alpha` times the positive shares minus
    :math:`\beta` times the negative shares;
  * ``"flat"``: :math:`R_i = \sum_j R_j / \#\{i' \to j\}`, uniform over the window;
  * ``"wsquare"``: :math:`R_i = \sum_j w_{ij}^2 R_j / \sum_{i'} w_{i'j}^2` (zennit
    adds :math:`b_j^2` to the denominator);
  * ``"zbox"`` (zᴮ) for pixels bounded by :math:`[l, h] = [0, 1]`:
    :math:`R_i = \sum_j (x_i w_{ij} - l\,w^+_{ij} - h\,w^-_{ij}) R_j / z^B_j`;
    ``rule="zbox"`` uses it at the first layer and ε at the others.

  Between layers: ReLUs pass the relevance through (zennit's ``Pass``);
  max-pooling is **winner-take-all** (its gradient: a window's relevance goes
  to its maximum); average and global average pooling and residual additions
  share it in proportion to their inputs; an ``nnx.BatchNorm`` called on a
  conv's or dense layer's output is folded into it (canonisation; the model's
  outputs are unchanged). Without biases every rule but αβ conserves the
  relevance, :math:`\sum_i R_i = f_c(x)`; each bias keeps its share
  :math:`b_j R_j / z_j`. With ``rule="zero"`` on a ReLU network the map equals
  Gradient × Input. Batches larger than ``CHUNK`` (256) images are explained
  that many at a time (bounded memory), with the same result.

  Args:
    model: a classifier returning logits, any ``nnx.Module`` built from
      ``nnx.Conv``, ``nnx.Linear``, ReLU (``jax.nn.relu``, ``nnx.relu``,
      ``jnp.maximum(x, 0)``), max/average pooling, global average pooling,
      flatten, an eval-mode ``nnx.BatchNorm`` after a conv or dense layer, and
      residual additions. Anything else (GELU, LayerNorm, a Linen module) is
      an error naming it.
    images: float array ``(B, H, W, C)``, NHWC, pixels in ``[0, 1]`` for zᴮ.
    targets: integer array ``(B,)``, the class whose logit is explained.
    rule: one of :data:`LRP_RULES`, for every conv and dense layer (the layers a
      ``composite`` does not name).
    epsilon: the ε of ``"epsilon"`` (:math:`\ge 0`).
    gamma: the γ of ``"gamma"`` (:math:`\ge 0`).
    composite: ``None``; one of :data:`LRP_COMPOSITES` (zennit's presets,
      ``"epsilon_plus_flat"``: flat at the first layer, z⁺ at convs, ε at dense
      layers; ``"epsilon_gamma_box"``: zᴮ at the first conv, γ at the other convs,
      ε at dense layers; ``"epsilon_alpha2_beta1"``: αβ at convs, ε at dense
      layers; ``"epsilon_plus"``); or a dict from layers to rules. Keys: a layer
      path (``"conv1"``, ``"blocks.0.conv2"``), ``"first"`` (the first conv or
      dense layer of the forward pass), ``"first_conv"``, ``"conv"``,
      ``"linear"``, in that order of precedence; values: a rule name, or
      ``(name, {"epsilon" | "gamma" | "alpha" | "beta" | "low" | "high": value})``.

  Returns:
    float32 array of the shape of ``images``: each pixel's relevance, signed
    (positive: evidence for the class, negative: against it), summing to the
    target logit minus what the biases keep.

  Raises:
    TypeError, ValueError: bad ``images``/``targets``, ``rule``, ``epsilon``,
      ``gamma`` or ``composite``; a model with a layer or activation LRP has no
      rule for (the message names it and where the model calls it).

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import CNN
    >>> model = CNN(channels=(4, 8), hidden=16, rngs=nnx.Rngs(0))
    >>> x, t = jnp.full((1, 28, 28, 1), 0.5), jnp.array([3])
    >>> maps = lrp(model, x, t, composite="epsilon_plus_flat")
    >>> maps.shape
    (1, 28, 28, 1)
    >>> logit = model(x)[0, 3]  # this model's biases are zero: the logit is conserved
    >>> bool(jnp.allclose(lrp(model, x, t).sum(), logit, rtol=1e-4))
    True

  References:
    S. Bach, A. Binder, G. Montavon, F. Klauschen, K.-R. Müller, W. Samek. *On
    Pixel-Wise Explanations for Non-Linear Classifier Decisions by Layer-Wise
    Relevance Propagation.* PLoS ONE 10(7), 2015.

    G. Montavon, S. Lapuschkin, A. Binder, W. Samek, K.-R. Müller. *Explaining
    nonlinear classification decisions with deep Taylor decomposition.*
    Pattern Recognition 65, 2017. arXiv:1512.02479 (z⁺, zᴮ, w²).

    G. Montavon, A. Binder, S. Lapuschkin, W. Samek, K.-R. Müller. *Layer-Wise
    Relevance Propagation: An Overview.* In Explainable AI, LNCS 11700, 2019 (γ).

    C. J. Anders, D. Neumann, W. Samek, K.-R. Müller, S. Lapuschkin. *Software for
    Dataset-wide XAI: From Local Explanations to Global Insights with Zennit,
    CoRelAy, and ViRelAy.* 2021. arXiv:2106.13200 (the rules as modified gradients).
  """
  images, targets = check_inputs(model, images, targets)
  return _prepare(model, images, rule=rule, epsilon=epsilon, gamma=gamma,
                  composite=composite).run(model, images, targets)


def _prepare(model: nnx.Module, images: jax.Array, *, rule: str = "epsilon",
             epsilon: float = 1e-6, gamma: float = 0.25, composite: Any = None) -> Core:
  if not isinstance(rule, str):
    raise TypeError(f"rule: expected one of {', '.join(map(repr, LRP_RULES))}, got "
                    f"{describe(rule)}")
  rule = check_choice("rule", rule, LRP_RULES)
  epsilon = check_number("epsilon", epsilon, inclusive=True,
                         hint=" (the stabiliser of the epsilon rule)")
  gamma = check_number("gamma", gamma, inclusive=True,
                       hint=" (the weight of the positive parameters in the gamma rule)")
  if composite is not None:
    if isinstance(composite, str):
      check_choice("composite", composite, LRP_COMPOSITES)
    elif not isinstance(composite, Mapping):
      raise TypeError(f"composite: expected None, one of {', '.join(map(repr, LRP_COMPOSITES))} "
                      f"or a dict from layers to rules, got {describe(composite)}")
  plan = _lrp_rules.plan(model, images)
  defaults = _lrp_rules.Rule(rule, epsilon=epsilon, gamma=gamma)
  rules = _lrp_rules.assign(plan, rule, composite, defaults)
  return Core(_lrp_core, (("rules", rules), ("folds", plan.folds)))


register(lrp, _prepare)
