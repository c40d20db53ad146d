r"""Randomisation tests (Adebayo et al., 2018): does the map depend on what the model learnt?

* **Model-parameter randomisation.** Re-initialise the model's layers
  (:func:`randomize_layers`; :func:`parameter_layers` lists them in
  forward-pass order) and compare the maps before and after
  (:func:`model_randomization`). In the *cascading* test the layers are
  randomised from the top (logits) down, cumulatively; in the *independent*
  test one layer at a time, the others trained (:func:`randomized_models`
  builds either sequence). A map that stays the same while the weights that
  produce the decision are destroyed cannot be explaining the decision.
* **Data randomisation.** Compare the maps of the trained model with those of
  the same architecture trained on randomly permuted labels
  (:func:`data_randomization`; ``saliency_guide.pretrained(name,
  shuffle_labels=True)`` trains it). That model has memorised noise, so a map
  that still looks like the real model's reflects the input and the
  architecture, not the learnt relation between digits and labels.

Similarity is :func:`~saliency_guide.metrics.similarity` (Spearman's
:math:`\rho`, SSIM and HOG similarity, image by image);
:meth:`RandomizationResult.stats` averages it over the images (mean ± s.e.)
and :func:`randomization_verdict` turns it into "passes" / "fails" /
"inconclusive" by a stated rule. Nothing here modifies the model it is given.

References:
  J. Adebayo, J. Gilmer, M. Muelly, I. Goodfellow, M. Hardt, B. Kim.
  *Sanity Checks for Saliency Maps.* NeurIPS 2018. arXiv:1810.03292.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
from flax import nnx

from saliency_guide.metrics._common import mean_and_sem, pixel_scores
from saliency_guide.metrics._similarity import Similarity, similarity
from saliency_guide.scale import explain_dataset
from saliency_guide.validation import (
    check_callable,
    check_choice,
    check_inputs,
    check_key,
    check_number,
    check_positive_int,
    model_channels,
)

__all__ = [
    "RANDOMIZATION_MODES",
    "RANDOMIZATION_THRESHOLD",
    "RANDOMIZATION_VERDICTS",
    "RandomizationResult",
    "RandomizationVerdict",
    "data_randomization",
    "model_randomization",
    "parameter_layers",
    "randomization_verdict",
    "randomize_layers",
    "randomized_models",
]

RANDOMIZATION_MODES = ("cascading", "independent")
"""Modes of :func:`randomized_models` and :func:`model_randomization`."""

Method = Callable[..., jax.Array]
Initializer = Callable[..., jax.Array]

#: Initialisers of ``nnx.Linear`` and ``nnx.Conv`` (and of the models here).
DEFAULT_KERNEL_INIT: Initializer = jax.nn.initializers.lecun_normal()
DEFAULT_BIAS_INIT: Initializer = jax.nn.initializers.zeros

# ---------------------------------------------------------------------------------------
# The layers of a model, in forward-pass order.
# ---------------------------------------------------------------------------------------


def _own_params(module: nnx.Module) -> list[tuple[str, nnx.Param]]:
  """The ``nnx.Param`` attributes of ``module`` itself (not of its submodules)."""
  return [(k, v) for k, v in vars(module).items() if isinstance(v, nnx.Param)]


def _layers(model: nnx.Module) -> dict[str, nnx.Module]:
  """``{name: submodule}`` for the submodules that own params (unordered)."""
  return {
      "/".join(str(p) for p in path): module
      for path, module in nnx.iter_modules(model)
      if _own_params(module)
  }


def _subjaxpr(eqn) -> jax.extend.core.Jaxpr | None:
  """The jaxpr an equation calls with its own inputs (jit, custom_jvp/vjp), if any."""
  for name in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
    sub = eqn.params.get(name)
    sub = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
    if isinstance(sub, jax.extend.core.Jaxpr) and len(sub.invars) == len(eqn.invars):
      return sub
  return None


def _first_use_order(jaxpr: jax.extend.core.Jaxpr, n: int) -> list[int]:
  """Indices ``0..n-1`` of the first ``n`` inputs of ``jaxpr``, in order of first use."""
  order: list[int] = []

  def tracked(v, index_of):
    return not isinstance(v, jax.extend.core.Literal) and v in index_of

  def visit(jaxpr, index_of):
    for eqn in jaxpr.eqns:
      used = [index_of[v] for v in eqn.invars if tracked(v, index_of)]
      if not used:
        continue
      sub = _subjaxpr(eqn)
      if sub is not None:  # first uses inside a called function, in its own order
        pairs = zip(eqn.invars, sub.invars, strict=True)
        visit(sub, {inner: index_of[outer] for outer, inner in pairs if tracked(outer, index_of)})
      order.extend(i for i in used if i not in order)

  visit(jaxpr, {v: i for i, v in enumerate(jaxpr.invars[:n])})
  return order


def parameter_layers(
    model: nnx.Module, images: jax.Array | jax.ShapeDtypeStruct | None = None
) -> tuple[str, ...]:
  """Names of the submodules that own ``nnx.Param`` variables, in forward-pass order.

  A name is the attribute path joined by ``/`` (``"conv1"``, ``"hidden/0"``).
  The order is the order in which the forward pass on ``images`` first uses a
  parameter of each layer, read from the traced program (``jax.make_jaxpr``;
  nothing is computed), so it does not depend on how the model's attributes
  were assigned or stored. Layers whose parameters the forward pass never uses
  come last, in alphabetical order.

  Args:
    model: an ``nnx.Module`` taking a batch of images.
    images: an example input, or just its ``jax.ShapeDtypeStruct``. Default: one
      image of shape ``model.image_shape`` if the model has that attribute, else
      ``(28, 28, C)`` with ``C`` the model's input channels — the input of every
      model in :mod:`saliency_guide.models`.

  Returns:
    The layer names, input to output.

  Raises:
    ValueError: the model cannot be traced on the default input (pass ``images``).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import CNN, MLP
    >>> # Only shapes are needed: an abstract model (no weights drawn) is enough.
    >>> cnn = nnx.eval_shape(lambda: CNN(rngs=nnx.Rngs(0)))
    >>> parameter_layers(cnn)
    ('conv1', 'conv2', 'dense', 'head')
    >>> parameter_layers(cnn, jax.ShapeDtypeStruct((8, 28, 28, 1), jnp.float32))
    ('conv1', 'conv2', 'dense', 'head')
    >>> parameter_layers(nnx.eval_shape(lambda: MLP(rngs=nnx.Rngs(0))))
    ('hidden/0', 'hidden/1', 'head')
  """
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  flat = nnx.to_flat_state(params)
  names = ["/".join(str(p) for p in path[:-1]) for path, _ in flat]
  arrays = [jax.ShapeDtypeStruct(v.shape, v.dtype) for _, v in flat]
  if images is None:
    shape = getattr(model, "image_shape", None) or (28, 28, model_channels(model) or 1)
    example = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
  else:
    example = jax.ShapeDtypeStruct(images.shape, images.dtype)

  def forward(arrays, images):
    pairs = zip(flat, arrays, strict=True)
    new = nnx.from_flat_state([(path, v.replace(a)) for (path, v), a in pairs])
    return nnx.merge(graphdef, new, rest)(images)

  try:
    jaxpr = jax.make_jaxpr(forward)(arrays, example).jaxpr
  except (TypeError, ValueError) as error:
    if images is not None:
      raise
    raise ValueError(
        f"model: cannot trace {type(model).__name__} on the default input of shape "
        f"{example.shape} ({error}); pass an example batch as images="
    ) from error
  ordered = []
  for i in _first_use_order(jaxpr, len(arrays)):
    if names[i] not in ordered:
      ordered.append(names[i])
  return (*ordered, *sorted(set(names) - set(ordered)))


def _check_layer_names(model: nnx.Module, layers: object) -> tuple[str, ...]:
  known = tuple(sorted(_layers(model)))
  if isinstance(layers, str) or not isinstance(layers, Sequence):
    raise TypeError(
        f"layers: expected a sequence of layer names from {known}, got {layers!r}"
    )
  unknown = [name for name in layers if name not in known]
  if unknown:
    raise ValueError(f"layers: expected names from {known}, got unknown {unknown}")
  return tuple(layers)


# ---------------------------------------------------------------------------------------
# Randomised copies.
# ---------------------------------------------------------------------------------------


def randomize_layers(
    model: nnx.Module,
    layers: Sequence[str],
    key: jax.Array,
    *,
    kernel_init: Initializer = DEFAULT_KERNEL_INIT,
    bias_init: Initializer = DEFAULT_BIAS_INIT,
) -> nnx.Module:
  r"""A copy of ``model`` with the parameters of ``layers`` re-initialised.

  Every ``nnx.Param`` owned by a selected layer is redrawn: arrays of rank
  :math:`\ge 2` (kernels) from ``kernel_init``, others (biases) from
  ``bias_init``; the defaults are those of ``nnx.Linear``/``nnx.Conv``
  (LeCun-normal kernels, zero biases), i.e. the layer is put back to a fresh
  initialisation, as in Adebayo et al. (2018). Every other variable is copied
  unchanged, and ``model`` itself is not modified.

  The random draw of a layer depends only on ``key`` and the layer's name, so a
  layer gets the same new weights whichever other layers are randomised with it.

  Args:
    model: an ``nnx.Module``.
    layers: names of layers that own params, as :func:`parameter_layers` gives them.
    key: a JAX PRNG key.
    kernel_init: initialiser ``(key, shape, dtype) -> array`` for rank-≥2 params.
    bias_init: initialiser for rank-0/1 params.

  Returns:
    The randomised copy.

  Raises:
    TypeError: ``layers`` is not a sequence of names, or ``key`` not a PRNG key.
    ValueError: a name is not a layer of ``model``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> model = MLP(hidden=(8,), rngs=nnx.Rngs(0))
    >>> random = randomize_layers(model, ["head"], jax.random.key(1))
    >>> bool(jnp.array_equal(random.head.kernel[...], model.head.kernel[...]))
    False
    >>> bool(jnp.array_equal(random.hidden[0].kernel[...], model.hidden[0].kernel[...]))
    True

  References:
    J. Adebayo, J. Gilmer, M. Muelly, I. Goodfellow, M. Hardt, B. Kim.
    *Sanity Checks for Saliency Maps.* NeurIPS 2018. arXiv:1810.03292.
  """
  names = _check_layer_names(model, layers)
  key = check_key(key, "randomize_layers")
  return _randomized(model, names, key, kernel_init, bias_init)


def _randomized(
    model: nnx.Module, names: Sequence[str], key: jax.Array, kernel_init: Initializer,
    bias_init: Initializer,
) -> nnx.Module:
  """:func:`randomize_layers` on checked layer names and key."""
  copy = nnx.clone(model)
  by_name = _layers(copy)
  for name in names:
    layer_key = jax.random.fold_in(key, zlib.crc32(name.encode()))
    for param_name, param in _own_params(by_name[name]):
      value = param[...]
      init = kernel_init if value.ndim >= 2 else bias_init
      param_key = jax.random.fold_in(layer_key, zlib.crc32(param_name.encode()))
      # A new value, not a write into the old one: a clone shares the original's
      # buffers, and a NumPy buffer (as loaded from a checkpoint) is written in place.
      param.set_value(init(param_key, value.shape, value.dtype))
  return copy


def randomized_models(
    model: nnx.Module,
    key: jax.Array,
    *,
    mode: str = "cascading",
    layers: Sequence[str] | None = None,
    kernel_init: Initializer = DEFAULT_KERNEL_INIT,
    bias_init: Initializer = DEFAULT_BIAS_INIT,
) -> list[tuple[str, nnx.Module]]:
  r"""The randomised copies of the model-parameter randomisation test, top layer first.

  With the layers :math:`\ell_1, \dots, \ell_L` numbered from the output down,
  copy :math:`k` has re-initialised (:func:`randomize_layers`)

  .. math:: \{\ell_1, \dots, \ell_k\} \ (\text{cascading}), \qquad
            \{\ell_k\} \ (\text{independent}),

  the rest trained. The key is shared by all copies, so a layer gets the same
  new weights in every copy that randomises it.

  Args:
    model: the trained model (never modified).
    key: a JAX PRNG key.
    mode: ``"cascading"`` or ``"independent"``.
    layers: layer names, **input to output** (default: :func:`parameter_layers`).
    kernel_init: initialiser of rank-≥2 params (see :func:`randomize_layers`).
    bias_init: initialiser of rank-0/1 params.

  Returns:
    ``[(layer, copy), ...]``, one entry per layer, top layer first: ``layer``
    is the layer :math:`\ell_k` randomised at step :math:`k`.

  Raises:
    TypeError: ``key`` is not a PRNG key or ``layers`` not a sequence of names.
    ValueError: unknown ``mode`` or layer name.

  Example:
    >>> import jax
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> model = MLP(hidden=(8, 8), rngs=nnx.Rngs(0))
    >>> cascade = randomized_models(model, jax.random.key(0))
    >>> [name for name, _ in cascade]
    ['head', 'hidden/1', 'hidden/0']
    >>> last = cascade[-1][1]  # every layer re-initialised
    >>> bool((last.hidden[0].kernel[...] != model.hidden[0].kernel[...]).all())
    True
    >>> one = randomized_models(model, jax.random.key(0), mode="independent")[-1][1]
    >>> bool((one.head.kernel[...] == model.head.kernel[...]).all())  # only hidden/0 is new
    True

  References:
    J. Adebayo, J. Gilmer, M. Muelly, I. Goodfellow, M. Hardt, B. Kim.
    *Sanity Checks for Saliency Maps.* NeurIPS 2018. arXiv:1810.03292.
  """
  key = check_key(key, "randomized_models")
  check_choice("mode", mode, RANDOMIZATION_MODES)
  names = parameter_layers(model) if layers is None else _check_layer_names(model, layers)
  top_down = names[::-1]
  chosen = (lambda k: top_down[: k + 1]) if mode == "cascading" else (lambda k: top_down[k:k + 1])
  return [
      (name, _randomized(model, chosen(k), key, kernel_init, bias_init))
      for k, name in enumerate(top_down)
  ]


# ---------------------------------------------------------------------------------------
# The tests.
# ---------------------------------------------------------------------------------------


_RESULT_MODES = (*RANDOMIZATION_MODES, "labels")


@dataclasses.dataclass(frozen=True)
class RandomizationResult:
  """Maps of a trained model and of its randomised versions, and their similarity.

  Attributes:
    steps: what was randomised at each step: layer names, top layer first, for
      :func:`model_randomization`; ``("labels",)`` for :func:`data_randomization`.
    original: ``(B, H, W)`` per-pixel maps of the trained model.
    maps: ``(L, B, H, W)`` per-pixel maps after each step.
    similarity: :class:`~saliency_guide.metrics.Similarity` of ``(L, B)``
      arrays, each step's maps against ``original``.
    mode: ``"cascading"`` or ``"independent"`` (:func:`model_randomization`),
      ``"labels"`` (:func:`data_randomization`); it decides how
      :func:`randomization_verdict` combines the steps.
  """

  steps: tuple[str, ...]
  original: jax.Array
  maps: jax.Array
  similarity: Similarity
  mode: str = "cascading"

  def stats(self, field: str = "abs_rank_correlation") -> tuple[np.ndarray, np.ndarray]:
    r"""Mean and standard error over the images of one similarity, per step.

    .. math:: \bar s_k = \frac1n \sum_b s_{k,b}, \qquad
              \mathrm{s.e.}_k = \sqrt{\frac{\sum_b (s_{k,b} - \bar s_k)^2}{n(n-1)}}

    over the :math:`n` images whose similarity is defined (a constant map's
    rank correlation or HOG similarity is NaN and left out), by
    :func:`~saliency_guide.metrics.mean_and_sem`.

    Args:
      field: a field of :class:`~saliency_guide.metrics.Similarity`
        (``"rank_correlation"``, ``"abs_rank_correlation"``, ``"ssim"``,
        ``"abs_ssim"``, ``"hog"``).

    Returns:
      ``(mean, sem)``, float64 NumPy arrays of shape ``(L,)``, one per step.

    Raises:
      ValueError: ``field`` is not a field of ``Similarity``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from saliency_guide.models import MLP
      >>> from saliency_guide.methods import gradients
      >>> x = jax.random.uniform(jax.random.key(1), (4, 28, 28, 1))
      >>> result = model_randomization(gradients, MLP(hidden=(8,), rngs=nnx.Rngs(0)), x,
      ...                              jnp.arange(4), key=jax.random.key(2))
      >>> mean, sem = result.stats("hog")
      >>> mean.shape, sem.shape
      ((2,), (2,))
    """
    check_choice("field", field, Similarity._fields)
    return mean_and_sem(np.asarray(getattr(self.similarity, field)), axis=1)


def _explainer(
    method: Method, images: jax.Array, targets: jax.Array, batch_size: int | None,
    options: dict[str, Any],
) -> Callable[[nnx.Module], jax.Array]:
  """``model -> (B, H, W)`` per-pixel maps, in one call or ``batch_size`` images at a time."""
  if batch_size is None:
    return lambda m: pixel_scores(method(m, images, targets, **options))
  batch_size = min(check_positive_int("batch_size", batch_size), len(images))
  return lambda m: pixel_scores(jnp.asarray(explain_dataset(
      method, m, images, targets, batch_size=batch_size, progress=False, **options)))


def model_randomization(
    method: Method,
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    key: jax.Array,
    mode: str = "cascading",
    layers: Sequence[str] | None = None,
    batch_size: int | None = None,
    **options: Any,
) -> RandomizationResult:
  r"""The model-parameter randomisation test of Adebayo et al. (2018) for one method.

  For each step :math:`k` (top layer first) the layers chosen by ``mode`` are
  re-initialised (:func:`randomized_models`) and the map of the same
  ``targets`` is compared with the trained model's map by
  :func:`~saliency_guide.metrics.similarity`:

  .. math:: \rho_k = \mathrm{Spearman}\big(E(x; \theta), E(x; \theta^{(k)})\big),

  with :math:`E` the method and :math:`\theta^{(k)}` the randomised
  parameters. A method sensitive to the model drives :math:`\rho_k` towards 0
  from the first step on. Adebayo et al. plot :math:`\rho_k` against
  :math:`k`.

  The method is compiled once: the copies share the model's graph and only
  their parameters (traced arguments of the method's jitted core) change.
  With ``batch_size`` the maps are computed that many images at a time
  (:func:`~saliency_guide.scale.explain_dataset`), which reuses a
  compilation made for that batch size elsewhere.

  Args:
    method: ``method(model, images, targets, **options)`` from
      :mod:`saliency_guide.methods` (or any function with that signature).
    model: the trained model (never modified).
    images: ``(B, H, W, C)`` float images.
    targets: ``(B,)`` classes to explain (the same for every copy).
    key: PRNG key of the new weights.
    mode: ``"cascading"`` or ``"independent"``.
    layers: layer names, input to output (default: every layer with parameters).
    batch_size: images per call of ``method`` (default: all at once).
    **options: passed to ``method``.

  Returns:
    :class:`RandomizationResult` (similarities of shape ``(L, B)``).

  Raises:
    TypeError, ValueError: bad method, images, targets, mode or layer names.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> from saliency_guide.methods import gradients
    >>> x = jax.random.uniform(jax.random.key(1), (2, 28, 28, 1))
    >>> result = model_randomization(gradients, MLP(hidden=(8,), rngs=nnx.Rngs(0)), x,
    ...                              jnp.array([1, 2]), key=jax.random.key(2))
    >>> result.steps, result.similarity.rank_correlation.shape
    (('head', 'hidden/0'), (2, 2))

  References:
    J. Adebayo, J. Gilmer, M. Muelly, I. Goodfellow, M. Hardt, B. Kim.
    *Sanity Checks for Saliency Maps.* NeurIPS 2018. arXiv:1810.03292.
  """
  check_callable("method", method, "a saliency method method(model, images, targets, **options)")
  images, targets = check_inputs(model, images, targets)
  explain = _explainer(method, images, targets, batch_size, options)
  copies = randomized_models(model, key, mode=mode, layers=layers)
  original = explain(model)
  maps = jnp.stack([explain(copy) for _, copy in copies])
  sims = [similarity(original, m) for m in maps]
  return RandomizationResult(
      steps=tuple(name for name, _ in copies),
      original=original,
      maps=maps,
      similarity=jax.tree.map(lambda *v: jnp.stack(v), *sims),
      mode=mode,
  )


def data_randomization(
    method: Method,
    model: nnx.Module,
    random_model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    *,
    batch_size: int | None = None,
    **options: Any,
) -> RandomizationResult:
  r"""The data randomisation test of Adebayo et al. (2018) for one method.

  Compares the maps of ``model`` with those of ``random_model``, the same
  architecture trained on randomly permuted labels, for the same ``targets``:

  .. math:: \rho = \mathrm{Spearman}\big(E(x; \theta), E(x; \theta_{\text{random labels}})\big).

  High similarity means the map does not depend on the relation between the
  images and their labels that the model learnt.

  Args:
    method: ``method(model, images, targets, **options)``.
    model: the model trained on the true labels.
    random_model: the model trained on permuted labels
      (``saliency_guide.pretrained(name, shuffle_labels=True).model``).
    images: ``(B, H, W, C)`` float images.
    targets: ``(B,)`` classes to explain, for both models.
    batch_size: images per call of ``method`` (default: all at once).
    **options: passed to ``method``.

  Returns:
    :class:`RandomizationResult` with ``steps == ("labels",)``,
    ``mode == "labels"`` and similarities of shape ``(1, B)``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> from saliency_guide.methods import gradients
    >>> x = jax.random.uniform(jax.random.key(1), (2, 28, 28, 1))
    >>> result = data_randomization(gradients, MLP(rngs=nnx.Rngs(0)), MLP(rngs=nnx.Rngs(1)),
    ...                             x, jnp.array([1, 2]))
    >>> result.maps.shape
    (1, 2, 28, 28)

  References:
    J. Adebayo, J. Gilmer, M. Muelly, I. Goodfellow, M. Hardt, B. Kim.
    *Sanity Checks for Saliency Maps.* NeurIPS 2018. arXiv:1810.03292.
  """
  check_callable("method", method, "a saliency method method(model, images, targets, **options)")
  images, targets = check_inputs(model, images, targets)
  if not isinstance(random_model, nnx.Module):
    raise TypeError(f"random_model: expected an nnx.Module, got {type(random_model).__name__}")
  explain = _explainer(method, images, targets, batch_size, options)
  original = explain(model)
  random_maps = explain(random_model)[None]
  sim = similarity(original, random_maps[0])
  return RandomizationResult(
      steps=("labels",),
      original=original,
      maps=random_maps,
      similarity=jax.tree.map(lambda v: v[None], sim),
      mode="labels",
  )


# ---------------------------------------------------------------------------------------
# The verdict.
# ---------------------------------------------------------------------------------------

RANDOMIZATION_THRESHOLD: float = 0.5
r"""Similarity below which a randomised map counts as changed (:func:`randomization_verdict`).

Why 0.5. The default similarity is Spearman's :math:`\rho` of the signed
maps, the Pearson correlation of the two maps' pixel ranks. At
:math:`\rho = 0.5` a straight line through the trained map's ranks accounts for
:math:`\rho^2 = 25\,\%` of the variance of the randomised map's ranks, and
leaves three quarters of it unexplained: below the threshold, most of the
randomised map's ordering of the pixels is new. It is also the midpoint
between "the same map" (1) and "an unrelated map" (0). Adebayo et al. (2018)
set no threshold (they read the curves); this one is a convention, stated so
that a verdict can be checked and argued with. It is applied unchanged to the
other similarity fields, where 0.5 has no such reading (SSIM and HOG
similarity of unrelated maps need not be near 0): pass ``threshold=`` when
judging by them.

Why the signed maps by default. Adebayo et al. (2018) show both; on images with
an exactly blank background the rank correlation of the *absolute* maps is
dominated by ties: a ReLU network re-initialised with zero biases has exactly
zero gradient wherever a first-layer unit sees only blank pixels (over half the
pixels of an MNIST digit's map), and that block of tied ranks lines up with the
trained map's small background values. The absolute correlation then measures
the digit's support, which any input-dependent map shares, rather than whether
the learnt weights still shape the map. The signed correlation has no such
block of ties; a map that survives randomisation only inverted is caught by
judging :math:`|\rho|` (see :func:`randomization_verdict`).
"""

RANDOMIZATION_VERDICTS = ("passes", "fails", "inconclusive")
"""The verdicts of :func:`randomization_verdict` ("passes": the map changed)."""

_FIELD_LABELS = {
    "rank_correlation": "Spearman rank correlation of the signed maps",
    "abs_rank_correlation": "Spearman rank correlation of the absolute maps",
    "ssim": "SSIM of the signed maps",
    "abs_ssim": "SSIM of the absolute maps",
    "hog": "HOG similarity",
}
_AGGREGATION = {
    "cascading": "the test's verdict is that of the last step, the fully randomised model",
    "independent": (
        "the test passes only if every layer passes, fails if any layer fails, and is "
        "inconclusive otherwise"
    ),
    "labels": "the test's verdict is that of the model trained on permuted labels",
}


@dataclasses.dataclass(frozen=True)
class RandomizationVerdict:
  """Whether a method's maps changed when the model was randomised, by a stated rule.

  Made by :func:`randomization_verdict`.

  Attributes:
    steps: the steps of the :class:`RandomizationResult` (top layer first, or
      ``("labels",)``).
    mode: ``"cascading"``, ``"independent"`` or ``"labels"``.
    mean: ``(L,)`` mean similarity per step over the images.
    sem: ``(L,)`` its standard error.
    per_step: ``"passes"``, ``"fails"`` or ``"inconclusive"`` for each step
      (:data:`RANDOMIZATION_VERDICTS`).
    verdict: the test's verdict, one of the same three (see
      :func:`randomization_verdict`).
    threshold: the threshold applied.
    z: the number of standard errors of the interval.
    field: the :class:`~saliency_guide.metrics.Similarity` field judged.
    rule: the rule, in one plain-English sentence.
  """

  steps: tuple[str, ...]
  mode: str
  mean: np.ndarray
  sem: np.ndarray
  per_step: tuple[str, ...]
  verdict: str
  threshold: float
  z: float
  field: str
  rule: str


def _step_verdict(mean: float, sem: float, threshold: float, z: float, two_sided: bool) -> str:
  passes, fails, inconclusive = RANDOMIZATION_VERDICTS
  low, high = mean - z * sem, mean + z * sem
  if two_sided:
    if -threshold < low and high < threshold:
      return passes
    if low > threshold or high < -threshold:
      return fails
    return inconclusive  # straddles a threshold, or undefined (NaN)
  if high < threshold:
    return passes
  if low > threshold:
    return fails
  return inconclusive  # the interval straddles the threshold, or it is undefined (NaN)


def randomization_verdict(
    result: RandomizationResult,
    *,
    field: str = "rank_correlation",
    threshold: float = RANDOMIZATION_THRESHOLD,
    z: float = 2.0,
) -> RandomizationVerdict:
  r"""Does the method pass the randomisation test? Per step, then for the test.

  With :math:`\bar s_k \pm \mathrm{s.e.}_k` the mean similarity of step
  :math:`k` over the images (:meth:`RandomizationResult.stats`) and
  :math:`t` the threshold, step :math:`k`

  * **passes** (the map changed) when :math:`\bar s_k + z\,\mathrm{s.e.}_k < t`,
  * **fails** (the map survived the randomisation) when
    :math:`\bar s_k - z\,\mathrm{s.e.}_k > t`,
  * is **inconclusive** otherwise: the interval straddles the threshold (more
    images would decide), or it is undefined (NaN: fewer than two images with
    a defined similarity, e.g. constant maps).

  With the default :math:`z = 2` the interval is an approximate 95 % interval of
  the mean (normal approximation, fine for the ≥ 100 images the tutorials use).

  The test's verdict:

  * ``"cascading"``: the verdict of the **last** step, where every layer is
    re-initialised, as Adebayo et al. (2018) read the cascade (a map that
    still resembles the original there does not depend on the learnt weights);
    the earlier steps, reported in ``per_step``, say from which layer down the
    map depends on the weights.
  * ``"independent"``: ``"passes"`` only if every layer passes (the map depends
    on each layer), ``"fails"`` if any layer fails (some layer's weights can be
    destroyed without the map noticing), else ``"inconclusive"``.
  * ``"labels"`` (:func:`data_randomization`): the verdict of its single step.
    Meaningful only if the model trained on permuted labels has fitted them
    (Adebayo et al. report ≥ 95 % training accuracy on the permuted labels).

  For the default ``"rank_correlation"`` (signed maps) an inverted map is as
  much "the same map" as an unchanged one, so the rule is applied to both
  tails: a step passes when the whole interval lies inside
  :math:`(-t, t)`, fails when it lies entirely above :math:`t` or below
  :math:`-t`. The other fields are judged on the upper tail only (for
  ``"ssim"``, whose maps are scaled to :math:`[0, 1]`, an inverted map scores
  low and "passes"; judge by ``"rank_correlation"`` or an absolute field if
  that matters).

  Args:
    result: a :class:`RandomizationResult` of :func:`model_randomization` or
      :func:`data_randomization`.
    field: the :class:`~saliency_guide.metrics.Similarity` field to judge.
    threshold: :math:`t`, in :math:`(-1, 1]`; default
      :data:`RANDOMIZATION_THRESHOLD` (0.5; its docstring says why).
    z: standard errors on each side of the mean, ≥ 0.

  Returns:
    A :class:`RandomizationVerdict`.

  Raises:
    TypeError: ``result`` is not a :class:`RandomizationResult`, or
      ``threshold``/``z`` not numbers.
    ValueError: unknown ``field``, ``threshold`` outside :math:`(-1, 1]`,
      negative or non-finite ``z``, or an unknown ``result.mode``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> from saliency_guide.methods import gradients
    >>> model = MLP(hidden=(16,), rngs=nnx.Rngs(0))
    >>> x = jax.random.uniform(jax.random.key(1), (16, 28, 28, 1))
    >>> t = jnp.arange(16) % 10
    >>> image_itself = lambda model, images, targets: images  # ignores the model
    >>> fake = model_randomization(image_itself, model, x, t, key=jax.random.key(2))
    >>> verdict = randomization_verdict(fake)
    >>> verdict.per_step, verdict.verdict
    (('fails', 'fails'), 'fails')
    >>> print(verdict.rule)
    A step passes (the map changed) when the mean Spearman rank correlation of the
    signed maps over the 16 images ± 2 standard errors lies inside (−0.5, 0.5), fails
    when it lies entirely above 0.5 or below −0.5 (the map survived, possibly
    inverted), and is inconclusive otherwise; the test's verdict is that of the last
    step, the fully randomised model.
    >>> real = model_randomization(gradients, model, x, t, key=jax.random.key(2))
    >>> randomization_verdict(real).verdict
    'passes'

  References:
    J. Adebayo, J. Gilmer, M. Muelly, I. Goodfellow, M. Hardt, B. Kim.
    *Sanity Checks for Saliency Maps.* NeurIPS 2018. arXiv:1810.03292.
  """
  if not isinstance(result, RandomizationResult):
    raise TypeError(
        "result: expected a RandomizationResult (from model_randomization or "
        f"data_randomization), got {type(result).__name__}"
    )
  check_choice("field", field, Similarity._fields)
  threshold = check_number("threshold", threshold, minimum=-1.0, hint=" and <= 1")
  if threshold > 1:
    raise ValueError(f"threshold: expected a finite number > -1.0 and <= 1, got {threshold}")
  z = check_number("z", z, minimum=0.0, inclusive=True)
  check_choice("result.mode", result.mode, _RESULT_MODES)
  mean, sem = result.stats(field)
  two_sided = field == "rank_correlation" and threshold > 0
  per_step = tuple(_step_verdict(m, s, threshold, z, two_sided)
                   for m, s in zip(mean, sem, strict=True))
  if result.mode == "independent":
    verdict = ("passes" if all(v == "passes" for v in per_step)
               else "fails" if "fails" in per_step else "inconclusive")
  else:
    verdict = per_step[-1]
  n = int(np.asarray(result.original).shape[0])
  if two_sided:
    rule = (
        f"A step passes (the map changed) when the mean {_FIELD_LABELS[field]} over the {n} "
        f"images ± {z:g} standard errors lies inside (−{threshold:g}, {threshold:g}), fails "
        f"when it lies entirely above {threshold:g} or below −{threshold:g} (the map survived, "
        f"possibly inverted), and is inconclusive otherwise; {_AGGREGATION[result.mode]}."
    )
  else:
    rule = (
        f"A step passes (the map changed) when the mean {_FIELD_LABELS[field]} over the {n} "
        f"images plus {z:g} standard errors is below {threshold:g}, fails when the mean minus "
        f"{z:g} standard errors is above {threshold:g}, and is inconclusive otherwise; "
        f"{_AGGREGATION[result.mode]}."
    )
  return RandomizationVerdict(
      steps=tuple(result.steps), mode=result.mode, mean=mean, sem=sem, per_step=per_step,
      verdict=verdict, threshold=threshold, z=z, field=field, rule=rule,
  )
