"""Checks at the door: the one place the package validates arguments.

Every public function (methods, metrics, :func:`~saliency_guide.explain_dataset`)
checks its arguments once, outside ``jit``, with these functions, and passes
checked values to jitted cores that check nothing. Bad input fails with a
message naming the argument, what was expected and what was given, instead of
broadcasting silently, clamping an index or returning a map full of NaNs.

The model itself is checked by tracing it on the images (``jax.make_jaxpr``,
cached per model structure and image shape): it must take them, return logits
``(B, classes)`` (not probabilities) and leave its own state unchanged. Nothing
is guessed from its attributes.

Write your own method the same way: ``images, targets = check_inputs(model,
images, targets)`` first, then a jitted core.

Called inside ``jit`` (on traced arrays), the checks run when the function is
traced: the model, types, ranks and shapes are still checked, but values are
not known then, so NaN/Inf images and out-of-range targets are only caught on
concrete arrays, i.e. outside ``jit``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.errors import FlaxError

__all__ = [
    "check_array",
    "check_callable",
    "check_choice",
    "check_dataset",
    "check_flag",
    "check_image_batch",
    "check_inputs",
    "check_key",
    "check_maps",
    "check_model",
    "check_number",
    "check_positive_int",
    "describe",
    "model_channels",
    "model_num_classes",
]


def model_channels(model: nnx.Module) -> int | None:
  """Input channels ``model`` *declares*, or ``None`` if it declares none.

  Reads ``model.in_channels`` or ``model.image_shape[-1]`` (the package's
  models have one of them). Nothing is guessed from the module tree: the first
  convolution met there need not be the one applied to the images (attribute
  order is not call order), so :func:`check_inputs` checks other models by
  tracing them on the images instead.

  Example:
    >>> from saliency_guide.models import CNN
    >>> model_channels(CNN(rngs=nnx.Rngs(0)))
    1
    >>> model_channels(nnx.Linear(4, 2, rngs=nnx.Rngs(0))) is None
    True
    >>> model_channels("cnn")
    Traceback (most recent call last):
    ...
    TypeError: model: expected a Flax NNX module returning logits (an nnx.Module), got str \
'cnn'; for a named trained model use saliency_guide.pretrained('cnn').model
  """
  check_model(model)
  channels = getattr(model, "in_channels", None)
  if channels is not None:
    return int(channels)
  shape = getattr(model, "image_shape", None)
  if shape is not None:
    return int(shape[-1])
  return None


def model_num_classes(model: nnx.Module, images: jax.Array) -> int:
  """Number of logits ``model`` returns for ``images`` (by abstract evaluation, cached).

  Raises:
    TypeError: ``model`` is not an ``nnx.Module``.
    ValueError: the model cannot be applied to ``images``, or its output is
      not ``(B, classes)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from saliency_guide.models import MLP
    >>> model_num_classes(MLP(rngs=nnx.Rngs(0)), jnp.zeros((1, 28, 28, 1)))
    10
  """
  check_model(model)
  out = _abstract_output(model, images)[0]
  _check_logits_shape(out, images)
  return int(out.shape[-1])


# ---------------------------------------------------------------------------------------
# The model traced on the images: its output, a final softmax or sigmoid, changed state.
# ---------------------------------------------------------------------------------------

# The ops a saliency method must not explain through: names of the jitted/custom
# functions JAX wraps them in, and the primitive of the sigmoid.
_PROBABILITY_CALLS = {
    "softmax": "softmax", "_softmax": "softmax", "log_softmax": "log_softmax",
    "_log_softmax": "log_softmax", "sigmoid": "sigmoid", "logistic": "sigmoid",
}
# Ops looked through when reading the program backwards: a shape or dtype change of
# their first operand (abs and broadcasts only inside a softmax's normaliser).
_VALUE_PRESERVING = {"reshape", "squeeze", "expand_dims", "convert_element_type", "copy",
                     "copy_p", "broadcast_in_dim", "stop_gradient", "abs", "transpose"}
_CALL_PRIMITIVES = {"pjit", "jit", "closed_call", "core_call", "custom_jvp_call",
                    "custom_vjp_call", "custom_vjp_call_jaxpr", "remat", "checkpoint"}
_TRACES: dict[Hashable, tuple[Any, str | None, str]] = {}
_MAX_TRACES = 64


def _inner_jaxpr(eqn: Any) -> Any:
  """The jaxpr a call-like equation (jit, custom_jvp, remat) applies, else ``None``."""
  if eqn.primitive.name not in _CALL_PRIMITIVES:
    return None
  for value in eqn.params.values():
    inner = getattr(value, "jaxpr", value)  # a ClosedJaxpr holds a Jaxpr
    if hasattr(inner, "eqns") and len(inner.outvars) == len(eqn.outvars):
      return inner
  return None


def _made_by(jaxpr: Any, var: Any, primitives: set[str], depth: int = 8) -> Any:
  """The equation of ``primitives`` that made ``var`` (through value-preserving ops)."""
  producers = {id(v): e for e in jaxpr.eqns for v in e.outvars}
  for _ in range(depth):
    eqn = producers.get(id(var))
    if eqn is None:
      return None
    if eqn.primitive.name in primitives:
      return eqn
    if eqn.primitive.name not in _VALUE_PRESERVING:
      return None
    var = eqn.invars[0]
  return None


def _final_activation(jaxpr: Any, var: Any, depth: int = 0) -> str | None:
  """``"softmax"``, ``"log_softmax"`` or ``"sigmoid"`` if that op made ``var``, else ``None``.

  Reads the jaxpr backwards from ``var`` through ops that keep its values
  (reshapes, dtype casts) and into jitted functions, and recognises
  ``jax.nn.softmax``/``log_softmax``/``sigmoid`` and their hand-written forms
  (``exp(z) / sum(exp(z))``, ``z - log(sum(exp(z)))``, ``1 / (1 + exp(-z))``).
  """
  producers = {id(v): e for e in jaxpr.eqns for v in e.outvars}
  eqn = producers.get(id(var))
  if eqn is None or depth > 16:
    return None
  name = eqn.primitive.name
  if name in _VALUE_PRESERVING - {"broadcast_in_dim", "abs"}:
    return _final_activation(jaxpr, eqn.invars[0], depth + 1)
  inner = _inner_jaxpr(eqn)
  if inner is not None:
    called = str(eqn.params.get("name", ""))
    if called in _PROBABILITY_CALLS:
      return _PROBABILITY_CALLS[called]
    return _final_activation(inner, inner.outvars[eqn.outvars.index(var)], depth + 1)
  if name == "logistic":
    return "sigmoid"
  if name == "div":
    numerator, denominator = eqn.invars
    total = _made_by(jaxpr, denominator, {"reduce_sum", "add"})
    if total is None:
      return None
    if total.primitive.name == "reduce_sum":
      if _made_by(jaxpr, numerator, {"exp"}) is not None:
        return "softmax"  # exp(z) / sum(exp(z))
    elif hasattr(numerator, "val") and any(_made_by(jaxpr, v, {"exp"}) for v in total.invars):
      return "sigmoid"  # 1 / (1 + exp(-z)), the numerator a literal
  if name == "sub":
    log = _made_by(jaxpr, eqn.invars[1], {"log", "add"})
    if log is not None and log.primitive.name == "add":  # logsumexp adds back the max
      log = next(filter(None, (_made_by(jaxpr, v, {"log"}) for v in log.invars)), None)
    if log is not None and _made_by(jaxpr, log.invars[0], {"reduce_sum"}) is not None:
      return "log_softmax"
  if name == "log":
    inside = _final_activation(jaxpr, eqn.invars[0], depth + 1)
    if inside in ("softmax", "sigmoid"):
      return f"log_{inside}"
  return None


def _signature(model: nnx.Module) -> Hashable:
  """What the model's trace depends on: its structure, static attributes and array shapes."""
  leaves, treedef = jax.tree.flatten(model)
  try:
    return treedef, tuple((leaf.shape, leaf.dtype) for leaf in leaves)
  except AttributeError:  # a module that is not a pytree
    graphdef, state = nnx.split(model)
    return graphdef, tuple((x.shape, x.dtype) for x in jax.tree.leaves(state))


def _abstract_output(model: nnx.Module, images: jax.Array) -> tuple[Any, str | None, str]:
  """What the model does to ``images``, read from its program (traced once, then cached).

  Returns the abstract output, the probability op that makes it (``None`` if
  none), and the paths of the variables the call changes (``""`` if none).
  Traced once per model structure and image shape (``jax.make_jaxpr`` of the
  pure function of ``nnx.split``; nothing is computed). The model's own error,
  if it cannot be applied to such images, becomes a ``ValueError`` that says so.
  """
  key = (_signature(model), images.shape, images.dtype)
  found = _TRACES.get(key)
  if found is not None:
    return found
  graphdef, state = nnx.split(model)

  def forward(state, x):
    called = nnx.merge(graphdef, state)
    return called(x), nnx.state(called)

  spec = jax.ShapeDtypeStruct(images.shape, images.dtype)
  try:
    closed, (out, after) = jax.make_jaxpr(forward, return_shape=True)(state, spec)
  except (TypeError, ValueError, IndexError, FlaxError) as error:
    shape = tuple(images.shape)
    hint = ""
    if shape[1] in (1, 3) and shape[-1] not in (1, 3):
      hint = "; channel-first (NCHW) arrays must be transposed with x.transpose(0, 2, 3, 1)"
    raise ValueError(
        f"images: the model could not be applied to images of shape {shape} "
        f"(traced abstractly, nothing computed): {type(error).__name__}: "
        f"{str(error).rstrip('. ')}; expected NHWC images (B, H, W, C) of the size and "
        f"channels the model takes{hint}"
    ) from error
  jaxpr = closed.jaxpr
  outputs = len(jax.tree.leaves(out))
  activation = None
  if isinstance(out, jax.ShapeDtypeStruct):
    activation = _final_activation(jaxpr, jaxpr.outvars[0])
  paths = [jax.tree_util.keystr(path, simple=True, separator=".").removesuffix(".value")
           for path, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
  if jax.tree.structure(after) != jax.tree.structure(state):
    changed = "adds or removes variables"
  else:
    new = jaxpr.outvars[outputs:]
    changed = ", ".join(p for p, a, b in zip(paths, jaxpr.invars, new, strict=False) if a is not b)
  if len(_TRACES) >= _MAX_TRACES:
    del _TRACES[next(iter(_TRACES))]
  _TRACES[key] = (out, activation, changed)
  return out, activation, changed


def _check_logits_shape(out: Any, images: jax.Array) -> None:
  batch = images.shape[0]
  if not isinstance(out, jax.ShapeDtypeStruct) or out.ndim != 2 or out.shape[0] != batch:
    got = f"shape {out.shape}" if isinstance(out, jax.ShapeDtypeStruct) else describe(out)
    raise ValueError(
        f"model: expected logits of shape ({batch}, classes) for {batch} image(s), got {got}"
    )


def _check_logits(model: nnx.Module, images: jax.Array) -> int:
  """Number of classes; an error if the model cannot take ``images`` or returns probabilities."""
  out, activation, changed = _abstract_output(model, images)
  if changed:
    raise ValueError(
        f"model: calling it changes its own state ({changed}), so its output is not a "
        "function of the images alone and the methods cannot differentiate it; put it in "
        "evaluation mode (model.eval(): BatchNorm with use_running_average=True, Dropout "
        "deterministic); a Linen model wrapped with nnx.bridge.ToNNX must keep no random "
        "streams: nnx.bridge.lazy_init(nnx.bridge.ToNNX(module), x, rngs=nnx.Rngs(0))"
    )
  if activation is not None:
    what = "log-probabilities" if activation.startswith("log_") else "probabilities"
    raise ValueError(
        f"model: returns {what} (its last operation is a {activation}), not logits; saliency "
        f"methods explain logits, the class scores before any softmax or sigmoid: remove the "
        f"final {activation} from the model's __call__ (apply it in the loss, e.g. "
        "optax.softmax_cross_entropy_with_integer_labels, or after the model)"
    )
  _check_logits_shape(out, images)
  return int(out.shape[-1])


@jax.jit
def _count_nonfinite(images: jax.Array) -> jax.Array:
  return jnp.sum(~jnp.isfinite(images))


def describe(x: Any) -> str:
  """A short description of ``x`` for error messages (type, and shape and dtype if any)."""
  if hasattr(x, "shape") and hasattr(x, "dtype"):
    return f"{type(x).__name__} of shape {tuple(x.shape)} and dtype {x.dtype}"
  return f"{type(x).__name__} {x!r}"[:200]


def check_model(model: Any, name: str = "model") -> nnx.Module:
  """``model`` if it is a Flax NNX module, else a ``TypeError`` naming ``name``.

  The methods take an ``nnx.Module`` whose call returns logits: a Linen module
  is wrapped first (``nnx.bridge.ToNNX``), a :class:`~saliency_guide.zoo.Pretrained`
  record passes its ``.model``. What the module does to the images is checked by
  :func:`check_inputs`.

  Example:
    >>> check_model("cnn")
    Traceback (most recent call last):
    ...
    TypeError: model: expected a Flax NNX module returning logits (an nnx.Module), got str \
'cnn'; for a named trained model use saliency_guide.pretrained('cnn').model
  """
  if isinstance(model, nnx.Module):
    return model
  hint = ""
  if isinstance(model, str):
    hint = f"; for a named trained model use saliency_guide.pretrained({model!r}).model"
  elif isinstance(getattr(model, "model", None), nnx.Module):
    hint = "; pass its .model (the trained module), not the record"
  elif any(c.__module__.startswith("flax.linen") for c in type(model).__mro__):
    hint = ("; wrap a Linen module first: "
            "nnx.bridge.lazy_init(nnx.bridge.ToNNX(module), x, rngs=nnx.Rngs(0))")
  raise TypeError(
      f"{name}: expected a Flax NNX module returning logits (an nnx.Module), got "
      f"{describe(model)}{hint}"
  )


def check_inputs(
    model: nnx.Module, images: Any, targets: Any
) -> tuple[jax.Array, jax.Array]:
  """Validate ``(images, targets)`` for ``model`` and return them as JAX arrays.

  Checks what can be known without guessing: the images' type, rank, dtype,
  batch size and values; that the model can be applied to them and returns
  logits ``(B, classes)``; the targets' type, shape and range. The channel
  count is compared with the model's own declaration (``model.in_channels`` or
  ``model.image_shape``) where it has one; any other model (yours, a Linen model
  through ``nnx.bridge.ToNNX``) is traced abstractly on the images
  (``jax.make_jaxpr``, once per model structure and image shape, then cached),
  and its own shape error, if any, is reported with the images' shape. A model
  whose last operation is a softmax, log-softmax or sigmoid is refused: saliency
  methods explain logits. On traced arrays (inside ``jit``) the values are not
  known, so NaN/Inf images and out-of-range targets are not checked there.

  Args:
    model: the classifier to explain (returns logits).
    images: float array ``(B, H, W, C)`` (NHWC), finite values.
    targets: integer array ``(B,)`` of class indices in ``[0, classes)``.

  Returns:
    ``(images, targets)`` as ``float32`` and ``int32`` JAX arrays.

  Raises:
    TypeError: ``model`` is not an ``nnx.Module``, ``images`` not a floating
      array or ``targets`` not an integer one.
    ValueError: wrong rank, images the model cannot take (e.g. NCHW images),
      non-finite values, a model that returns probabilities or no ``(B,
      classes)`` logits, wrong number of targets, or a target out of range.

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
  check_model(model)
  if not hasattr(images, "shape") or not hasattr(images, "dtype"):
    if isinstance(images, list | tuple):
      images = np.asarray(images)
    else:
      raise TypeError(f"images: expected a float array (B, H, W, C), got {describe(images)}")
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
  classes = _check_logits(model, images)
  _finite("images", images)  # one compiled call instead of two dispatched ops

  if isinstance(targets, int | np.integer):
    raise TypeError(
        f"targets: expected an integer array of shape ({images.shape[0]},), one class per "
        f"image, got the scalar {targets!r}; use jnp.full(len(images), {targets})"
    )
  traced = isinstance(targets, jax.core.Tracer)
  targets_arr = targets if traced else np.asarray(targets)
  if not np.issubdtype(targets_arr.dtype, np.integer):
    raise TypeError(f"targets: expected integer class indices, got dtype {targets_arr.dtype}")
  if targets_arr.shape != (images.shape[0],):
    raise ValueError(
        f"targets: expected shape ({images.shape[0]},), one class per image, got shape "
        f"{targets_arr.shape}"
    )
  if traced:  # inside jit: values are unknown until the call runs
    return images, targets_arr.astype(jnp.int32)
  if targets_arr.min() < 0 or targets_arr.max() >= classes:
    raise ValueError(
        f"targets: expected class indices in [0, {classes}), got values from "
        f"{targets_arr.min()} to {targets_arr.max()}"
    )
  return images, jnp.asarray(targets_arr, jnp.int32)


def check_dataset(
    images: Any, targets: Any, *, names: tuple[str, str] = ("images", "targets")
) -> tuple[Any, Any]:
  """A dataset to stream: ``(N, H, W, C)`` images and ``(N,)`` integer targets, ``N >= 1``.

  For functions that process a dataset batch by batch
  (:func:`~saliency_guide.scale.explain_dataset`, ROAR): only shapes and dtypes are
  checked, and the arrays are returned as given (NumPy, JAX or memory-mapped),
  since converting or scanning a whole dataset would defeat streaming. The
  method that receives each batch checks its values (:func:`check_inputs`).

  Args:
    images: array ``(N, H, W, C)``.
    targets: integer array ``(N,)``.
    names: the two arguments' names in error messages.

  Returns:
    ``(images, targets)``, unchanged.

  Example:
    >>> check_dataset(np.zeros((4, 28, 28, 1)), np.arange(3))
    Traceback (most recent call last):
    ...
    ValueError: targets: expected shape (4,), one class per image, got (3,)
  """
  images_name, targets_name = names
  for name, value in ((images_name, images), (targets_name, targets)):
    if not hasattr(value, "shape") or not hasattr(value, "dtype"):
      raise TypeError(f"{name}: expected an array (NumPy or JAX), got {describe(value)}")
  if len(images.shape) != 4:
    raise ValueError(
        f"{images_name}: expected NHWC shape (N, H, W, C), got {tuple(images.shape)}"
    )
  if images.shape[0] == 0:
    raise ValueError(f"{images_name}: expected at least one image, got N = 0")
  if not np.issubdtype(targets.dtype, np.integer):
    raise TypeError(f"{targets_name}: expected integer class indices, got dtype {targets.dtype}")
  if tuple(targets.shape) != (images.shape[0],):
    raise ValueError(
        f"{targets_name}: expected shape ({images.shape[0]},), one class per image, got "
        f"{tuple(targets.shape)}"
    )
  return images, targets


def check_positive_int(name: str, value: Any) -> int:
  """``value`` as an ``int`` ≥ 1, else a ``TypeError``/``ValueError`` naming ``name``.

  Example:
    >>> check_positive_int("steps", 0)
    Traceback (most recent call last):
    ...
    ValueError: steps: expected an integer >= 1, got 0
  """
  if isinstance(value, bool) or not isinstance(value, int | np.integer):
    raise TypeError(f"{name}: expected an integer >= 1, got {describe(value)}")
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


def check_flag(name: str, value: Any) -> bool:
  """``value`` if it is a ``bool``, else a ``TypeError`` naming ``name``.

  Example:
    >>> check_flag("upsample", 1)
    Traceback (most recent call last):
    ...
    TypeError: upsample: expected True or False, got 1
  """
  if not isinstance(value, bool):
    raise TypeError(f"{name}: expected True or False, got {value!r}")
  return value


def check_number(
    name: str, value: Any, *, minimum: float = 0.0, inclusive: bool = False, hint: str = ""
) -> float:
  """``value`` as a finite ``float`` above ``minimum`` (or equal to it if ``inclusive``).

  ``hint`` (e.g. ``" (a fraction of each image's value range)"``) is added to the
  message after "expected a number ...".

  Example:
    >>> check_number("sigma", 2)
    2.0
    >>> check_number("noise_level", -0.1, inclusive=True)
    Traceback (most recent call last):
    ...
    ValueError: noise_level: expected a finite number >= 0.0, got -0.1
  """
  bound = f"{'>=' if inclusive else '>'} {minimum}"
  if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
    raise TypeError(f"{name}: expected a number {bound}{hint}, got {describe(value)}")
  ok = value >= minimum if inclusive else value > minimum
  if not (math.isfinite(value) and ok):
    raise ValueError(f"{name}: expected a finite number {bound}{hint}, got {value}")
  return float(value)


def check_callable(name: str, value: Any, expected: str) -> Any:
  """``value`` if it is callable, else a ``TypeError`` saying what was ``expected``."""
  if not callable(value):
    raise TypeError(f"{name}: expected {expected}, got {describe(value)}")
  return value


def check_key(key: Any, purpose: str = "this function") -> jax.Array:
  """``key`` as a single JAX PRNG key, else an error saying ``purpose`` needs one.

  Accepts a typed key from ``jax.random.key(seed)`` (shape ``()``) or a raw
  ``uint32`` key of shape ``(2,)`` from ``jax.random.PRNGKey(seed)``.

  Example:
    >>> check_key(None, "smoothgrad")
    Traceback (most recent call last):
    ...
    ValueError: key: smoothgrad is random and needs an explicit PRNG key, \
e.g. key=jax.random.key(0); got None
  """
  if key is None:
    raise ValueError(
        f"key: {purpose} is random and needs an explicit PRNG key, e.g. key=jax.random.key(0); "
        "got None"
    )
  if isinstance(key, jax.Array | np.ndarray):
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ():
      return key
    if key.dtype == np.uint32 and key.shape == (2,):
      return jnp.asarray(key)
  raise TypeError(
      f"key: expected a single PRNG key from jax.random.key(seed) (or jax.random.PRNGKey), "
      f"got {describe(key)}"
  )


def _finite(name: str, x: jax.Array) -> jax.Array:
  if isinstance(x, jax.core.Tracer):  # inside jit: values are unknown until the call runs
    return x
  bad = int(_count_nonfinite(x))
  if bad:
    raise ValueError(f"{name}: expected finite values, got {bad} NaN or Inf value(s)")
  return x


def _float_array(name: str, value: Any, expected: str) -> Any:
  if not hasattr(value, "shape") or not hasattr(value, "dtype"):
    raise TypeError(f"{name}: expected {expected}, got {describe(value)}")
  if not jnp.issubdtype(value.dtype, jnp.floating):
    raise TypeError(f"{name}: expected a floating dtype, got {value.dtype}")
  return value


def check_array(name: str, value: Any, shape: tuple[int, ...]) -> jax.Array:
  """A finite float scalar or array broadcast *explicitly* to ``shape``.

  Accepted shapes: ``()``, ``shape[1:]``, ``(1, *shape[1:])`` and ``shape``
  itself (one per image); anything else is an error rather than a silent
  broadcast. Python numbers are accepted as scalars.

  Example:
    >>> check_array("baseline", 0.5, (2, 4, 4, 1)).shape
    (2, 4, 4, 1)
    >>> check_array("baseline", np.zeros((3, 4, 4, 1), np.float32), (2, 4, 4, 1))
    Traceback (most recent call last):
    ...
    ValueError: baseline: expected a scalar or an array of shape (4, 4, 1), (1, 4, 4, 1) or \
(2, 4, 4, 1) (one per image), got shape (3, 4, 4, 1)
  """
  if isinstance(value, int | float) and not isinstance(value, bool):
    value = np.asarray(value, np.float32)
  value = _float_array(name, value, f"a float scalar or array broadcastable to {shape}")
  shape = tuple(shape)
  if tuple(value.shape) not in ((), shape[1:], (1, *shape[1:]), shape):
    raise ValueError(
        f"{name}: expected a scalar or an array of shape {shape[1:]}, {(1, *shape[1:])} or "
        f"{shape} (one per image), got shape {tuple(value.shape)}"
    )
  value = _finite(name, jnp.asarray(value, jnp.float32))
  return jnp.broadcast_to(value, shape)


def check_image_batch(name: str, value: Any, like: jax.Array) -> jax.Array:
  """A non-empty finite float batch ``(R, H, W, C)`` with the image shape of ``like``.

  For arrays of images other than the explained ones (e.g. Expected Gradients'
  ``references``); returned as float32.
  """
  value = _float_array(name, value, "a float array (R, H, W, C)")
  if value.ndim != 4 or tuple(value.shape[1:]) != tuple(like.shape[1:]):
    raise ValueError(
        f"{name}: expected shape (R, {', '.join(map(str, like.shape[1:]))}) to match "
        f"images of shape {tuple(like.shape)}, got shape {tuple(value.shape)}"
    )
  if value.shape[0] == 0:
    raise ValueError(f"{name}: expected at least one image, got 0")
  return _finite(name, jnp.asarray(value, jnp.float32))


def check_maps(name: str, value: Any, images: jax.Array) -> jax.Array:
  """Finite float maps for ``images``: shape ``(B, H, W)`` or ``images.shape``; float32."""
  value = _float_array(name, value, "a float array (B, H, W) or (B, H, W, C)")
  batch, height, width, _ = images.shape
  shape = tuple(value.shape)
  if shape not in ((batch, height, width), tuple(images.shape)):
    raise ValueError(
        f"{name}: expected shape {(batch, height, width)} (a per-pixel map) or "
        f"{tuple(images.shape)} (the images' shape), got {shape}"
    )
  return _finite(name, jnp.asarray(value, jnp.float32))
