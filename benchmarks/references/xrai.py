"""XRAI against PAIR's ``saliency`` package (``saliency.core.XRAI``, version 0.2.1).

PAIR's XRAI is NumPy: it takes one image, a ``call_model_function`` for the
gradients of its Integrated Gradients, or a precomputed ``base_attribution``, and
optionally precomputed ``segments`` (a list of boolean masks). The cases here give
it *our* base attribution (black/white Integrated Gradients, averaged) so that the
comparison is of XRAI itself, the segmentation and the greedy region selection,
which are deterministic: the maps must agree to float32 rounding (PAIR stores the
float32 gains in a float64 array) and the region ranks exactly.

* segmentation: our ``xrai_segments`` against PAIR's ``_get_segments_felzenszwalb``
  (both scikit-image; the masks of one image stacked, compared exactly);
* full and fast algorithms: PAIR segments the image itself (its defaults: 224 × 224
  resize, dilation radius 5, ``min_pixel_diff`` 50), and our call is given the same
  literal settings (``dilation_radius=5`` in :func:`xrai_segments`, ``min_pixel_diff=50``),
  one image per call on both sides (timed);
* the region search alone: the digit settings' segments (28 × 28, dilation radius 1)
  given to both, ``min_pixel_diff`` 1, one image per call (timed);
* the ranks (PAIR's ``XRAIOutput.segments``, flattened) for the full algorithm, same
  segments, with ``area_threshold=0.3``.

No shim is needed: ``saliency`` 0.2.1 calls ``np.quantile(..., interpolation=...)``
(removed in NumPy 2) only in Guided IG, which XRAI never reaches.
"""

from __future__ import annotations

import numpy as np

from references import Case

# PAIR explains one image per call: time both sides at small batches.
BATCHES = (1, 16)
LIBRARIES = ("saliency", "scikit-image")


def cases(models, images, labels) -> list[Case]:
  from saliency.core import xrai as pair_xrai

  from saliency_guide import methods

  images = np.asarray(images, np.float32)
  labels = np.asarray(labels)
  model = models["cnn"]
  base = np.asarray(methods.xrai_base_attributions(model, images, labels))  # (B, 28, 28, 1)
  pair = pair_xrai.XRAI()

  def pair_masks(i, dilation):
    return np.stack(pair_xrai._get_segments_felzenszwalb(images[i], dilation_rad=dilation))

  def ours_segments():
    return np.concatenate([methods.xrai_segments(images[i:i + 1], dilation_radius=5)[0]
                           for i in range(len(images))]).astype(np.float32)

  def theirs_segments():
    return np.concatenate([pair_masks(i, 5) for i in range(len(images))]).astype(np.float32)

  def ours(algorithm, **options):
    def call():
      return np.stack([
          np.asarray(methods.xrai(
              model, images[i:i + 1], labels[i:i + 1], base_attributions=base[i:i + 1],
              segments=methods.xrai_segments(images[i:i + 1], dilation_radius=5),
              algorithm=algorithm, min_pixel_diff=50, **options))[0]
          for i in range(len(images))])
    return call

  def theirs(algorithm, area_threshold=1.0):
    def call():
      parameters = pair_xrai.XRAIParameters(algorithm=algorithm, area_threshold=area_threshold)
      return np.stack([
          pair.GetMask(images[i], None, base_attribution=base[i], extra_parameters=parameters)
          for i in range(len(images))])
    return call

  # The digit settings: segments with dilation radius 1, min_pixel_diff 1, ranks compared.
  digit_segments = methods.xrai_segments(images)  # (B, M, 28, 28), padded with empty masks

  def ours_ranks():
    _, ranks = methods.xrai(model, images, labels, base_attributions=base,
                            segments=digit_segments, area_threshold=0.3, return_ranks=True)
    return np.asarray(ranks, np.float64)

  def theirs_ranks():
    parameters = pair_xrai.XRAIParameters(area_threshold=0.3, return_xrai_segments=True)
    parameters.experimental_params["min_pixel_diff"] = 1
    out = []
    for i in range(len(images)):
      masks = [m for m in digit_segments[i]]
      result = pair.GetMaskWithDetails(images[i], None, base_attribution=base[i],
                                       segments=masks, extra_parameters=parameters)
      out.append(result.segments)
    return np.stack(out).astype(np.float64)

  def ours_given():
    return np.stack([
        np.asarray(methods.xrai(model, images[i:i + 1], labels[i:i + 1],
                                base_attributions=base[i:i + 1],
                                segments=digit_segments[i:i + 1]))[0]
        for i in range(len(images))])

  def theirs_given():
    parameters = pair_xrai.XRAIParameters()
    parameters.experimental_params["min_pixel_diff"] = 1
    return np.stack([
        pair.GetMask(images[i], None, base_attribution=base[i], segments=list(digit_segments[i]),
                     extra_parameters=parameters)
        for i in range(len(images))])

  shared = "same base attribution (our black/white IG, 100 steps)"
  return [
      Case("XRAI segments (Felzenszwalb ×6 scales, 224 resize, dilation 5)", "cnn",
           "PAIR saliency _get_segments_felzenszwalb", ours_segments, theirs_segments,
           tolerance=0.0, note="scikit-image on both sides; masks stacked", timed=False),
      Case("XRAI full (PAIR defaults)", "cnn", "PAIR saliency XRAI.GetMask",
           ours("full"), theirs("full"), tolerance=1e-6,
           note=f"{shared}; both segment the image; one image per call"),
      Case("XRAI fast (PAIR defaults)", "cnn", "PAIR saliency XRAI.GetMask (fast)",
           ours("fast"), theirs("fast"), tolerance=1e-6,
           note=f"{shared}; both segment the image; one image per call"),
      Case("XRAI full, given segments (digit settings)", "cnn", "PAIR saliency XRAI.GetMask",
           ours_given, theirs_given, tolerance=1e-6,
           note=f"{shared}; same segments (28 × 28, dilation 1, padded with empty masks), "
                "min_pixel_diff 1; the region search alone, one image per call"),
      Case("XRAI full, region ranks (digit settings, area 0.3)", "cnn",
           "PAIR saliency XRAI.GetMaskWithDetails .segments", ours_ranks, theirs_ranks,
           tolerance=0.0, note=f"{shared}; same segments (dilation 1), min_pixel_diff 1",
           timed=False),
  ]
