r"""A modified backward rule at every ReLU of any model (Deconvolution, Guided Backprop).

A modified-backpropagation method is the gradient of the target logit through
the model with another backward rule at every ReLU: a :func:`jax.custom_vjp`
ReLU (:func:`~saliency_guide.methods.deconv_relu`,
:func:`~saliency_guide.methods.guided_relu`), same forward pass. Nothing is
asked of the model: its forward function is traced to a jaxpr, and the jaxpr is
evaluated again, equation by equation, with the rule wherever the model
computes a ReLU of the images, however it is written (``jax.nn.relu``,
``nnx.relu``, ``jnp.maximum(x, 0)``, inside ``jax.jit``, ``lax.scan`` or
``lax.cond``). Every other equation is bound unchanged, so ``jax.grad``
differentiates convolutions, pooling, normalisation and residual additions as
usual. An activation for which no rule is defined (GELU, SiLU, tanh, ...), or a
model without a ReLU, is an error rather than a silent plain gradient.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.extend import core as jcore

from saliency_guide.layers import COMPOSITIONS
from saliency_guide.validation import check_model, check_number

__all__ = ["ReluRuleModel", "apply_relu_rule", "replace_relus", "with_relu_rule", "with_softplus"]

Activation = Callable[[jax.Array], jax.Array]

_PROBE = np.array([-3.0, -1.0, -0.25, 0.0, 0.25, 1.0, 3.0], np.float32)

# Activations of jax.nn (and flax, which re-exports them) that are not ReLUs, as the
# names of the jit / custom_jvp functions that compute them.
_NO_RULE_CALLS = frozenset({
    "celu", "elu", "gelu", "glu", "hard_sigmoid", "hard_silu", "hard_swish", "hard_tanh",
    "leaky_relu", "log_sigmoid", "mish", "relu6", "selu", "sigmoid", "silu", "soft_sign",
    "softplus", "sparse_plus", "sparse_sigmoid", "squareplus", "swish", "tanh",
})
# Smooth elementwise nonlinearities (GELU is tanh or erf inside, unnamed).
_NO_RULE_PRIMITIVES = frozenset({"tanh", "logistic", "erf", "erfc"})
_SIGN_TESTS = frozenset({"gt", "ge", "lt", "le"})
_ZERO, _SIGN = "zero", "sign"  # kinds of variables (see _plan)
# Equations whose output is zero when their input is (to see ``jnp.zeros_like(x)``).
_ZERO_PRESERVING = frozenset({
    "broadcast_in_dim", "convert_element_type", "copy", "copy_p", "expand_dims", "reshape",
    "squeeze", "transpose",
})
_CALLS = frozenset({"jit", "pjit", "closed_call", "core_call"})
_REMATS = frozenset({"checkpoint", "remat", "remat2"})
_CUSTOM = frozenset({"custom_jvp_call", "custom_vjp_call"})
_JAX_DIR = os.path.dirname(jax.__file__) + os.sep
_FLAX_DIR = os.path.dirname(flax.__file__) + os.sep
_JAX_NN = os.path.join("jax", "_src", "nn")


def _is_relu(fn: object) -> bool:
  """Whether ``fn`` computes ``max(x, 0)``, by a numerical probe."""
  if not callable(fn):
    return False
  try:
    with jax.ensure_compile_time_eval():  # concrete even while a jit is tracing
      out = np.asarray(fn(jnp.asarray(_PROBE)))
  except Exception:  # anything that cannot run on a float array is not a ReLU
    return False
  return out.shape == _PROBE.shape and np.array_equal(out, np.maximum(_PROBE, 0))


# --------------------------------------------------------------------------- #
# Reading the jaxpr: where are the ReLUs?                                      #
# --------------------------------------------------------------------------- #


class _Plan(NamedTuple):
  """What to do with each equation of a jaxpr.

  Attributes:
    actions: per equation, ``None`` (bind it unchanged), ``("relu", i)`` (apply
      the rule to operand ``i``), or ``(kind, sub-plan(s))`` for ``"inline"``
      (a jit or remat call), ``"scan"`` and ``"cond"`` whose bodies hold ReLUs.
    relus: the number of ReLUs that will take the rule.
    out_dependent: per output, whether it depends on the inputs.
  """

  actions: tuple[Any, ...]
  relus: int
  out_dependent: tuple[bool, ...]


def _frames(eqn) -> list:
  traceback = eqn.source_info.traceback
  return [] if traceback is None else list(traceback.frames)  # innermost first


def _caller(eqn):
  """The innermost frame outside JAX: the code that asked for this equation."""
  return next((f for f in _frames(eqn) if not f.file_name.startswith(_JAX_DIR)), None)


def _location(eqn) -> str:
  frame = next((f for f in _frames(eqn) if not f.file_name.startswith((_JAX_DIR, _FLAX_DIR))),
               None)
  if frame is None:
    return ""
  return f" at {frame.file_name}:{frame.line_num} ({frame.function_name})"


def _activation_name(eqn) -> str:
  """``jax.nn.gelu`` for a tanh inside ``jax.nn.gelu``, else the primitive's name."""
  for frame in _frames(eqn):
    if _JAX_NN in frame.file_name:
      return f"jax.nn.{frame.function_name}"
  return {"logistic": "sigmoid (lax.logistic)"}.get(eqn.primitive.name, eqn.primitive.name)


def _call_name(eqn) -> str:
  if "name" in eqn.params:
    return str(eqn.params["name"])
  info = getattr(_body(eqn), "debug_info", None)
  return getattr(info, "func_name", None) or eqn.primitive.name


def _body(eqn):
  """The open jaxpr a call-like equation evaluates, or ``None``."""
  return _body_and_consts(eqn)[0]


def _body_and_consts(eqn) -> tuple[Any, Sequence]:
  """The open jaxpr of a call-like equation and its constants (``(None, ())`` if none)."""
  for key in ("jaxpr", "call_jaxpr"):
    body = eqn.params.get(key)
    if body is not None:
      return getattr(body, "jaxpr", body), getattr(body, "consts", ())
  return None, ()


def _plan_body(jaxpr, consts: Sequence, d_in: Sequence[bool], k_in: Sequence[str | None],
               owner: str, site=None) -> _Plan:
  """The plan of a sub-jaxpr whose inputs are flagged ``d_in`` (dependent), ``k_in`` (kind)."""
  return _plan(jaxpr, [False] * len(consts) + list(d_in),
               [_const_kind(c) for c in consts] + list(k_in), owner, site)


def _const_kind(value: object) -> str | None:
  return _ZERO if _is_zero_value(value) else None


def _is_zero_value(value: object) -> bool:
  if isinstance(value, jax.core.Tracer):
    return False
  try:
    array = np.asarray(value)
  except Exception:  # a token, an opaque object
    return False
  return array.dtype != object and array.size > 0 and not array.any()


def _floating(atom) -> bool:
  return jnp.issubdtype(atom.aval.dtype, jnp.floating)


def _single_relu(jaxpr) -> bool:
  """Whether ``jaxpr`` is ``max(x, 0)`` of its one input (through calls, e.g. jax.nn.relu)."""
  if len(jaxpr.invars) != 1 or len(jaxpr.outvars) != 1 or len(jaxpr.eqns) != 1:
    return False
  (x,), (eqn,) = jaxpr.invars, jaxpr.eqns
  if eqn.outvars[0] is not jaxpr.outvars[0]:
    return False
  if eqn.primitive.name == "max":
    a, b = eqn.invars
    literal = (isinstance(a, jcore.Literal) and b is x) or (isinstance(b, jcore.Literal) and a is x)
    zero = a if isinstance(a, jcore.Literal) else b
    return literal and _is_zero_value(zero.val)
  body = _body(eqn)
  return (eqn.primitive.name in _CALLS | _CUSTOM and body is not None
          and list(eqn.invars) == [x] and _single_relu(body))


def _plan(jaxpr, dependent: Sequence[bool], kinds: Sequence[str | None], owner: str,
          site=None) -> _Plan:
  """Find the ReLUs of ``jaxpr``, whose constvars then invars are flagged.

  ``dependent``: whether the variable depends on the inputs (only what does
  matters: a ``max(w, 0)`` of parameters alone is not an activation, and no
  gradient flows through it). ``kinds``: ``"zero"`` for a constant zero,
  ``"sign"`` for a comparison of an input-dependent value with zero, else ``None``.

  ``site`` is the equation of the outermost jaxpr that calls this one: errors
  give its place in the model's code (the jaxpr of a jitted function is cached,
  with the place where it was first traced).

  Raises:
    ValueError: an activation without a rule acts on the inputs, or a ReLU sits
      where the rule cannot reach (inside a custom derivative, a while loop).
  """
  dep: dict[Any, bool] = {}
  kind: dict[Any, str | None] = {}

  def is_dep(atom) -> bool:
    return not isinstance(atom, jcore.Literal) and dep.get(atom, False)

  def kind_of(atom) -> str | None:
    return _const_kind(atom.val) if isinstance(atom, jcore.Literal) else kind.get(atom)

  for var, d, k in zip([*jaxpr.constvars, *jaxpr.invars], dependent, kinds, strict=True):
    dep[var], kind[var] = d, k
  actions, relus = [], 0
  for eqn in jaxpr.eqns:
    name, here = eqn.primitive.name, site or eqn
    d_in = [is_dep(a) for a in eqn.invars]
    k_in = [kind_of(a) for a in eqn.invars]
    zero = [k == _ZERO for k in k_in]
    action, out_dep = None, [any(d_in)] * len(eqn.outvars)
    if name in _ZERO_PRESERVING and zero and all(zero):
      kind.update(dict.fromkeys(eqn.outvars, _ZERO))
    if not any(d_in):
      pass  # parameters and constants only: bound unchanged
    elif name == "max" and any(zero) and _floating(eqn.outvars[0]):
      i = 1 if zero[0] else 0  # the operand that is not the zero
      caller = _caller(eqn)
      library = caller is not None and caller.file_name.startswith(_FLAX_DIR)
      if d_in[i] and not library and eqn.invars[i].aval.shape == eqn.outvars[0].aval.shape:
        action = ("relu", i)  # not inside a library's layer (LayerNorm's variance clip)
    elif name in _SIGN_TESTS and any(zero) and all(_floating(a) for a in eqn.invars):
      kind.update(dict.fromkeys(eqn.outvars, _SIGN))
    elif name == "select_n" and k_in[0] == _SIGN:
      raise _no_rule(owner, "an activation written with jnp.where(x > 0, ...)", here)
    elif name in _NO_RULE_PRIMITIVES:
      raise _no_rule(owner, _activation_name(eqn), here)
    elif name in _CUSTOM and _call_name(eqn) in COMPOSITIONS:  # a fused ReLU and max-pool
      sub = _plan_body(*_body_and_consts(eqn), d_in, k_in, owner, here)
      action = ("inline", sub) if sub.relus else None
      out_dep = list(sub.out_dependent)
    elif name in _CUSTOM:
      (body, consts), call = _body_and_consts(eqn), _call_name(eqn)
      if call in _NO_RULE_CALLS:
        raise _no_rule(owner, f"{call} (jax.nn.{call})", here)
      if _single_relu(body) and len(eqn.invars) == 1:
        action = ("relu", 0)  # jax.nn.relu, nnx.relu, or a ReLU with its own rule
      elif _plan_body(body, consts, d_in, k_in, owner, here).relus:
        raise _unreachable(owner, f"the custom-derivative function {call}", here)
    elif name in _CALLS | _REMATS and _body(eqn) is not None:
      call = _call_name(eqn)
      if call in _NO_RULE_CALLS:
        raise _no_rule(owner, f"{call} (jax.nn.{call})", here)
      sub = _plan_body(*_body_and_consts(eqn), d_in, k_in, owner, here)
      action = ("inline", sub) if sub.relus else None
      out_dep = list(sub.out_dependent)
    elif name == "scan":
      action, out_dep = _plan_scan(eqn, d_in, owner, here)
    elif name == "cond":
      subs = [_plan_body(b.jaxpr, b.consts, d_in[1:], k_in[1:], owner, here)
              for b in eqn.params["branches"]]
      action = ("cond", tuple(subs)) if any(s.relus for s in subs) else None
      out_dep = [d_in[0] or any(s.out_dependent[i] for s in subs)
                 for i in range(len(eqn.outvars))]
    else:
      for body in jcore.jaxprs_in_params(eqn.params):  # while loops and the like
        n = len(body.constvars) + len(body.invars)
        if _plan(body, [True] * n, [None] * n, owner, here).relus:
          raise _unreachable(owner, f"a {name} primitive", here)
    if action is not None:
      relus += 1 if action[0] == "relu" else _relus_in(action)
    actions.append(action)
    for var, d in zip(eqn.outvars, out_dep, strict=True):
      dep[var] = d
  return _Plan(tuple(actions), relus, tuple(is_dep(v) for v in jaxpr.outvars))


def _relus_in(action) -> int:
  subs = action[1] if action[0] == "cond" else (action[1],)
  return sum(s.relus for s in subs)


def _plan_scan(eqn, d_in: list[bool], owner: str, site):
  """The plan of a scan body, with the carry's dependence iterated to a fixed point."""
  p = eqn.params
  body, nc, nk = p["jaxpr"], p["num_consts"], p["num_carry"]
  deps = [False] * len(body.consts) + list(d_in)
  kinds = [_const_kind(c) for c in body.consts] + [None] * len(d_in)
  offset = len(body.consts) + nc
  while True:
    sub = _plan(body.jaxpr, deps, kinds, owner, site)
    carry = [a or b for a, b in zip(deps[offset:offset + nk], sub.out_dependent[:nk],
                                    strict=True)]
    if carry == deps[offset:offset + nk]:
      break
    deps[offset:offset + nk] = carry
  return (("scan", sub) if sub.relus else None), list(sub.out_dependent)


def _no_rule(owner: str, activation: str, eqn) -> ValueError:
  return ValueError(
      f"model: {owner} applies {activation}{_location(eqn)}; modified backward rules "
      "(Deconvolution, Guided Backpropagation) are defined for ReLUs, max(x, 0), only, and "
      "back-propagating this activation as usual would silently mix the rule with the "
      "plain gradient"
  )


def _unreachable(owner: str, where: str, eqn) -> ValueError:
  return ValueError(
      f"model: {owner} applies a ReLU inside {where}{_location(eqn)}, where a modified "
      "backward rule cannot be applied (the model defines that part's derivative, or it "
      "cannot be differentiated in reverse mode); call the ReLU outside it"
  )


# --------------------------------------------------------------------------- #
# Evaluating the jaxpr again, with the rule at the ReLUs.                      #
# --------------------------------------------------------------------------- #


def _bind(eqn, invals: list) -> list:
  """Evaluate one equation unchanged (as ``jax.core.eval_jaxpr`` does)."""
  params = eqn.primitive.get_bind_params(eqn.params)
  with eqn.ctx.manager:
    out = eqn.primitive.bind(*invals, **params)
  return list(out) if eqn.primitive.multiple_results else [out]


def _evaluate(
    jaxpr, consts: Sequence, plan: _Plan, relu: Activation, args: Sequence
) -> list:
  """``jaxpr`` evaluated on ``args``, with ``relu`` at the ReLUs that ``plan`` found."""
  env: dict[Any, Any] = {}

  def read(atom):
    return atom.val if isinstance(atom, jcore.Literal) else env[atom]

  variables = [*jaxpr.constvars, *jaxpr.invars]
  env.update(zip(variables, [*consts, *args], strict=True))
  for eqn, action in zip(jaxpr.eqns, plan.actions, strict=True):
    invals = [read(a) for a in eqn.invars]
    if action is None:
      outs = _bind(eqn, invals)
    elif action[0] == "relu":
      outs = [relu(invals[action[1]])]
    elif action[0] == "inline":
      outs = _evaluate(*_body_and_consts(eqn), action[1], relu, invals)
    elif action[0] == "scan":
      outs = _evaluate_scan(eqn, action[1], relu, invals)
    else:  # cond
      branches = [functools.partial(_evaluate_closed, b, s, relu)
                  for b, s in zip(eqn.params["branches"], action[1], strict=True)]
      outs = list(jax.lax.switch(invals[0], branches, *invals[1:]))
    for var, value in zip(eqn.outvars, outs, strict=True):
      if not isinstance(var, jcore.DropVar):
        env[var] = value
  return [read(a) for a in jaxpr.outvars]


def _evaluate_closed(closed, plan: _Plan, relu: Activation, *args) -> list:
  return _evaluate(closed.jaxpr, closed.consts, plan, relu, args)


def _evaluate_scan(eqn, plan: _Plan, relu: Activation, invals: list) -> list:
  p = eqn.params
  nc, nk = p["num_consts"], p["num_carry"]
  consts, init, xs = invals[:nc], invals[nc:nc + nk], invals[nc + nk:]

  def step(carry, x):
    outs = _evaluate_closed(p["jaxpr"], plan, relu, *consts, *carry, *x)
    return outs[:nk], outs[nk:]

  carry, ys = jax.lax.scan(step, init, xs, length=p["length"], reverse=p["reverse"],
                           unroll=p["unroll"])
  return [*carry, *ys]


def apply_relu_rule(
    fn: Callable[..., Any], relu: Activation, params: Any, *args: Any, owner: str
) -> Any:
  """``fn(params, *args)``, with ``relu``'s backward rule at every ReLU of ``args``.

  ``fn`` is traced to a jaxpr (:func:`jax.make_jaxpr`); the equations that
  compute a ReLU of the inputs ``args`` (not of ``params`` alone) are evaluated
  with ``relu``, every other one is bound unchanged. Forward values are those
  of ``fn``.

  Raises:
    ValueError: no ReLU acts on ``args``, or an activation without a rule does
      (``owner`` names the model in the message).
  """
  closed, shapes = jax.make_jaxpr(fn, return_shape=True)(params, *args)
  flat = jax.tree.leaves((params, *args))
  inputs = [False] * len(jax.tree.leaves(params)) + [True] * len(jax.tree.leaves(args))
  plan = _plan_body(closed.jaxpr, closed.consts, inputs, [None] * len(flat), owner)
  if not plan.relus:
    raise ValueError(
        f"model: {owner} has no replaceable ReLU (no jax.nn.relu, nnx.relu or "
        "jnp.maximum(x, 0) acts on the images), so a modified backward rule cannot be "
        "applied and the result would silently be the plain gradient"
    )
  outs = _evaluate(closed.jaxpr, closed.consts, plan, relu, flat)
  return jax.tree.unflatten(jax.tree.structure(shapes), outs)


class ReluRuleModel(nnx.Module):
  """``model`` with ``relu``'s backward rule at every ReLU; see :func:`with_relu_rule`.

  Attributes:
    model: the wrapped model (not modified, not copied).
    relu: the ReLU whose backward rule is applied.
  """

  def __init__(self, model: nnx.Module, relu: Activation):
    self.model = model
    self.relu = relu

  def __call__(self, *args: Any, **kwargs: Any) -> Any:
    """``self.model(*args, **kwargs)``, the rule at the ReLUs of ``args`` (arrays)."""
    graphdef, state = nnx.split(self.model)

    def forward(state, *args):  # merged inside the trace: the model may update its state
      return nnx.merge(graphdef, state)(*args, **kwargs)

    return apply_relu_rule(forward, self.relu, state, *args, owner=type(self.model).__name__)


def replace_relus(model: nnx.Module, relu: Activation) -> ReluRuleModel:
  """``model`` with ``relu`` at every ReLU (``relu`` is not checked).

  The traceable part of :func:`with_relu_rule`, for the methods' cores. The
  model's ReLUs are found (and unsupported activations refused) when the
  result is called, i.e. while the core is traced.
  """
  return ReluRuleModel(model, relu)


def with_relu_rule(model: nnx.Module, relu: Activation) -> ReluRuleModel:
  r"""``model`` with the backward rule of ``relu`` at every ReLU, on any NNX model.

  Returns a module whose forward pass is ``model``'s and whose reverse-mode
  derivative uses ``relu``'s backward rule wherever ``model`` computes a ReLU
  of its inputs: with :math:`x` the ReLU's input and :math:`R` the signal from
  above, :math:`R_\text{in} = \mathrm{vjp}_\text{relu}(x, R)` instead of
  :math:`R \cdot \mathbb{1}[x > 0]`. A ReLU is ``jax.nn.relu``, ``nnx.relu``,
  ``jnp.maximum(x, 0)`` (either order, against a literal or a broadcast zero),
  also inside ``jax.jit``, ``jax.checkpoint``, ``lax.scan``, ``lax.cond`` and
  NNX's transforms of them. Each call traces ``model``'s forward function to a
  jaxpr and evaluates it again with ``relu`` in place of those equations; every
  other equation (convolutions, pooling, normalisation, residual additions,
  ``max`` of two tensors) is unchanged. ``model`` itself is not modified.
  Works eagerly and inside ``jax.jit``.

  Args:
    model: an ``nnx.Module`` (or ``nnx.bridge.ToNNX`` of a Linen module).
    relu: the replacement, a function computing :math:`\max(x, 0)`, typically
      :func:`~saliency_guide.methods.guided_relu` or
      :func:`~saliency_guide.methods.deconv_relu`.

  Returns:
    An ``nnx.Module`` wrapping ``model``; call it like ``model``.

  Raises:
    TypeError: ``model`` is not an ``nnx.Module``, or ``relu`` does not compute
      :math:`\max(x, 0)`.
    ValueError: when the result is called, if no ReLU acts on the inputs, if an
      activation without a rule does (GELU, SiLU, softplus, ELU, leaky ReLU,
      tanh, sigmoid; the message names it and where the model calls it), or if
      a ReLU sits inside a function with its own derivative rule or a while
      loop. ``max(x, 0)`` inside a Flax layer (LayerNorm's variance) is not an
      activation.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from saliency_guide.methods import guided_relu
    >>> class Net(nnx.Module):
    ...   def __init__(self, rngs):
    ...     self.a, self.b = nnx.Linear(3, 4, rngs=rngs), nnx.Linear(4, 2, rngs=rngs)
    ...   def __call__(self, x):
    ...     return self.b(jnp.maximum(self.a(x), 0))
    >>> model, x = Net(nnx.Rngs(0)), jnp.ones((1, 3))
    >>> guided = with_relu_rule(model, guided_relu)
    >>> bool(jnp.array_equal(guided(x), model(x)))  # same forward pass
    True
    >>> jax.grad(lambda x: guided(x)[0, 0])(x).shape  # the guided backward pass
    (1, 3)
  """
  check_model(model)
  if not _is_relu(relu):
    raise TypeError(
        f"relu: expected a function computing max(x, 0) (e.g. guided_relu or deconv_relu), "
        f"got {getattr(relu, '__name__', repr(relu))!s}"
    )
  return replace_relus(model, relu)


@dataclasses.dataclass(frozen=True)
class _Softplus:
  """``log(1 + exp(beta x)) / beta``; equal and hashed by ``beta`` (one compilation per beta)."""

  beta: float

  def __call__(self, x: jax.Array) -> jax.Array:
    return jax.nn.softplus(self.beta * x) / self.beta


def with_softplus(model: nnx.Module, beta: float) -> ReluRuleModel:
  r"""``model`` with every ReLU replaced by a softplus of sharpness ``beta`` (β-smoothing).

  Every ReLU of ``model`` (found as :func:`with_relu_rule` finds them) computes

  .. math::

     \mathrm{softplus}_\beta(x) = \frac1\beta \log\big(1 + e^{\beta x}\big),
     \qquad
     0 < \mathrm{softplus}_\beta(x) - \max(x, 0) \le \frac{\log 2}{\beta},

  forward and backward: its derivative is the logistic sigmoid
  :math:`\sigma(\beta x)` instead of the step :math:`\mathbb{1}[x > 0]`, and its
  second derivative :math:`\beta\,\sigma(\beta x)\big(1 - \sigma(\beta x)\big)` is
  non-zero everywhere instead of almost everywhere zero. As
  :math:`\beta \to \infty` the smoothed model tends to ``model`` (its logits
  within a multiple of :math:`\log 2 / \beta`). Dombrowski et al. (2019) explain
  the smoothed model instead of the original one ("β-smoothing"): each unit's
  slope :math:`\sigma(\beta x)` is its ReLU's gate averaged over logistic noise
  of scale :math:`1/\beta`, a SmoothGrad inside the network, and the map is
  harder to manipulate; and
  they attack the original's maps through the smoothed model with a large
  :math:`\beta`, whose maps have an input-derivative
  (:func:`~saliency_guide.manipulation.manipulate`). ``model`` itself is not modified.

  Args:
    model: an ``nnx.Module`` with ReLUs (``jax.nn.relu``, ``nnx.relu``,
      ``jnp.maximum(x, 0)``), as for :func:`with_relu_rule`.
    beta: the sharpness :math:`\beta > 0`; large values approach the ReLU.

  Returns:
    An ``nnx.Module`` wrapping ``model``; call it like ``model``, or pass it to
    any saliency method that explains the model through its forward pass
    (not to a class-activation method, which needs ``model``'s layers, nor to
    Deconvolution or Guided Backprop, which need its ReLUs).

  Raises:
    TypeError: ``model`` is not an ``nnx.Module``.
    TypeError, ValueError: ``beta`` is not a finite number :math:`> 0`.
    ValueError: when the result is called, as for :func:`with_relu_rule`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> class Net(nnx.Module):
    ...   def __init__(self, rngs):
    ...     self.a, self.b = nnx.Linear(3, 4, rngs=rngs), nnx.Linear(4, 2, rngs=rngs)
    ...   def __call__(self, x):
    ...     return self.b(jax.nn.relu(self.a(x)))
    >>> model, x = Net(nnx.Rngs(0)), jnp.ones((1, 3))
    >>> smooth, sharp = with_softplus(model, 1.0), with_softplus(model, 1e4)
    >>> bool(jnp.allclose(sharp(x), model(x), atol=1e-3))  # beta -> infinity: the model
    True
    >>> bool(jnp.allclose(smooth(x), model(x), atol=1e-3))
    False

  References:
    A.-K. Dombrowski, M. Alber, C. J. Anders, M. Ackermann, K.-R. Müller,
    P. Kessel. *Explanations can be manipulated and geometry is to blame.*
    NeurIPS 2019. arXiv:1906.07983.
  """
  check_model(model)
  beta = check_number("beta", beta, hint=" (the softplus sharpness; large is close to the ReLU)")
  return replace_relus(model, _Softplus(beta))
