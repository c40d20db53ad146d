"""Input validation shared by every saliency method.

Every public method calls :func:`check_inputs` first, outside ``jit``, so that
bad input fails with a message naming the argument, what was expected and what
was given, instead of broadcasting silently, clamping an index or returning a
map full of NaNs.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = [
    "check_choice", "check_inputs", "check_positive_int", "model_channels", "model_num_classes",
]


def model_channels(model: nnx.Module) -> int | None:
  """Number of input channels ``model`` expects, or ``None`` if it cannot tell.

  Reads ``model.in_channels`` or ``model.image_shape[-1]`` if the model has
  one (both cost nothing), else the ``in_features`` of its first ``nnx.Conv``
  (a walk over the module graph).
  """
  channels = getattr(model, "in_channels", None)
  if channels is not None:
    return int(channels)
  shape = getattr(model, "image_shape", None)
  if shape is not None:
    return int(shape[-1])
  for _, module in nnx.iter_modules(model):
    if isinstance(module, nnx.Conv):
      return int(module.in_features)
  return None


def model_num_classes(model: nnx.Module, images: jax.Array) -> int:
  """Number of logits ``model`` returns for ``images`` (by abstract evaluation)."""
  head = getattr(model, "head", None)
  if isinstance(head, nnx.Linear):
    return int(head.out_features)
  out = jax.eval_shape(lambda m, x: m(x), model, jax.ShapeDtypeStruct(images.shape, images.dtype))
  if out.ndim != 2:
    raise ValueError(f"model: expected logits of shape (B, classes), got shape {out.shape}")
  return int(out.shape[-1])


@jax.jit
def _count_nonfinite(images: jax.Array) -> jax.Array:
  return jnp.sum(~jnp.isfinite(images))


def _describe(x: Any) -> str:
  if hasattr(x, "shape") and hasattr(x, "dtype"):
    return f"{type(x).__name__} of shape {tuple(x.shape)} and dtype {x.dtype}"
  return f"{type(x).__name__} {x!r}"[:200]


def check_inputs(
    model: nnx.Module, images: Any, targets: Any
) -> tuple[jax.Array, jax.Array]:
  """Validate ``(images, targets)`` for ``model`` and return them as JAX arrays.

  Args:
    model: the classifier to explain (returns logits).
    images: float array ``(B, H, W, C)`` (NHWC), finite values.
    targets: integer array ``(B,)`` of class indices in ``[0, classes)``.

  Returns:
    ``(images, targets)`` as ``float32`` and ``int32`` JAX arrays.

  Raises:
    TypeError: ``images`` is not a floating array or ``targets`` not an integer one.
    ValueError: wrong rank, wrong channel count (e.g. NCHW images), non-finite
      values, wrong number of targets, or a target out of range.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import CNN
    >>> x, t = check_inputs(CNN(rngs=nnx.Rngs(0)), jnp.zeros((2, 28, 28, 1)), [3, 7])
    >>> x.dtype, t.dtype
    (dtype('float32'), dtype('int32'))
    >>> check_inputs(CNN(rngs=nnx.Rngs(0)), jnp.zeros((2, 1, 28, 28)), [3, 7])
    Traceback (most recent call last):
    ...
    ValueError: images: expected NHWC images (B, H, W, 1) ... got shape (2, 1, 28, 28); \
channel-first (NCHW) arrays must be transposed with x.transpose(0, 2, 3, 1)
  """
  if not hasattr(images, "shape") or not hasattr(images, "dtype"):
    if isinstance(images, list | tuple):
      images = np.asarray(images)
    else:
      raise TypeError(f"images: expected a float array (B, H, W, C), got {_describe(images)}")
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise TypeError(
        f"images: expected a floating dtype (float32 values, e.g. in [0, 1]), got {images.dtype}; "
        "convert with images.astype(np.float32) / 255 for uint8 pixels"
    )
  if images.ndim != 4:
    raise ValueError(f"images: expected rank 4 (B, H, W, C), got shape {tuple(images.shape)}")
  channels = model_channels(model)
  if channels is not None and images.shape[-1] != channels:
    raise ValueError(
        f"images: expected NHWC images (B, H, W, {channels}) with {channels} channel(s) as the "
        f"model expects, got shape {tuple(images.shape)}; channel-first (NCHW) arrays must be "
        "transposed with x.transpose(0, 2, 3, 1)"
    )
  if images.shape[0] == 0:
    raise ValueError("images: expected at least one image, got a batch of 0")
  images = jnp.asarray(images, jnp.float32)
  bad = int(_count_nonfinite(images))  # one compiled call instead of two dispatched ops
  if bad:
    raise ValueError(f"images: expected finite values, got {bad} NaN or Inf value(s)")

  if isinstance(targets, int | np.integer):
    raise TypeError(
        f"targets: expected an integer array of shape ({images.shape[0]},), one class per "
        f"image, got the scalar {targets!r}; use jnp.full(len(images), {targets})"
    )
  targets_arr = np.asarray(targets)
  if not np.issubdtype(targets_arr.dtype, np.integer):
    raise TypeError(f"targets: expected integer class indices, got dtype {targets_arr.dtype}")
  if targets_arr.shape != (images.shape[0],):
    raise ValueError(
        f"targets: expected shape ({images.shape[0]},), one class per image, got shape "
        f"{targets_arr.shape}"
    )
  classes = model_num_classes(model, images)
  if targets_arr.min() < 0 or targets_arr.max() >= classes:
    raise ValueError(
        f"targets: expected class indices in [0, {classes}), got values from "
        f"{targets_arr.min()} to {targets_arr.max()}"
    )
  return images, jnp.asarray(targets_arr, jnp.int32)


def check_positive_int(name: str, value: Any) -> int:
  """``value`` as an ``int`` ≥ 1, else a ``TypeError``/``ValueError`` naming ``name``.

  Example:
    >>> check_positive_int("steps", 0)
    Traceback (most recent call last):
    ...
    ValueError: steps: expected an integer >= 1, got 0
  """
  if isinstance(value, bool) or not isinstance(value, int | np.integer):
    raise TypeError(f"{name}: expected an integer >= 1, got {_describe(value)}")
  if value < 1:
    raise ValueError(f"{name}: expected an integer >= 1, got {value}")
  return int(value)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
  """``value`` if it is one of ``choices``, else a ``ValueError`` listing them.

  Example:
    >>> check_choice("variant", "smoothgrad", ("smoothgrad", "vargrad"))
    'smoothgrad'
    >>> check_choice("variant", "sg", ("smoothgrad", "vargrad"))
    Traceback (most recent call last):
    ...
    ValueError: variant: expected one of 'smoothgrad', 'vargrad', got 'sg'
  """
  if value not in choices:
    options = ", ".join(repr(c) for c in choices)
    raise ValueError(f"{name}: expected one of {options}, got {value!r}")
  return value
