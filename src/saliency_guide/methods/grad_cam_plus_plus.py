r"""Grad-CAM++ (Chattopadhay et al., 2018), with exact diagonal higher derivatives.

Channel weights sum the positive gradients of a class score :math:`Y^c` with
location-dependent coefficients (eq. 10 of the paper),

.. math::

   \alpha^{kc}_{ij} = \frac{Y''}{2 Y'' + \sum_{a,b} A^k_{ab}\, Y'''}, \qquad
   w^c_k = \sum_{i,j} \alpha^{kc}_{ij}\, \mathrm{ReLU}(Y'), \qquad
   L^c = \mathrm{ReLU}\Big(\sum_k w^c_k A^k\Big),

with :math:`Y^{(n)} = \partial^n Y^c / (\partial A^k_{ij})^n` and
:math:`Y^c = \exp(S^c)` of the target logit :math:`S^c`, so that exactly
:math:`Y'' = e^S (S'^2 + S'')` and :math:`Y''' = e^S (S'^3 + 3 S' S'' + S''')`.
:func:`diagonal_derivatives` computes :math:`S''` and :math:`S'''` exactly;
the paper's "exponential shortcut" (eq. 19) drops them.

References:
  A. Chattopadhay, A. Sarkar, P. Howlader, V. N. Balasubramanian. *Grad-CAM++:
  Generalized Gradient-based Visual Explanations for Deep Convolutional
  Networks.* WACV 2018. arXiv:1710.11063.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from saliency_guide.methods._cores import Core, register
from saliency_guide.methods._feature_maps import (
    Layer,
    check_layer,
    checked_options,
    chunk_size,
    finish,
    layer_score,
    map_shape,
    weighted_sum,
)
from saliency_guide.validation import check_choice, check_inputs

__all__ = ["DERIVATIVES", "diagonal_derivatives", "grad_cam_plus_plus"]

#: Values of ``grad_cam_plus_plus(derivatives=...)``.
DERIVATIVES = ("exact", "shortcut")


def _diagonals(model, images, targets, layer, order):
  r"""The maps and the diagonal derivatives of the summed target logits with respect to them.

  Returns ``(A, S', S'', S''')``, each ``(B, h, w, K)`` (see :func:`diagonal_derivatives`);
  with ``order == 1`` only the maps and the gradient are computed and ``S''``,
  ``S'''`` are ``None``.
  """
  score = layer_score(model, images, targets, layer)
  shape = map_shape(model, images, layer)
  zero = jnp.zeros(shape)
  first, a = jax.grad(score, has_aux=True)(zero)
  if order == 1:
    return a, first, None, None

  def gradient(p):
    return jax.grad(score, has_aux=True)(p)[0]

  batch, n = shape[0], math.prod(shape[1:])

  def along(index):
    # The basis direction e_index in every image at once: the images do not
    # interact, so the Hessian is block-diagonal over the batch and each image
    # reads its own diagonal entry.
    v = jnp.broadcast_to(jax.nn.one_hot(index, n, dtype=zero.dtype).reshape(shape[1:]), shape)

    def hessian_along_v(p):  # H(p) v, forward over reverse
      return jax.jvp(gradient, (p,), (v,))[1]

    hv, tvv = jax.jvp(hessian_along_v, (zero,), (v,))  # H v and T[v, v, .]
    return hv.reshape(batch, n)[:, index], tvv.reshape(batch, n)[:, index]

  second, third = jax.lax.map(along, jnp.arange(n), batch_size=chunk_size(n, batch * n))
  return a, first, second.T.reshape(shape), third.T.reshape(shape)


@functools.partial(jax.jit, static_argnames=("layer", "order"))
def _diagonal_derivatives(model, images, targets, layer, order):
  return _diagonals(model, images, targets, layer, order)


def diagonal_derivatives(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    layer: str | nnx.Module | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  r"""The feature maps and the exact diagonal derivatives of the target logit with respect to them.

  .. math::

     A, \quad
     S' = \frac{\partial S^c}{\partial A^k_{ij}}, \quad
     S'' = \frac{\partial^2 S^c}{(\partial A^k_{ij})^2}, \quad
     S''' = \frac{\partial^3 S^c}{(\partial A^k_{ij})^3},

  each of the shape of :math:`A`, ``(B, h, w, K)``; :math:`S^c` is the target
  logit. :math:`S'` is one reverse pass; :math:`S''` and :math:`S'''` are the
  diagonals of the Hessian and of the third-derivative tensor, computed per
  location by a Hessian-vector product along the basis direction (``jax.jvp``
  of ``jax.grad``) and a ``jax.jvp`` of that product along the same direction,
  for all locations in large batches. The cost is :math:`hwK` such passes
  through the layers above ``layer``, except where JAX can prove the terms zero
  (piecewise-linear layers above, as in every model of
  :mod:`saliency_guide.models`), where it is free.

  Args:
    model: a classifier (any Flax NNX model returning logits) with a layer whose
      output is feature maps ``(B, h, w, K)``.
    images: float array ``(B, H, W, C)``, NHWC.
    targets: integer array ``(B,)``, the class whose logit is differentiated.
    layer: the layer whose output is :math:`A`: a dotted path to a submodule
      (``"blocks.1"``; list indices as parts), the submodule itself, or a name
      in ``model.feature_layers`` (the map the model exposes). Default: the
      last of ``feature_layers``, else the last submodule whose output is
      ``(B, h, w, K)`` in the forward pass.

  Returns:
    ``(A, S', S'', S''')``, four float32 arrays ``(B, h, w, K)``.

  Raises:
    ValueError: the model has no layer with ``(B, h, w, K)`` output, an unknown
      ``layer`` or one whose output is not ``(B, h, w, K)``, or bad
      ``images``/``targets``.
    TypeError: ``layer`` is not a string, a path tuple, a submodule or ``None``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import CNN
    >>> model = CNN(channels=(4, 8), hidden=16, rngs=nnx.Rngs(0))
    >>> a, d1, d2, d3 = diagonal_derivatives(model, jnp.ones((1, 28, 28, 1)), jnp.array([3]))
    >>> a.shape, float(jnp.abs(d2).max()), float(jnp.abs(d3).max())  # ReLU network: zero
    ((1, 14, 14, 8), 0.0, 0.0)

  References:
    A. Chattopadhay, A. Sarkar, P. Howlader, V. N. Balasubramanian.
    *Grad-CAM++: Generalized Gradient-based Visual Explanations for Deep
    Convolutional Networks.* WACV 2018. arXiv:1710.11063.
  """
  images, targets = check_inputs(model, images, targets)
  layer = check_layer(model, layer, images)
  return _diagonal_derivatives(model, images, targets, layer, 3)


def _grad_cam_plus_plus_core(
    model: nnx.Module, images: jax.Array, targets: jax.Array, operands: None, *,
    layer: Layer, upsample: bool, relu: bool, derivatives: str,
) -> jax.Array:
  """Traceable core of :func:`grad_cam_plus_plus` on checked inputs."""
  del operands
  exact = derivatives == "exact"
  a, d1, d2, d3 = _diagonals(model, images, targets, layer, 3 if exact else 1)
  # Derivatives of Y = exp(S), divided by exp(S) (it cancels in alpha).
  second = d1**2 + d2 if exact else d1**2
  third = d1**3 + 3 * d1 * d2 + d3 if exact else d1**3
  total = a.sum(axis=(1, 2), keepdims=True)  # sum_ab A^k_ab, (B, 1, 1, K)
  denominator = 2 * second + total * third
  nonzero = denominator != 0
  alpha = jnp.where(nonzero, second / jnp.where(nonzero, denominator, 1.0), 0.0)
  weights = (alpha * jax.nn.relu(d1)).sum(axis=(1, 2))  # (B, K)
  return finish(weighted_sum(weights, a), images.shape[1:3], relu=relu, upsample=upsample)


def grad_cam_plus_plus(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    layer: str | nnx.Module | None = None,
    upsample: bool = True,
    relu: bool = True,
    derivatives: str = "exact",
) -> jax.Array:
  r"""Grad-CAM++ (Chattopadhay et al., 2018), with exact higher derivatives.

  Channel weights sum the positive gradients with location-dependent
  coefficients :math:`\alpha` built from the first three derivatives of the
  class score :math:`Y^c` (eq. 10 of the paper):

  .. math::

     \alpha^{kc}_{ij} =
       \frac{\dfrac{\partial^2 Y^c}{(\partial A^k_{ij})^2}}
            {2 \dfrac{\partial^2 Y^c}{(\partial A^k_{ij})^2}
             + \sum_{a,b} A^k_{ab} \dfrac{\partial^3 Y^c}{(\partial A^k_{ij})^3}},
     \qquad
     w^c_k = \sum_{i,j} \alpha^{kc}_{ij}\,
             \mathrm{ReLU}\Big(\frac{\partial Y^c}{\partial A^k_{ij}}\Big),
     \qquad
     L^c = \mathrm{ReLU}\Big(\sum_k w^c_k A^k\Big),

  with :math:`\alpha = 0` where the denominator is :math:`0`. The class score
  is :math:`Y^c = \exp(S^c)` of the target logit :math:`S^c` (the paper's
  choice: for a piecewise-linear network the logit's own second and third
  derivatives vanish and eq. 10 would be :math:`0/0`). With
  ``derivatives="exact"`` the derivatives of :math:`Y^c` are exact,

  .. math::

     \frac{\partial^2 Y}{\partial A^2} = e^{S}(S'^2 + S''), \qquad
     \frac{\partial^3 Y}{\partial A^3} = e^{S}(S'^3 + 3 S' S'' + S'''),

  with :math:`S''` and :math:`S'''` from :func:`diagonal_derivatives`;
  ``derivatives="shortcut"`` drops :math:`S''` and :math:`S'''` (eq. 19, what
  most implementations compute), which is exact only when they vanish. On the
  ReLU models of :mod:`saliency_guide.models` the two agree; on smooth
  networks they do not (see the Grad-CAM++ tutorial). The positive factor
  :math:`e^{S^c}` of every weight is dropped (it cancels in :math:`\alpha` and
  would overflow float32 for logits above ~88), and the paper's reference
  code's extra normalisation of :math:`\alpha` is not in the paper and not
  applied.

  Args:
    model: a classifier (any Flax NNX model returning logits) with a layer whose
      output is feature maps ``(B, h, w, K)``.
    images: float array ``(B, H, W, C)``, NHWC.
    targets: integer array ``(B,)``, the class whose logit is explained.
    layer: the layer whose output is :math:`A`: a dotted path to a submodule
      (``"blocks.1"``; list indices as parts), the submodule itself, or a name
      in ``model.feature_layers`` (the map the model exposes). Default: the
      last of ``feature_layers``, else the last submodule whose output is
      ``(B, h, w, K)`` in the forward pass.
    upsample: resize the map to ``(H, W)`` (bilinear, half-pixel centres);
      ``False`` returns the ``(h, w)`` map.
    relu: apply the final ReLU (the method); ``False`` returns the signed sum.
    derivatives: ``"exact"`` (default) or ``"shortcut"`` (:data:`DERIVATIVES`).

  Returns:
    float32 array ``(B, H, W)`` (or ``(B, h, w)`` without upsampling).

  Raises:
    ValueError: the model has no layer with ``(B, h, w, K)`` output, an unknown
      ``layer`` or one whose output is not ``(B, h, w, K)``, an unknown
      ``derivatives``, or bad ``images``/``targets``.
    TypeError: ``layer`` is not a string, a path tuple, a submodule or ``None``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import CNN
    >>> model = CNN(channels=(4, 8), hidden=16, rngs=nnx.Rngs(0))
    >>> x, t = jnp.ones((2, 28, 28, 1)), jnp.array([3, 7])
    >>> exact = grad_cam_plus_plus(model, x, t)
    >>> exact.shape
    (2, 28, 28)
    >>> # a ReLU network: the exponential shortcut is exact
    >>> bool(jnp.array_equal(exact, grad_cam_plus_plus(model, x, t, derivatives="shortcut")))
    True

  References:
    A. Chattopadhay, A. Sarkar, P. Howlader, V. N. Balasubramanian.
    *Grad-CAM++: Generalized Gradient-based Visual Explanations for Deep
    Convolutional Networks.* WACV 2018. arXiv:1710.11063.
  """
  images, targets = check_inputs(model, images, targets)
  core = _prepare(model, images, layer=layer, upsample=upsample, relu=relu,
                  derivatives=derivatives)
  return core.run(model, images, targets)


def _prepare(
    model: nnx.Module, images: jax.Array, *, layer: object = None, upsample: bool = True,
    relu: bool = True, derivatives: str = "exact",
) -> Core:
  static = (*checked_options(model, images, layer, upsample, relu=relu),
            ("derivatives", check_choice("derivatives", derivatives, DERIVATIVES)))
  return Core(_grad_cam_plus_plus_core, static=static)


register(grad_cam_plus_plus, _prepare)
