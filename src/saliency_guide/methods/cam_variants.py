r"""Four variants of the class activation map: Layer-CAM, HiResCAM, Eigen-CAM, Ablation-CAM.

Each combines the feature maps :math:`A^k` of one conv layer (``(h, w)`` each) into
one map; they differ in what weights the channels:

.. math::

   L_{\text{HiRes}} = \mathrm{ReLU}\Big(\sum_k G^k \odot A^k\Big), \quad
   L_{\text{Layer}} = \mathrm{ReLU}\Big(\sum_k \mathrm{ReLU}(G^k) \odot A^k\Big), \quad
   G^k_{ij} = \frac{\partial y^c}{\partial A^k_{ij}},

.. math::

   L_{\text{Eigen}} = \mathrm{ReLU}\big((O - \bar O)\, v_1\big), \qquad
   L_{\text{Ablation}} = \mathrm{ReLU}\Big(\sum_k \frac{y^c - y^c_{\setminus k}}{y^c} A^k\Big),

with :math:`O` the ``(hw, K)`` matrix of the maps, :math:`v_1` its first right
singular vector and :math:`y^c_{\setminus k}` the logit with channel :math:`k` set
to zero. The discussion is on the tutorial page ``docs/tutorials/cam_variants.md``.

References:
  P.-T. Jiang, C.-B. Zhang, Q. Hou, M.-M. Cheng, Y. Wei. *LayerCAM: Exploring
  Hierarchical Class Activation Maps for Localization.* IEEE TIP 30, 2021.
  R. L. Draelos, L. Carin. *Use HiResCAM instead of Grad-CAM for faithful
  explanations of convolutional neural networks.* arXiv:2011.08891, 2020.
  M. B. Muhammad, M. Yeasin. *Eigen-CAM: Class Activation Map using Principal
  Components.* IJCNN 2020. arXiv:2008.00299.
  S. Desai, H. G. Ramaswamy. *Ablation-CAM: Visual Explanations for Deep
  Convolutional Network via Gradient-free Localization.* WACV 2020.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from saliency_guide.methods._cores import Core, register
from saliency_guide.methods._feature_maps import (
  Layer,
  checked_options,
  feature_maps,
  finish,
  layer_score,
  map_shape,
  perturbed_forward,
  weighted_sum,
)
from saliency_guide.validation import check_choice, check_inputs

__all__ = ["ABLATION_CAM_WEIGHTS", "ablation_cam", "eigen_cam", "hires_cam", "layer_cam"]

#: The channel weights :func:`ablation_cam` can compute from the ablated logits:
#: ``"relative"`` (default; the paper and pytorch-grad-cam)
#: :math:`(y^c - y^c_{\setminus k}) / y^c`, and ``"drop"`` :math:`y^c - y^c_{\setminus k}`.
ABLATION_CAM_WEIGHTS = ("relative", "drop")

#: Ablated images per forward pass in Ablation-CAM (bounds activation memory).
ABLATION_CAM_IMAGES = 512


# --- Gradient-weighted: HiResCAM and Layer-CAM -----------------------------------------------


def _gradient_and_maps(model, images, targets, layer):
  r""":math:`G = \partial y^c / \partial A` at the activations, and :math:`A`, ``(B, h, w, K)``."""
  score = layer_score(model, images, targets, layer)
  zero = jnp.zeros(map_shape(model, images, layer))  # the gradient is taken at A
  return jax.grad(score, has_aux=True)(zero)


def _elementwise_sum(model, images, targets, layer, positive_gradients):
  r""":math:`\sum_k G^k \odot A^k` (HiResCAM), or with :math:`\mathrm{ReLU}(G^k)` (Layer-CAM)."""
  gradient, a = _gradient_and_maps(model, images, targets, layer)
  if positive_gradients:  # Layer-CAM: a location counts only where raising A raises y^c
    gradient = jax.nn.relu(gradient)
  return (gradient * a).sum(axis=-1)  # (B, h, w): one weight per channel *and location*


def _hires_cam_core(
    model: nnx.Module, images: jax.Array, targets: jax.Array, operands: None, *,
    layer: Layer, upsample: bool, relu: bool,
) -> jax.Array:
  """Traceable core of :func:`hires_cam` on checked inputs."""
  del operands
  maps = _elementwise_sum(model, images, targets, layer, positive_gradients=False)
  return finish(maps, images.shape[1:3], relu=relu, upsample=upsample)


def _layer_cam_core(
    model: nnx.Module, images: jax.Array, targets: jax.Array, operands: None, *,
    layer: Layer, upsample: bool, relu: bool,
) -> jax.Array:
  """Traceable core of :func:`layer_cam` on checked inputs."""
  del operands
  maps = _elementwise_sum(model, images, targets, layer, positive_gradients=True)
  return finish(maps, images.shape[1:3], relu=relu, upsample=upsample)


def hires_cam(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    layer: str | nnx.Module | None = None,
    upsample: bool = True,
    relu: bool = True,
) -> jax.Array:
  r"""HiResCAM (Draelos & Carin, 2020): each feature map times its own gradient, summed.

  .. math::

     L^c_{\text{HiResCAM}} = \mathrm{ReLU}\Big(\sum_k
       \frac{\partial y^c}{\partial A^k} \odot A^k\Big),

  the element-wise product of the feature maps :math:`A^k` of ``layer`` and the
  gradient of the target **logit** :math:`y^c` with respect to them (at the actual
  activations), summed over the channels. Grad-CAM averages the gradient over the
  locations first (:math:`\alpha^c_k = \frac1Z \sum_{ij} \partial y^c/\partial
  A^k_{ij}`); where the gradient of every channel is constant over the locations
  (the last conv layer of a global-average-pooling network) the two are equal.
  Summed over the locations, the map is :math:`\sum_{k,ij} A^k_{ij}\,\partial
  y^c/\partial A^k_{ij}`, the first-order (gradient × activation) account of the
  logit at the layer.

  Args:
    model: a classifier (any Flax NNX model returning logits) with a layer whose
      output is feature maps ``(B, h, w, K)``.
    images: float array ``(B, H, W, C)``, NHWC.
    targets: integer array ``(B,)``, the class whose logit is explained.
    layer: the layer whose output is :math:`A`: a dotted path to a submodule, the
      submodule itself, or a name in ``model.feature_layers``; default the last
      conv feature map (as :func:`~saliency_guide.methods.grad_cam`).
    upsample: resize the map to ``(H, W)`` (bilinear, half-pixel centres);
      ``False`` returns the ``(h, w)`` map.
    relu: apply the final ReLU (the method); ``False`` returns the signed sum.

  Returns:
    float32 array ``(B, H, W)`` (or ``(B, h, w)`` without upsampling).

  Raises:
    ValueError: no layer with ``(B, h, w, K)`` output, an unknown ``layer``, or
      bad ``images``/``targets``.
    TypeError: ``layer`` of a wrong type; ``upsample`` or ``relu`` not a ``bool``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide import methods
    >>> from saliency_guide.models import GapCNN
    >>> model = GapCNN(channels=(4, 6, 8), rngs=nnx.Rngs(0))
    >>> x, t = jnp.ones((2, 28, 28, 1)), jnp.array([3, 7])
    >>> hires_cam(model, x, t).shape, hires_cam(model, x, t, upsample=False).shape
    ((2, 28, 28), (2, 7, 7))
    >>> grad = methods.grad_cam(model, x, t, upsample=False, relu=False)
    >>> bool(jnp.allclose(hires_cam(model, x, t, upsample=False, relu=False), grad,
    ...                   atol=1e-6))  # a GAP head: the gradient is constant per channel
    True

  References:
    R. L. Draelos, L. Carin. *Use HiResCAM instead of Grad-CAM for faithful
    explanations of convolutional neural networks.* arXiv:2011.08891, 2020.
  """
  images, targets = check_inputs(model, images, targets)
  core = _prepare_hires(model, images, layer=layer, upsample=upsample, relu=relu)
  return core.run(model, images, targets)


def layer_cam(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    layer: str | nnx.Module | None = None,
    upsample: bool = True,
    relu: bool = True,
) -> jax.Array:
  r"""Layer-CAM (Jiang et al., 2021): each feature map times its positive gradient, summed.

  .. math::

     w^{kc}_{ij} = \mathrm{ReLU}\Big(\frac{\partial y^c}{\partial A^k_{ij}}\Big),
     \qquad
     L^c_{\text{Layer-CAM}} = \mathrm{ReLU}\Big(\sum_k w^{kc} \odot A^k\Big),

  with :math:`A^k` the feature maps of ``layer`` and :math:`y^c` the target
  **logit**. A location of a channel counts only where its gradient is positive;
  each location keeps its own weight, so a shallow, high-resolution layer gives a
  detailed map. When every gradient is positive and constant over the locations,
  Layer-CAM is Grad-CAM. For a layer whose activations are non-negative (after a
  ReLU) every term is non-negative and the final ReLU changes nothing; the paper's
  extra scaling :math:`\tanh(\gamma L / \max L)` for fusing layers is not applied.

  Args:
    model: a classifier (any Flax NNX model returning logits) with a layer whose
      output is feature maps ``(B, h, w, K)``.
    images: float array ``(B, H, W, C)``, NHWC.
    targets: integer array ``(B,)``, the class whose logit is explained.
    layer: the layer whose output is :math:`A` (as
      :func:`~saliency_guide.methods.grad_cam`); default the last conv feature map.
    upsample: resize the map to ``(H, W)`` (bilinear, half-pixel centres);
      ``False`` returns the ``(h, w)`` map.
    relu: apply the final ReLU; ``False`` returns the sum before it.

  Returns:
    float32 array ``(B, H, W)`` (or ``(B, h, w)`` without upsampling).

  Raises:
    ValueError: no layer with ``(B, h, w, K)`` output, an unknown ``layer``, or
      bad ``images``/``targets``.
    TypeError: ``layer`` of a wrong type; ``upsample`` or ``relu`` not a ``bool``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import CNN
    >>> model = CNN(channels=(4, 8), hidden=16, rngs=nnx.Rngs(0))
    >>> x, t = jnp.ones((2, 28, 28, 1)), jnp.array([3, 7])
    >>> layer_cam(model, x, t, layer="conv1", upsample=False).shape
    (2, 28, 28)
    >>> bool((layer_cam(model, x, t, relu=False) >= 0).all())  # ReLU maps, ReLU gradients
    True

  References:
    P.-T. Jiang, C.-B. Zhang, Q. Hou, M.-M. Cheng, Y. Wei. *LayerCAM: Exploring
    Hierarchical Class Activation Maps for Localization.* IEEE Transactions on
    Image Processing 30, 5875–5888, 2021.
  """
  images, targets = check_inputs(model, images, targets)
  core = _prepare_layer(model, images, layer=layer, upsample=upsample, relu=relu)
  return core.run(model, images, targets)


# --- Gradient-free: Eigen-CAM and Ablation-CAM -----------------------------------------------


#: Repeated squarings of the Gram matrix in Eigen-CAM: :math:`G^{2^{s}}`, so the share of
#: the second principal direction left is :math:`(\sigma_2 / \sigma_1)^{2^{s+1}}`.
EIGEN_CAM_SQUARINGS = 10


def _first_component(a, center):
  r"""The maps projected on their first principal direction, sign fixed: ``(B, h, w)``.

  :math:`O` is ``(hw, K)`` per image (one row per location); with ``center`` each
  channel's mean over the locations is removed first. :math:`v_1`, the first right
  singular vector of :math:`O`, is the top eigenvector of :math:`G = O^\top O`, found
  by matrix products only: :math:`G^{2^s}` by repeated squaring is, up to scale,
  :math:`v_1 v_1^\top` (its largest column is along :math:`v_1`), and two power steps
  :math:`v \leftarrow G v / \lVert G v \rVert` polish it. (Where :math:`hw < K`, the
  same is done with :math:`O O^\top` for :math:`u_1`, and :math:`v_1 \propto O^\top
  u_1`.) The sign is fixed by :math:`\sum_k v_{1k} \ge 0`: the direction along which
  the channels grow together, so that the map correlates positively with the (centred)
  sum of the channels.
  """
  b, h, w, k = a.shape
  o = a.reshape(b, h * w, k)
  if center:
    o = o - o.mean(axis=1, keepdims=True)
  exact = jax.lax.Precision.HIGHEST  # no reduced-precision matmuls (TF32 on GPUs)
  rows = h * w < k  # work with the smaller Gram matrix: O O^T (hw, hw) or O^T O (K, K)
  gram = (jnp.einsum("bpk,bqk->bpq", o, o, precision=exact) if rows
          else jnp.einsum("bpk,bpl->bkl", o, o, precision=exact))
  power = gram
  for _ in range(EIGEN_CAM_SQUARINGS):  # G^(2^s), rescaled to stay finite
    power = power / jnp.maximum(jnp.abs(power).max(axis=(1, 2), keepdims=True), 1e-30)
    power = jnp.einsum("bij,bjk->bik", power, power, precision=exact)
  largest = jnp.argmax(jnp.linalg.norm(power, axis=1), axis=1)  # (B,)
  top = jnp.take_along_axis(power, largest[:, None, None], axis=2)[..., 0]
  for _ in range(2):  # power steps with G itself: float32-accurate direction
    top = top / jnp.maximum(jnp.linalg.norm(top, axis=1, keepdims=True), 1e-30)
    top = jnp.einsum("bij,bj->bi", gram, top, precision=exact)
  v1 = jnp.einsum("bpk,bp->bk", o, top, precision=exact) if rows else top
  v1 = v1 / jnp.maximum(jnp.linalg.norm(v1, axis=1, keepdims=True), 1e-30)
  v1 = v1 * jnp.where(v1.sum(axis=1, keepdims=True) < 0, -1.0, 1.0)
  return jnp.einsum("bpk,bk->bp", o, v1, precision=exact).reshape(b, h, w)


def _eigen_cam_core(
    model: nnx.Module, images: jax.Array, targets: jax.Array, operands: None, *,
    layer: Layer, upsample: bool, relu: bool, center: bool,
) -> jax.Array:
  """Traceable core of :func:`eigen_cam` on checked inputs."""
  del operands, targets  # class-agnostic: the maps alone decide
  _, a = feature_maps(model, images, layer)
  return finish(_first_component(a, center), images.shape[1:3], relu=relu, upsample=upsample)


def eigen_cam(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    layer: str | nnx.Module | None = None,
    upsample: bool = True,
    relu: bool = True,
    center: bool = True,
) -> jax.Array:
  r"""Eigen-CAM (Muhammad & Yeasin, 2020): the first principal component of the feature maps.

  With :math:`O \in \mathbb{R}^{hw \times K}` the feature maps of ``layer`` (one
  row per location, one column per channel), :math:`\bar O` its column means and
  :math:`O - \bar O = U \Sigma V^\top`,

  .. math::

     L_{\text{Eigen-CAM}} = \mathrm{ReLU}\big((O - \bar O)\, v_1\big),
     \qquad \sum_k v_{1k} \ge 0,

  the maps projected on their first principal direction :math:`v_1`: the
  combination of channels that varies most over the image. No gradient, no
  logit: **the map is the same for every target class** (``targets`` is checked
  and ignored). The sign of a singular vector is arbitrary (:math:`-u, -v` is as
  good); we fix it by :math:`\sum_k v_{1k} \ge 0`, the direction along which the
  channels grow together, which is also the sign that makes the map correlate
  positively with the centred sum of the channels. pytorch-grad-cam keeps
  whatever sign LAPACK returns, and its ReLU then keeps one lobe or the other.

  Args:
    model: any Flax NNX model with a layer whose output is ``(B, h, w, K)`` maps.
    images: float array ``(B, H, W, C)``, NHWC.
    targets: integer array ``(B,)``; checked, not used (the method is class-agnostic).
    layer: the layer whose output is :math:`A` (as
      :func:`~saliency_guide.methods.grad_cam`); default the last conv feature map.
    upsample: resize the map to ``(H, W)`` (bilinear, half-pixel centres);
      ``False`` returns the ``(h, w)`` map.
    relu: apply the final ReLU (as pytorch-grad-cam does); ``False`` returns the
      signed projection.
    center: subtract each channel's spatial mean before the decomposition (a
      principal component, as pytorch-grad-cam does); ``False`` projects the raw
      maps on the first right singular vector, which for non-negative maps is a
      non-negative map.

  Returns:
    float32 array ``(B, H, W)`` (or ``(B, h, w)`` without upsampling).

  Raises:
    ValueError: no layer with ``(B, h, w, K)`` output, an unknown ``layer``, or
      bad ``images``/``targets``.
    TypeError: ``layer`` of a wrong type; ``upsample``, ``relu`` or ``center`` not
      a ``bool``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import CNN
    >>> model = CNN(channels=(4, 8), hidden=16, rngs=nnx.Rngs(0))
    >>> x = jnp.linspace(0, 1, 2 * 28 * 28).reshape(2, 28, 28, 1)
    >>> a = eigen_cam(model, x, jnp.array([3, 7]))
    >>> a.shape, bool((a == eigen_cam(model, x, jnp.array([0, 1]))).all())
    ((2, 28, 28), True)

  References:
    M. B. Muhammad, M. Yeasin. *Eigen-CAM: Class Activation Map using Principal
    Components.* IJCNN 2020. arXiv:2008.00299.
  """
  images, targets = check_inputs(model, images, targets)
  core = _prepare_eigen(model, images, layer=layer, upsample=upsample, relu=relu,
                        center=center)
  return core.run(model, images, targets)


def _ablation_cam_core(
    model: nnx.Module, images: jax.Array, targets: jax.Array, operands: None, *,
    layer: Layer, upsample: bool, relu: bool, weights: str,
) -> jax.Array:
  """Traceable core of :func:`ablation_cam` on checked inputs."""
  del operands
  logits, a = feature_maps(model, images, layer)
  y = jnp.take_along_axis(logits, targets[:, None], axis=1)[:, 0]  # (B,)
  graphdef, state = nnx.split(model)
  channels = a.shape[-1]

  def ablated_logit(k):  # y^c with channel k of A set to zero: A + p, p = -A^k e_k
    p = jnp.where(jnp.arange(channels) == k, -a, 0.0)
    out, _ = perturbed_forward(graphdef, state, images, layer, p)
    return jnp.take_along_axis(out, targets[:, None], axis=1)[:, 0]

  batch = max(1, min(channels, ABLATION_CAM_IMAGES // images.shape[0]))  # channels per pass
  ablated = jax.lax.map(ablated_logit, jnp.arange(channels), batch_size=batch).T  # (B, K)
  drop = y[:, None] - ablated  # y^c - y^c_{\k}
  alpha = drop / y[:, None] if weights == "relative" else drop
  return finish(weighted_sum(alpha, a), images.shape[1:3], relu=relu, upsample=upsample)


def ablation_cam(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    layer: str | nnx.Module | None = None,
    upsample: bool = True,
    relu: bool = True,
    weights: str = "relative",
) -> jax.Array:
  r"""Ablation-CAM (Desai & Ramaswamy, 2020): channels weighted by the logit lost without them.

  .. math::

     w^c_k = \frac{y^c - y^c_{\setminus k}}{y^c}, \qquad
     L^c_{\text{Ablation-CAM}} = \mathrm{ReLU}\Big(\sum_k w^c_k A^k\Big),

  with :math:`A^k` the feature maps of ``layer``, :math:`y^c` the target
  **logit** and :math:`y^c_{\setminus k}` the logit when channel :math:`k` of the
  layer is set to zero (everything else as computed). One forward pass per
  channel (``jax.lax.map`` over chunks of channels, ``K × B`` images in all)
  replaces Grad-CAM's backward pass.

  ``weights`` (:data:`ABLATION_CAM_WEIGHTS`):

  * ``"relative"`` (default): :math:`(y^c - y^c_{\setminus k}) / y^c`, the
    fraction of the logit lost, as in the paper and pytorch-grad-cam. Dividing by
    :math:`y^c` changes only the scale of a map, unless :math:`y^c < 0` (a class
    the model rejects): then every weight changes sign and the ReLU keeps the
    *other* part of the map.
  * ``"drop"``: :math:`y^c - y^c_{\setminus k}`, the logit lost, in logit units:
    the sign always means "the channel raised the logit".

  Args:
    model: a classifier (any Flax NNX model returning logits) with a layer whose
      output is feature maps ``(B, h, w, K)``.
    images: float array ``(B, H, W, C)``, NHWC.
    targets: integer array ``(B,)``, the class whose logit is explained.
    layer: the layer whose output is :math:`A` (as
      :func:`~saliency_guide.methods.grad_cam`); default the last conv feature map.
    upsample: resize the map to ``(H, W)`` (bilinear, half-pixel centres);
      ``False`` returns the ``(h, w)`` map.
    relu: apply the final ReLU (the method); ``False`` returns the signed sum.
    weights: ``"relative"`` (default) or ``"drop"`` (see above).

  Returns:
    float32 array ``(B, H, W)`` (or ``(B, h, w)`` without upsampling).

  Raises:
    ValueError: no layer with ``(B, h, w, K)`` output, an unknown ``layer`` or
      ``weights``, or bad ``images``/``targets``.
    TypeError: ``layer`` of a wrong type; ``upsample`` or ``relu`` not a ``bool``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import GapCNN
    >>> model = GapCNN(channels=(4, 6, 8), rngs=nnx.Rngs(0))
    >>> x, t = jnp.ones((2, 28, 28, 1)), jnp.array([3, 7])
    >>> ablation_cam(model, x, t).shape, ablation_cam(model, x, t, upsample=False).shape
    ((2, 28, 28), (2, 7, 7))

  References:
    S. Desai, H. G. Ramaswamy. *Ablation-CAM: Visual Explanations for Deep
    Convolutional Network via Gradient-free Localization.* WACV 2020, 983–991.
  """
  images, targets = check_inputs(model, images, targets)
  core = _prepare_ablation(model, images, layer=layer, upsample=upsample, relu=relu,
                           weights=weights)
  return core.run(model, images, targets)


# --- Cores ------------------------------------------------------------------------------------


def _prepare_hires(
    model: nnx.Module, images: jax.Array, *, layer: object = None, upsample: bool = True,
    relu: bool = True,
) -> Core:
  return Core(_hires_cam_core, static=checked_options(model, images, layer, upsample,
                                                      relu=relu))


def _prepare_layer(
    model: nnx.Module, images: jax.Array, *, layer: object = None, upsample: bool = True,
    relu: bool = True,
) -> Core:
  return Core(_layer_cam_core, static=checked_options(model, images, layer, upsample,
                                                      relu=relu))


def _prepare_eigen(
    model: nnx.Module, images: jax.Array, *, layer: object = None, upsample: bool = True,
    relu: bool = True, center: bool = True,
) -> Core:
  return Core(_eigen_cam_core, static=checked_options(model, images, layer, upsample,
                                                      relu=relu, center=center))


def _prepare_ablation(
    model: nnx.Module, images: jax.Array, *, layer: object = None, upsample: bool = True,
    relu: bool = True, weights: str = "relative",
) -> Core:
  static = (*checked_options(model, images, layer, upsample, relu=relu),
            ("weights", check_choice("weights", weights, ABLATION_CAM_WEIGHTS)))
  return Core(_ablation_cam_core, static=static)


register(hires_cam, _prepare_hires)
register(layer_cam, _prepare_layer)
register(eigen_cam, _prepare_eigen)
register(ablation_cam, _prepare_ablation)
