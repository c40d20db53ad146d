"""Layer-CAM, HiResCAM, Eigen-CAM and Ablation-CAM against pytorch-grad-cam.

pytorch-grad-cam (PyPI ``grad-cam``) computes each map at the layer's resolution
(``get_cam_image``), then applies a ReLU, min-max normalises every map to
``[0, 1]`` and resizes it with OpenCV (``scale_cam_image``). We compare the maps
*before* that post-processing: the instance's ``get_cam_image`` is wrapped to
record what it returns, from the library's own forward pass, hooks, gradients
and (Ablation-CAM) ablation layer, and our maps are taken with
``upsample=False, relu=False``. The ReLU is elementwise and the same on both
sides; the normalisation and OpenCV's resize are presentation, not the method.

The layers are the ReLU modules of the PyTorch copies (``relu3`` of GapCNN,
``relu2``/``relu1`` of the CNN): the maps after the ReLU, as the Flax models
expose them (``conv3``, ``conv2``, ``conv1``).

Sign of Eigen-CAM: pytorch-grad-cam (``get_2d_projection``) projects the centred
maps on ``VT[0]`` of ``np.linalg.svd`` and keeps LAPACK's sign, which is
arbitrary. We fix the sign so that the first right singular vector has a
non-negative sum, which is the sign that makes the map correlate positively with
the centred sum of the channels; the reference's projection is compared after the
same rule is applied to it (computed from the library's own recorded activations).
How often LAPACK's sign differs from the rule is the ``eigen_cam_flips`` figure of
:func:`lapack_sign_flips`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from references import Case, torchvision_stub

LIBRARIES = ("grad-cam", "torch")

_CLASSES = {"layer": "LayerCAM", "hires": "HiResCAM", "eigen": "EigenCAM",
            "ablation": "AblationCAM"}


def _torch_models():
  benchmarks = str(Path(__file__).resolve().parents[1])
  if benchmarks not in sys.path:
    sys.path.insert(0, benchmarks)
  import torch_models
  return torch_models


def reference_maps(kind: str, torch_model: Any, layer: Any, images: np.ndarray,
                   labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """pytorch-grad-cam's map before its ReLU/normalisation/resize, and the layer's activations.

  Returns ``(maps (B, h, w), activations (B, K, h, w))`` as float64 NumPy arrays.
  """
  torchvision_stub()
  import pytorch_grad_cam
  from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
  torch_models = _torch_models()

  cls = getattr(pytorch_grad_cam, _CLASSES[kind])
  cam = cls(model=torch_model, target_layers=[layer])
  recorded: dict[str, Any] = {}
  original = cam.get_cam_image

  def get_cam_image(input_tensor, target_layer, targets, activations, grads, eigen_smooth):
    out = original(input_tensor, target_layer, targets, activations, grads, eigen_smooth)
    recorded["cam"], recorded["activations"] = np.array(out), np.array(activations)
    return out

  cam.get_cam_image = get_cam_image
  if kind == "ablation":  # tqdm progress bars, one per image
    import tqdm
    silent = tqdm.tqdm
    pytorch_grad_cam.ablation_cam.tqdm.tqdm = lambda it, *a, **k: silent(it, disable=True)
  try:
    cam(input_tensor=torch_models.to_nchw(images),
        targets=[ClassifierOutputTarget(int(c)) for c in labels])
  finally:
    if kind == "ablation":
      pytorch_grad_cam.ablation_cam.tqdm.tqdm = silent
    cam.activations_and_grads.release()
  return recorded["cam"].astype(np.float64), recorded["activations"].astype(np.float64)


def sign_fixed(projection: np.ndarray, activations: np.ndarray) -> np.ndarray:
  """``projection`` (B, h, w) signed to correlate positively with the centred channel sum."""
  total = activations.sum(axis=1)  # (B, h, w)
  total = total - total.mean(axis=(1, 2), keepdims=True)
  sign = np.where((projection * total).sum(axis=(1, 2)) < 0, -1.0, 1.0)
  return projection * sign[:, None, None]


def lapack_sign_flips(torch_model: Any, layer: Any, images: np.ndarray,
                      labels: np.ndarray) -> float:
  """Share of images whose pytorch-grad-cam Eigen-CAM has the sign opposite to our rule."""
  raw, activations = reference_maps("eigen", torch_model, layer, images, labels)
  return float((sign_fixed(raw, activations) != raw).any(axis=(1, 2)).mean())


def cases(models: dict[str, Any], images: np.ndarray, labels: np.ndarray) -> list[Case]:
  """Each variant on GapCNN (``conv3``) and the CNN (``conv2``; Layer-CAM also ``conv1``)."""
  from saliency_guide import methods
  torch_models = _torch_models()

  x, t = jnp.asarray(images), jnp.asarray(labels)
  copies = {name: torch_models.from_flax(model) for name, model in models.items()}
  settings = [("gap_cnn", "conv3", "relu3"), ("cnn", "conv2", "relu2")]
  ours = {"layer": methods.layer_cam, "hires": methods.hires_cam,
          "eigen": methods.eigen_cam, "ablation": methods.ablation_cam}
  titles = {"layer": "Layer-CAM", "hires": "HiResCAM", "eigen": "Eigen-CAM",
            "ablation": "Ablation-CAM"}
  plan = [(kind, *s) for kind in ours for s in settings] + [("layer", "cnn", "conv1", "relu1")]
  note = ("maps at the layer's resolution before pytorch-grad-cam's ReLU, [0, 1] "
          "normalisation and cv2 resize (its get_cam_image output, recorded); ours with "
          "upsample=False, relu=False")
  notes = {
      "eigen": note + ("; the reference keeps LAPACK's SVD sign, so our sign rule "
                       "(first right singular vector with a non-negative sum) is applied "
                       "to its projection before comparing"),
      "ablation": note + ("; weights (y - y_k)/y in both (the paper's), channel zeroed "
                          "(the reference's AblationLayer zeroes it when the layer's "
                          "minimum is 0, true after a ReLU)"),
  }

  def make(kind, model_name, layer, torch_layer):
    model, copy = models[model_name], copies[model_name]

    def call_ours():
      return np.asarray(ours[kind](model, x, t, layer=layer, upsample=False, relu=False))

    def call_theirs():
      raw, activations = reference_maps(kind, copy, getattr(copy, torch_layer), images, labels)
      return sign_fixed(raw, activations) if kind == "eigen" else raw

    return Case(method=f"{titles[kind]}, layer {layer}", model=model_name,
                reference=f"pytorch-grad-cam {_CLASSES[kind]}", ours=call_ours,
                theirs=call_theirs, tolerance=1e-5, note=notes.get(kind, note))

  return [make(*p) for p in plan]
