r"""Sanity checks for saliency maps: model-parameter randomisation (Adebayo et al., 2018).

A saliency map that explains a *model* must change when the model's parameters
are destroyed. The **cascading randomisation** test re-initialises the layers
one at a time from the top (the logits) down, keeping the earlier
randomisations, and compares each map with the map of the trained model by the
Spearman rank correlation :math:`\rho`. A method that passes decorrelates
(:math:`\rho \to 0`) as soon as the top layer is gone; a method whose map stays
(:math:`\rho` high) is showing something other than what the model learnt.

* :func:`parameter_layers` lists a model's layers (the submodules that own
  ``nnx.Param`` variables) in the order the forward pass uses them.
* :func:`randomize_layers` returns a copy with chosen layers re-initialised.
* :func:`cascading_randomization` returns the sequence of copies of the test.
* :func:`spearman_correlation` compares two batches of maps, image by image.

Nothing here modifies the model it is given.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence

import jax
import jax.extend
import jax.numpy as jnp
from flax import nnx

from saliency_guide.validation import model_channels

__all__ = [
    "cascading_randomization",
    "parameter_layers",
    "randomize_layers",
    "spearman_correlation",
]

Initializer = Callable[..., jax.Array]

#: Initialisers of ``nnx.Linear`` and ``nnx.Conv`` (and of the models here).
DEFAULT_KERNEL_INIT: Initializer = jax.nn.initializers.lecun_normal()
DEFAULT_BIAS_INIT: Initializer = jax.nn.initializers.zeros


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


def _check_key(key: object) -> None:
  dtype = getattr(key, "dtype", None)
  if dtype is not None and (
      jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
      or (dtype == jnp.uint32 and key.shape[-1:] == (2,))  # a raw jax.random.PRNGKey
  ):
    return
  raise TypeError(
      f"key: expected a JAX PRNG key such as jax.random.key(0), got {key!r:.80}; note the "
      "argument order: randomize_layers(model, layers, key), "
      "cascading_randomization(model, key, layers=None)"
  )


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
  """
  names = _check_layer_names(model, layers)
  _check_key(key)
  copy = nnx.clone(model)
  by_name = _layers(copy)
  for name in names:
    layer_key = jax.random.fold_in(key, zlib.crc32(name.encode()))
    for param_name, param in _own_params(by_name[name]):
      value = param[...]
      init = kernel_init if value.ndim >= 2 else bias_init
      param_key = jax.random.fold_in(layer_key, zlib.crc32(param_name.encode()))
      param[...] = init(param_key, value.shape, value.dtype)
  return copy


def cascading_randomization(
    model: nnx.Module,
    key: jax.Array,
    layers: Sequence[str] | None = None,
    **init: Initializer,
) -> list[tuple[str, nnx.Module]]:
  """The models of the cascading randomisation test (Adebayo et al., 2018).

  Layers are re-initialised from the output down, cumulatively: step
  :math:`k` has the top :math:`k` layers randomised.

  Args:
    model: the trained model (not modified).
    key: a JAX PRNG key, shared by all steps (a layer keeps its random weights
      from one step to the next).
    layers: layer names, **input to output**; default
      :func:`parameter_layers` ``(model)``.
    **init: ``kernel_init``/``bias_init``, passed to :func:`randomize_layers`.

  Returns:
    ``[(name, copy), ...]``, one entry per layer, top layer first: ``name`` is
    the layer randomised at that step, ``copy`` the model with it and every
    layer above it randomised.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.models import MLP
    >>> model = MLP(hidden=(8,), rngs=nnx.Rngs(0))
    >>> [name for name, _ in cascading_randomization(model, jax.random.key(0))]
    ['head', 'hidden/0']
  """
  _check_key(key)
  names = parameter_layers(model) if layers is None else _check_layer_names(model, layers)
  top_down = names[::-1]
  return [
      (name, randomize_layers(model, top_down[: k + 1], key, **init))
      for k, name in enumerate(top_down)
  ]


def _average_ranks(x: jax.Array) -> jax.Array:
  """0-based ranks of a 1-D array, ties sharing their average rank (as scipy does)."""
  s = jnp.sort(x)
  first = jnp.searchsorted(s, x, side="left")
  last = jnp.searchsorted(s, x, side="right") - 1
  return (first + last).astype(jnp.float32) / 2


def _pearson(a: jax.Array, b: jax.Array) -> jax.Array:
  a = a - a.mean()
  b = b - b.mean()
  return (a @ b) / jnp.sqrt((a @ a) * (b @ b))


@jax.jit
def _spearman(a: jax.Array, b: jax.Array) -> jax.Array:
  return jax.vmap(lambda x, y: _pearson(_average_ranks(x), _average_ranks(y)))(a, b)


def spearman_correlation(
    maps_a: jax.Array, maps_b: jax.Array, *, absolute: bool = False
) -> jax.Array:
  r"""Spearman rank correlation between two batches of maps, one value per image.

  .. math:: \rho(a, b) = \mathrm{corr}\big(\mathrm{rank}(a), \mathrm{rank}(b)\big),

  the Pearson correlation of the ranks of all the entries of a map (pixels and
  channels), tied values sharing their average rank, as in
  :func:`scipy.stats.spearmanr`. With ``absolute=True`` the maps' absolute
  values are ranked, which ignores sign flips (Adebayo et al. report both).
  A constant map has no ranking: its correlation is ``nan``.

  Args:
    maps_a: array ``(B, ...)``.
    maps_b: array of the same shape.
    absolute: rank :math:`|a|` and :math:`|b|` instead of :math:`a` and :math:`b`.

  Returns:
    Float32 array ``(B,)`` with values in :math:`[-1, 1]`.

  Raises:
    ValueError: the shapes differ or have no batch axis.

  Example:
    >>> import jax.numpy as jnp
    >>> a = jnp.array([[1.0, 2.0, 3.0, 4.0]])
    >>> spearman_correlation(a, a ** 3)  # any increasing function: rho = 1
    Array([1.], dtype=float32)
    >>> spearman_correlation(a, -a, absolute=True)
    Array([1.], dtype=float32)
  """
  a, b = jnp.asarray(maps_a, jnp.float32), jnp.asarray(maps_b, jnp.float32)
  if a.shape != b.shape or a.ndim < 2:
    raise ValueError(
        f"maps_a, maps_b: expected two arrays of the same shape (B, ...), got {a.shape} "
        f"and {b.shape}"
    )
  a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
  if absolute:
    a, b = jnp.abs(a), jnp.abs(b)
  return _spearman(a, b)
