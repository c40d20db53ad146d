r"""Gradient-weighted class activation maps: Grad-CAM, Guided Grad-CAM and Grad-CAM++.

The feature maps :math:`A^k` of a conv layer and the derivatives of the target
logit :math:`y^c` with respect to them come from the model's exposed feature
maps (see :mod:`saliency_guide.methods._cam`): the gradient is the gradient with
respect to a zero ``nnx.Perturbation`` added to :math:`A`, so it is evaluated at
the actual activations.

**Which derivatives Grad-CAM++ needs, and what this module computes.** The
Grad-CAM++ weights (Chattopadhay et al., 2018, eq. 10) involve, for every
location :math:`(i, j)` of every channel :math:`k`, the first three derivatives
of a class score :math:`Y^c` with respect to that single activation,
:math:`\partial^n Y^c / (\partial A^k_{ij})^n` for :math:`n = 1, 2, 3`: the
gradient, and the *diagonals* of the Hessian and of the third-derivative
tensor. Two facts decide what can be computed.

1. For a network that is piecewise linear after the layer (ReLU, max-pooling,
   convolutions, dense layers, global average pooling: every model of
   :mod:`saliency_guide.models`), the logit :math:`S^c` is piecewise linear in
   :math:`A`, so its second and third derivatives are **zero** wherever they
   exist. Eq. 10 applied to the logit itself is :math:`0/0` at every location:
   it defines nothing.
2. The paper therefore takes :math:`Y^c = \exp(S^c)` (leading to its eq. 19). Then,
   exactly, :math:`Y' = e^S S'`, :math:`Y'' = e^S (S'^2 + S'')` and
   :math:`Y''' = e^S (S'^3 + 3 S' S'' + S''')` (per location, derivatives of
   :math:`S` with respect to the same activation). The paper, and after it
   pytorch-grad-cam and most re-implementations,
   use :math:`Y'' \approx e^S S'^2` and :math:`Y''' \approx e^S S'^3`: the
   "exponential shortcut", exact only when :math:`S'' = S''' = 0`, i.e. for a
   piecewise-linear network explained through :math:`\exp` of its logit. It is
   wrong for smooth activations (softplus, GELU, SiLU), quadratic layers or a
   softmax output (pytorch-grad-cam issue #369).

:func:`grad_cam_plus_plus` uses :math:`Y^c = \exp(S^c)` with :math:`S^c` the
target **logit**, and by default (``derivatives="exact"``) computes the diagonal
:math:`S''` and :math:`S'''` exactly with forward-over-reverse automatic
differentiation (:func:`diagonal_derivatives`): one Hessian-vector product
along each basis direction :math:`e_{kij}`, and a ``jax.jvp`` of it along the
same direction for the third derivative. On the package's ReLU models these
terms are exactly zero (JAX propagates them as symbolic zeros, so they cost
nothing) and the result equals the shortcut's; on a smooth network they are
not, and computing them costs :math:`h w K` forward-over-reverse passes through
the layers above (batched). ``derivatives="shortcut"`` computes the shortcut.
The factor :math:`e^{S^c}` cancels in :math:`\alpha` and multiplies every
weight of an image by the same positive number; it is dropped (it would
overflow float32 for logits above ~88).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from saliency_guide.methods._cam import (
    check_flag,
    check_layer,
    chunk_size,
    finish,
    layer_score,
    map_shape,
    weighted_sum,
)
from saliency_guide.methods.gradients import logit_gradient
from saliency_guide.methods._modified_backprop import guided_relu, with_relu_rule
from saliency_guide.validation import check_choice, check_inputs

__all__ = ["diagonal_derivatives", "grad_cam", "grad_cam_plus_plus", "guided_grad_cam"]

DERIVATIVES = ("exact", "shortcut")


# --------------------------------------------------------------------------- #
# Grad-CAM.                                                                    #
# --------------------------------------------------------------------------- #


def _grad_cam_sum(model, images, targets, layer):
  r""":math:`\sum_k \alpha^c_k A^k` with :math:`\alpha^c_k` the mean gradient, ``(B, h, w)``."""
  score = layer_score(model, images, targets, layer)
  zero = jnp.zeros(map_shape(model, images, layer))  # the gradient is taken at A
  gradient, a = jax.grad(score, has_aux=True)(zero)
  alpha = gradient.mean(axis=(1, 2))  # (1/Z) sum_ij dy/dA^k_ij, (B, K)
  return weighted_sum(alpha, a)


@functools.partial(jax.jit, static_argnames=("layer", "upsample", "relu"))
def _grad_cam(model, images, targets, layer, upsample, relu):
  """Jitted core of :func:`grad_cam`."""
  maps = _grad_cam_sum(model, images, targets, layer)
  return finish(maps, images.shape[1:3], relu=relu, upsample=upsample)


def grad_cam(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    layer: str | None = None,
    upsample: bool = True,
    relu: bool = True,
) -> jax.Array:
  r"""Grad-CAM (Selvaraju et al., 2017): channels weighted by their average gradient.

  .. math::

     \alpha^c_k = \frac{1}{Z} \sum_{i,j} \frac{\partial y^c}{\partial A^k_{ij}},
     \qquad
     L^c_{\text{Grad-CAM}} = \mathrm{ReLU}\Big(\sum_k \alpha^c_k A^k\Big),

  with :math:`A^k` the feature maps of ``layer`` (after its ReLU), :math:`Z`
  their number of locations and :math:`y^c` the target **logit**. The gradient
  is evaluated at the actual activations :math:`A` (a zero perturbation of the
  exposed map; see :mod:`saliency_guide.methods._cam`).

  For a global-average-pooling network at its last conv layer,
  :math:`\partial y^c / \partial A^k_{ij} = w^c_k / Z`, so Grad-CAM is
  :math:`\mathrm{ReLU}(M_c) / Z` with :math:`M_c` the CAM: the Grad-CAM paper's
  argument that it generalises CAM.

  Args:
    model: a convolutional model exposing its feature maps (``CNN``, ``GapCNN``).
    images: float array ``(B, H, W, C)``, NHWC.
    targets: integer array ``(B,)``, the class whose logit is explained.
    layer: one of ``model.feature_layers`` (default: the last).
    upsample: resize the map to ``(H, W)`` (bilinear, half-pixel centres; see
      :mod:`saliency_guide.methods._cam`); ``False`` returns the ``(h, w)`` map.
    relu: apply the final ReLU (the method); ``False`` returns the signed sum,
      which shows the negative evidence the ReLU discards.

  Returns:
    float32 array ``(B, H, W)`` (or ``(B, h, w)`` without upsampling).

  Raises:
    ValueError: the model exposes no feature maps, an unknown ``layer`` (the
      message lists the valid names), or bad ``images``/``targets``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import CNN
    >>> model = CNN(channels=(4, 8), hidden=16, rngs=nnx.Rngs(0))
    >>> x, t = jnp.ones((2, 28, 28, 1)), jnp.array([3, 7])
    >>> grad_cam(model, x, t).shape, grad_cam(model, x, t, layer="conv2", upsample=False).shape
    ((2, 28, 28), (2, 14, 14))
    >>> grad_cam(model, x, t, layer="dense")
    Traceback (most recent call last):
    ...
    ValueError: layer: expected one of 'conv1', 'conv2', got 'dense'

  References:
    R. R. Selvaraju, M. Cogswell, A. Das, R. Vedantam, D. Parikh, D. Batra.
    *Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization.* ICCV 2017. arXiv:1610.02391.
  """
  images, targets = check_inputs(model, images, targets)
  layer = check_layer(model, layer)
  upsample = check_flag("upsample", upsample)
  relu = check_flag("relu", relu)
  return _grad_cam(model, images, targets, layer, upsample, relu)


# --------------------------------------------------------------------------- #
# Guided Grad-CAM.                                                             #
# --------------------------------------------------------------------------- #


@functools.partial(jax.jit, static_argnames=("layer",))
def _guided_grad_cam(model, images, targets, layer):
  """Jitted core of :func:`guided_grad_cam`: both maps in one compiled call."""
  coarse = finish(_grad_cam_sum(model, images, targets, layer), images.shape[1:3],
                  relu=True, upsample=True)
  guided = with_relu_rule(model, guided_relu)  # a copy: model is not modified
  return logit_gradient(guided, images, targets) * coarse[..., None]


def guided_grad_cam(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    layer: str | None = None,
    upsample: bool = True,
) -> jax.Array:
  r"""Guided Grad-CAM (Selvaraju et al., 2017): Guided Backpropagation × upsampled Grad-CAM.

  .. math::

     L^c_{\text{Guided Grad-CAM}}(x) = R^c_{\text{GB}}(x) \odot
       \mathrm{Up}\big(L^c_{\text{Grad-CAM}}\big),

  the element-wise product of the Guided Backpropagation map
  (:func:`~saliency_guide.methods.guided_backprop`, pixel resolution, one value
  per input channel) with the Grad-CAM map bilinearly upsampled to the input
  size and broadcast over channels. The product is of the **raw** maps (not of
  maps rescaled to [0, 255] for display): it equals
  ``guided_backprop(model, images, targets) * grad_cam(model, images, targets,
  layer=layer)[..., None]``, computed in one compiled call.

  Args:
    model: a convolutional model exposing its feature maps and calling its
      ReLUs through ``activation`` attributes (``CNN``, ``GapCNN``).
    images: float array ``(B, H, W, C)``, NHWC.
    targets: integer array ``(B,)``, the class whose logit is explained.
    layer: the Grad-CAM layer, one of ``model.feature_layers`` (default: the last).
    upsample: must be ``True``: the product lives at the input's resolution.

  Returns:
    float32 array of the shape of ``images``, ``(B, H, W, C)``.

  Raises:
    ValueError: ``upsample=False``, the model exposes no feature maps or has no
      replaceable ReLU, an unknown ``layer``, or bad ``images``/``targets``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import CNN
    >>> model = CNN(channels=(4, 8), hidden=16, rngs=nnx.Rngs(0))
    >>> guided_grad_cam(model, jnp.ones((2, 28, 28, 1)), jnp.array([3, 7])).shape
    (2, 28, 28, 1)

  References:
    R. R. Selvaraju, M. Cogswell, A. Das, R. Vedantam, D. Parikh, D. Batra.
    *Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization.* ICCV 2017. arXiv:1610.02391.
  """
  images, targets = check_inputs(model, images, targets)
  layer = check_layer(model, layer)
  if check_flag("upsample", upsample) is not True:
    raise ValueError(
        "upsample: Guided Grad-CAM multiplies the pixel-resolution Guided Backpropagation "
        "map by Grad-CAM, so Grad-CAM must be upsampled to the input; got upsample=False"
    )
  return _guided_grad_cam(model, images, targets, layer)


# --------------------------------------------------------------------------- #
# Grad-CAM++.                                                                  #
# --------------------------------------------------------------------------- #


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
    layer: str | None = None,
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
    model: a convolutional model exposing its feature maps.
    images: float array ``(B, H, W, C)``, NHWC.
    targets: integer array ``(B,)``, the class whose logit is differentiated.
    layer: one of ``model.feature_layers`` (default: the last).

  Returns:
    ``(A, S', S'', S''')``, four float32 arrays ``(B, h, w, K)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import CNN
    >>> model = CNN(channels=(4, 8), hidden=16, rngs=nnx.Rngs(0))
    >>> a, d1, d2, d3 = diagonal_derivatives(model, jnp.ones((1, 28, 28, 1)), jnp.array([3]))
    >>> a.shape, float(jnp.abs(d2).max()), float(jnp.abs(d3).max())  # ReLU network: zero
    ((1, 14, 14, 8), 0.0, 0.0)
  """
  images, targets = check_inputs(model, images, targets)
  layer = check_layer(model, layer)
  return _diagonal_derivatives(model, images, targets, layer, 3)


@functools.partial(jax.jit, static_argnames=("layer", "upsample", "relu", "derivatives"))
def _grad_cam_plus_plus(model, images, targets, layer, upsample, relu, derivatives):
  """Jitted core of :func:`grad_cam_plus_plus`."""
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
    layer: str | None = None,
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
  networks they do not (see the module documentation). The positive factor
  :math:`e^{S^c}` of every weight is dropped, and the paper's reference code's
  extra normalisation of :math:`\alpha` is not in the paper and not applied.

  Args:
    model: a convolutional model exposing its feature maps (``CNN``, ``GapCNN``).
    images: float array ``(B, H, W, C)``, NHWC.
    targets: integer array ``(B,)``, the class whose logit is explained.
    layer: one of ``model.feature_layers`` (default: the last).
    upsample: resize the map to ``(H, W)`` (bilinear, see
      :mod:`saliency_guide.methods._cam`); ``False`` returns the ``(h, w)`` map.
    relu: apply the final ReLU (the method); ``False`` returns the signed sum.
    derivatives: ``"exact"`` (default) or ``"shortcut"``.

  Returns:
    float32 array ``(B, H, W)`` (or ``(B, h, w)`` without upsampling).

  Raises:
    ValueError: the model exposes no feature maps, an unknown ``layer`` or
      ``derivatives``, or bad ``images``/``targets``.

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
  layer = check_layer(model, layer)
  upsample = check_flag("upsample", upsample)
  relu = check_flag("relu", relu)
  derivatives = check_choice("derivatives", derivatives, DERIVATIVES)
  return _grad_cam_plus_plus(model, images, targets, layer, upsample, relu, derivatives)
