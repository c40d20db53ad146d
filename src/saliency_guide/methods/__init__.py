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
from saliency_guide.methods.cam import cam as cam
from saliency_guide.methods.deconvolution import deconv_relu as deconv_relu
from saliency_guide.methods.deconvolution import deconvolution as deconvolution
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
from saliency_guide.methods.integrated_gradients import BASELINES as BASELINES
from saliency_guide.methods.integrated_gradients import QUADRATURE_RULES as QUADRATURE_RULES
from saliency_guide.methods.integrated_gradients import integrated_gradients as integrated_gradients
from saliency_guide.methods.integrated_gradients import (
    integrated_gradients_plain as integrated_gradients_plain,
)
from saliency_guide.methods.integrated_gradients import make_baseline as make_baseline
from saliency_guide.methods.integrated_gradients import quadrature as quadrature
from saliency_guide.methods.score_cam import SCORE_CAM_WEIGHTS as SCORE_CAM_WEIGHTS
from saliency_guide.methods.score_cam import score_cam as score_cam
from saliency_guide.methods.smoothgrad import SMOOTHGRAD_VARIANTS as SMOOTHGRAD_VARIANTS
from saliency_guide.methods.smoothgrad import smoothgrad as smoothgrad
from saliency_guide.methods.smoothgrad import smoothgrad_plain as smoothgrad_plain
