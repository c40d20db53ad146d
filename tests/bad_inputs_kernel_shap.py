"""Bad inputs of KernelSHAP, LIME, exact Shapley values and grid_mask (methods/kernel_shap.py)."""

from __future__ import annotations

import numpy as np

from bad_input_kit import Bad, key, method_battery, mlp, t, x
from saliency_guide import methods

MASK = np.array([[0, 0, 1, 1, 2]] * 2 + [[3, 3, 4, 4, 5]] * 2)  # 6 superpixels of a 4×5 image


def shap(**options):
  options = {"feature_mask": MASK, "samples": 12, **options}
  options.setdefault("key", key())
  return lambda: methods.kernel_shap(mlp(), x(), t(), **options)


def lime(**options):
  options = {"feature_mask": MASK, "samples": 8, **options}
  options.setdefault("key", key())
  return lambda: methods.lime(mlp(), x(), t(), **options)


def exact(**options):
  options = {"feature_mask": MASK, **options}
  return lambda: methods.exact_shapley(mlp(), x(), t(), **options)


def mask_cases(call) -> list[Bad]:
  """The bad ``feature_mask`` every method of the page refuses."""
  return [
      Bad("mask float", call(feature_mask=MASK.astype(np.float32)), TypeError, "feature_mask"),
      Bad("mask bool", call(feature_mask=MASK > 2), TypeError, "feature_mask"),
      Bad("mask a list", call(feature_mask=MASK.tolist()), TypeError, "feature_mask"),
      Bad("mask of another size", call(feature_mask=np.zeros((5, 4), np.int32)), ValueError,
          "feature_mask"),
      Bad("mask per image, wrong batch", call(feature_mask=np.stack([MASK] * 2)), ValueError,
          "feature_mask"),
      Bad("mask with one label", call(feature_mask=np.zeros((4, 5), np.int32)), ValueError,
          "feature_mask"),
      Bad("baseline of another shape", call(baseline=np.zeros((2, 4, 5, 1), np.float32)),
          ValueError, "baseline"),
      Bad("baseline NaN", call(baseline=float("nan")), ValueError, "baseline"),
      Bad("baseline a string", call(baseline="black"), TypeError, "baseline"),
      Bad("internal_batch_size zero", call(internal_batch_size=0), ValueError,
          "internal_batch_size"),
      Bad("return_features not a flag", call(return_features=1), TypeError, "return_features"),
  ]


CASES: dict[str, list[Bad]] = {
    "methods.kernel_shap": method_battery(
        lambda m, i, tt: methods.kernel_shap(m, i, tt, key=key()))
    + mask_cases(shap)
    + [
        Bad("key missing", shap(key=None), ValueError, "key"),
        Bad("key an int", shap(key=0), TypeError, "key"),
        Bad("samples zero", shap(samples=0), ValueError, "samples"),
        Bad("samples float", shap(samples=100.0), TypeError, "samples"),
        Bad("samples fewer than twice the features", shap(samples=11), ValueError, "samples"),
    ],
    "methods.lime": method_battery(lambda m, i, tt: methods.lime(m, i, tt, key=key()))
    + mask_cases(lime)
    + [
        Bad("key missing", lime(key=None), ValueError, "key"),
        Bad("samples one", lime(samples=1), ValueError, "samples"),
        Bad("samples a string", lime(samples="100"), TypeError, "samples"),
        Bad("kernel_width zero", lime(kernel_width=0.0), ValueError, "kernel_width"),
        Bad("kernel_width a string", lime(kernel_width="0.25"), TypeError, "kernel_width"),
        Bad("alpha negative", lime(alpha=-1.0), ValueError, "alpha"),
        Bad("alpha infinite", lime(alpha=float("inf")), ValueError, "alpha"),
    ],
    "methods.exact_shapley": method_battery(
        lambda m, i, tt: methods.exact_shapley(m, i, tt, feature_mask=MASK))
    + mask_cases(exact)
    + [
        Bad("mask missing", exact(feature_mask=None), ValueError, "feature_mask"),
        Bad("mask with too many superpixels",
            exact(feature_mask=np.arange(20, dtype=np.int32).reshape(4, 5)), ValueError,
            "feature_mask"),
    ],
    "methods.grid_mask": [
        Bad("height zero", lambda: methods.grid_mask(0, 5), ValueError, "height"),
        Bad("width a float", lambda: methods.grid_mask(4, 5.0), TypeError, "width"),
        Bad("cell zero", lambda: methods.grid_mask(4, 5, cell=0), ValueError, "cell"),
        Bad("cell a float", lambda: methods.grid_mask(4, 5, cell=2.5), TypeError, "cell"),
        Bad("cell of three sides", lambda: methods.grid_mask(4, 5, cell=(1, 2, 2)), TypeError,
            "cell"),
    ],
}
