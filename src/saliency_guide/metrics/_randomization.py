r"""Randomisation tests (Adebayo et al., 2018): does the map depend on what the model learnt?

* **Model-parameter randomisation.** Re-initialise the model's layers and
  compare the maps before and after (:func:`model_randomization`). In the
  *cascading* test the layers are randomised from the top (logits) down,
  cumulatively; in the *independent* test one layer at a time, the others
  trained. A map that stays the same while the weights that produce the
  decision are destroyed cannot be explaining the decision.
* **Data randomisation.** Compare the maps of the trained model with those of
  the same architecture trained on randomly permuted labels
  (:func:`data_randomization`; ``saliency_guide.pretrained(name,
  shuffle_labels=True)`` trains it). That model has memorised noise, so a map
  that still looks like the real model's reflects the input and the
  architecture, not the learnt relation between digits and labels.

The models themselves come from :mod:`saliency_guide.sanity`
(:func:`~saliency_guide.sanity.randomize_layers`,
:func:`~saliency_guide.sanity.cascading_randomization`); similarity is
:func:`~saliency_guide.metrics.similarity`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from saliency_guide.validation import check_choice, check_inputs, check_positive_int
from saliency_guide.metrics._batching import attribute_batched
from saliency_guide.metrics._common import pixel_scores
from saliency_guide.metrics._similarity import Similarity, similarity
from saliency_guide.sanity import cascading_randomization, parameter_layers, randomize_layers

__all__ = [
    "RANDOMIZATION_MODES",
    "RandomizationResult",
    "data_randomization",
    "model_randomization",
    "randomized_models",
]

RANDOMIZATION_MODES = ("cascading", "independent")
"""Modes of :func:`model_randomization`."""

Method = Callable[..., jax.Array]


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
  """

  steps: tuple[str, ...]
  original: jax.Array
  maps: jax.Array
  similarity: Similarity


def _check_method(method: Any) -> None:
  if not callable(method):
    raise TypeError(
        f"method: expected a saliency method method(model, images, targets, **options), "
        f"got {method!r}"
    )


def _explainer(
    method: Method, images: jax.Array, targets: jax.Array, batch_size: int | None,
    options: dict[str, Any],
) -> Callable[[nnx.Module], jax.Array]:
  """``model -> (B, H, W)`` per-pixel maps, in one call or ``batch_size`` images at a time."""
  if batch_size is None:
    return lambda m: pixel_scores(method(m, images, targets, **options))
  batch_size = check_positive_int("batch_size", batch_size)
  return lambda m: pixel_scores(jnp.asarray(
      attribute_batched(method, m, images, targets, batch_size=batch_size, **options)))


def randomized_models(
    model: nnx.Module,
    key: jax.Array,
    *,
    mode: str = "cascading",
    layers: Sequence[str] | None = None,
) -> list[tuple[str, nnx.Module]]:
  """The randomised copies of the model-parameter randomisation test, top layer first.

  Args:
    model: the trained model (never modified).
    key: a JAX PRNG key (a layer gets the same new weights in every copy).
    mode: ``"cascading"``: copy :math:`k` has the top :math:`k` layers
      re-initialised; ``"independent"``: copy :math:`k` has only the
      :math:`k`-th layer from the top re-initialised.
    layers: layer names, input to output (default
      :func:`saliency_guide.sanity.parameter_layers`).

  Returns:
    ``[(layer, copy), ...]``, top layer first.

  Example:
    >>> import jax
    >>> from flax import nnx
    >>> from saliency_guide.models import CNN
    >>> [n for n, _ in randomized_models(CNN(rngs=nnx.Rngs(0)), jax.random.key(0),
    ...                                  mode="independent")]
    ['head', 'dense', 'conv2', 'conv1']
  """
  check_choice("mode", mode, RANDOMIZATION_MODES)
  if mode == "cascading":
    return cascading_randomization(model, key=key, layers=layers)
  if layers is not None and (isinstance(layers, str) or not isinstance(layers, Sequence)):
    raise TypeError(f"layers: expected a sequence of layer names, got {layers!r}")
  names = parameter_layers(model) if layers is None else tuple(layers)
  return [(name, randomize_layers(model, layers=[name], key=key)) for name in names[::-1]]


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
  (:func:`~saliency_guide.metrics.attribute_batched`), which reuses a
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
  _check_method(method)
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
    :class:`RandomizationResult` with ``steps == ("labels",)`` and
    similarities of shape ``(1, B)``.

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
  _check_method(method)
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
  )
