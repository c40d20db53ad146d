"""Bad inputs of DeepLIFT and DeepSHAP."""

from __future__ import annotations

import numpy as np

from bad_input_kit import Bad, method_battery, mlp, t, x
from saliency_guide import methods


def _deep_shap(model, images, targets, **options):
  return methods.deep_shap(model, images, targets, references=x(), **options)


def _deeplift_options() -> list[Bad]:
  def call(**options):
    return lambda: methods.deeplift(mlp(), x(), t(), **options)

  return [
      Bad("baseline wrong shape", call(baseline=np.zeros((2, 5, 5, 1))), ValueError,
          "baseline"),
      Bad("baseline NaN", call(baseline=np.nan), ValueError, "baseline"),
      Bad("baseline a string", call(baseline="black"), TypeError, "baseline"),
      Bad("rule unknown", call(rule="reveal"), ValueError, "rule"),
      Bad("internal_batch_size 0", call(internal_batch_size=0), ValueError,
          "internal_batch_size"),
  ]


def _deep_shap_options() -> list[Bad]:
  def call(**options):
    return lambda: methods.deep_shap(mlp(), x(), t(), **options)

  return [
      Bad("references missing", call(), TypeError, "references"),
      Bad("references one image (rank 3)", call(references=x()[0]), ValueError, "references"),
      Bad("references wrong size", call(references=np.zeros((2, 5, 5, 1))), ValueError,
          "references"),
      Bad("references NaN", call(references=np.full_like(x(), np.nan)), ValueError,
          "references"),
      Bad("rule unknown", call(references=x(), rule="linear"), ValueError, "rule"),
  ]


CASES: dict[str, list[Bad]] = {
    "methods.deeplift": [*method_battery(methods.deeplift), *_deeplift_options()],
    "methods.deep_shap": [*method_battery(_deep_shap), *_deep_shap_options()],
}

NO_USER_INPUT: dict[str, str] = {
    "methods.DEEPLIFT_RULES": "a constant: the names of DeepLIFT's rules",
}
