"""Blur IG and Guided IG against PAIR's ``saliency`` 0.2.1 (framework-agnostic core).

PAIR's ``saliency.core`` drives any model through a ``call_model_function`` that
returns the gradient of the explained output with respect to the input; here it
returns the gradient of the target **logit** of our Flax model (the same jitted
``methods.logit_gradient`` our methods call), so both sides differentiate the
same network with the same weights. PAIR explains one image per ``GetMask``
call; the cases loop over the digits.

Shim (numpy 2): ``saliency/core/guided_ig.py`` calls
``np.quantile(..., interpolation='lower')``; numpy 2 removed ``interpolation=``
(it is now ``method=``). :func:`_numpy_2_shim` gives that module a numpy whose
``quantile`` renames the keyword and changes nothing else.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from references import Case

# PAIR explains one image per call: time both sides at small batches.
BATCHES = (1, 16)
LIBRARIES = ("saliency",)


class _NumpyWithOldQuantile:
  """numpy, except ``quantile(..., interpolation=m)`` means ``quantile(..., method=m)``."""

  def __getattr__(self, name: str) -> Any:
    return getattr(np, name)

  @staticmethod
  def quantile(a, q, *args, interpolation=None, **kwargs):
    if interpolation is not None:
      kwargs["method"] = interpolation
    return np.quantile(a, q, *args, **kwargs)


def _numpy_2_shim() -> None:
  """Make ``saliency.core.guided_ig`` run under numpy 2 (see the module docstring)."""
  from saliency.core import guided_ig

  if not isinstance(guided_ig.np, _NumpyWithOldQuantile):
    guided_ig.np = _NumpyWithOldQuantile()


@functools.cache
def _gradient_fn(model: Any) -> Any:
  from saliency_guide import methods

  return jax.jit(lambda x, t: methods.logit_gradient(model, x, t))


def call_model_function(model: Any):
  """PAIR's ``call_model_function`` for our model: ``call_model_args`` is the target class."""
  from saliency.core.base import INPUT_OUTPUT_GRADIENTS

  gradient = _gradient_fn(model)

  def call(x_value_batch, call_model_args=None, expected_keys=None):
    x = jnp.asarray(np.asarray(x_value_batch), jnp.float32)
    t = jnp.full((x.shape[0],), int(call_model_args), jnp.int32)
    return {INPUT_OUTPUT_GRADIENTS: np.asarray(gradient(x, t))}

  return call


def pair_blur_ig(model: Any, images: np.ndarray, labels: np.ndarray, **options: Any) -> np.ndarray:
  """PAIR's ``BlurIG.GetMask``, one image per call (``batch_size=1``, its default)."""
  from saliency.core import BlurIG

  call = call_model_function(model)
  return np.stack([BlurIG().GetMask(np.asarray(x, np.float32), call, call_model_args=int(c),
                                    **options)
                   for x, c in zip(images, labels, strict=True)])


def pair_guided_ig(model: Any, images: np.ndarray, labels: np.ndarray, *, baseline: Any = None,
                   steps: int = 200, fraction: float = 0.25,
                   max_dist: float = 0.02) -> np.ndarray:
  """PAIR's ``GuidedIG.GetMask``, one image per call (float64 inside, as PAIR computes)."""
  from saliency.core import GuidedIG

  _numpy_2_shim()
  call = call_model_function(model)
  images = np.asarray(images, np.float32)
  baselines = (np.zeros_like(images) if baseline is None
               else np.broadcast_to(np.asarray(baseline, np.float32), images.shape))
  return np.stack([GuidedIG().GetMask(x, call, call_model_args=int(c), x_baseline=b,
                                      x_steps=steps, fraction=fraction, max_dist=max_dist)
                   for x, b, c in zip(images, baselines, labels, strict=True)])


def cases(models: dict[str, Any], images: np.ndarray, labels: np.ndarray) -> list[Case]:
  """Blur IG (PAIR's defaults and ``sqrt=True``) and Guided IG (black and uniform baselines)."""
  from saliency_guide import methods

  images = np.asarray(images, np.float32)
  labels = np.asarray(labels)
  # A fixed uniform baseline in [0, 1]: every pixel differs from it, so Guided IG
  # chooses among all pixels (with the black baseline most MNIST pixels cannot move).
  uniform = np.random.default_rng(0).random(images.shape[1:], dtype=np.float32)
  out = []
  for name in ("cnn", "gap_cnn"):
    model = models[name]
    for options in ({}, {"max_sigma": 10.0, "steps": 50, "sqrt": True}):
      label = ", ".join(f"{k}={v}" for k, v in options.items()) or "PAIR's defaults"
      out.append(Case(
          method=f"Blur IG ({label})", model=name, reference="PAIR saliency BlurIG",
          ours=lambda m=model, o=options: np.asarray(methods.blur_ig(m, images, labels, **o)),
          theirs=lambda m=model, o=options: pair_blur_ig(m, images, labels, **o),
          tolerance=1e-4,
          note="PAIR driven with our model's logit gradient (call_model_function); "
               "one image per GetMask call, batch_size=1 (its default; with larger "
               "batches PAIR weights every point of a batch by the last point's Δσ).",
      ))
    for base_name, base in (("black", None), ("uniform", uniform)):
      out.append(Case(
          method=f"Guided IG ({base_name} baseline, PAIR's defaults)", model=name,
          reference="PAIR saliency GuidedIG",
          ours=lambda m=model, b=base: np.asarray(methods.guided_ig(
              m, images, labels, baseline=b)),
          theirs=lambda m=model, b=base: pair_guided_ig(m, images, labels, baseline=b),
          tolerance=1e-4,
          note="PAIR driven with our model's logit gradient; numpy-2 shim for its "
               "np.quantile(interpolation=) call; both keep the path in float64.",
      ))
  return out
