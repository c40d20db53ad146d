"""Occlusion against Captum's ``Occlusion`` on the PyTorch copies of the site's models.

Captum occludes NCHW tensors with a window ``(C, h, w)`` (every channel at once) and
strides ``(1, s_h, s_w)``; its map is the same on every channel, so channel 0 is
compared with ours, ``(B, H, W)``. Both sides evaluate the same number of occluded
images per forward pass: ours ``batch_size // B`` windows per pass (1024 images),
Captum's ``perturbations_per_eval`` set to the same count. RISE has no independent
implementation here (Captum has none; the authors' code is a PyTorch notebook): its
reference is the NumPy loop in ``tests/test_occlusion.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from references import Case

LIBRARIES = ("captum", "torch")

#: Occluded images per forward pass on both sides (our ``batch_size`` default).
IMAGES_PER_PASS = 1024

#: (window, stride, baseline) of the compared settings; the first is timed.
SETTINGS = (((4, 4), (2, 2), 0.0), ((3, 5), (1, 3), 0.5))


def cases(models: dict[str, Any], images: np.ndarray, labels: np.ndarray) -> list[Case]:
  import torch
  import torch_models
  from captum.attr import Occlusion

  from saliency_guide import methods

  images = np.asarray(images, np.float32)
  labels = np.asarray(labels)
  per_eval = max(1, IMAGES_PER_PASS // len(images))
  found = []
  for name in ("cnn", "gap_cnn"):
    model = models[name]
    copy = torch_models.from_flax(model)
    x = torch_models.to_nchw(images)
    target = torch.as_tensor(labels, dtype=torch.long)
    channels = images.shape[-1]
    for index, (window, stride, baseline) in enumerate(SETTINGS):

      def ours(model=model, window=window, stride=stride, baseline=baseline):
        maps = methods.occlusion(model, images, labels, window=window, stride=stride,
                                 baseline=baseline, batch_size=IMAGES_PER_PASS)
        return np.asarray(maps)

      def theirs(copy=copy, x=x, target=target, channels=channels, window=window,
                 stride=stride, baseline=baseline):
        with torch.no_grad():
          maps = Occlusion(copy).attribute(
              x, sliding_window_shapes=(channels, *window), strides=(1, *stride),
              baselines=baseline, target=target, perturbations_per_eval=per_eval)
        return torch_models.to_nhwc(maps)[..., 0]

      found.append(Case(
          method=f"Occlusion, window {window[0]}×{window[1]}, stride {stride[0]}×{stride[1]}, "
                 f"baseline {baseline}",
          model=name,
          reference="Captum Occlusion",
          ours=ours,
          theirs=theirs,
          tolerance=1e-5,
          note=(f"Captum window ({channels}, h, w), strides (1, s_h, s_w), "
                f"perturbations_per_eval={per_eval} (the same {IMAGES_PER_PASS} images per "
                "forward pass as ours); its channel-0 map compared with ours"),
          timed=index == 0,
      ))
  return found
