"""Random draws for the methods that sample (random baselines, Expected Gradients, SmoothGrad)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax

__all__ = ["flat_random"]


def flat_random(
    sample: Callable[..., jax.Array], key: jax.Array, shape: tuple[int, ...], **kwargs: Any
) -> jax.Array:
  """``sample(key, shape)`` drawn as a flat vector, then reshaped.

  The values are those of ``sample(key, shape, **kwargs)`` (the SmoothGrad
  tests compare the two), but XLA:CPU compiles JAX's threefry generator in a
  time that grows with the rank of the requested shape: measured here, ~5 s for
  a rank-4 shape against ~0.5 s for the same number of values drawn flat.

  Example:
    >>> import jax
    >>> flat_random(jax.random.normal, jax.random.key(0), (2, 3, 4, 1)).shape
    (2, 3, 4, 1)
  """
  return sample(key, (math.prod(shape),), **kwargs).reshape(shape)
