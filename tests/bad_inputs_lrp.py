"""Bad inputs of layer-wise relevance propagation (methods/lrp.py)."""

from __future__ import annotations

import numpy as np
from flax import nnx

from bad_input_kit import Bad, method_battery, mlp, t, x
from model_factories import linear_model
from saliency_guide import methods
from user_models import GeluNet


def _call(**options):
  return lambda: methods.lrp(mlp(), x(), t(), **options)


def _gelu():
  model = GeluNet(rngs=nnx.Rngs(0))
  images = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
  return methods.lrp(model, images, np.array([0, 1]))


CASES: dict[str, list[Bad]] = {
    "methods.lrp": [
        *method_battery(methods.lrp),
        Bad("rule unknown", _call(rule="z+"), ValueError, "rule"),
        Bad("rule not a string", _call(rule=0.5), TypeError, "rule"),
        Bad("epsilon negative", _call(epsilon=-1e-3), ValueError, "epsilon"),
        Bad("epsilon NaN", _call(epsilon=float("nan")), ValueError, "epsilon"),
        Bad("epsilon a string", _call(epsilon="small"), TypeError, "epsilon"),
        Bad("gamma negative", _call(gamma=-0.25), ValueError, "gamma"),
        Bad("gamma a string", _call(gamma="0.25"), TypeError, "gamma"),
        Bad("composite unknown preset", _call(composite="EpsilonPlusFlat"), ValueError,
            "composite"),
        Bad("composite a list", _call(composite=["epsilon"]), TypeError, "composite"),
        Bad("composite unknown layer", _call(composite={"conv9": "epsilon"}), ValueError,
            "composite"),
        Bad("composite unknown rule", _call(composite={"linear": "lrp"}), ValueError,
            "composite"),
        Bad("composite unknown parameter", _call(composite={"linear": ("epsilon", {"eps": 1})}),
            ValueError, "composite"),
        Bad("composite alpha - beta != 1", _call(composite={
            "linear": ("alphabeta", {"alpha": 2.0, "beta": 2.0})}), ValueError, "composite"),
        Bad("composite zbox low >= high", _call(composite={
            "first": ("zbox", {"low": 1.0, "high": 0.0})}), ValueError, "composite"),
        Bad("model with GELU (no rule)", _gelu, ValueError, "model.*gelu"),
        Bad("model with a bare matrix product (no layer)",
            lambda: methods.lrp(linear_model()[0], x(), t()), ValueError,
            "model.*(dot_general|nnx.Conv or nnx.Linear)"),
    ],
}

NO_USER_INPUT: dict[str, str] = {
    "methods.LRP_RULES": "a constant: the rule names lrp accepts",
    "methods.LRP_COMPOSITES": "a constant: the preset composites lrp accepts",
}
