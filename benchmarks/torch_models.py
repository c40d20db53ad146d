"""PyTorch copies of :class:`saliency_guide.models.CNN` and ``GapCNN`` with the same weights.

Used by the benchmark to run Captum on exactly the function our methods explain.
Two layout conversions make the copies compute the same logits:

* **Conv kernels.** Flax stores ``(kh, kw, in, out)`` (HWIO); PyTorch wants
  ``(out, in, kh, kw)`` (OIHW): ``kernel.transpose(3, 2, 0, 1)``. Both frameworks
  compute a cross-correlation with the same ``SAME``/``padding=1`` zero padding, so
  no kernel flip is needed.
* **The dense layer after the flatten** (``CNN`` only). JAX flattens NHWC
  feature maps, so input ``h·W·C + w·C + c`` of the dense layer is channel ``c`` at
  ``(h, w)``; PyTorch flattens NCHW, where the same value sits at ``c·H·W + h·W + w``.
  The Flax kernel ``(H·W·C, out)`` is reshaped to ``(H, W, C, out)``, permuted to
  ``(out, C, H, W)`` and flattened to PyTorch's ``(out, C·H·W)``.

Every ReLU is its own ``nn.ReLU`` module (Captum's Guided Backpropagation and
Deconvolution replace the backward pass of each ``nn.ReLU`` module through hooks;
``torch.relu`` calls would be missed). The feature maps Grad-CAM explains are the
outputs of ``relu1``, ``relu2`` (``relu3`` for ``GapCNN``), i.e. after the ReLU and
before pooling, as in the Flax models.
"""

from __future__ import annotations

import numpy as np
import torch
from flax import nnx
from torch import nn

__all__ = ["TorchCNN", "TorchGapCNN", "from_flax", "grad_cam_layer", "to_nchw", "to_nhwc"]


def _conv(c_in: int, c_out: int) -> nn.Conv2d:
  return nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)


class TorchCNN(nn.Module):
  """conv1 → ReLU → max-pool → conv2 → ReLU → max-pool → dense → ReLU → head (NCHW)."""

  def __init__(self, channels: tuple[int, int] = (32, 64), hidden: int = 128, classes: int = 10):
    super().__init__()
    c1, c2 = channels
    self.conv1, self.relu1 = _conv(1, c1), nn.ReLU()
    self.conv2, self.relu2 = _conv(c1, c2), nn.ReLU()
    self.pool1, self.pool2 = nn.MaxPool2d(2), nn.MaxPool2d(2)
    self.dense, self.relu3 = nn.Linear(7 * 7 * c2, hidden), nn.ReLU()
    self.head = nn.Linear(hidden, classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.pool1(self.relu1(self.conv1(x)))
    x = self.pool2(self.relu2(self.conv2(x)))
    x = self.relu3(self.dense(torch.flatten(x, 1)))
    return self.head(x)


class TorchGapCNN(nn.Module):
  """conv1 → ReLU → pool → conv2 → ReLU → pool → conv3 → ReLU → global mean → head (NCHW)."""

  def __init__(self, channels: tuple[int, int, int] = (32, 64, 128), classes: int = 10):
    super().__init__()
    c1, c2, c3 = channels
    self.conv1, self.relu1 = _conv(1, c1), nn.ReLU()
    self.conv2, self.relu2 = _conv(c1, c2), nn.ReLU()
    self.conv3, self.relu3 = _conv(c2, c3), nn.ReLU()
    self.pool1, self.pool2 = nn.MaxPool2d(2), nn.MaxPool2d(2)
    self.head = nn.Linear(c3, classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.pool1(self.relu1(self.conv1(x)))
    x = self.pool2(self.relu2(self.conv2(x)))
    x = self.relu3(self.conv3(x))
    return self.head(x.mean(dim=(2, 3)))


def _array(value) -> np.ndarray:
  return np.asarray(value[...] if hasattr(value, "__getitem__") else value, dtype=np.float32)


def _copy_conv(dst: nn.Conv2d, src: nnx.Conv) -> None:
  dst.weight.copy_(torch.from_numpy(_array(src.kernel).transpose(3, 2, 0, 1).copy()))  # HWIO→OIHW
  dst.bias.copy_(torch.from_numpy(_array(src.bias).copy()))


def _copy_linear(dst: nn.Linear, src: nnx.Linear, nhwc: tuple[int, int, int] | None = None) -> None:
  kernel = _array(src.kernel)  # (in, out)
  if nhwc is not None:  # reorder the inputs from NHWC-flatten to NCHW-flatten order
    h, w, c = nhwc
    kernel = kernel.reshape(h, w, c, -1).transpose(3, 2, 0, 1).reshape(kernel.shape[1], -1)
  else:
    kernel = kernel.T
  dst.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel)))
  dst.bias.copy_(torch.from_numpy(_array(src.bias).copy()))


@torch.no_grad()
def from_flax(model: nnx.Module) -> nn.Module:
  """A PyTorch copy (eval mode, float32, CPU) of a Flax ``CNN`` or ``GapCNN``.

  Args:
    model: a :class:`saliency_guide.models.CNN` or :class:`~saliency_guide.models.GapCNN`.

  Returns:
    ``TorchCNN`` or ``TorchGapCNN`` computing the same logits from NCHW inputs.
  """
  name = type(model).__name__
  if name == "CNN":
    c1, c2 = model.conv1.out_features, model.conv2.out_features
    copy = TorchCNN((c1, c2), model.dense.out_features, model.head.out_features)
    _copy_conv(copy.conv1, model.conv1)
    _copy_conv(copy.conv2, model.conv2)
    _copy_linear(copy.dense, model.dense, nhwc=(7, 7, c2))
  elif name == "GapCNN":
    channels = (model.conv1.out_features, model.conv2.out_features, model.conv3.out_features)
    copy = TorchGapCNN(channels, model.head.out_features)
    _copy_conv(copy.conv1, model.conv1)
    _copy_conv(copy.conv2, model.conv2)
    _copy_conv(copy.conv3, model.conv3)
  else:
    raise TypeError(f"model: expected a saliency_guide CNN or GapCNN, got {name}")
  _copy_linear(copy.head, model.head)
  return copy.eval()


def grad_cam_layer(model: nn.Module) -> nn.Module:
  """The module whose output is the last conv feature map (after its ReLU)."""
  return model.relu3 if isinstance(model, TorchGapCNN) else model.relu2


def to_nchw(images: np.ndarray) -> torch.Tensor:
  """NHWC NumPy images to a contiguous NCHW float32 tensor."""
  nchw = np.asarray(images, np.float32).transpose(0, 3, 1, 2)
  return torch.from_numpy(np.ascontiguousarray(nchw))


def to_nhwc(maps: torch.Tensor) -> np.ndarray:
  """NCHW attributions back to NHWC NumPy (``(B, H, W)`` maps are returned as they are)."""
  array = maps.detach().cpu().numpy()
  return array.transpose(0, 2, 3, 1) if array.ndim == 4 else array
