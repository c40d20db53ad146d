"""Bad inputs of XRAI (methods/xrai.py)."""

from __future__ import annotations

import numpy as np

from bad_input_kit import Bad, method_battery, mlp, t, x
from saliency_guide import methods


def segs() -> np.ndarray:
  return methods.grid_segments(x(), cells=2)


def xrai(**options):
  options.setdefault("segments", segs())
  options.setdefault("base_attributions", np.ones((3, 4, 5), np.float32))
  return lambda: methods.xrai(mlp(), x(), t(), **options)


def base(**options):
  return lambda: methods.xrai_base_attributions(mlp(), x(), t(), **options)


def segment(images=None, **options):
  return lambda: methods.xrai_segments(x() if images is None else images, **options)


def grid(images=None, **options):
  return lambda: methods.grid_segments(x() if images is None else images, **options)


CASES: dict[str, list[Bad]] = {
    "methods.xrai": [
        *method_battery(lambda m, i, tt: methods.xrai(m, i, tt, steps=2)),
        Bad("algorithm unknown", xrai(algorithm="greedy"), ValueError, "algorithm"),
        Bad("area_threshold zero", xrai(area_threshold=0.0), ValueError, "area_threshold"),
        Bad("area_threshold above one", xrai(area_threshold=1.5), ValueError,
            "area_threshold"),
        Bad("area_threshold a string", xrai(area_threshold="all"), TypeError,
            "area_threshold"),
        Bad("min_pixel_diff zero", xrai(min_pixel_diff=0), ValueError, "min_pixel_diff"),
        Bad("min_pixel_diff float", xrai(min_pixel_diff=1.5), TypeError, "min_pixel_diff"),
        Bad("return_ranks not a flag", xrai(return_ranks="yes"), TypeError, "return_ranks"),
        Bad("steps zero", xrai(base_attributions=None, steps=0), ValueError, "steps"),
        Bad("steps one for the trapezoid", xrai(base_attributions=None, steps=1), ValueError,
            "steps"),
        Bad("quadrature unknown", xrai(base_attributions=None, quadrature="simpson"),
            ValueError, "quadrature"),
        Bad("internal_batch_size zero", xrai(base_attributions=None, internal_batch_size=0),
            ValueError, "internal_batch_size"),
        Bad("base_attributions of another shape",
            xrai(base_attributions=np.ones((3, 5, 4), np.float32)), ValueError,
            "base_attributions"),
        Bad("base_attributions NaN", xrai(base_attributions=np.full((3, 4, 5), np.nan,
                                                                    np.float32)),
            ValueError, "base_attributions"),
        Bad("base_attributions integer", xrai(base_attributions=np.ones((3, 4, 5), int)),
            TypeError, "base_attributions"),
        Bad("segments float", xrai(segments=segs().astype(np.float32)), TypeError,
            "segments"),
        Bad("segments a list", xrai(segments=list(segs())), TypeError, "segments"),
        Bad("segments of another image size", xrai(segments=segs()[:, :, :3]), ValueError,
            "segments"),
        Bad("segments for fewer images", xrai(segments=segs()[:2]), ValueError, "segments"),
        Bad("segments without regions", xrai(segments=segs()[:, :0]), ValueError,
            "segments"),
        Bad("segments label image (B, H, W)", xrai(segments=segs()[:, 0]), ValueError,
            "segments"),
    ],
    "methods.xrai_base_attributions": [
        *method_battery(lambda m, i, tt: methods.xrai_base_attributions(m, i, tt, steps=2)),
        Bad("steps zero", base(steps=0), ValueError, "steps"),
        Bad("steps one for the trapezoid", base(steps=1), ValueError, "steps"),
        Bad("steps float", base(steps=10.0), TypeError, "steps"),
        Bad("quadrature unknown", base(quadrature="simpson"), ValueError, "quadrature"),
        Bad("internal_batch_size zero", base(internal_batch_size=0), ValueError,
            "internal_batch_size"),
    ],
    "methods.xrai_segments": [
        Bad("images rank 3", segment(x()[..., 0]), ValueError, "images"),
        Bad("images integer", segment((255 * x()).astype(np.uint8)), TypeError, "images"),
        Bad("images NaN", segment(np.full((1, 4, 5, 1), np.nan, np.float32)), ValueError,
            "images"),
        Bad("images empty batch", segment(x()[:0]), ValueError, "images"),
        Bad("images a list", segment(x().tolist()), TypeError, "images"),
        Bad("scales empty", segment(scales=()), TypeError, "scales"),
        Bad("scales a number", segment(scales=100), TypeError, "scales"),
        Bad("scales negative", segment(scales=(100, -5)), ValueError, "scales"),
        Bad("sigma negative", segment(sigma=-0.8), ValueError, "sigma"),
        Bad("min_size zero", segment(min_size=0), ValueError, "min_size"),
        Bad("resize zero", segment(resize=0), ValueError, "resize"),
        Bad("resize a tuple", segment(resize=(224, 224)), TypeError, "resize"),
        Bad("dilation_radius negative", segment(dilation_radius=-1), ValueError,
            "dilation_radius"),
        Bad("dilation_radius float", segment(dilation_radius=1.5), TypeError,
            "dilation_radius"),
    ],
    "methods.grid_segments": [
        Bad("images rank 3", grid(x()[..., 0]), ValueError, "images"),
        Bad("images a list", grid(x().tolist()), TypeError, "images"),
        Bad("cells zero", grid(cells=0), ValueError, "cells"),
        Bad("cells float", grid(cells=2.5), TypeError, "cells"),
        Bad("cells empty", grid(cells=()), TypeError, "cells"),
        Bad("cells negative in a tuple", grid(cells=(2, -1)), ValueError, "cells"),
    ],
}

NO_USER_INPUT: dict[str, str] = {
    "methods.FELZENSZWALB_SCALES": "a constant (PAIR's Felzenszwalb scales)",
    "methods.XRAI_ALGORITHMS": "a constant (the names of the algorithms)",
}
