"""Saliency (feature-attribution) methods.

Every method has the signature ``method(model, images, targets, **options)``:
``images`` are float32 NHWC ``(B, H, W, C)``, ``targets`` integer class indices
``(B,)``, and the result explains each image's **target class logit**.

One public module per method, named like its tutorial page
(``docs/tutorials/X.md`` ↔ ``methods/X.py``); the machinery several methods
share lives in private modules named for what they hold.
"""

from saliency_guide.methods._cores import Core as Core
from saliency_guide.methods._cores import core as core
from saliency_guide.methods._relu_rules import with_relu_rule as with_relu_rule
from saliency_guide.methods._relu_rules import with_softplus as with_softplus
from saliency_guide.methods.blur_ig import blur_ig as blur_ig
from saliency_guide.methods.cam import cam as cam
from saliency_guide.methods.cam_variants import ABLATION_CAM_WEIGHTS as ABLATION_CAM_WEIGHTS
from saliency_guide.methods.cam_variants import ablation_cam as ablation_cam
from saliency_guide.methods.cam_variants import eigen_cam as eigen_cam
from saliency_guide.methods.cam_variants import hires_cam as hires_cam
from saliency_guide.methods.cam_variants import layer_cam as layer_cam
from saliency_guide.methods.deconvolution import deconv_relu as deconv_relu
from saliency_guide.methods.deconvolution import deconvolution as deconvolution
from saliency_guide.methods.deeplift import DEEPLIFT_RULES as DEEPLIFT_RULES
from saliency_guide.methods.deeplift import deep_shap as deep_shap
from saliency_guide.methods.deeplift import deeplift as deeplift
from saliency_guide.methods.expected_gradients import expected_gradients as expected_gradients
from saliency_guide.methods.grad_cam import grad_cam as grad_cam
from saliency_guide.methods.grad_cam_plus_plus import diagonal_derivatives as diagonal_derivatives
from saliency_guide.methods.grad_cam_plus_plus import grad_cam_plus_plus as grad_cam_plus_plus
from saliency_guide.methods.gradients import gradients as gradients
from saliency_guide.methods.gradients import logit_gradient as logit_gradient
from saliency_guide.methods.gradients import target_logits as target_logits
from saliency_guide.methods.gradients_x_inputs import gradients_x_inputs as gradients_x_inputs
from saliency_guide.methods.guided_backprop import guided_backprop as guided_backprop
from saliency_guide.methods.guided_backprop import guided_relu as guided_relu
from saliency_guide.methods.guided_grad_cam import guided_grad_cam as guided_grad_cam
from saliency_guide.methods.guided_ig import guided_ig as guided_ig
from saliency_guide.methods.integrated_gradients import BASELINES as BASELINES
from saliency_guide.methods.integrated_gradients import QUADRATURE_RULES as QUADRATURE_RULES
from saliency_guide.methods.integrated_gradients import integrated_gradients as integrated_gradients
from saliency_guide.methods.integrated_gradients import (
    integrated_gradients_plain as integrated_gradients_plain,
)
from saliency_guide.methods.integrated_gradients import make_baseline as make_baseline
from saliency_guide.methods.integrated_gradients import quadrature as quadrature
from saliency_guide.methods.kernel_shap import exact_shapley as exact_shapley
from saliency_guide.methods.kernel_shap import grid_mask as grid_mask
from saliency_guide.methods.kernel_shap import kernel_shap as kernel_shap
from saliency_guide.methods.kernel_shap import lime as lime
from saliency_guide.methods.lrp import LRP_COMPOSITES as LRP_COMPOSITES
from saliency_guide.methods.lrp import LRP_RULES as LRP_RULES
from saliency_guide.methods.lrp import lrp as lrp
from saliency_guide.methods.occlusion import RISE_SCORES as RISE_SCORES
from saliency_guide.methods.occlusion import occlusion as occlusion
from saliency_guide.methods.occlusion import rise as rise
from saliency_guide.methods.occlusion import rise_masks as rise_masks
from saliency_guide.methods.score_cam import SCORE_CAM_WEIGHTS as SCORE_CAM_WEIGHTS
from saliency_guide.methods.score_cam import score_cam as score_cam
from saliency_guide.methods.smoothgrad import SMOOTHGRAD_VARIANTS as SMOOTHGRAD_VARIANTS
from saliency_guide.methods.smoothgrad import smoothgrad as smoothgrad
from saliency_guide.methods.smoothgrad import smoothgrad_plain as smoothgrad_plain
from saliency_guide.methods.xrai import FELZENSZWALB_SCALES as FELZENSZWALB_SCALES
from saliency_guide.methods.xrai import XRAI_ALGORITHMS as XRAI_ALGORITHMS
from saliency_guide.methods.xrai import grid_segments as grid_segments
from saliency_guide.methods.xrai import xrai as xrai
from saliency_guide.methods.xrai import xrai_base_attributions as xrai_base_attributions
from saliency_guide.methods.xrai import xrai_segments as xrai_segments
