"""Bad inputs of Blur IG and Guided IG (methods/blur_ig.py, methods/guided_ig.py)."""

from __future__ import annotations

import numpy as np

from bad_input_kit import Bad, method_battery, mlp, t, x
from saliency_guide import methods


def _blur(**options):
  return lambda: methods.blur_ig(mlp(), x(), t(), steps=4, **options)


def _guided(**options):
  return lambda: methods.guided_ig(mlp(), x(), t(), steps=4, **options)


CASES: dict[str, list[Bad]] = {
    "methods.blur_ig": [
        *method_battery(methods.blur_ig),
        Bad("max_sigma zero", _blur(max_sigma=0.0), ValueError, "max_sigma"),
        Bad("max_sigma negative", _blur(max_sigma=-5.0), ValueError, "max_sigma"),
        Bad("max_sigma a string", _blur(max_sigma="50"), TypeError, "max_sigma"),
        Bad("steps zero", lambda: methods.blur_ig(mlp(), x(), t(), steps=0), ValueError,
            "steps"),
        Bad("steps float", lambda: methods.blur_ig(mlp(), x(), t(), steps=10.0), TypeError,
            "steps"),
        Bad("grad_step zero", _blur(grad_step=0.0), ValueError, "grad_step"),
        Bad("grad_step NaN", _blur(grad_step=float("nan")), ValueError, "grad_step"),
        Bad("sqrt not a flag", _blur(sqrt=1), TypeError, "sqrt"),
        Bad("internal_batch_size zero", _blur(internal_batch_size=0), ValueError,
            "internal_batch_size"),
    ],
    "methods.guided_ig": [
        *method_battery(methods.guided_ig),
        Bad("baseline wrong shape", _guided(baseline=np.zeros((2, 3), np.float32)),
            ValueError, "baseline"),
        Bad("baseline NaN", _guided(baseline=np.full(x().shape, np.nan, np.float32)),
            ValueError, "baseline"),
        Bad("baseline integer", _guided(baseline=np.zeros(x().shape, np.int32)), TypeError,
            "baseline"),
        Bad("baseline a string", _guided(baseline="black"), TypeError, "baseline"),
        Bad("steps zero", lambda: methods.guided_ig(mlp(), x(), t(), steps=0), ValueError,
            "steps"),
        Bad("fraction above 1", _guided(fraction=1.5), ValueError, "fraction"),
        Bad("fraction negative", _guided(fraction=-0.1), ValueError, "fraction"),
        Bad("max_dist above 1", _guided(max_dist=2.0), ValueError, "max_dist"),
        Bad("max_dist a string", _guided(max_dist="0.02"), TypeError, "max_dist"),
        Bad("internal_batch_size float", _guided(internal_batch_size=2.0), TypeError,
            "internal_batch_size"),
    ],
}
