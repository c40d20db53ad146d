"""Saliency (feature-attribution) methods.

Every method has the signature ``method(model, images, targets, **options)``:
``images`` are float32 NHWC ``(B, H, W, C)``, ``targets`` integer class indices
``(B,)``, and the result explains each image's **target class logit**.
"""

# Gradient methods.
# Modified backpropagation.
# Class activation maps.
