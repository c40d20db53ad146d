"""Bad input for every public function: one table, and a test that the table is complete.

(The tiny inputs and batteries live in ``tests/bad_input_kit.py``; each method family
added after this table keeps its entries in ``tests/bad_inputs_<family>.py``, exporting
``CASES`` and optionally ``NO_USER_INPUT``, merged here.)

``CASES`` maps every public callable of ``saliency_guide.methods``, ``metrics``,
``scale``, ``plotting``, ``validation``, ``zoo`` and ``data`` to bad calls,
each with the exception type and a message fragment naming the argument at
fault; ``NO_USER_INPUT`` lists the public names that take none (constants,
result records), each with its reason. ``test_every_public_name_has_an_entry``
enumerates the public names programmatically, so a public function added
without an entry here fails the suite, naming it.

A function whose error is not yet clear (a raw ``AttributeError`` from deep
inside, silent acceptance) keeps its entry, marked ``xfail(strict=True)`` with
the reason: when it is fixed, the strict mark fails and is removed.

Everything is tiny (a 4×5 MLP, an 8×8 GapCNN with two channels per layer) and
every bad call fails before any real computation, so the module runs in
seconds.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from bad_input_kit import (
    Bad,
    gap,
    key,
    layer_cases,
    maps_pair_cases,
    method_battery,
    mlp,
    offline,
    randomization_result,
    relu_flag,
    roar_with,
    smoothed,
    t,
    tmp,
    with_env,
    x,
    x8,
)
from saliency_guide import data, methods, metrics, plotting, scale, validation, zoo
from saliency_guide.models import MLP

MODULES = {
    "methods": methods,
    "metrics": metrics,
    "scale": scale,
    "plotting": plotting,
    "validation": validation,
    "zoo": zoo,
    "data": data,
}


def public_names() -> set[str]:
  """``module.name`` for every public name: ``__all__`` where a module has one, else its
  namespace (names not starting with ``_``, submodules left out)."""
  names = set()
  for short, module in MODULES.items():
    exported = getattr(module, "__all__", None)
    if exported is None:
      exported = [n for n, v in vars(module).items()
                  if not inspect.ismodule(v) and type(v).__name__ != "_Feature"]
    names |= {f"{short}.{n}" for n in exported if not n.startswith("_")}
  return names


# --------------------------------------------------------------------------------------
# The table.
# --------------------------------------------------------------------------------------

NO_USER_INPUT: dict[str, str] = {
    # Constants: tuples of names, environment-variable names, tables.
    "methods.BASELINES": "a constant: the baseline names",
    "methods.QUADRATURE_RULES": "a constant: the quadrature rule names",
    "methods.SMOOTHGRAD_VARIANTS": "a constant: the SmoothGrad variant names",
    "methods.SCORE_CAM_WEIGHTS": "a constant: the Score-CAM channel-weight names",
    "metrics.COMPARISON_VERDICTS": "a constant: the verdict names",
    "metrics.ORDERS": "a constant: the removal orders",
    "metrics.RANDOMIZATION_MODES": "a constant: the randomisation modes",
    "metrics.RANDOMIZATION_THRESHOLD": "a constant: the default threshold",
    "metrics.RANDOMIZATION_VERDICTS": "a constant: the verdict names",
    "metrics.SCORES": "a constant: the score names",
    "metrics.SUBSTRATES": "a constant: the substrate names",
    "plotting.SIGNED_CMAP": "a constant: a colormap name",
    "plotting.UNSIGNED_CMAP": "a constant: a colormap name",
    "zoo.CACHE_ENV": "a constant: an environment-variable name",
    "zoo.EVAL_SPLIT_ENV": "a constant: an environment-variable name",
    "zoo.TRAIN_SPLIT_ENV": "a constant: an environment-variable name",
    "zoo.MODEL_SPECS": "a constant: the table of named models",
    "data.MNIST_DIR_ENV": "a constant: an environment-variable name",
    "data.MNIST_FILES": "a constant: file names, sizes and checksums",
    "data.MNIST_URL": "a constant: the download address",
    "data.SPLIT_FILES": "a constant: the files of each split",
    "data.SPLIT_SIZES": "a constant: the size of each split",
    # Result records: built by the package's functions, which check their inputs.
    "methods.Core": "a record built by each method's prepare step from checked arguments",
    "metrics.Curves": "a result record returned by deletion/insertion",
    "metrics.RandomComparison": "a result record returned by compare_to_random",
    "metrics.RandomizationResult": "a result record returned by the randomisation tests",
    "metrics.RandomizationVerdict": "a result record returned by randomization_verdict",
    "metrics.ROARRankings": "a result record returned by roar_rankings",
    "metrics.ROARResult": "a result record returned by roar",
    "metrics.Similarity": "a result record returned by similarity",
    "scale.PaddedBatch": "a result record yielded by padded_batches",
    "zoo.Pretrained": "a result record returned by pretrained/cached",
    "zoo.ModelSpec": "a record of how a named model is built; its fields are checked where "
                     "it is used (zoo.cached)",
    "zoo.MemorizationRecipe": "a record of how a shuffled-label model is trained, read by "
                              "zoo.pretrained(shuffle_labels=True); not checked when built",
    "zoo.SHUFFLED_LABELS_RECIPE": "a constant: the package's MemorizationRecipe",
    "zoo.cache_folder": "takes no argument",
    # Takes anything.
    "validation.describe": "describes any value in words (for error messages): no value is bad",
}

CASES: dict[str, list[Bad]] = {
    # ---------------------------------------------------------------- methods
    "methods.gradients": method_battery(methods.gradients),
    "methods.gradients_x_inputs": method_battery(methods.gradients_x_inputs),
    "methods.deconvolution": method_battery(methods.deconvolution),
    "methods.guided_backprop": method_battery(methods.guided_backprop),
    "methods.target_logits": method_battery(methods.target_logits),
    "methods.logit_gradient": method_battery(methods.logit_gradient),
    "methods.cam": method_battery(methods.cam, gap, x8) + layer_cases(methods.cam),
    "methods.grad_cam": (
        method_battery(methods.grad_cam, gap, x8) + layer_cases(methods.grad_cam)
        + relu_flag(methods.grad_cam)
        + [Bad("counterfactual not a flag",
               lambda: methods.grad_cam(gap(), x8(), t(), counterfactual="yes"), TypeError,
               "counterfactual")]),
    "methods.grad_cam_plus_plus": (
        method_battery(methods.grad_cam_plus_plus, gap, x8)
        + layer_cases(methods.grad_cam_plus_plus) + relu_flag(methods.grad_cam_plus_plus)
        + [Bad("derivatives unknown",
               lambda: methods.grad_cam_plus_plus(gap(), x8(), t(), derivatives="fast"),
               ValueError, "derivatives")]),
    "methods.diagonal_derivatives": (
        [*method_battery(methods.diagonal_derivatives, gap, x8),
         Bad("layer unknown",
             lambda: methods.diagonal_derivatives(gap(), x8(), t(), layer="conv9"),
             ValueError, "layer")]),
    "methods.guided_grad_cam": (
        method_battery(methods.guided_grad_cam, gap, x8) + layer_cases(methods.guided_grad_cam)),
    "methods.score_cam": (
        method_battery(methods.score_cam, gap, x8) + layer_cases(methods.score_cam)
        + relu_flag(methods.score_cam)
        + [Bad("weights unknown", lambda: methods.score_cam(gap(), x8(), t(), weights="mean"),
               ValueError, "weights")]),
    "methods.integrated_gradients": (
        [*method_battery(methods.integrated_gradients),
            Bad("steps 0", lambda: methods.integrated_gradients(mlp(), x(), t(), steps=0),
                ValueError, "steps"),
            Bad("steps float",
                lambda: methods.integrated_gradients(mlp(), x(), t(), steps=2.5), TypeError,
                "steps"),
            Bad("method unknown",
                lambda: methods.integrated_gradients(mlp(), x(), t(), method="simpson"),
                ValueError, "method"),
            Bad("baseline unknown",
                lambda: methods.integrated_gradients(mlp(), x(), t(), baseline="grey"),
                ValueError, "baseline"),
            Bad("baseline wrong shape",
                lambda: methods.integrated_gradients(mlp(), x(), t(),
                                                     baseline=np.zeros((3, 4, 4, 1))),
                ValueError, "baseline"),
            Bad("baseline NaN",
                lambda: methods.integrated_gradients(mlp(), x(), t(), baseline=np.nan),
                ValueError, "baseline"),
        ]),
    "methods.integrated_gradients_plain": (
        [*method_battery(methods.integrated_gradients_plain),
            Bad("steps 0",
                lambda: methods.integrated_gradients_plain(mlp(), x(), t(), steps=0),
                ValueError, "steps"),
            Bad("method unknown",
                lambda: methods.integrated_gradients_plain(mlp(), x(), t(), method="simpson"),
                ValueError, "method"),
        ]),
    "methods.expected_gradients": (
        [*method_battery(functools.partial(methods.expected_gradients, references=x(),
                                         samples=2, key=key())),
            Bad("references wrong shape",
                lambda: methods.expected_gradients(mlp(), x(), t(), references=x8(),
                                                   samples=2, key=key()),
                ValueError, "references"),
            Bad("references empty",
                lambda: methods.expected_gradients(mlp(), x(), t(), references=x()[:0],
                                                   samples=2, key=key()),
                ValueError, "references"),
            Bad("samples 0",
                lambda: methods.expected_gradients(mlp(), x(), t(), references=x(),
                                                   samples=0, key=key()),
                ValueError, "samples"),
            Bad("key an int",
                lambda: methods.expected_gradients(mlp(), x(), t(), references=x(),
                                                   samples=2, key=0),
                TypeError, "key"),
            Bad("internal_batch_size 0",
                lambda: methods.expected_gradients(mlp(), x(), t(), references=x(),
                                                   samples=2, key=key(),
                                                   internal_batch_size=0),
                ValueError, "internal_batch_size"),
        ]),
    "methods.smoothgrad": [
        Bad("method not callable", lambda: methods.smoothgrad("gradients", key=key()),
            TypeError, "method"),
        Bad("noise_level negative",
            lambda: methods.smoothgrad(methods.gradients, noise_level=-0.1, key=key()),
            ValueError, "noise_level"),
        Bad("noise_level NaN",
            lambda: methods.smoothgrad(methods.gradients, noise_level=float("nan"), key=key()),
            ValueError, "noise_level"),
        Bad("samples 0", lambda: methods.smoothgrad(methods.gradients, samples=0, key=key()),
            ValueError, "samples"),
        Bad("variant unknown",
            lambda: methods.smoothgrad(methods.gradients, variant="mean", key=key()),
            ValueError, "variant"),
        Bad("key an int", lambda: methods.smoothgrad(methods.gradients, key=0), TypeError,
            "key"),
        Bad("batch_size 0",
            lambda: methods.smoothgrad(methods.gradients, batch_size=0, key=key()),
            ValueError, "batch_size"),
        *method_battery(lambda m, i, tt: smoothed()(m, i, tt)),
    ],
    "methods.smoothgrad_plain": (
        [*method_battery(functools.partial(methods.smoothgrad_plain, methods.gradients,
                                           samples=2, key=key())),
            Bad("samples 0",
                lambda: methods.smoothgrad_plain(methods.gradients, mlp(), x(), t(),
                                                 samples=0, key=key()),
                ValueError, "samples"),
            Bad("variant unknown",
                lambda: methods.smoothgrad_plain(methods.gradients, mlp(), x(), t(),
                                                 variant="mean", key=key()),
                ValueError, "variant"),
        ]),
    "methods.make_baseline": [
        Bad("name unknown", lambda: methods.make_baseline("grey", x()), ValueError,
            "baseline"),  # the message names the concept: "baseline: expected one of ..."
        Bad("images rank 3", lambda: methods.make_baseline("black", x()[..., 0]), ValueError,
            "images"),
        Bad("gaussian without key", lambda: methods.make_baseline("gaussian", x()),
            (TypeError, ValueError), "key"),
    ],
    "methods.quadrature": [
        Bad("method unknown", lambda: methods.quadrature("simpson", 4), ValueError, "method"),
        Bad("steps 0", lambda: methods.quadrature("riemann_trapezoid", 0), ValueError, "steps"),
    ],
    "methods.core": [
        Bad("method not callable", lambda: methods.core("gradients", mlp(), x()), TypeError,
            "method"),
    ],
    "methods.guided_relu": [
        Bad("x a string", lambda: methods.guided_relu("x"), TypeError, "x"),
    ],
    "methods.deconv_relu": [
        Bad("x a string", lambda: methods.deconv_relu("x"), TypeError, "x"),
    ],
    "methods.with_relu_rule": [
        Bad("relu not callable", lambda: methods.with_relu_rule(mlp(), "guided"), TypeError,
            "relu"),
        Bad("model not a module", lambda: methods.with_relu_rule("cnn", methods.guided_relu),
            TypeError, "model"),
    ],
    "methods.with_softplus": [
        Bad("beta 0", lambda: methods.with_softplus(mlp(), 0.0), ValueError, "beta"),
        Bad("beta negative", lambda: methods.with_softplus(mlp(), -1.0), ValueError, "beta"),
        Bad("model not a module", lambda: methods.with_softplus("cnn", 1.0), TypeError,
            "model"),
    ],
    # ---------------------------------------------------------------- metrics
    "metrics.pixel_scores": [
        Bad("rank 2", lambda: metrics.pixel_scores(np.zeros((8, 8))), ValueError,
            "attributions"),
    ],
    "metrics.rank_pixels": [
        Bad("scores rank 4", lambda: metrics.rank_pixels(x(), key()), ValueError, "scores"),
        Bad("key an int", lambda: metrics.rank_pixels(x()[..., 0], 0), TypeError, "key"),
    ],
    "metrics.mean_and_sem": [
        Bad("axis out of range", lambda: metrics.mean_and_sem([1.0, 2.0], axis=3),
            ValueError, "axis"),
    ],
    "metrics.compare_to_random": [
        Bad("z negative",
            lambda: metrics.compare_to_random([1.0, 2.0], [0.0, 1.0], higher_is_better=True,
                                              z=-1.0),
            ValueError, "z"),
        Bad("different lengths",
            lambda: metrics.compare_to_random([1.0, 2.0, 3.0], [0.0, 1.0],
                                              higher_is_better=True),
            ValueError, "random_values"),
        Bad("higher_is_better not a flag",
            lambda: metrics.compare_to_random([1.0, 2.0], [0.0, 1.0], higher_is_better="yes"),
            TypeError, "higher_is_better"),
    ],
    "metrics.comparison_rule": [
        Bad("z negative", lambda: metrics.comparison_rule(-1.0), ValueError, "z"),
    ],
    "metrics.higher_is_better": [
        Bad("curve unknown", lambda: metrics.higher_is_better("area"), ValueError, "curve"),
        Bad("order unknown", lambda: metrics.higher_is_better("deletion", "random"),
            ValueError, "order"),
    ],
    "metrics.completeness_delta": [
        Bad("attributions wrong shape",
            lambda: metrics.completeness_delta(mlp(), x(), t(), x()[:2]), ValueError,
            "attributions"),
        Bad("images NaN",
            lambda: metrics.completeness_delta(mlp(), np.full_like(x(), np.nan), t(), x()),
            ValueError, "images"),
        Bad("target out of range",
            lambda: metrics.completeness_delta(mlp(), x(), t() + 3, x()), ValueError,
            "targets"),
        Bad("baselines wrong shape",
            lambda: metrics.completeness_delta(mlp(), x(), t(), x(),
                                               baselines=np.zeros((3, 4, 4, 1))),
            ValueError, "baselines"),
    ],
    "metrics.auc": [
        Bad("fractions and scores of different lengths",
            lambda: metrics.auc(np.linspace(0, 1, 5), np.zeros((3, 4))), ValueError,
            "scores"),
    ],
    "metrics.make_substrate": [
        Bad("substrate unknown", lambda: metrics.make_substrate(x(), "noise"), ValueError,
            "substrate"),
        Bad("blur_sigma 0", lambda: metrics.make_substrate(x(), "blur", blur_sigma=0.0),
            ValueError, "blur_sigma"),
        Bad("images rank 3", lambda: metrics.make_substrate(x()[..., 0]), ValueError,
            "images"),
    ],
    "metrics.random_attributions": [
        Bad("key an int", lambda: metrics.random_attributions(0, x()), TypeError, "key"),
        Bad("images rank 3", lambda: metrics.random_attributions(key(), x()[..., 0]),
            ValueError, "images"),
    ],
    "metrics.deletion": [
        Bad("attributions wrong shape", lambda: metrics.deletion(mlp(), x(), t(), x()[:2]),
            ValueError, "attributions"),
        Bad("attributions NaN",
            lambda: metrics.deletion(mlp(), x(), t(), np.full_like(x(), np.nan)), ValueError,
            "attributions"),
        Bad("steps 0", lambda: metrics.deletion(mlp(), x(), t(), x(), steps=0), ValueError,
            "steps"),
        Bad("steps above the pixel count", lambda: metrics.deletion(mlp(), x(), t(), x()),
            ValueError, "steps"),  # 4×5 images have 20 pixels, the default is 28 steps
        Bad("score unknown",
            lambda: metrics.deletion(mlp(), x(), t(), x(), steps=4, score="loss"), ValueError,
            "score"),
        Bad("substrate unknown",
            lambda: metrics.deletion(mlp(), x(), t(), x(), steps=4, substrate="noise"),
            ValueError, "substrate"),
        Bad("target out of range", lambda: metrics.deletion(mlp(), x(), t() + 3, x()),
            ValueError, "targets"),
    ],
    "metrics.insertion": [
        Bad("attributions wrong shape", lambda: metrics.insertion(mlp(), x(), t(), x()[:2]),
            ValueError, "attributions"),
        Bad("steps 0", lambda: metrics.insertion(mlp(), x(), t(), x(), steps=0), ValueError,
            "steps"),
        Bad("score unknown",
            lambda: metrics.insertion(mlp(), x(), t(), x(), steps=4, score="loss"),
            ValueError, "score"),
        Bad("images NaN",
            lambda: metrics.insertion(mlp(), np.full_like(x(), np.nan), t(), x()), ValueError,
            "images"),
    ],
    "metrics.perturbation_curves": [
        Bad("curve unknown",
            lambda: metrics.perturbation_curves(mlp(), x(), t(), x(), steps=4, curve="area"),
            ValueError, "curve"),
        Bad("order unknown",
            lambda: metrics.perturbation_curves(mlp(), x(), t(), x(), steps=4, order="random"),
            ValueError, "order"),
        Bad("scores unknown",
            lambda: metrics.perturbation_curves(mlp(), x(), t(), x(), steps=4,
                                                scores=("loss",)),
            ValueError, "score"),
        Bad("attributions wrong shape",
            lambda: metrics.perturbation_curves(mlp(), x(), t(), x()[:2], steps=4), ValueError,
            "attributions"),
        Bad("internal_batch_size 0",
            lambda: metrics.perturbation_curves(mlp(), x(), t(), x(), steps=4,
                                                internal_batch_size=0),
            ValueError, "internal_batch_size"),
    ],
    "metrics.rank_correlation": maps_pair_cases(metrics.rank_correlation),
    "metrics.ssim": maps_pair_cases(metrics.ssim),
    "metrics.similarity": maps_pair_cases(metrics.similarity),
    "metrics.hog_similarity": [
        *maps_pair_cases(metrics.hog_similarity),
        Bad("cell_size 0",
            lambda: metrics.hog_similarity(x8()[..., 0], x8()[..., 0], cell_size=0),
            ValueError, "cell_size"),
    ],
    "metrics.hog_features": [
        Bad("maps rank 2", lambda: metrics.hog_features(np.zeros((8, 8))), ValueError, "maps"),
        Bad("cell_size 0", lambda: metrics.hog_features(x8()[..., 0], cell_size=0), ValueError,
            "cell_size"),
        Bad("orientations 0", lambda: metrics.hog_features(x8()[..., 0], orientations=0),
            ValueError, "orientations"),
        Bad("block_size 0", lambda: metrics.hog_features(x8()[..., 0], block_size=0),
            ValueError, "block_size"),
    ],
    "metrics.parameter_layers": [
        Bad("model not a module", lambda: metrics.parameter_layers("cnn"), TypeError,
            "model"),
    ],
    "metrics.randomize_layers": [
        Bad("layer unknown", lambda: metrics.randomize_layers(mlp(), ["conv9"], key()),
            ValueError, "layers"),
        Bad("key an int", lambda: metrics.randomize_layers(mlp(), ["head"], 0), TypeError,
            "key"),
    ],
    "metrics.randomized_models": [
        Bad("mode unknown", lambda: metrics.randomized_models(mlp(), key(), mode="all"),
            ValueError, "mode"),
        Bad("key an int", lambda: metrics.randomized_models(mlp(), 0), TypeError, "key"),
        Bad("layers unknown",
            lambda: metrics.randomized_models(mlp(), key(), layers=["conv9"]), ValueError,
            "layers"),
    ],
    "metrics.model_randomization": [
        Bad("method not callable",
            lambda: metrics.model_randomization("gradients", mlp(), x(), t(), key=key()),
            TypeError, "method"),
        Bad("mode unknown",
            lambda: metrics.model_randomization(methods.gradients, mlp(), x(), t(), key=key(),
                                                mode="all"),
            ValueError, "mode"),
        Bad("images NaN",
            lambda: metrics.model_randomization(methods.gradients, mlp(),
                                                np.full_like(x(), np.nan), t(), key=key()),
            ValueError, "images"),
        Bad("target out of range",
            lambda: metrics.model_randomization(methods.gradients, mlp(), x(), t() + 3,
                                                key=key()),
            ValueError, "targets"),
        Bad("batch_size 0",
            lambda: metrics.model_randomization(methods.gradients, mlp(), x(), t(), key=key(),
                                                batch_size=0),
            ValueError, "batch_size"),
    ],
    "metrics.data_randomization": [
        Bad("method not callable",
            lambda: metrics.data_randomization("gradients", mlp(), mlp(), x(), t()),
            TypeError, "method"),
        Bad("random_model not a module",
            lambda: metrics.data_randomization(methods.gradients, mlp(), "cnn", x(), t()),
            TypeError, "random_model"),
        Bad("images NaN",
            lambda: metrics.data_randomization(methods.gradients, mlp(), mlp(),
                                               np.full_like(x(), np.nan), t()),
            ValueError, "images"),
    ],
    "metrics.randomization_verdict": [
        Bad("result not a RandomizationResult",
            lambda: metrics.randomization_verdict({"maps": 1}), TypeError, "result"),
        Bad("field unknown",
            lambda: metrics.randomization_verdict(randomization_result(), field="pearson"),
            ValueError, "field"),
        Bad("threshold above 1",
            lambda: metrics.randomization_verdict(randomization_result(), threshold=2.0),
            ValueError, "threshold"),
        Bad("z negative", lambda: metrics.randomization_verdict(randomization_result(), z=-1.0),
            ValueError, "z"),
    ],
    "metrics.remove_top_pixels": [
        Bad("fraction above 1",
            lambda: metrics.remove_top_pixels(x(), x(), 1.5, fill=0.0), ValueError,
            "fraction"),
        Bad("attributions wrong shape",
            lambda: metrics.remove_top_pixels(x(), x()[:2], 0.5, fill=0.0), ValueError,
            "attributions"),
        Bad("fill NaN",
            lambda: metrics.remove_top_pixels(x(), x(), 0.5, fill=float("nan")), ValueError,
            "fill"),
    ],
    # A ROARConfig is checked where it is used, by roar (before any work).
    "metrics.ROARConfig": [
        Bad("fraction above 1", lambda: roar_with(metrics.ROARConfig(fractions=(0.5, 1.5))),
            ValueError, "fractions"),
        Bad("epochs 0", lambda: roar_with(metrics.ROARConfig(epochs=0)), ValueError, "epochs"),
        Bad("model unknown", lambda: roar_with(metrics.ROARConfig(model="vgg")), ValueError,
            "model"),
    ],
    "metrics.roar_rankings": [
        Bad("methods not a mapping",
            lambda: metrics.roar_rankings(mlp(), [methods.gradients], (x(), t()), (x(), t())),
            TypeError, "methods"),
        Bad("train_data mismatched",
            lambda: metrics.roar_rankings(mlp(), {"g": methods.gradients}, (x(), t()[:2]),
                                          (x(), t())),
            ValueError, "train"),
    ],
    "metrics.roar": [
        Bad("methods not a mapping",
            lambda: metrics.roar(mlp(), [methods.gradients], (x(), t()), (x(), t())),
            TypeError, "methods"),
        Bad("config not a ROARConfig",
            lambda: metrics.roar(mlp(), {"g": methods.gradients}, (x(), t()), (x(), t()),
                                 config={"epochs": 1}),
            TypeError, "config"),
    ],
    # ---------------------------------------------------------------- scale
    "scale.explain_dataset": [
        Bad("method not callable",
            lambda: scale.explain_dataset("gradients", mlp(), x(), t(), batch_size=2),
            TypeError, "method"),
        Bad("batch_size 0",
            lambda: scale.explain_dataset(methods.gradients, mlp(), x(), t(), batch_size=0),
            ValueError, "batch_size"),
        Bad("workers 0",
            lambda: scale.explain_dataset(methods.gradients, mlp(), x(), t(), batch_size=2,
                                          workers=0),
            ValueError, "workers"),
        Bad("mesh not a Mesh",
            lambda: scale.explain_dataset(methods.gradients, mlp(), x(), t(), batch_size=2,
                                          mesh="cpu"),
            TypeError, "mesh"),
        Bad("images and targets of different lengths",
            lambda: scale.explain_dataset(methods.gradients, mlp(), x(), t()[:2],
                                          batch_size=2),
            ValueError, "targets"),
        Bad("images rank 3",
            lambda: scale.explain_dataset(methods.gradients, mlp(), x()[..., 0], t(),
                                          batch_size=2),
            ValueError, "images"),
        Bad("empty dataset",
            lambda: scale.explain_dataset(methods.gradients, mlp(), x()[:0], t()[:0],
                                          batch_size=2),
            ValueError, "images"),
    ],
    "scale.padded_batches": [
        Bad("batch_size 0", lambda: list(scale.padded_batches(x(), t(), 0)), ValueError,
            "batch_size"),
        Bad("multiple 0", lambda: list(scale.padded_batches(x(), t(), 2, multiple=0)),
            ValueError, "multiple"),
        Bad("different lengths", lambda: list(scale.padded_batches(x(), t()[:2], 2)),
            ValueError, "targets"),
    ],
    # ---------------------------------------------------------------- plotting
    "plotting.symmetric_limit": [
        Bad("percentile above 100", lambda: plotting.symmetric_limit(x(), 150.0), ValueError,
            "percentile"),
        Bad("maps NaN", lambda: plotting.symmetric_limit(np.full((3, 4), np.nan)), ValueError,
            "maps"),
    ],
    "plotting.plot_attribution": [
        Bad("attribution of another shape",
            lambda: plotting.plot_attribution(x()[0], x8()[0]), ValueError, "attribution"),
        Bad("image rank 4", lambda: plotting.plot_attribution(x(), x()), ValueError, "image"),
    ],
    "plotting.plot_grid": [
        Bad("a column with too few maps",
            lambda: plotting.plot_grid(x(), {"g": x()[:2]}), ValueError, "columns"),
        Bad("row_labels too few",
            lambda: plotting.plot_grid(x(), {"g": x()}, row_labels=["a"]), ValueError,
            "row_labels"),
    ],
    "plotting.plot_gallery": [
        Bad("a map of another shape",
            lambda: plotting.plot_gallery(x()[0], {"g": x8()[0]}), ValueError, "maps"),
        Bad("columns 0", lambda: plotting.plot_gallery(x()[0], {"g": x()[0]}, columns=0),
            ValueError, "columns"),
    ],
    "plotting.plot_relu_rules": [
        Bad("a rule not callable",
            lambda: plotting.plot_relu_rules({"guided": "relu"}, jnp.linspace(-1, 1, 9),
                                             jnp.linspace(-1, 1, 9)),
            TypeError, "rules"),
        Bad("signal of another length",
            lambda: plotting.plot_relu_rules({"guided": methods.guided_relu},
                                             jnp.linspace(-1, 1, 9), jnp.linspace(-1, 1, 5)),
            ValueError, "signal"),
    ],
    # ---------------------------------------------------------------- validation
    "validation.check_array": [
        Bad("a string", lambda: validation.check_array("baseline", "zeros", (2,)), TypeError,
            "baseline"),
        Bad("wrong shape", lambda: validation.check_array("baseline", np.zeros(3), (2,)),
            ValueError, "baseline"),
    ],
    "validation.check_callable": [
        Bad("a number", lambda: validation.check_callable("method", 3, "a saliency method"),
            TypeError, "method"),
    ],
    "validation.check_choice": [
        Bad("not a choice", lambda: validation.check_choice("mode", "all", ("a", "b")),
            ValueError, "mode"),
        Bad("not a string", lambda: validation.check_choice("mode", 1, ("a", "b")),
            (TypeError, ValueError), "mode"),
    ],
    "validation.check_dataset": [
        Bad("different lengths", lambda: validation.check_dataset(x(), t()[:2]), ValueError,
            "targets"),
        Bad("images rank 3", lambda: validation.check_dataset(x()[..., 0], t()), ValueError,
            "images"),
    ],
    "validation.check_flag": [
        Bad("a string", lambda: validation.check_flag("relu", "yes"), TypeError, "relu"),
    ],
    "validation.check_image_batch": [
        Bad("wrong shape",
            lambda: validation.check_image_batch("baseline", np.zeros((3, 4, 4, 1)),
                                                 jnp.asarray(x())),
            ValueError, "baseline"),
        Bad("NaN",
            lambda: validation.check_image_batch("baseline", np.full_like(x(), np.nan),
                                                 jnp.asarray(x())),
            ValueError, "baseline"),
    ],
    "validation.check_inputs": method_battery(validation.check_inputs),
    "validation.check_key": [
        Bad("an int", lambda: validation.check_key(0), TypeError, "key"),
        Bad("a float array", lambda: validation.check_key(np.zeros(2)), TypeError, "key"),
    ],
    "validation.check_model": [
        Bad("a string", lambda: validation.check_model("cnn"), TypeError, "model"),
        Bad("a Pretrained-like record", lambda: validation.check_model(
            type("Record", (), {"model": mlp()})(), "random_model"), TypeError,
            "random_model.*pass its .model"),
    ],
    "validation.check_maps": [
        Bad("wrong shape",
            lambda: validation.check_maps("attributions", x()[:2], jnp.asarray(x())),
            ValueError, "attributions"),
        Bad("NaN",
            lambda: validation.check_maps("attributions", np.full_like(x(), np.nan),
                                          jnp.asarray(x())),
            ValueError, "attributions"),
    ],
    "validation.check_number": [
        Bad("negative", lambda: validation.check_number("sigma", -1.0), ValueError, "sigma"),
        Bad("NaN", lambda: validation.check_number("sigma", float("nan")), ValueError,
            "sigma"),
        Bad("a string", lambda: validation.check_number("sigma", "1"), TypeError, "sigma"),
    ],
    "validation.check_positive_int": [
        Bad("zero", lambda: validation.check_positive_int("steps", 0), ValueError, "steps"),
        Bad("a float", lambda: validation.check_positive_int("steps", 2.5), TypeError,
            "steps"),
        Bad("a bool", lambda: validation.check_positive_int("steps", True), TypeError,
            "steps"),
    ],
    "validation.model_channels": [
        Bad("model not a module", lambda: validation.model_channels("cnn"), TypeError,
            "model"),
    ],
    "validation.model_num_classes": [
        Bad("model not a module", lambda: validation.model_num_classes("cnn", x()), TypeError,
            "model"),
        Bad("images the model cannot take",
            lambda: validation.model_num_classes(mlp(), jnp.zeros((3, 6, 5, 1))), ValueError,
            "images"),
    ],
    # ---------------------------------------------------------------- zoo
    "zoo.pretrained": [
        Bad("name unknown", offline(lambda: zoo.pretrained("vgg")), ValueError, "name"),
        Bad("train_split unknown", offline(lambda: zoo.pretrained("cnn", train_split="valid")),
            ValueError, "split"),
        Bad("seed a string", offline(lambda: zoo.pretrained("cnn", seed="0")), TypeError, "seed"),
        Bad("shuffle_labels not a flag",
            offline(lambda: zoo.pretrained("cnn", shuffle_labels="yes")), TypeError,
            "shuffle_labels"),
    ],
    "zoo.cached": [
        Bad("constructor not callable", offline(lambda: zoo.cached("mine", "MLP")),
            (TypeError, ValueError), "constructor"),
        Bad("kwargs not a mapping", offline(lambda: zoo.cached("mine", MLP, [("hidden", (4,))])),
            TypeError, "kwargs"),
    ],
    "zoo.default_splits": [
        Bad("train split environment variable unknown",
            with_env(zoo.default_splits, SALIENCY_GUIDE_TRAIN_SPLIT="valid"), ValueError,
            "SALIENCY_GUIDE_TRAIN_SPLIT"),
    ],
    "zoo.train_data": [
        Bad("split unknown", offline(lambda: zoo.train_data("valid")), ValueError, "split"),
    ],
    "zoo.eval_data": [
        Bad("split unknown", offline(lambda: zoo.eval_data("valid")), ValueError, "split"),
    ],
    # ---------------------------------------------------------------- data
    "data.load_mnist": [
        Bad("split unknown", lambda: data.load_mnist("validation", data_dir=tmp()),
            ValueError, "split"),
        Bad("split slice inverted", lambda: data.load_mnist("test[5:2]", data_dir=tmp()),
            ValueError, "split"),
        Bad("split a number", lambda: data.load_mnist(3, data_dir=tmp()), TypeError, "split"),
        Bad("data_dir without the files",
            lambda: data.load_mnist("test[:2]", data_dir=tmp()), (FileNotFoundError, ValueError),
            "garbage|t10k|data_dir|SALIENCY_GUIDE_MNIST_DIR|bad_inputs"),
    ],
    "data.read_idx": [
        Bad("file missing", lambda: data.read_idx(tmp() / "missing.gz"), FileNotFoundError,
            "missing.gz"),
        Bad("not a gzip file", lambda: data.read_idx(tmp() / "garbage.gz"), ValueError,
            "garbage.gz"),
        Bad("truncated IDX header", lambda: data.read_idx(tmp() / "garbage.idx"), ValueError,
            "garbage.idx"),
    ],
}


# The method families' tables, one file each (tests/bad_inputs_<family>.py).
for _path in sorted(Path(__file__).parent.glob("bad_inputs_*.py")):
  _family = importlib.import_module(_path.stem)
  assert not _family.CASES.keys() & CASES.keys(), f"{_path.name}: a name has two entries"
  CASES.update(_family.CASES)
  NO_USER_INPUT.update(getattr(_family, "NO_USER_INPUT", {}))


def test_every_public_name_has_an_entry():
  public = public_names()
  missing = sorted(public - CASES.keys() - NO_USER_INPUT.keys())
  assert not missing, (
      f"public names without a bad-input entry in tests/test_bad_inputs.py: {missing}; "
      "add their bad inputs to CASES (or, for a constant or a result record, a reason to "
      "NO_USER_INPUT)")
  stale = sorted((CASES.keys() | NO_USER_INPUT.keys()) - public)
  assert not stale, f"entries for names that are no longer public: {stale}"
  assert not CASES.keys() & NO_USER_INPUT.keys(), "a name is both in CASES and NO_USER_INPUT"
  assert all(CASES.values()), "an entry of CASES lists no bad input"


def _params():
  for name, bads in CASES.items():
    for bad in bads:
      marks = [pytest.mark.xfail(strict=True, reason=bad.xfail)] if bad.xfail else []
      yield pytest.param(bad, id=f"{name}: {bad.what}", marks=marks)


@pytest.mark.parametrize("bad", list(_params()))
def test_bad_input_is_rejected_clearly(bad: Bad):
  with pytest.raises(bad.error, match=bad.match):
    bad.call()
