"""Tests of Blur IG (methods/blur_ig.py) against its definition and PAIR's conventions.

* the jitted blur is scipy.ndimage.gaussian_filter(x, [σ, σ, 0], mode="constant")
  (PAIR's blur: zeros beyond the border, kernel truncated at 4σ) for σ = 0, tiny,
  ordinary and wider than the image, on non-square multi-channel images;
* an independent NumPy/scipy reference, PAIR's loop written out (left Riemann sum
  over σ_k, forward difference with grad_step, sign −1), on the logit gradient,
  for both σ spacings;
* completeness on a linear model: Σ BlurIG = f_c(x) − f_c(L(x, σ_max)) and, per
  pixel, BlurIG = W_c ⊙ (x − L(x, σ_max)) (a telescoping sum);
* class sensitivity, batch independence and chunking invariance.
"""

from __future__ import annotations

import importlib

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from model_factories import linear_model, rand, toy_batch, toy_mlp
from saliency_guide import methods

blur_module = importlib.import_module("saliency_guide.methods.blur_ig")


def scipy_blur(image: np.ndarray, sigma: float) -> np.ndarray:
  """PAIR's gaussian_blur, float64."""
  image = np.asarray(image, np.float64)
  return image if sigma == 0 else ndimage.gaussian_filter(image, [sigma, sigma, 0],
                                                          mode="constant")


def reference_blur_ig(model, images, targets, max_sigma, steps, grad_step, sqrt):
  """PAIR's BlurIG.GetMask (batch_size=1), written out in float64 NumPy."""
  if sqrt:
    sigmas = [np.sqrt(i * max_sigma / steps) for i in range(steps + 1)]
  else:
    sigmas = [i * max_sigma / steps for i in range(steps + 1)]
  out = []
  for image, target in zip(images, targets, strict=True):
    total = np.zeros(image.shape)
    for i in range(steps):
      point = scipy_blur(image, sigmas[i])
      d_blur = (scipy_blur(image, sigmas[i] + grad_step) - point) / grad_step
      grad = np.asarray(methods.logit_gradient(
          model, jnp.asarray(point[None], jnp.float32), jnp.asarray([target])))[0]
      total += (sigmas[i + 1] - sigmas[i]) * d_blur * grad
    out.append(-total)
  return np.stack(out)


def rel(a, b):
  return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


@pytest.mark.parametrize("sigma", [0.0, 0.01, 0.3, 1.0, 2.7, 40.0])
def test_blur_is_scipy_constant_mode(sigma):
  images = rand(1, (2, 6, 9, 3))
  operands = blur_module._path_sigmas(sigma if sigma else 1.0, 1, 0.5, False)
  if sigma:  # row 0 of a one-step path is σ = 0: build the σ of interest directly
    operands = blur_module._path_sigmas(2 * sigma, 2, 0.5, False)[:, 1:]
  kernel = [jnp.asarray(row, jnp.float32) for row in operands[:8]]
  rows, rows_h, _ = blur_module._blur_matrices(6, *kernel)
  cols, cols_h, _ = blur_module._blur_matrices(9, *kernel)
  ours = np.asarray(blur_module._blur(jnp.asarray(images), rows, cols))[0]
  ahead = np.asarray(blur_module._blur(jnp.asarray(images), rows_h, cols_h))[0]
  for b in range(2):
    np.testing.assert_allclose(ours[b], scipy_blur(images[b], sigma), atol=2e-7)
    np.testing.assert_allclose(ahead[b], scipy_blur(images[b], sigma + 0.5), atol=2e-7)


@pytest.mark.parametrize("sqrt", [False, True])
def test_matches_numpy_reference_of_pair(sqrt):
  model = toy_mlp()
  images, targets = toy_batch(3)
  options = dict(max_sigma=3.0, steps=12, grad_step=0.01, sqrt=sqrt)
  ours = methods.blur_ig(model, images, targets, **options)
  assert ours.shape == images.shape and ours.dtype == jnp.float32
  assert rel(ours, reference_blur_ig(model, images, targets, **options)) < 1e-4


def test_linear_model_telescopes_to_blurred_baseline():
  model, weights = linear_model()
  images, targets = toy_batch(3)
  max_sigma, steps = 2.0, 400
  maps = np.asarray(methods.blur_ig(model, images, targets, max_sigma=max_sigma, steps=steps,
                                    grad_step=1e-3))
  for b, c in enumerate(targets):
    gap = images[b] - scipy_blur(images[b], max_sigma)
    expected = weights[c].reshape(images.shape[1:]) * gap
    # forward differences of a smooth path: O(grad_step + 1/steps) away from exact
    assert rel(maps[b], expected) < 0.02
    assert abs(maps[b].sum() - expected.sum()) < 0.02 * np.abs(expected).sum()


def test_class_sensitive_and_sign():
  model, weights = linear_model()
  image = rand(3, (1, 4, 5, 1))
  maps = [np.asarray(methods.blur_ig(model, image, np.array([c]), max_sigma=2.0, steps=50))
          for c in range(3)]
  assert rel(maps[0], maps[1]) > 0.1
  # for the logit (not the loss): positive weight and x above its blur -> positive
  gap = image - scipy_blur(image[0], 2.0)[None]
  agree = np.sign(maps[0]) == np.sign(weights[0].reshape(1, 4, 5, 1) * gap)
  assert agree.mean() > 0.9


def test_batch_and_chunking_invariance():
  model = toy_mlp()
  images, targets = toy_batch(5, seed=2)
  full = methods.blur_ig(model, images, targets, max_sigma=4.0, steps=9)
  for per_pass in (1, 7, 1000):
    chunked = methods.blur_ig(model, images, targets, max_sigma=4.0, steps=9,
                              internal_batch_size=per_pass)
    np.testing.assert_allclose(chunked, full, rtol=1e-5, atol=1e-7)
  alone = methods.blur_ig(model, images[3:4], targets[3:4], max_sigma=4.0, steps=9)
  np.testing.assert_allclose(alone[0], full[3], rtol=1e-5, atol=1e-7)
