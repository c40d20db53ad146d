r"""Feature maps of a layer and derivatives with respect to them: the CAM family's machinery.

Every class-activation method (CAM, Grad-CAM, Grad-CAM++, Score-CAM) weights
the channels :math:`A^k \in \mathbb{R}^{h \times w}` of one layer and sums
them,

.. math:: M_c(i, j) = \sum_k \alpha^c_k A^k(i, j),

possibly followed by a ReLU and a bilinear upsampling to the input size.

A layer is named in one of two ways (:func:`check_layer` resolves both):

* a **short name** of a model that lists ``feature_layers`` (the models of
  :mod:`saliency_guide.models`): the map passed to ``self.expose(name, x)``,
  read with ``nnx.capture``;
* a **submodule** of any ``nnx.Module``, by dotted path (``"blocks.1.conv"``,
  list indices as parts: the paths of ``nnx.iter_graph`` joined by dots) or as
  the object itself: its output is :math:`A`. On a copy of the model rebuilt
  inside the traced function, the submodule is replaced by a :class:`_Tap`
  that calls it, records its output and adds a perturbation :math:`p`; the
  caller's model and class are untouched. Inside an ``nnx.bridge.ToNNX``
  module the remaining path parts name a Linen submodule, reached with
  ``linen.intercept_methods``.

:func:`layer_score` gives the target logits as a function of the perturbation
:math:`p` added to :math:`A`, whose derivatives at :math:`p = 0` are the
derivatives with respect to :math:`A` at the actual activations. The
discussion is on the CAM and Grad-CAM tutorial pages.
"""

from __future__ import annotations

import collections.abc
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import linen, nnx

from saliency_guide.models import conv_layer_names
from saliency_guide.validation import check_flag

__all__ = [
    "CHUNK_ELEMENTS",
    "Layer",
    "LayerOutput",
    "check_layer",
    "checked_options",
    "chunk_size",
    "feature_maps",
    "finish",
    "layer_name",
    "layer_outputs",
    "layer_score",
    "map_shape",
    "perturbed_forward",
    "upsample_maps",
    "weighted_sum",
]

#: Element budget of one chunk of tangent directions in Grad-CAM++ (about
#: 64 MiB of float32 per direction-sized array).
CHUNK_ELEMENTS = 2**24

#: A checked layer: a short name (``str``, a map the model exposes) or the path
#: of a submodule (a ``tuple`` of attribute names and list indices).
Layer = str | tuple[str | int, ...]


def checked_options(
    model: nnx.Module, images: jax.Array, layer: object, upsample: object, **flags: object
) -> tuple[tuple[str, Layer | bool], ...]:
  """``(("layer", layer), ("upsample", flag), *flags)`` checked against ``model``, for a Core."""
  options = {"layer": check_layer(model, layer, images), "upsample": upsample, **flags}
  return tuple((k, v if k == "layer" else check_flag(k, v)) for k, v in options.items())


def layer_name(layer: Layer) -> str:
  """The layer as the user writes it: a short name, or a dotted path (``"blocks.1"``)."""
  return layer if isinstance(layer, str) else ".".join(str(part) for part in layer)


# --- Resolving a layer (static: once per call, in each method's prepare) -----------------------


def check_layer(model: nnx.Module, layer: object, images: jax.Array) -> Layer:
  """The checked layer: ``layer`` resolved against ``model``, or the default if ``None``.

  * ``None``: the last of ``model.feature_layers`` if the model lists any;
    otherwise the submodule whose ``(B, h, w, K)`` output comes last in the
    forward pass (found by an abstract trace, :func:`layer_outputs`).
  * a string: one of ``model.feature_layers`` (a short name, the exposed map),
    else a dotted path to a submodule (``"blocks.1"``, ``"blocks.0.conv2"``).
  * a tuple: the same path as parts, as ``nnx.iter_graph`` yields it
    (``("blocks", 1)``); what this function returns for a submodule.
  * an ``nnx.Module``: a submodule of ``model`` (found by identity).

  A submodule must be called exactly once by the forward pass on ``images`` and
  return float maps ``(B, h, w, K)``. Made once per call by each method's
  ``prepare`` (the abstract trace is cached per model structure and image shape).

  Returns:
    The short name (``str``) or the submodule's path (``tuple``), hashable.

  Raises:
    ValueError: the model has no layer with ``(B, h, w, K)`` output, no
      submodule at that path, a submodule that is not part of ``model``, or one
      whose output is not ``(B, h, w, K)`` maps (the messages list the
      candidates).
    TypeError: ``layer`` is neither ``None``, a string, a path tuple nor an ``nnx.Module``.
  """
  names = conv_layer_names(model)
  if layer is None:
    return names[-1] if names else _default_path(model, images)
  if isinstance(layer, str) and layer in names:
    return layer
  if isinstance(layer, nnx.Module):
    path = _path_of(model, layer)
  elif isinstance(layer, str) or _is_path(layer):
    path = _parse(layer) if isinstance(layer, str) else tuple(layer)
    name = layer_name(path)
    node, linen_rest = _lookup(model, path)
    if node is _MISSING or (linen_rest and path not in layer_outputs(model, images)):
      raise ValueError(f"layer: {type(model).__name__} has no submodule at {name!r}; "
                       f"{_candidates(model, images)}")
    if not linen_rest and (not isinstance(node, nnx.Module) or _is_container(node)):
      raise ValueError(f"layer: {name!r} is {_describe_node(node)}, not a submodule whose "
                       f"output could be feature maps; {_candidates(model, images)}")
  else:
    raise TypeError(
        "layer: expected None, a layer name or dotted submodule path (str), a path tuple (as "
        "nnx.iter_graph yields), or a submodule (nnx.Module) of the model, got "
        f"{type(layer).__name__} {layer!r}")
  _check_output(model, images, path)
  return path


class LayerOutput(NamedTuple):
  """What a submodule returned in an abstract forward pass (see :func:`layer_outputs`)."""

  shape: tuple[int, ...] | None  # None: not an array
  dtype: Any
  calls: int
  description: str


def layer_outputs(model: nnx.Module, images: jax.Array) -> dict[tuple[str | int, ...],
                                                                 LayerOutput]:
  """Every called submodule's output in one abstract forward pass, in order of completion.

  Keys are paths (the ``nnx.iter_graph`` paths of callable submodules, and the
  paths of Linen submodules inside an ``nnx.bridge.ToNNX``); a submodule
  appears once it has returned, so a block comes after the layers it contains.
  Traced with ``jax.eval_shape`` on a rebuilt copy (nothing is computed, the
  model is not modified) and cached per model structure and image shape.
  """
  graphdef, state = nnx.split(model)
  try:
    leaves = tuple((leaf.shape, leaf.dtype) for leaf in jax.tree.leaves(state))
    key = (graphdef, leaves, tuple(images.shape), jnp.dtype(images.dtype))
    hash(key)
  except TypeError:  # an unhashable static attribute: trace every time
    key = None
  if key is not None and key in _OUTPUTS:
    return _OUTPUTS[key]
  recorder: dict[tuple[str | int, ...], LayerOutput] = {}

  def forward(state, images):
    fresh = nnx.merge(graphdef, state, copy=True)
    paths = [path for path, node in nnx.iter_graph(fresh)
             if path and _is_callable_module(node)]
    for path in sorted(paths, key=len, reverse=True):  # children first: parents stay reachable
      fresh = _replace(fresh, path, lambda node, rest, path=path: _Tap(
          node, _Recorder(recorder, path), linen_hook=_LinenRecorder(recorder, path)
          if isinstance(node, nnx.bridge.ToNNX) else None))
    if isinstance(fresh, nnx.bridge.ToNNX):  # a Linen model at the root
      fresh = _Tap(fresh, None, linen_hook=_LinenRecorder(recorder, ()))
    fresh(images)

  jax.eval_shape(forward, state, jax.ShapeDtypeStruct(images.shape, images.dtype))
  outputs = dict(recorder)
  if key is not None:
    if len(_OUTPUTS) >= 32:
      _OUTPUTS.clear()
    _OUTPUTS[key] = outputs
  return outputs


_OUTPUTS: dict[Any, dict[tuple[str | int, ...], LayerOutput]] = {}


def _is_maps(output: LayerOutput, batch: int) -> bool:
  return (output.shape is not None and len(output.shape) == 4 and output.shape[0] == batch
          and jnp.issubdtype(output.dtype, jnp.floating))


def _map_paths(model: nnx.Module, images: jax.Array) -> list[tuple[str | int, ...]]:
  """Paths of the submodules returning ``(B, h, w, K)`` maps, once each, in forward order."""
  outputs = layer_outputs(model, images)
  return [path for path, out in outputs.items()
          if out.calls == 1 and _is_maps(out, images.shape[0])]


def _candidates(model: nnx.Module, images: jax.Array) -> str:
  """The message part listing the layers a user can name."""
  names = conv_layer_names(model)
  # A path spelled like a short name means the short name (e.g. CNN's "conv1", after its ReLU).
  paths = [n for n in map(layer_name, _map_paths(model, images)) if n not in names]
  listed = ", ".join(repr(p) for p in paths) if paths else "none"
  text = (f"submodules whose output is (B, h, w, K) feature maps, in forward order: {listed}")
  if names:
    text = f"its feature_layers: {', '.join(repr(n) for n in names)}; {text}"
  return text


def _default_path(model: nnx.Module, images: jax.Array) -> tuple[str | int, ...]:
  paths = _map_paths(model, images)
  if not paths:
    raise ValueError(
        f"model: {type(model).__name__} has no conv feature maps: it lists no feature_layers "
        "and no submodule returns (B, h, w, K) maps (called once in the forward pass); class "
        "activation maps weight the channels of a convolutional layer")
  return paths[-1]


def _check_output(model: nnx.Module, images: jax.Array, path: tuple[str | int, ...]) -> None:
  output = layer_outputs(model, images).get(path)
  name = layer_name(path)
  if output is None:
    raise ValueError(f"layer: {name!r} of {type(model).__name__} is never called in the "
                     "forward pass (a layer is a submodule whose __call__ runs once); "
                     f"{_candidates(model, images)}")
  if output.calls != 1:
    raise ValueError(f"layer: {name!r} is called {output.calls} times in one forward pass, so "
                     f"its output is not one set of feature maps; {_candidates(model, images)}")
  if not _is_maps(output, images.shape[0]):
    raise ValueError(f"layer: {name!r} outputs {output.description}, not feature maps "
                     f"(B, h, w, K) with B = {images.shape[0]}; {_candidates(model, images)}")


def _is_path(layer: object) -> bool:
  return (isinstance(layer, tuple) and len(layer) > 0
          and all(isinstance(p, str | int) and not isinstance(p, bool) for p in layer))


def _parse(layer: str) -> tuple[str | int, ...]:
  parts = layer.split(".")
  if not all(parts):
    raise ValueError(f"layer: {layer!r} is not a dotted submodule path such as 'blocks.1.conv'")
  return tuple(int(p) if p.isdigit() else p for p in parts)


_MISSING = object()


def _child(node: Any, part: str | int) -> Any:
  if isinstance(node, collections.abc.Mapping) or isinstance(part, int):
    return node[part]
  return getattr(node, part)


def _lookup(model: nnx.Module, path: tuple[str | int, ...]) -> tuple[Any, tuple[str | int, ...]]:
  """``(node, rest)`` at ``path``; ``rest`` is the Linen part beyond a ``ToNNX``, else ``()``."""
  node = model
  for i, part in enumerate(path):
    if isinstance(node, nnx.bridge.ToNNX):
      return node, path[i:]
    try:
      node = _child(node, part)
    except (AttributeError, KeyError, IndexError, TypeError):
      return _MISSING, ()
  return node, ()


def _path_of(model: nnx.Module, layer: nnx.Module) -> tuple[str | int, ...]:
  if layer is model:
    raise ValueError(f"layer: got the model itself ({type(model).__name__}), whose output is "
                     "its logits; pass one of its submodules (or its dotted path)")
  for path, node in nnx.iter_graph(model):
    if node is layer:
      return tuple(path)
  raise ValueError(f"layer: the {type(layer).__name__} passed is not a submodule of "
                   f"{type(model).__name__} (no path of the model leads to it); pass one of "
                   "the model's own submodules, or its dotted path")


def _is_container(node: Any) -> bool:
  return isinstance(node, collections.abc.Sequence | collections.abc.Mapping)


def _is_callable_module(node: Any) -> bool:
  return (isinstance(node, nnx.Module) and not _is_container(node)
          and any("__call__" in vars(c) for c in type(node).__mro__[:-1]))


def _describe_node(node: Any) -> str:
  if node is None:
    return "None"
  if isinstance(node, nnx.Variable):
    return f"a {type(node).__name__} of shape {tuple(node.shape)}"
  return f"a {type(node).__name__}"


def _describe_output(out: Any) -> str:
  if isinstance(out, jax.Array | jax.ShapeDtypeStruct) or hasattr(out, "shape"):
    return f"an array of shape {tuple(out.shape)} ({jnp.dtype(out.dtype).name})"
  return f"a {type(out).__name__}"


# --- Tapping a submodule's output on a rebuilt copy ----------------------------------------


class _Tap(nnx.Module):
  """Stands in for a submodule of a rebuilt copy: calls it and passes its output to ``hook``.

  ``hook(output) -> output'`` records the output and may add a perturbation.
  With ``linen_hook``, the call runs under ``linen.intercept_methods`` and
  every Linen submodule's output goes through ``linen_hook(path, output)``.
  Attributes the parent reads from its child (``self.conv.in_features``) are
  forwarded to the wrapped module.
  """

  def __init__(self, inner: Any, hook: Callable[[Any], Any] | None, *,
               linen_hook: Callable[[tuple[str, ...], Any], Any] | None = None):
    self.inner = inner
    self.hook = hook
    self.linen_hook = linen_hook

  def __call__(self, *args: Any, **kwargs: Any) -> Any:
    if self.linen_hook is None:
      out = self.inner(*args, **kwargs)
    else:
      with linen.intercept_methods(self._intercept):
        out = self.inner(*args, **kwargs)
    return out if self.hook is None else self.hook(out)

  def _intercept(self, next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    path = tuple(context.module.path)
    if context.method_name != "__call__" or not path:
      return out
    return self.linen_hook(path, out)

  def __getattr__(self, name: str) -> Any:
    if name.startswith("_") or name in ("inner", "hook", "linen_hook"):
      raise AttributeError(name)
    return getattr(self.inner, name)


class _Recorder:
  """Hook of :func:`layer_outputs`: records the shape of one submodule's output."""

  def __init__(self, record: dict, path: tuple[str | int, ...]):
    self.record, self.path = record, path

  def __call__(self, out: Any) -> Any:
    _record(self.record, self.path, out)
    return out


class _LinenRecorder:
  def __init__(self, record: dict, prefix: tuple[str | int, ...]):
    self.record, self.prefix = record, prefix

  def __call__(self, path: tuple[str, ...], out: Any) -> Any:
    _record(self.record, self.prefix + path, out)
    return out


def _record(record: dict, path: tuple[str | int, ...], out: Any) -> None:
  previous = record.pop(path, None)  # re-inserted: the order is that of the last return
  calls = 1 if previous is None else previous.calls + 1
  shape = tuple(out.shape) if hasattr(out, "shape") and hasattr(out, "dtype") else None
  record[path] = LayerOutput(shape, getattr(out, "dtype", None), calls, _describe_output(out))


class _Probe:
  """Hook on the chosen layer: keeps its output ``A`` and returns ``A + p``."""

  def __init__(self, name: str, batch: int, perturbation: jax.Array | None):
    self.name, self.batch, self.perturbation = name, batch, perturbation
    self.outputs: list[jax.Array] = []

  def __call__(self, out: Any) -> Any:
    if not (hasattr(out, "shape") and out.ndim == 4 and out.shape[0] == self.batch
            and jnp.issubdtype(out.dtype, jnp.floating)):
      raise ValueError(f"layer: {self.name!r} outputs {_describe_output(out)}, not feature "
                       f"maps (B, h, w, K) with B = {self.batch}")
    self.outputs.append(out)
    return out if self.perturbation is None else out + self.perturbation

  def linen(self, target: tuple[str | int, ...]) -> Callable[[tuple[str, ...], Any], Any]:
    return lambda path, out: self(out) if path == target else out

  def maps(self) -> jax.Array:
    if len(self.outputs) != 1:
      raise ValueError(f"layer: {self.name!r} was called {len(self.outputs)} times in the "
                       "forward pass; a layer's feature maps are the output of one call")
    return self.outputs[0]


def _replace(node: Any, path: tuple[str | int, ...],
             wrap: Callable[[Any, tuple[str | int, ...]], Any]) -> Any:
  """``node`` with its descendant at ``path`` replaced by ``wrap(descendant, linen_rest)``.

  Modules, lists and dicts are changed in place (call this on a rebuilt copy);
  tuples are rebuilt. Past an ``nnx.bridge.ToNNX`` the rest of the path is Linen's.
  """
  if not path:
    return wrap(node, ())
  if isinstance(node, nnx.bridge.ToNNX):
    return wrap(node, path)
  part, rest = path[0], path[1:]
  child = _child(node, part)
  new = _replace(child, rest, wrap)
  if new is child:
    return node
  if isinstance(node, tuple):
    return type(node)(new if i == part else c for i, c in enumerate(node))
  if isinstance(node, collections.abc.MutableMapping | collections.abc.MutableSequence):
    node[part] = new
  else:
    setattr(node, part, new)
  return node


def _tapped_forward(
    graphdef: Any, state: Any, images: jax.Array, path: tuple[str | int, ...],
    perturbation: jax.Array | None,
) -> tuple[jax.Array, jax.Array]:
  """Logits and the maps of the submodule at ``path``, on a copy rebuilt at this trace level."""
  # New Variables at this trace level: a forward pass that updates state (an rng count, as
  # nnx.bridge.ToNNX does) may then run under grad and jvp.
  fresh = nnx.merge(graphdef, state, copy=True)
  probe = _Probe(layer_name(path), images.shape[0], perturbation)

  def wrap(node, linen_rest):
    if linen_rest:
      return _Tap(node, None, linen_hook=probe.linen(linen_rest))
    return _Tap(node, probe)

  logits = _replace(fresh, path, wrap)(images)
  return logits, probe.maps()


# --- The maps and the logits as a function of a perturbation of them -----------------------


def _captured(intermediates: nnx.State, layer: str) -> jax.Array:
  if layer not in intermediates:
    raise ValueError(
        f"layer: the model lists {layer!r} in feature_layers but its forward pass never "
        f"exposed it (recorded: {sorted(intermediates.keys())})"
    )
  return intermediates[layer].get_value()[0]


def feature_maps(
    model: nnx.Module, images: jax.Array, layer: Layer
) -> tuple[jax.Array, jax.Array]:
  """The logits ``(B, classes)`` and the feature maps :math:`A` ``(B, h, w, K)`` of ``layer``.

  The capture runs on a copy of ``model`` rebuilt at the current trace level, so
  this works inside any JAX transformation and leaves ``model`` unmodified.
  """
  graphdef, state = nnx.split(model)
  if not isinstance(layer, str):
    return _tapped_forward(graphdef, state, images, layer, None)
  fresh = nnx.merge(graphdef, state)  # capture mutates the module: build it at this level
  logits, intermediates = nnx.capture(fresh, nnx.Intermediate)(images)
  return logits, _captured(intermediates, layer)


def perturbed_forward(
    graphdef: nnx.GraphDef, state: nnx.State, images: jax.Array, layer: Layer, p: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """The logits and ``layer``'s maps :math:`A`, with ``p`` added to :math:`A` downstream.

  The model is rebuilt from ``graphdef``/``state`` here, at the current trace
  level, so this can be differentiated and nested in JAX transformations.
  """
  if not isinstance(layer, str):  # a submodule: a stand-in records its output, adds p
    return _tapped_forward(graphdef, state, images, layer, p)
  model = nnx.merge(graphdef, state)  # capture mutates the module: build it at this level
  perturbations = nnx.State({layer: nnx.Perturbation(p)})
  logits, intermediates = nnx.capture(model, nnx.Intermediate, init=perturbations)(images)
  return logits, _captured(intermediates, layer)


def layer_score(
    model: nnx.Module,
    images: jax.Array,
    targets: jax.Array,
    layer: Layer,
) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
  r"""The summed target logits as a function of a perturbation of ``layer``'s maps.

  Returns ``score(p) -> (sum_b y^{c_b}(A_b + p_b), A)``: the forward pass adds
  ``p`` (shape of :math:`A`) to the feature maps, through the model's zero-
  initialised ``nnx.Perturbation`` for a short name, or in the stand-in that
  replaces the submodule at a path, and returns the unperturbed maps :math:`A`
  as auxiliary output. Derivatives of ``score`` at ``p = 0`` are derivatives of
  the logits with respect to :math:`A` at the actual activations. Images of a
  batch do not interact, so the gradient of the sum is the batch of per-image
  gradients. ``model`` is split here and a fresh copy is rebuilt inside every
  call of ``score``, so ``score`` can be differentiated and nested in JAX
  transformations; ``model`` itself is not modified.
  """
  graphdef, state = nnx.split(model)

  def score(p: jax.Array) -> tuple[jax.Array, jax.Array]:
    logits, a = perturbed_forward(graphdef, state, images, layer, p)
    y = jnp.take_along_axis(logits, targets[:, None], axis=1)[:, 0]
    return y.sum(), a

  return score


def map_shape(model: nnx.Module, images: jax.Array, layer: Layer) -> tuple[int, ...]:
  """Shape ``(B, h, w, K)`` of ``layer``'s feature maps, by abstract evaluation."""
  return jax.eval_shape(lambda: feature_maps(model, images, layer)[1]).shape


# --- Combining and finishing maps ------------------------------------------------------------


def upsample_maps(maps: jax.Array, size: tuple[int, int]) -> jax.Array:
  r"""Bilinear resize of ``maps`` ``(B, h, w[, K])`` to ``size = (H, W)``, half-pixel centres.

  Output pixel :math:`p` samples the map at :math:`(p + \tfrac12)\,h/H - \tfrac12`
  (:func:`jax.image.resize`), and beyond the outermost cell centres the edge
  value is repeated: for SAME-padded convolutions and 2×2 poolings each cell
  lands on the centre of the block of pixels it sits over (its stride; the
  unit's receptive field is larger, see the CAM tutorial).
  """
  return jax.image.resize(maps, (maps.shape[0], *size, *maps.shape[3:]), method="bilinear")


def weighted_sum(weights: jax.Array, maps: jax.Array) -> jax.Array:
  r""":math:`\sum_k w_{bk} A_b^k`: ``(B, K)`` weights and ``(B, h, w, K)`` maps to ``(B, h, w)``."""
  return jnp.einsum("bk,bhwk->bhw", weights, maps)


def finish(maps: jax.Array, size: tuple[int, int], relu: bool, upsample: bool) -> jax.Array:
  """Optional ReLU (at the layer's resolution), then optional upsampling to ``size``."""
  if relu:
    maps = jax.nn.relu(maps)
  return upsample_maps(maps, size) if upsample else maps


def chunk_size(items: int, elements_per_item: int) -> int:
  """How many of ``items`` to process at once within :data:`CHUNK_ELEMENTS`."""
  return max(1, min(items, CHUNK_ELEMENTS // max(1, elements_per_item)))
