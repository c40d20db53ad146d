"""Bad inputs of the CAM variants (Layer-CAM, HiResCAM, Eigen-CAM, Ablation-CAM)."""

from __future__ import annotations

from bad_input_kit import Bad, gap, layer_cases, method_battery, relu_flag, t, x8
from saliency_guide import methods

CASES: dict[str, list[Bad]] = {
    "methods.layer_cam": (
        method_battery(methods.layer_cam, gap, x8) + layer_cases(methods.layer_cam)
        + relu_flag(methods.layer_cam)),
    "methods.hires_cam": (
        method_battery(methods.hires_cam, gap, x8) + layer_cases(methods.hires_cam)
        + relu_flag(methods.hires_cam)),
    "methods.eigen_cam": (
        method_battery(methods.eigen_cam, gap, x8) + layer_cases(methods.eigen_cam)
        + relu_flag(methods.eigen_cam)
        + [Bad("center not a flag", lambda: methods.eigen_cam(gap(), x8(), t(), center=1),
               TypeError, "center")]),
    "methods.ablation_cam": (
        method_battery(methods.ablation_cam, gap, x8) + layer_cases(methods.ablation_cam)
        + relu_flag(methods.ablation_cam)
        + [Bad("weights unknown",
               lambda: methods.ablation_cam(gap(), x8(), t(), weights="paper"), ValueError,
               "weights"),
           Bad("weights not a string",
               lambda: methods.ablation_cam(gap(), x8(), t(), weights=1.0), (TypeError,
                                                                            ValueError),
               "weights")]),
}

NO_USER_INPUT: dict[str, str] = {
    "methods.ABLATION_CAM_WEIGHTS": "a constant: the Ablation-CAM channel-weight names",
}
