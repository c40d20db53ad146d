"""DeepLIFT and DeepSHAP against Captum's ``DeepLift`` and ``DeepLiftShap``.

Captum runs the input and the baseline as one batch and replaces the backward pass
of each ``nn.ReLU`` and ``nn.MaxPool2d`` module through tensor hooks. In the
PyTorch copies of the site's models a ReLU's output *is* the max-pool's input
tensor, so the ReLU's hook (registered first) reads the gradient of that tensor
before the max-pool's hook has replaced it by its DeepLIFT multiplier: the ReLU
then rescales the plain max-pool gradient, and Captum's attributions stop summing
to ``f(x) - f(x')`` (convergence delta ~1e-3 on the trained CNN; cf. Captum issue
#1104). A ``.clone()`` between each ReLU and its max-pool (same forward values,
same weights: :class:`Separated`) puts the two hooks on different tensors; Captum
then applies its own rules as written, and that is what is compared. Captum's
max-pool fallback at ``|Δx| < 1e-10`` uses ``grad_input[0]`` (the first example's
gradient for the whole batch, Captum issue #1276); it is left as it is.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from references import Case

LIBRARIES = ("captum", "torch")

#: References of the DeepSHAP cases: this many of the digits, in reverse order.
SHAP_REFERENCES = 8

NOTE = ("Captum on the PyTorch copy with a .clone() between each ReLU and its max-pool "
        "(so that the two modules' hooks sit on different tensors; see "
        "benchmarks/references/deeplift.py)")


def separated(model: Any) -> Any:
  """The PyTorch copy with a ``.clone()`` between each ReLU and the max-pool after it."""
  import torch
  from torch import nn

  class Separated(nn.Module):
    def __init__(self, copy: nn.Module):
      super().__init__()
      self.copy = copy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
      c = self.copy
      x = c.pool1(c.relu1(c.conv1(x)).clone())
      x = c.pool2(c.relu2(c.conv2(x)).clone())
      if hasattr(c, "conv3"):  # TorchGapCNN
        return c.head(c.relu3(c.conv3(x)).mean(dim=(2, 3)))
      return c.head(c.relu3(c.dense(torch.flatten(x, 1))))

  return Separated(model).eval()


def cases(models: dict[str, Any], images: np.ndarray, labels: np.ndarray) -> list[Case]:
  import warnings

  import torch
  import torch_models
  from captum.attr import DeepLift, DeepLiftShap

  from saliency_guide import methods

  images = np.asarray(images, np.float32)
  labels = np.asarray(labels)
  references = images[::-1][:SHAP_REFERENCES].copy()
  x = torch_models.to_nchw(images)
  target = torch.as_tensor(labels, dtype=torch.long)
  found = []
  for name in ("cnn", "gap_cnn"):
    model = models[name]
    copy = separated(torch_models.from_flax(model))
    for baseline in (0.0, 0.5):

      def ours(model=model, baseline=baseline):
        return np.asarray(methods.deeplift(model, images, labels, baseline=baseline))

      def theirs(copy=copy, baseline=baseline):
        with warnings.catch_warnings():
          warnings.simplefilter("ignore")  # Captum warns that it sets hooks
          maps = DeepLift(copy).attribute(x, baselines=baseline, target=target)
        return torch_models.to_nhwc(maps.detach())

      found.append(Case(method=f"DeepLIFT (Rescale), baseline {baseline}", model=name,
                        reference="Captum DeepLift", ours=ours, theirs=theirs, note=NOTE))

    def ours_shap(model=model):
      return np.asarray(methods.deep_shap(model, images, labels, references=references))

    def theirs_shap(copy=copy):
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        maps = DeepLiftShap(copy).attribute(
            x, baselines=torch_models.to_nchw(references), target=target)
      return torch_models.to_nhwc(maps.detach())

    found.append(Case(method=f"DeepSHAP, {SHAP_REFERENCES} references", model=name,
                      reference="Captum DeepLiftShap", ours=ours_shap, theirs=theirs_shap,
                      note=NOTE))
  return found
