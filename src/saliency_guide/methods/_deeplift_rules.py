r"""Any NNX model run on an (input, reference) pair, with DeepLIFT's backward rules.

DeepLIFT back-propagates *multipliers* :math:`m = \Delta y / \Delta x` instead of
derivatives. The model's forward function is traced to a jaxpr and evaluated
again on the pair stacked on a new leading axis (``(2, ...)``: input, then
reference), equation by equation:

* an equation that is **linear** (affine) in the pair (convolutions, dense
  layers, additions, reshapes, sum and average pooling, BatchNorm in eval mode,
  residual additions) is bound on each member (``jax.vmap``): its transpose is
  its multiplier;
* an **elementwise nonlinearity** (``max(x, c)`` such as the ReLU, ``tanh``,
  ``logistic``, ``exp``, or a whole ``jax.nn`` activation such as ``gelu``,
  ``silu``, ``softplus``, ``elu``, ``leaky_relu``) gets the Rescale rule through a
  :func:`jax.custom_vjp`: backward, the signal is multiplied by
  :math:`(f(x) - f(x')) / (x - x')`, and by the derivative :math:`f'` of each
  member where :math:`|x - x'| < 10^{-10}` (as Captum does);
* an elementwise function of one tensor written out of several equations
  (``jax.nn.gelu``, ``z * jax.nn.sigmoid(z)``, ``jnp.where(z > 0, z, a * z)``) is
  recognised where its pieces meet and rescaled as a whole (see :func:`_evaluate`);
* **max pooling** (``reduce_window_max``, or ``reduce_max`` over window axes as
  in :func:`saliency_guide.layers.max_pool_2x2`) gets Captum's rule (see
  :func:`_maxpool`);
* anything else that acts on the pair (a product or quotient of two different
  input-dependent tensors, a sort, a loop) is an error naming it and where the
  model computes it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.extend import core as jcore

from saliency_guide.methods._relu_rules import (
    _activation_name,
    _bind,
    _body_and_consts,
    _call_name,
    _location,
)

__all__ = ["EPS", "paired_forward"]

EPS = 1e-10  # |x - x'| below which the multiplier is the derivative (Captum's eps)

# Equations linear (affine) in each input-dependent operand, whatever the others are.
_LINEAR = frozenset({
    "add", "add_any", "sub", "neg", "reshape", "transpose", "broadcast_in_dim", "squeeze",
    "expand_dims", "reduce_sum", "reduce_window_sum", "pad", "slice", "concatenate",
    "convert_element_type", "copy", "copy_p", "rev", "cumsum", "reduce_precision",
    "split", "sharding_constraint", "device_put",
})
# Equations linear in one operand when the others are constant (parameters).
_BILINEAR = frozenset({"mul", "dot_general", "conv_general_dilated"})
# Equations that are linear in some operands and must not depend on the pair in others.
_INDEX_OPERANDS = {"select_n": (0,), "gather": (1,), "dynamic_slice": None,
                   "dynamic_update_slice": None, "div": (1,)}
# Elementwise functions of one operand (the others constant): the Rescale rule.
_ELEMENTWISE = frozenset({
    "max", "min", "clamp", "tanh", "logistic", "exp", "exp2", "log", "log1p", "expm1",
    "erf", "erfc", "abs", "sqrt", "rsqrt", "cbrt", "sin", "cos", "integer_pow", "pow",
    "square", "sign", "floor", "ceil", "round",
})
# The jax.nn activations, each taken as one elementwise nonlinearity.
_ACTIVATION_CALLS = frozenset({
    "celu", "elu", "gelu", "hard_sigmoid", "hard_silu", "hard_swish", "hard_tanh",
    "leaky_relu", "log_sigmoid", "mish", "relu", "relu6", "selu", "sigmoid", "silu",
    "soft_sign", "softplus", "sparse_plus", "sparse_sigmoid", "squareplus", "swish", "tanh",
})
_COMPARISONS = frozenset({"gt", "ge", "lt", "le", "eq", "ne"})
# Elementwise equations that may be part of one nonlinearity of one tensor.
_REGION = _ELEMENTWISE | _COMPARISONS | frozenset({
    "add", "sub", "mul", "div", "neg", "select_n", "convert_element_type", "copy", "atan2",
})
_CALLS = frozenset({"jit", "pjit", "closed_call", "core_call", "checkpoint", "remat",
                    "remat2", "custom_jvp_call", "custom_vjp_call"})


# --------------------------------------------------------------------------- #
# The two backward rules                                                       #
# --------------------------------------------------------------------------- #


def _zero_cotangent(x: Any) -> Any:
  x = jnp.asarray(x)
  if jnp.issubdtype(x.dtype, jnp.inexact):
    return jnp.zeros_like(x)
  return np.zeros(x.shape, jax.dtypes.float0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _rescale(f: Callable, pair: jax.Array, consts: Sequence) -> jax.Array:
  """``f(pair, consts)``, an elementwise function of ``pair`` ``(2, ...)``; Rescale backward."""
  return f(pair, consts)


def _rescale_fwd(f, pair, consts):
  out = f(pair, consts)
  return out, (pair, out, consts)


def _rescale_bwd(f, residuals, g):
  pair, out, consts = residuals
  _, vjp = jax.vjp(lambda p: f(p, consts), pair)
  (gradient,) = vjp(g)  # g · f'(x) and g' · f'(x'): the fallback
  delta_in, delta_out = pair[0] - pair[1], out[0] - out[1]
  small = jnp.abs(delta_in) < EPS
  multiplier = delta_out / jnp.where(small, 1.0, delta_in)
  new = jnp.where(small[None], gradient, g * multiplier[None])
  return new, jax.tree.map(_zero_cotangent, consts)


_rescale.defvjp(_rescale_fwd, _rescale_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _maxpool(pool: Callable, route: Callable, pair: jax.Array, consts: Sequence) -> jax.Array:
  r"""Max pooling of each member of ``pair``; Captum's DeepLIFT rule backward.

  With :math:`y, y'` the pooled input and reference, :math:`\bar y = \max(y, y')`
  and :math:`g, g'` the signals from above, the window's difference is split
  between the input's arg-max, which receives :math:`g (\bar y - y')`, and the
  reference's arg-max, which receives :math:`g' (y - \bar y)` (one of the two is
  zero); a position's multiplier is what it received divided by its
  :math:`\Delta x`, or the plain max-pool gradient where :math:`|\Delta x| <
  10^{-10}`. The sum over a window is :math:`g (y - y')` when :math:`g = g'`.
  ``route(a, consts, g)`` sends each window's ``g`` to the first arg-max of
  ``a`` in it (as PyTorch's max-pool indices do).
  """
  return jax.vmap(pool, in_axes=(0, None))(pair, consts)


def _maxpool_fwd(pool, route, pair, consts):
  out = _maxpool(pool, route, pair, consts)
  return out, (pair, out, consts)


def _maxpool_bwd(pool, route, residuals, g):
  pair, out, consts = residuals
  cross = jnp.maximum(out[0], out[1])
  to_x = route(pair[0], consts, g[0] * (cross - out[1]))
  to_r = route(pair[1], consts, g[1] * (out[0] - cross))
  delta_in = pair[0] - pair[1]
  small = jnp.abs(delta_in) < EPS
  gradient = jnp.stack([route(pair[0], consts, g[0]), route(pair[1], consts, g[1])])
  multiplier = (to_x + to_r) / jnp.where(small, 1.0, delta_in)
  new = jnp.where(small[None], gradient, multiplier[None])
  return new, jax.tree.map(_zero_cotangent, consts)


_maxpool.defvjp(_maxpool_fwd, _maxpool_bwd)


# --------------------------------------------------------------------------- #
# Evaluating the jaxpr on the pair                                             #
# --------------------------------------------------------------------------- #


def _half(eqn, dependent: Sequence[bool]) -> Callable:
  """``eqn`` as a function of its one dependent operand (one member) and the others."""
  i = dependent.index(True)

  def f(x, consts):
    invals = list(consts)
    invals.insert(i, x)
    (out,) = _bind(eqn, invals)
    return out

  return f


def _vjp_route(pool: Callable) -> Callable:
  """The max pool's own derivative as the router (XLA's select-and-scatter: first arg-max)."""

  def route(a, consts, g):
    return jax.vjp(lambda a: pool(a, consts), a)[1](g)[0]

  return route


def _first_argmax_route(axes: Sequence[int]) -> Callable:
  """For ``reduce_max`` over ``axes``: ``g`` to the first arg-max of each reduced group.

  (JAX's own derivative of ``reduce_max`` shares ``g`` equally between ties.)
  """

  def route(a, consts, g):
    del consts
    keep = [i for i in range(a.ndim) if i not in axes]
    perm = [*keep, *axes]
    moved = jnp.transpose(a, perm)
    flat = moved.reshape(*moved.shape[:len(keep)], -1)
    onehot = jax.nn.one_hot(jnp.argmax(flat, axis=-1), flat.shape[-1], dtype=a.dtype)
    routed = (g[..., None] * onehot).reshape(moved.shape)
    return jnp.transpose(routed, np.argsort(perm))

  return route


def _paired(f: Callable) -> Callable:
  return jax.vmap(f, in_axes=(0, None))


def _unsupported(owner: str, what: str, eqn, why: str) -> ValueError:
  return ValueError(
      f"model: {owner} applies {what}{_location(eqn)}, {why}; DeepLIFT's rules are defined "
      "for linear layers (convolutions, dense layers, sums, average pooling, BatchNorm in "
      "eval mode, residual additions), elementwise nonlinearities of one tensor (ReLU, "
      "tanh, sigmoid, jax.nn activations) and max pooling"
  )


def _single_elementwise(eqn, dependent: Sequence[bool]) -> bool:
  return (sum(dependent) == 1 and len(eqn.outvars) == 1
          and eqn.invars[dependent.index(True)].aval.shape == eqn.outvars[0].aval.shape)


def _evaluate(jaxpr, consts: Sequence, args: Sequence, dependent: Sequence[bool],
              owner: str, site=None) -> tuple[list, list[bool]]:
  """``jaxpr`` on ``args`` (dependent ones stacked ``(2, ...)``); outputs and their flags.

  Each input-dependent variable also records its *elementwise origin*: the
  variable ``r`` it is an elementwise function of, and the equations computing
  it from ``r``. Where two such functions of the same ``r`` are multiplied,
  divided, compared or selected between (``jax.nn.gelu`` written out as
  ``x * (1 + tanh(...)) / 2``, a leaky ReLU as ``jnp.where(x > 0, x, a * x)``),
  the whole function of ``r`` is one nonlinearity and gets the Rescale rule.
  """
  env: dict[Any, Any] = {}
  dep: dict[Any, bool] = {}
  origin: dict[Any, tuple[Any, tuple[int, ...]]] = {}

  def read(atom):
    return atom.val if isinstance(atom, jcore.Literal) else env[atom]

  def is_dep(atom) -> bool:
    return not isinstance(atom, jcore.Literal) and dep.get(atom, False)

  variables = [*jaxpr.constvars, *jaxpr.invars]
  flags = [False] * len(jaxpr.constvars) + list(dependent)
  for var, value, d in zip(variables, [*consts, *args], flags, strict=True):
    env[var], dep[var] = value, d
    origin[var] = (var, ())
  for index, eqn in enumerate(jaxpr.eqns):
    here = site or eqn
    invals = [read(a) for a in eqn.invars]
    d_in = [is_dep(a) for a in eqn.invars]
    root, region = _shared_origin(eqn, d_in, origin)
    if root is not None and _needs_composite(eqn, d_in):
      region = (*region, index)
      f = _region_function(jaxpr, region, root)
      outs, out_dep = [_rescale(_paired(f), env[root], _region_consts(jaxpr, region, root, env))
                       ], [True]
    elif root is not None and eqn.primitive.name in _COMPARISONS:
      in_axes = [0 if d else None for d in d_in]
      outs = jax.vmap(lambda *a, eqn=eqn: _bind(eqn, list(a)), in_axes=in_axes)(*invals)
      out_dep, region = [True], (*region, index)
    else:
      outs, out_dep = _evaluate_eqn(eqn, invals, d_in, owner, here)
      region = (*region, index) if root is not None else None
    for var, value, d in zip(eqn.outvars, outs, out_dep, strict=True):
      if not isinstance(var, jcore.DropVar):
        env[var], dep[var] = value, d
        origin[var] = (root, region) if region is not None else (var, ())
  return [read(a) for a in jaxpr.outvars], [is_dep(a) for a in jaxpr.outvars]


def _shared_origin(eqn, d_in: list[bool], origin: dict) -> tuple[Any, tuple[int, ...]]:
  """``(r, equations)`` if ``eqn`` is elementwise in operands that are all functions of ``r``."""
  if (eqn.primitive.name not in _REGION | _CALLS or len(eqn.outvars) != 1 or not any(d_in)
      or any(a.aval.shape != eqn.outvars[0].aval.shape
             for a, d in zip(eqn.invars, d_in, strict=True) if d)):
    return None, ()
  found = [origin[a] for a, d in zip(eqn.invars, d_in, strict=True) if d]
  roots = {id(r) for r, _ in found}
  if len(roots) != 1:
    return None, ()
  return found[0][0], tuple(sorted({i for _, region in found for i in region}))


def _needs_composite(eqn, d_in: list[bool]) -> bool:
  name = eqn.primitive.name
  return ((name in ("mul", "max", "min", "pow", "atan2", *_CALLS) and sum(d_in) > 1)
          or (name == "div" and d_in[1]) or (name == "select_n" and d_in[0]))


def _region_consts(jaxpr, region: tuple[int, ...], root, env: dict) -> list:
  return [env[v] for v in _region_inputs(jaxpr, region, root)]


def _region_inputs(jaxpr, region: tuple[int, ...], root) -> list:
  """The variables the equations ``region`` read that they do not compute (but ``root``)."""
  made = {root}
  found = []
  for i in region:
    eqn = jaxpr.eqns[i]
    for a in eqn.invars:
      if not isinstance(a, jcore.Literal) and a not in made and a not in found:
        found.append(a)
    made.update(eqn.outvars)
  return found


def _region_function(jaxpr, region: tuple[int, ...], root) -> Callable:
  """The equations ``region`` as a function of ``root`` (one member) and their other inputs."""
  inputs = _region_inputs(jaxpr, region, root)

  def f(r, consts):
    local = {root: r, **dict(zip(inputs, consts, strict=True))}
    for i in region:
      eqn = jaxpr.eqns[i]
      outs = _bind(eqn, [a.val if isinstance(a, jcore.Literal) else local[a]
                         for a in eqn.invars])
      local.update(zip(eqn.outvars, outs, strict=True))
    return local[jaxpr.eqns[region[-1]].outvars[0]]

  return f


def _evaluate_eqn(eqn, invals: list, d_in: list[bool], owner: str, here):
  name = eqn.primitive.name
  n_out = len(eqn.outvars)
  if not any(d_in):
    return _bind(eqn, invals), [False] * n_out
  consts = [v for v, d in zip(invals, d_in, strict=True) if not d]
  if name in _CALLS:
    call = _call_name(eqn)
    if call in _ACTIVATION_CALLS and _single_elementwise(eqn, d_in):
      pair = invals[d_in.index(True)]
      return [_rescale(_paired(_half(eqn, d_in)), pair, consts)], [True]
    body, body_consts = _body_and_consts(eqn)
    if body is None:
      raise _unsupported(owner, f"the call {call}", here, "whose body cannot be read")
    outs, out_dep = _evaluate(body, body_consts, invals, d_in, owner, here)
    return outs, out_dep
  if name in ("reduce_window_max", "reduce_max") and d_in == [True]:
    pool = _half(eqn, d_in)
    route = (_vjp_route(pool) if name == "reduce_window_max"
             else _first_argmax_route(tuple(eqn.params["axes"])))
    return [_maxpool(pool, route, invals[0], consts)], [True]
  if name in _ELEMENTWISE and _single_elementwise(eqn, d_in):
    pair = invals[d_in.index(True)]
    return [_rescale(_paired(_half(eqn, d_in)), pair, consts)], [True]
  linear = name in _LINEAR or (name in _BILINEAR and sum(d_in) == 1)
  if name in _INDEX_OPERANDS:
    fixed = _INDEX_OPERANDS[name] or range(1 if name == "dynamic_slice" else 2, len(d_in))
    linear = not any(d_in[i] for i in fixed)
  if not linear:
    raise _unsupported(owner, _describe(eqn, d_in), here, _why(eqn, d_in))
  in_axes = [0 if d else None for d in d_in]
  outs = jax.vmap(lambda *a: _bind(eqn, list(a)), in_axes=in_axes)(*invals)
  return outs, [True] * n_out


def _describe(eqn, d_in: list[bool]) -> str:
  name = eqn.primitive.name
  if name in ("mul", "dot_general", "conv_general_dilated"):
    return f"a product of two input-dependent tensors ({name})"
  if name == "div":
    return "a division by an input-dependent tensor (div)"
  if name == "select_n":
    return "a choice that depends on the input (jnp.where(x > 0, ...), select_n)"
  if name in _ELEMENTWISE:
    return f"{_activation_name(eqn)} of two input-dependent tensors"
  return f"{_activation_name(eqn)} (the {name} primitive)"


def _why(eqn, d_in: list[bool]) -> str:
  if eqn.primitive.name in ("mul", "div", "dot_general", "conv_general_dilated", "max", "min"):
    return ("for which DeepLIFT defines no rule (as in gating units, attention, "
            "LayerNorm or BatchNorm in training mode)")
  return "for which DeepLIFT defines no rule"


def paired_forward(model: nnx.Module, pair: jax.Array) -> jax.Array:
  """``model`` on ``pair`` ``(2, B, ...)`` (input, reference), with DeepLIFT's backward rules.

  Forward values are ``model(pair[0])`` and ``model(pair[1])``; reverse-mode
  derivatives are DeepLIFT multipliers (see the module docstring).

  Raises:
    ValueError: the model applies an operation without a DeepLIFT rule to its
      input (the message names it and where the model calls it).
  """
  graphdef, state = nnx.split(model)

  def forward(state, x):  # merged inside the trace: the model may update its state
    return nnx.merge(graphdef, state)(x)

  closed, shape = jax.make_jaxpr(forward, return_shape=True)(state, pair[0])
  leaves = jax.tree.leaves(state)
  dependent = [False] * len(leaves) + [True]
  outs, out_dep = _evaluate(closed.jaxpr, closed.consts, [*leaves, pair], dependent,
                            type(model).__name__)
  outs = [o if d else jnp.broadcast_to(o, (2, *jnp.shape(o)))
          for o, d in zip(outs, out_dep, strict=True)]
  return jax.tree.unflatten(jax.tree.structure(shape), outs)
