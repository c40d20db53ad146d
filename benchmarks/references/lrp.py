"""LRP against zennit (every rule and preset) and Captum's ``LRP`` (where it has the rule).

Both sides start the relevance at the target logit (zennit: ``attr_output`` = one-hot
times the output). zennit's composites are built as its presets are: ``layer_map_base``
(ReLU ``Pass``, average pooling and sums ``Norm``) plus the rule at ``Convolution`` and
``torch.nn.Linear``; max-pooling has no rule (its gradient: winner-take-all), as in ours.
Ours gives the first conv/dense layer of the forward pass the first-layer rule; zennit
the first in ``named_modules`` order, the same layer in these models. The PyTorch
``GapCNN`` computes its global average pooling with ``x.mean`` (a function, which no
hook sees: relevance would be split uniformly); here it is an ``AdaptiveAvgPool2d``
module, so that zennit and Captum apply their average-pooling rule (proportional, as
ours). LRP-0 is zennit's ``Epsilon`` with a stabiliser that only replaces a zero
denominator (ours: 0 relevance there). Captum's ``GammaRule`` and ``Alpha1_Beta0_Rule``
leave the bias unmodified (zennit and ours: :math:`b + \\gamma b^+`, :math:`b^+`), so
they are compared on copies of the model with zero biases (``set_bias_to_zero=True``).
Captum has no gradient pass-through for max-pooling: it takes the ε rule there
(``x R / (x + ε)`` at the winner, a leak of ε/x), with ε = 1e-12, i.e. winner-take-all.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from references import Case, torchvision_stub

LIBRARIES = ("zennit", "captum", "torch")

RULES = ("zero", "epsilon", "gamma", "zplus", "alphabeta", "flat", "wsquare", "zbox")
PRESETS = ("epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1", "epsilon_plus")
EPSILON = 1e-6


def _gap_module(copy):
  """The PyTorch GapCNN copy with its global average pooling as a module."""
  import torch

  class GapModule(torch.nn.Module):
    def __init__(self, inner):
      super().__init__()
      self.conv1, self.relu1, self.pool1 = inner.conv1, inner.relu1, inner.pool1
      self.conv2, self.relu2, self.pool2 = inner.conv2, inner.relu2, inner.pool2
      self.conv3, self.relu3 = inner.conv3, inner.relu3
      self.gap = torch.nn.AdaptiveAvgPool2d(1)
      self.head = inner.head

    def forward(self, x):
      x = self.pool1(self.relu1(self.conv1(x)))
      x = self.pool2(self.relu2(self.conv2(x)))
      x = self.relu3(self.conv3(x))
      return self.head(torch.flatten(self.gap(x), 1))

  return GapModule(copy).eval()


def _zennit_rule(name: str):
  import torch
  from zennit import rules

  if name == "zero":
    return rules.Epsilon(epsilon=lambda z: torch.where(z == 0, torch.ones_like(z), z))
  return {
      "epsilon": lambda: rules.Epsilon(epsilon=EPSILON),
      "gamma": lambda: rules.Gamma(gamma=0.25),
      "zplus": rules.ZPlus,
      "alphabeta": lambda: rules.AlphaBeta(alpha=2.0, beta=1.0),
      "flat": rules.Flat,
      "wsquare": rules.WSquare,
  }[name]()


def zennit_composite(name: str):
  """zennit's composite for our ``rule=name`` or ``composite=name``."""
  import torch
  from zennit import composites, rules, types

  base = composites.layer_map_base(1e-6)
  if name in PRESETS:
    return {
        "epsilon_plus_flat": lambda: composites.EpsilonPlusFlat(epsilon=EPSILON),
        "epsilon_gamma_box": lambda: composites.EpsilonGammaBox(low=0.0, high=1.0,
                                                                epsilon=EPSILON),
        "epsilon_alpha2_beta1": lambda: composites.EpsilonAlpha2Beta1(epsilon=EPSILON),
        "epsilon_plus": lambda: composites.EpsilonPlus(epsilon=EPSILON),
    }[name]()
  if name == "zbox":
    return composites.SpecialFirstLayerMapComposite(
        layer_map=[*base, (types.Convolution, rules.Epsilon(epsilon=EPSILON)),
                   (torch.nn.Linear, rules.Epsilon(epsilon=EPSILON))],
        first_map=[(types.Linear, rules.ZBox(low=0.0, high=1.0))])
  return composites.LayerMapComposite(
      layer_map=[*base, (types.Convolution, _zennit_rule(name)),
                 (torch.nn.Linear, _zennit_rule(name))])


def zennit_lrp(copy, images: np.ndarray, labels: np.ndarray, name: str) -> np.ndarray:
  """zennit's relevance of ``copy`` (NCHW model) at NHWC ``images``, from the target logit."""
  import torch
  import torch_models
  from zennit.attribution import Gradient

  x = torch_models.to_nchw(images).requires_grad_(True)
  onehot = torch.nn.functional.one_hot(torch.as_tensor(labels, dtype=torch.long), 10)
  with Gradient(copy, zennit_composite(name)) as attributor:
    _, relevance = attributor(x, lambda out: out * onehot.to(out))
  return torch_models.to_nhwc(relevance)


def _zero_biases(model):
  from flax import nnx

  graphdef, state = nnx.split(model)
  copy = nnx.merge(graphdef, state, copy=True)
  for _, node in nnx.iter_graph(copy):
    if isinstance(node, nnx.Conv | nnx.Linear) and node.bias is not None:
      node.bias[...] = 0 * node.bias[...]
  return copy


def captum_lrp(copy, images: np.ndarray, labels: np.ndarray, conv_rule: str) -> np.ndarray:
  """Captum's LRP: ε everywhere, or ``conv_rule`` ("gamma", "zplus") at the convolutions."""
  import torch
  import torch_models
  from captum.attr import LRP
  from captum.attr._utils.lrp_rules import Alpha1_Beta0_Rule, EpsilonRule, GammaRule

  for module in copy.modules():
    if isinstance(module, torch.nn.Conv2d) and conv_rule == "gamma":
      module.rule = GammaRule(gamma=0.25, set_bias_to_zero=True)
    elif isinstance(module, torch.nn.Conv2d) and conv_rule == "zplus":
      module.rule = Alpha1_Beta0_Rule(set_bias_to_zero=True)
    elif isinstance(module, torch.nn.MaxPool2d):  # ~ the gradient: x R / (x + 1e-12)
      module.rule = EpsilonRule(epsilon=1e-12)
    elif isinstance(module, torch.nn.Conv2d | torch.nn.Linear | torch.nn.AdaptiveAvgPool2d):
      module.rule = EpsilonRule(epsilon=EPSILON)
  x = torch_models.to_nchw(images)
  target = torch.as_tensor(labels, dtype=torch.long)
  maps = LRP(copy).attribute(x, target=target)
  return torch_models.to_nhwc(maps)


def cases(models: dict[str, Any], images: np.ndarray, labels: np.ndarray) -> list[Case]:
  torchvision_stub()
  import torch_models

  from saliency_guide import methods

  images = np.asarray(images, np.float32)
  labels = np.asarray(labels)
  found = []
  for model_name in ("cnn", "gap_cnn"):
    model = models[model_name]

    def torch_copy(model=model, model_name=model_name):
      copy = torch_models.from_flax(model)
      return _gap_module(copy) if model_name == "gap_cnn" else copy

    for name in (*RULES, *PRESETS):
      composite = name if name in PRESETS else None
      rule = "epsilon" if composite else name

      def ours(model=model, rule=rule, composite=composite):
        return np.asarray(methods.lrp(model, images, labels, rule=rule, epsilon=EPSILON,
                                      composite=composite))

      def theirs(name=name, torch_copy=torch_copy):
        return zennit_lrp(torch_copy(), images, labels, name)

      found.append(Case(
          method=f"LRP, composite {name}" if composite else f"LRP, rule {name}",
          model=model_name, reference="zennit Gradient + composite", ours=ours,
          theirs=theirs, tolerance=1e-5,
          note="zennit layer_map_base + the rule at convs and dense layers; GAP as "
               "AdaptiveAvgPool2d (Norm rule); relevance from the target logit",
          timed=name == "epsilon"))
    for conv_rule in ("epsilon", "gamma", "zplus"):
      flax_model = model if conv_rule == "epsilon" else _zero_biases(model)
      composite = None if conv_rule == "epsilon" else {"conv": conv_rule, "linear": "epsilon"}

      def ours(flax_model=flax_model, composite=composite):
        return np.asarray(methods.lrp(flax_model, images, labels, epsilon=EPSILON,
                                      composite=composite))

      def theirs(flax_model=flax_model, model_name=model_name, conv_rule=conv_rule):
        copy = torch_models.from_flax(flax_model)
        copy = _gap_module(copy) if model_name == "gap_cnn" else copy
        return captum_lrp(copy, images, labels, conv_rule)

      found.append(Case(
          method=("LRP, rule epsilon" if conv_rule == "epsilon"
                  else f"LRP, {conv_rule} at convs, epsilon at dense (biases zeroed)"),
          model=model_name, reference="Captum LRP", ours=ours, theirs=theirs,
          tolerance=1e-5,
          note="Captum's max-pooling takes the epsilon rule with eps = 1e-12 (winner-take-"
               "all); its gamma and alpha1-beta0 rules leave biases unmodified, so those "
               "two are compared on copies with zero biases",
          timed=False))
  return found
