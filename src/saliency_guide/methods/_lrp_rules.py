r"""LRP's machinery: the rules as modified gradients, and any NNX model run with them.

Every rule of layer-wise relevance propagation maps the relevance :math:`R`
at a linear layer's output :math:`z = Wx + b` to its input. Written as a
modified gradient (the formulation of zennit, Anders et al. 2021),

.. math:: R_\text{in} = x' \odot \Big(W'^\top \frac{R}{\mathrm{stab}(z')}\Big),
          \qquad z' = W' x' + b',

a rule is a choice of modified input :math:`x'`, parameters :math:`(W', b')`
and stabiliser; :func:`rule_relevance` computes it with ``jax.vjp`` of the
layer's own forward function, and each ``nnx.Conv`` / ``nnx.Linear`` is run
as a :func:`jax.custom_vjp` whose backward pass is its rule.

:func:`relevance` runs any NNX model this way. The model is rebuilt inside the
traced function (the caller's model is not modified) with every ``nnx.Conv``
and ``nnx.Linear`` replaced by a rule layer (an ``nnx.BatchNorm`` called on a
conv's output is folded into that conv: "canonised"); the forward function is
traced to a jaxpr and evaluated again, equation by equation, where

* ReLUs pass the relevance through unchanged (zennit's ``Pass``; the same as
  their gradient wherever the next layer's rule multiplies by its input);
* max-pooling, reshapes, slices, padding and the like keep their gradient:
  max-pooling gives a window's relevance to its winner;
* sums of two activations (residual additions), average and global average
  pooling, and scalings by a constant take the proportional rule
  :math:`R_i = x_i\, \partial_i y\, R / \mathrm{stab}(y)` (zennit's ``Norm``);
* anything else that acts on the images (another activation, a layer without
  a rule) is an error naming it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax.extend import core as jcore

from saliency_guide.layers import COMPOSITIONS
from saliency_guide.methods._feature_maps import _replace, layer_name
from saliency_guide.methods._relu_rules import (
    _CALLS,
    _CUSTOM,
    _NO_RULE_CALLS,
    _REMATS,
    _activation_name,
    _bind,
    _body_and_consts,
    _call_name,
    _is_zero_value,
    _location,
    _single_relu,
)

__all__ = ["COMPOSITES", "RULES", "Plan", "Rule", "assign", "canonized", "plan", "relevance",
           "rule_relevance"]

#: The rule names of :func:`~saliency_guide.methods.lrp`.
RULES = ("zero", "epsilon", "gamma", "zplus", "alphabeta", "flat", "wsquare", "zbox")

#: zennit's stabiliser of every rule but ε (and of the proportional rule between layers).
STABILIZER = 1e-6

_LAYER_CALL = "_lrp_rule_layer"


class Rule(NamedTuple):
  """A rule and its parameters (hashable: a static argument of the jitted core)."""

  name: str
  epsilon: float = 1e-6
  gamma: float = 0.25
  alpha: float = 2.0
  beta: float = 1.0
  low: float = 0.0
  high: float = 1.0


#: The published composites (zennit's presets): ``{selector: rule name}``; ``"first"`` is
#: the first conv/dense layer of the forward pass (for ``epsilon_gamma_box``, the first conv).
COMPOSITES: dict[str, dict[str, str]] = {
    "epsilon_plus": {"conv": "zplus", "linear": "epsilon"},
    "epsilon_plus_flat": {"first": "flat", "conv": "zplus", "linear": "epsilon"},
    "epsilon_gamma_box": {"first_conv": "zbox", "conv": "gamma", "linear": "epsilon"},
    "epsilon_alpha2_beta1": {"conv": "alphabeta", "linear": "epsilon"},
}


# --------------------------------------------------------------------------- #
# One layer: the rules.                                                        #
# --------------------------------------------------------------------------- #


def stabilize(z: jax.Array, epsilon: float) -> jax.Array:
  r""":math:`z + \epsilon\,\mathrm{sign}(z)` with :math:`\mathrm{sign}(0) = +1` (zennit's)."""
  return z + jnp.where(z >= 0, epsilon, -epsilon).astype(z.dtype)


def _safe_divide(r: jax.Array, z: jax.Array) -> jax.Array:
  """``r / z``, and 0 where ``z == 0`` (LRP-0: no stabiliser)."""
  zero = z == 0
  return jnp.where(zero, jnp.zeros_like(r), r / jnp.where(zero, jnp.ones_like(z), z))


Apply = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]  # (kernel, bias, x) -> z


def rule_relevance(rule: Rule, apply: Apply, kernel: jax.Array, bias: jax.Array,
                   x: jax.Array, r: jax.Array) -> jax.Array:
  r"""The relevance :math:`R_\text{in}` at the input ``x`` of the layer ``apply``.

  ``apply(kernel, bias, x)`` is the layer's affine map :math:`z = Wx + b`; the
  rule evaluates it with modified inputs and parameters and takes input
  gradients of it (:math:`W'^\top s`) with ``jax.vjp``, as zennit's hooks do.
  """
  pos, neg = (lambda a: jnp.maximum(a, 0)), (lambda a: jnp.minimum(a, 0))
  zeros = jnp.zeros_like(bias)

  def grad(k, xin, s):  # W'^T s: the input gradient of the layer with kernel k
    return jax.vjp(lambda v: apply(k, zeros, v), xin)[1](s)[0]

  def stab(z):
    return stabilize(z, STABILIZER)

  name = rule.name
  if name in ("zero", "epsilon"):
    z = apply(kernel, bias, x)
    s = _safe_divide(r, z) if name == "zero" else r / stabilize(z, rule.epsilon)
    return x * grad(kernel, x, s)
  if name == "zplus":
    kp, kn = pos(kernel), neg(kernel)
    z = apply(kp, pos(bias), pos(x)) + apply(kn, zeros, neg(x))
    s = r / stab(z)
    return pos(x) * grad(kp, x, s) + neg(x) * grad(kn, x, s)
  if name == "alphabeta":
    kp, kn = pos(kernel), neg(kernel)
    zp = apply(kp, pos(bias), pos(x)) + apply(kn, zeros, neg(x))
    zn = apply(kn, neg(bias), pos(x)) + apply(kp, zeros, neg(x))
    sp, sn = r / stab(zp), r / stab(zn)
    return (rule.alpha * (pos(x) * grad(kp, x, sp) + neg(x) * grad(kn, x, sp))
            - rule.beta * (pos(x) * grad(kn, x, sn) + neg(x) * grad(kp, x, sn)))
  if name == "gamma":  # zennit's generalised gamma: positive and negative outputs apart
    g = rule.gamma
    kup, kun = kernel + g * pos(kernel), kernel + g * neg(kernel)
    bup, bun = bias + g * pos(bias), bias + g * neg(bias)
    z = apply(kernel, bias, x)
    za = apply(kup, bup, pos(x)) + apply(kun, zeros, neg(x))
    zb = apply(kun, bun, pos(x)) + apply(kup, zeros, neg(x))
    sa = jnp.where(z > 0, r / stab(za), 0.0)
    sb = jnp.where(z < 0, r / stab(zb), 0.0)
    return (pos(x) * grad(kup, x, sa) + neg(x) * grad(kun, x, sa)
            + pos(x) * grad(kun, x, sb) + neg(x) * grad(kup, x, sb))
  if name == "zbox":
    low = jnp.full_like(x, rule.low)
    high = jnp.full_like(x, rule.high)
    kp, kn = pos(kernel), neg(kernel)
    z = apply(kernel, bias, x) - apply(kp, pos(bias), low) - apply(kn, neg(bias), high)
    s = r / stab(z)
    return x * grad(kernel, x, s) - low * grad(kp, x, s) - high * grad(kn, x, s)
  if name == "flat":  # unit inputs and weights, no bias: a uniform spread over the window
    ones = jnp.ones_like(kernel)
    z = apply(ones, zeros, jnp.ones_like(x))
    return grad(ones, x, r / stab(z))
  if name == "wsquare":  # zennit squares every parameter, the bias included
    z = apply(kernel**2, bias**2, jnp.ones_like(x))
    return grad(kernel**2, x, r / stab(z))
  raise ValueError(f"rule: unknown rule {name!r}; expected one of {RULES}")


def _layer_apply(graphdef: nnx.GraphDef, state: nnx.State) -> Apply:
  """``(kernel, bias, x) -> layer(x)`` with the kernel replaced, its own bias zeroed, + bias."""

  def apply(kernel, bias, x):
    def swap(path, leaf):
      name = getattr(path[0], "key", None)
      if name == "kernel":
        return kernel
      return jnp.zeros_like(leaf) if name == "bias" else leaf

    layer = nnx.merge(graphdef, jax.tree_util.tree_map_with_path(swap, state))
    return layer(x) + bias

  return apply


def _rule_layer_call(rule: Rule, graphdef: nnx.GraphDef, params: Any, x: jax.Array):
  """The layer's output; its VJP is the rule. ``params = (state, kernel, bias)``."""

  @jax.custom_vjp
  def _lrp_rule_layer(params, x):
    state, kernel, bias = params
    return _layer_apply(graphdef, state)(kernel, bias, x)

  def fwd(params, x):
    return _lrp_rule_layer(params, x), (params, x)

  def bwd(saved, r):
    params, x = saved
    state, kernel, bias = params
    r_in = rule_relevance(rule, _layer_apply(graphdef, state), kernel, bias, x, r)
    return jax.tree.map(jnp.zeros_like, params), r_in.astype(x.dtype)

  _lrp_rule_layer.defvjp(fwd, bwd)
  return _lrp_rule_layer(params, x)


def _params(layer: nnx.Module, bn: nnx.BatchNorm | None) -> tuple[jax.Array, jax.Array]:
  r"""``(kernel, bias)`` of ``layer``, with the BatchNorm ``bn`` folded in (canonisation).

  .. math:: W' = W \odot s, \quad b' = (b - \mu) \odot s + \beta, \quad
            s = \gamma / \sqrt{\sigma^2 + \epsilon}.
  """
  kernel = layer.kernel[...]
  features = kernel.shape[-1]
  bias = layer.bias[...] if getattr(layer, "bias", None) is not None else jnp.zeros(
      (features,), kernel.dtype)
  if bn is None:
    return kernel, bias
  scale = bn.scale[...] if bn.scale is not None else jnp.ones((features,), kernel.dtype)
  shift = bn.bias[...] if bn.bias is not None else jnp.zeros((features,), kernel.dtype)
  s = scale / jnp.sqrt(bn.var[...] + bn.epsilon)
  return kernel * s, (bias - bn.mean[...]) * s + shift


class _RuleLayer(nnx.Module):
  """Stands in for an ``nnx.Conv``/``nnx.Linear`` (and its folded BatchNorm): the rule's VJP."""

  def __init__(self, layer: nnx.Module, rule: Rule | None, bn: nnx.BatchNorm | None):
    self.layer, self.rule, self.bn = layer, rule, bn

  def __call__(self, x: jax.Array) -> jax.Array:
    kernel, bias = _params(self.layer, self.bn)
    graphdef, state = nnx.split(self.layer)
    if self.rule is None:  # canonised only: the folded layer itself
      return _layer_apply(graphdef, state)(kernel, bias, x)
    return _rule_layer_call(self.rule, graphdef, (state, kernel, bias), x)

  def __getattr__(self, name: str) -> Any:  # attributes the parent reads (in_features, ...)
    if name.startswith("_") or name in ("layer", "rule", "bn"):
      raise AttributeError(name)
    return getattr(self.layer, name)


class _Identity(nnx.Module):
  """Stands in for a BatchNorm folded into the conv before it."""

  def __call__(self, x: jax.Array, *args: Any, **kwargs: Any) -> jax.Array:
    return x


# --------------------------------------------------------------------------- #
# The model's layers: which, in what order, which BatchNorm follows which conv. #
# --------------------------------------------------------------------------- #

Path = tuple[str | int, ...]
_RULED = (nnx.Conv, nnx.Linear)
_CONTAINERS = (nnx.List, nnx.Dict, nnx.Sequential)


class Plan(NamedTuple):
  """The layers of one forward pass: ``layers`` ``(path, kind)`` in call order, ``folds``
  ``(conv path, BatchNorm path)``."""

  layers: tuple[tuple[Path, str], ...]
  folds: tuple[tuple[Path, Path], ...]


class _Probe(nnx.Module):
  def __init__(self, inner: nnx.Module, path: Path, log: list):
    self.inner, self.path, self.log = inner, path, log

  def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
    out = self.inner(x, *args, **kwargs)
    self.log.append((self.path, self.inner, id(x), id(out), getattr(x, "ndim", 0)))
    return out

  def __getattr__(self, name: str) -> Any:
    if name.startswith("_") or name in ("inner", "path", "log"):
      raise AttributeError(name)
    return getattr(self.inner, name)


def _is_flax_layer(node: Any) -> bool:
  """A layer of Flax's (or a subclass of a ruled one): probed, then ruled or refused."""
  return isinstance(node, (*_RULED, nnx.BatchNorm)) or (
      isinstance(node, nnx.Module) and not isinstance(node, _CONTAINERS)
      and type(node).__module__.startswith("flax."))


def _kind(node: nnx.Module) -> str:
  return "conv" if isinstance(node, nnx.Conv) else "linear"


def plan(model: nnx.Module, images: jax.Array) -> Plan:
  """The layers LRP rewrites, from one abstract forward pass on ``images`` (nothing computed).

  Raises:
    ValueError: the model calls a Flax layer without a rule (LayerNorm, a Linen
      module through ``nnx.bridge.ToNNX``, ...), a BatchNorm that does not follow
      a conv directly or that uses batch statistics, or has no conv/dense layer.
  """
  owner = type(model).__name__
  graphdef, state = nnx.split(model)
  log: list = []

  def forward(state, images):
    fresh = nnx.merge(graphdef, state, copy=True)
    paths = [tuple(p) for p, node in nnx.iter_graph(fresh) if p and _is_flax_layer(node)]
    for path in sorted(paths, key=len, reverse=True):
      fresh = _replace(fresh, path, lambda node, rest, path=path: _Probe(node, path, log))
    if _is_flax_layer(fresh):
      raise _unsupported(owner, fresh, ())
    return fresh(images)

  jax.eval_shape(forward, state, jax.ShapeDtypeStruct(images.shape, images.dtype))
  layers, folds, outputs = [], [], {}
  for path, node, x_id, out_id, ndim in log:
    if isinstance(node, _RULED):
      layers.append((path, _kind(node)))
      outputs[out_id] = (path, node)
    elif isinstance(node, nnx.BatchNorm):
      source = outputs.get(x_id)
      if source is None or not isinstance(source[1], nnx.Conv | nnx.Linear):
        raise ValueError(
            f"model: {owner} calls the BatchNorm at {layer_name(path)!r} on something other "
            "than a conv's or dense layer's output; LRP folds a BatchNorm into the layer "
            "before it (canonisation) and has no rule for a BatchNorm on its own")
      if not node.use_running_average or node.axis not in (-1, ndim - 1):
        raise ValueError(
            f"model: the BatchNorm at {layer_name(path)!r} of {owner} normalises with batch "
            "statistics or over an axis other than the features; LRP folds an eval-mode "
            "BatchNorm (use_running_average=True, axis=-1) into the layer before it")
      folds.append((source[0], path))
    elif isinstance(node, nnx.Dropout) and node.deterministic:
      continue
    else:
      raise _unsupported(owner, node, path)
  if not layers:
    raise ValueError(f"model: {owner} calls no nnx.Conv or nnx.Linear layer: LRP's rules are "
                     "defined for those layers")
  if len({p for p, _ in folds}) != len(folds):
    raise ValueError(f"model: {owner} calls a layer that feeds two BatchNorms; it cannot be "
                     "folded into both")
  return Plan(tuple(layers), tuple(folds))


def _unsupported(owner: str, node: Any, path: Path) -> ValueError:
  where = f" at {layer_name(path)!r}" if path else ""
  return ValueError(
      f"model: {owner} calls {type(node).__module__.split('.')[0]}'s {type(node).__name__}"
      f"{where}, a layer LRP has no rule for; supported: nnx.Conv, nnx.Linear, an eval-mode "
      "nnx.BatchNorm right after one of them (folded into it), ReLU, max and average "
      "pooling, global average pooling, flatten and residual additions")


def _parse_rule(value: Any, defaults: Rule, where: str) -> Rule:
  """A rule name, or ``(name, {parameter: value})``, as a :class:`Rule`."""
  options: Mapping[str, Any] = {}
  if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], Mapping):
    value, options = value
  if not isinstance(value, str) or value not in RULES:
    raise ValueError(f"composite: {where} is assigned {value!r}; expected a rule name, one of "
                     f"{RULES}, or (name, {{parameter: value}})")
  known = ("epsilon", "gamma", "alpha", "beta", "low", "high")
  for key, v in options.items():
    if key not in known:
      raise ValueError(f"composite: {where}: unknown rule parameter {key!r}; expected some of "
                       f"{known}")
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
      raise ValueError(f"composite: {where}: {key} must be a finite number, got {v!r}")
  rule = defaults._replace(name=value, **{k: float(v) for k, v in options.items()})
  if value == "alphabeta" and (rule.alpha - rule.beta != 1 or rule.beta < 0):
    raise ValueError(f"composite: {where}: alphabeta needs alpha - beta = 1 and beta >= 0 "
                     f"(conservation), got alpha={rule.alpha}, beta={rule.beta}")
  if value == "zbox" and not rule.low < rule.high:
    raise ValueError(f"composite: {where}: zbox needs low < high, got low={rule.low}, "
                     f"high={rule.high}")
  if value == "gamma" and rule.gamma < 0:
    raise ValueError(f"composite: {where}: gamma must be >= 0, got {rule.gamma}")
  return rule


def assign(the_plan: Plan, rule: str, composite: Any, defaults: Rule,
           ) -> tuple[tuple[Path, Rule], ...]:
  """Each layer's rule: a path named in ``composite``, else ``"first"``, else its kind.

  ``rule="zbox"`` is the zᴮ rule at the first layer and ε everywhere else.
  """
  layers = the_plan.layers
  first = layers[0][0]
  first_conv = next((p for p, k in layers if k == "conv"), None)
  if composite is None:
    spec: dict[Any, Any] = ({"first": "zbox", "conv": "epsilon", "linear": "epsilon"}
                            if rule == "zbox" else {"conv": rule, "linear": rule})
  elif isinstance(composite, str):
    spec = dict(COMPOSITES[composite])
  else:
    spec = dict(composite)
  paths = {layer_name(p): p for p, _ in layers}
  selectors = {"first", "first_conv", "conv", "linear"}
  for key in spec:
    if not isinstance(key, str) or (key not in selectors and key not in paths):
      raise ValueError(
          f"composite: unknown layer {key!r}; expected 'first', 'first_conv', 'conv', "
          f"'linear' or the path of a conv/dense layer of the model: {', '.join(paths)}")
  out = []
  for path, kind in layers:
    name = layer_name(path)
    if name in spec:
      key = name
    elif path == first and "first" in spec:
      key = "first"
    elif path == first_conv and "first_conv" in spec:
      key = "first_conv"
    elif kind in spec:
      key = kind
    else:
      key = None
    value = rule if key is None else spec[key]
    where = f"layer {name!r}" if key is None else f"{key!r}"
    out.append((path, _parse_rule(value, defaults, where)))
  return tuple(out)


# --------------------------------------------------------------------------- #
# The whole model: the forward pass re-evaluated with the rules.              #
# --------------------------------------------------------------------------- #

_PASS = frozenset({
    "reshape", "transpose", "squeeze", "expand_dims", "broadcast_in_dim", "convert_element_type",
    "copy", "copy_p", "slice", "dynamic_slice", "pad", "concatenate", "rev", "reduce_max",
    "reduce_window_max", "reduce_precision", "gather", "max", "stop_gradient",
    "optimization_barrier",
})
_NO_GRADIENT = frozenset({"gt", "ge", "lt", "le", "eq", "ne", "argmax", "argmin", "sign"})
_PROPORTIONAL = frozenset({"add", "sub", "neg", "reduce_sum", "reduce_window_sum", "mul", "div",
                           "cumsum"})


@jax.custom_vjp
def pass_relu(x: jax.Array) -> jax.Array:
  """ReLU whose backward pass hands the relevance through unchanged (zennit's ``Pass``)."""
  return jax.nn.relu(x)


pass_relu.defvjp(lambda x: (jax.nn.relu(x), None), lambda _, r: (r,))


def _proportional(eqn, invals: list, dep: list[bool], epsilon: float) -> jax.Array:
  r"""Bind ``eqn`` with the proportional rule: :math:`R_i = x_i\,(\partial y/\partial x_i)^\top
  R / \mathrm{stab}(y)` for each input-dependent operand (``epsilon = 0``: no stabiliser)."""
  index = [i for i, d in enumerate(dep) if d]

  def call(fixed, *moving):
    vals, fixed, moving = [], list(fixed), list(moving)
    for i in range(len(invals)):
      vals.append(moving.pop(0) if i in index else fixed.pop(0))
    return _bind(eqn, vals)[0]

  @jax.custom_vjp
  def proportional(fixed, *moving):
    return call(fixed, *moving)

  def fwd(fixed, *moving):
    return call(fixed, *moving), (fixed, moving)

  def bwd(saved, r):
    fixed, moving = saved
    y, vjp = jax.vjp(functools.partial(call, fixed), *moving)
    grads = vjp(_safe_divide(r, y) if epsilon == 0 else r / stabilize(y, epsilon))
    return (jax.tree.map(jnp.zeros_like, fixed),
            *(m * g for m, g in zip(moving, grads, strict=True)))

  proportional.defvjp(fwd, bwd)
  fixed = [v for i, v in enumerate(invals) if i not in index]
  return proportional(fixed, *[invals[i] for i in index])


def _passes(jaxpr) -> bool:
  """Whether ``jaxpr`` only computes gradient-pass operations (a custom max-pool, a ReLU)."""
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    body, _ = _body_and_consts(eqn)
    if name in _PASS or name in _NO_GRADIENT:
      continue
    if body is None or not _passes(body):
      return False
  return True


def _is_relu_max(eqn, zero: set) -> int | None:
  """The operand index that ``max(x, 0)`` rectifies, else ``None``."""
  if eqn.primitive.name != "max":
    return None
  a, b = eqn.invars

  def is_zero(atom):
    return _is_zero_value(atom.val) if isinstance(atom, jcore.Literal) else atom in zero

  if is_zero(b) and not is_zero(a):
    return 0
  if is_zero(a) and not is_zero(b):
    return 1
  return None


def _run(jaxpr, consts: Sequence, args: Sequence, dep_in: Sequence[bool], owner: str,
         epsilon: float, site=None) -> tuple[list, list[bool]]:
  """``jaxpr`` evaluated on ``args``, the rules between layers applied; outputs and dependence.

  ``epsilon`` stabilises the proportional rule (0 under LRP-0, else zennit's 1e-6).
  """
  env: dict[Any, Any] = {}
  dep: dict[Any, bool] = {}
  zero: set = set()

  def read(atom):
    return atom.val if isinstance(atom, jcore.Literal) else env[atom]

  def is_dep(atom):
    return not isinstance(atom, jcore.Literal) and dep.get(atom, False)

  variables = [*jaxpr.constvars, *jaxpr.invars]
  flags = [False] * len(jaxpr.constvars) + list(dep_in)
  for var, value, d in zip(variables, [*consts, *args], flags, strict=True):
    env[var], dep[var] = value, d
    if not d and _is_zero_value(value):
      zero.add(var)
  for eqn in jaxpr.eqns:
    name, here = eqn.primitive.name, site or eqn
    invals = [read(a) for a in eqn.invars]
    d_in = [is_dep(a) for a in eqn.invars]
    out_dep = [any(d_in)] * len(eqn.outvars)
    body, body_consts = _body_and_consts(eqn)
    if not any(d_in):
      outs = _bind(eqn, invals)
      if name in ("broadcast_in_dim", "convert_element_type", "reshape") and all(
          (isinstance(a, jcore.Literal) and _is_zero_value(a.val)) or a in zero
          for a in eqn.invars):
        zero.update(eqn.outvars)
    elif name in _CUSTOM and _call_name(eqn) in COMPOSITIONS:  # a fused ReLU and max-pool
      outs, out_dep = _run(body, body_consts, invals, d_in, owner, epsilon, here)
    elif name == "custom_vjp_call" and _call_name(eqn) == _LAYER_CALL:
      outs = _bind(eqn, invals)
    elif (i := _is_relu_max(eqn, zero)) is not None:
      outs = [pass_relu(invals[i])]
    elif name in _CUSTOM:
      call = _call_name(eqn)
      if call in _NO_RULE_CALLS:
        raise _no_rule(owner, f"jax.nn.{call}", here)
      if body is not None and _single_relu(body) and len(eqn.invars) == 1:
        outs = [pass_relu(invals[0])]
      elif body is not None and _passes(body):
        outs = _bind(eqn, invals)  # a custom max-pool: its own (winner-take-all) gradient
      else:
        raise _no_rule(owner, f"the custom-derivative function {call}", here)
    elif name in _CALLS | _REMATS and body is not None:
      call = _call_name(eqn)
      if call in _NO_RULE_CALLS:
        raise _no_rule(owner, f"jax.nn.{call}", here)
      outs, out_dep = _run(body, body_consts, invals, d_in, owner, epsilon, here)
    elif name in _PASS or name in _NO_GRADIENT:
      outs = _bind(eqn, invals)
    elif name in _PROPORTIONAL and (name not in ("mul", "div") or d_in.count(True) == 1) and (
        name != "div" or d_in[0]):
      outs = [_proportional(eqn, invals, d_in, epsilon)]
    else:
      raise _no_rule(owner, _describe_primitive(eqn), here)
    for var, value, d in zip(eqn.outvars, outs, out_dep, strict=True):
      if not isinstance(var, jcore.DropVar):
        env[var], dep[var] = value, d
  return [read(a) for a in jaxpr.outvars], [is_dep(a) for a in jaxpr.outvars]


def _describe_primitive(eqn) -> str:
  name = eqn.primitive.name
  if name in ("dot_general", "conv_general_dilated"):
    return f"a {name} outside an nnx.Linear/nnx.Conv layer"
  if name in ("mul", "div"):
    return f"{name} of two activations"
  return _activation_name(eqn)


def _no_rule(owner: str, what: str, eqn) -> ValueError:
  return ValueError(
      f"model: {owner} applies {what}{_location(eqn)}, for which LRP has no rule; "
      "supported: nnx.Conv, nnx.Linear, an eval-mode nnx.BatchNorm right after one of them, "
      "ReLU, max and average pooling, global average pooling, flatten and residual additions")


def _rewired(graphdef: nnx.GraphDef, state: nnx.State, rules: Mapping[Path, Rule | None],
             folds: Sequence[tuple[Path, Path]]) -> nnx.Module:
  """A copy of the model (rebuilt at this trace level): rule layers, BatchNorms folded."""
  fresh = nnx.merge(graphdef, state, copy=True)
  bns = {conv: _lookup(fresh, bn) for conv, bn in folds}
  for _, bn in folds:
    fresh = _replace(fresh, bn, lambda node, rest: _Identity())
  for path, rule in rules.items():
    fresh = _replace(fresh, path, lambda node, rest, p=path, r=rule: _RuleLayer(
        node, r, bns.get(p)))
  return fresh


def _lookup(node: Any, path: Path) -> Any:
  for part in path:
    node = node[part] if isinstance(part, int) or isinstance(node, Mapping) else getattr(
        node, part)
  return node


def canonized(model: nnx.Module, folds: Sequence[tuple[Path, Path]]) -> Callable:
  """``images -> logits`` of ``model`` with each BatchNorm of ``folds`` folded into its layer."""
  graphdef, state = nnx.split(model)
  return lambda images: _rewired(graphdef, state, {conv: None for conv, _ in folds},
                                 folds)(images)


def relevance(model: nnx.Module, images: jax.Array, targets: jax.Array,
              rules: tuple[tuple[Path, Rule], ...], folds: tuple[tuple[Path, Path], ...],
              ) -> jax.Array:
  """The LRP relevance at the input, from :math:`R = f_c(x)` at the target logit."""
  graphdef, state = nnx.split(model)
  owner = type(model).__name__

  def forward(state, images):
    return _rewired(graphdef, state, dict(rules), folds)(images)

  closed = jax.make_jaxpr(forward)(state, images)
  leaves = jax.tree.leaves(state)
  epsilon = 0.0 if all(rule.name == "zero" for _, rule in rules) else STABILIZER

  def logits_of(x):
    outs, _ = _run(closed.jaxpr, closed.consts, [*leaves, x],
                   [False] * len(leaves) + [True], owner, epsilon)
    return outs[0]

  logits, vjp = jax.vjp(logits_of, images)
  start = jax.nn.one_hot(targets, logits.shape[-1], dtype=logits.dtype) * logits
  return vjp(start)[0]

