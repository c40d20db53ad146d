"""Bad inputs of Occlusion and RISE (methods/occlusion.py)."""

from __future__ import annotations

import numpy as np

from bad_input_kit import Bad, key, method_battery, mlp, t, x
from saliency_guide import methods


def occlude(**options):
  return lambda: methods.occlusion(mlp(), x(), t(), **options)


def rise(**options):
  options = {"masks": 4, "cell": 2, **options}
  options.setdefault("key", key())
  return lambda: methods.rise(mlp(), x(), t(), **options)


def masks(**options):
  options = {"masks": 4, "cell": 2, **options}
  size = options.pop("size", (4, 5))
  k = options.pop("key", key())
  return lambda: methods.rise_masks(k, size, **options)


CASES: dict[str, list[Bad]] = {
    "methods.occlusion": [
        *method_battery(lambda m, i, tt: methods.occlusion(m, i, tt, window=2)),
        Bad("window larger than the image", occlude(window=(5, 2)), ValueError, "window"),
        Bad("window zero", occlude(window=0), ValueError, "window"),
        Bad("window negative", occlude(window=(2, -1)), ValueError, r"window\[1\]"),
        Bad("window float", occlude(window=2.5), TypeError, "window"),
        Bad("window of three sides", occlude(window=(1, 2, 2)), ValueError, "window"),
        Bad("stride larger than the window (gaps)", occlude(window=2, stride=3), ValueError,
            "stride"),
        Bad("stride zero", occlude(window=2, stride=0), ValueError, "stride"),
        Bad("stride a string", occlude(window=2, stride="1"), TypeError, "stride"),
        Bad("baseline of another shape", occlude(window=2, baseline=np.zeros((2, 4, 5, 1),
                                                                            np.float32)),
            ValueError, "baseline"),
        Bad("baseline NaN", occlude(window=2, baseline=float("nan")), ValueError, "baseline"),
        Bad("baseline a string", occlude(window=2, baseline="black"), TypeError, "baseline"),
        Bad("batch_size zero", occlude(window=2, batch_size=0), ValueError, "batch_size"),
    ],
    "methods.rise": [
        *method_battery(lambda m, i, tt: methods.rise(m, i, tt, masks=4, cell=2, key=key())),
        Bad("key missing", rise(key=None), ValueError, "key"),
        Bad("key an int", rise(key=0), TypeError, "key"),
        Bad("masks zero", rise(masks=0), ValueError, "masks"),
        Bad("masks float", rise(masks=10.0), TypeError, "masks"),
        Bad("cell finer than the image", rise(cell=(5, 2)), ValueError, "cell"),
        Bad("cell zero", rise(cell=0), ValueError, "cell"),
        Bad("p zero", rise(p=0.0), ValueError, "p"),
        Bad("p above one", rise(p=1.5), ValueError, "p"),
        Bad("p a string", rise(p="half"), TypeError, "p"),
        Bad("score unknown", rise(score="softmax"), ValueError, "score"),
        Bad("batch_size negative", rise(batch_size=-1), ValueError, "batch_size"),
    ],
    "methods.rise_masks": [
        Bad("key missing", masks(key=None), ValueError, "key"),
        Bad("size of three", masks(size=(4, 5, 1)), ValueError, "size"),
        Bad("size zero", masks(size=(0, 5)), ValueError, "size"),
        Bad("masks zero", masks(masks=0), ValueError, "masks"),
        Bad("cell finer than the size", masks(cell=6), ValueError, "cell"),
        Bad("p negative", masks(p=-0.5), ValueError, "p"),
    ],
}

NO_USER_INPUT: dict[str, str] = {
    "methods.RISE_SCORES": "a constant: the scores RISE can weight its masks with",
}
