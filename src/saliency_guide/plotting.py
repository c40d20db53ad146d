"""Figures for attribution maps: the digit beside its map, and method grids.

Conventions (the same on every page of the site):

* A **signed** map uses the diverging colormap :data:`SIGNED_CMAP` centred on
  zero with symmetric limits ``[-v, v]``: red is positive, blue negative, white
  zero. What the sign *means* belongs to the method and is said on its page
  (for the gradient family it is the direction of the effect on the explained
  logit; for Deconvolution and Guided Backpropagation it is not). Every signed
  panel has a colourbar.
* An **unsigned** map (a magnitude, or a Grad-CAM-style map after its ReLU) uses
  :data:`UNSIGNED_CMAP` from 0 to ``v``.
* Panels compared in a column share one scale; ``v`` is a high percentile of
  ``|map|`` (99.5 % by default) rather than the maximum, so that one extreme
  pixel does not wash out the rest. Values beyond ``v`` saturate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from saliency_guide.validation import check_callable, check_positive_int, describe

__all__ = [
    "SIGNED_CMAP",
    "UNSIGNED_CMAP",
    "plot_attribution",
    "plot_gallery",
    "plot_grid",
    "plot_relu_rules",
    "symmetric_limit",
]

#: Diverging colormap for signed maps: blue < 0 < red, white at 0.
SIGNED_CMAP = "RdBu_r"
#: Sequential colormap for non-negative maps.
UNSIGNED_CMAP = "magma"


def _as_2d(x: np.ndarray, name: str) -> np.ndarray:
  x = np.asarray(x, np.float32)
  if x.ndim == 3 and x.shape[-1] == 1:
    x = x[..., 0]
  if x.ndim != 2:
    raise ValueError(f"{name}: expected an (H, W) or (H, W, 1) map, got shape {x.shape}")
  return x


def _as_stack(x: np.ndarray, name: str) -> np.ndarray:
  x = np.asarray(x, np.float32)
  if x.ndim == 4 and x.shape[-1] == 1:
    x = x[..., 0]
  if x.ndim != 3:
    raise ValueError(f"{name}: expected maps (B, H, W) or (B, H, W, 1), got shape {x.shape}")
  return x


def symmetric_limit(maps: np.ndarray, percentile: float = 99.5) -> float:
  """The colour limit ``v`` for ``maps``: the ``percentile`` of ``|maps|`` (> 0).

  Args:
    maps: any array of attributions.
    percentile: in ``(0, 100]``; 100 gives the maximum absolute value.

  Returns:
    A positive float (``1.0`` when the maps are all zero, so a colourbar still draws).

  Raises:
    ValueError: NaN or infinite maps, or ``percentile`` outside ``(0, 100]``.

  Example:
    >>> symmetric_limit(np.array([-4.0, 1.0, 2.0]), percentile=100)
    4.0
  """
  if not 0 < percentile <= 100:
    raise ValueError(f"percentile: expected a value in (0, 100], got {percentile}")
  values = np.abs(np.asarray(maps, np.float64)).ravel()
  if not np.isfinite(values).all():
    raise ValueError(f"maps: expected finite values, got {np.count_nonzero(~np.isfinite(values))}"
                     f" NaN or infinite of {values.size}")
  limit = float(np.percentile(values, percentile)) if values.size else 0.0
  if limit <= 0:
    limit = float(values.max()) if values.size else 0.0
  return limit if limit > 0 else 1.0


def plot_attribution(
    image: np.ndarray,
    attribution: np.ndarray,
    *,
    ax: Sequence[Axes] | None = None,
    title: str | None = None,
    vmax: float | None = None,
    signed: bool = True,
    colorbar: bool = True,
) -> Figure:
  """The input digit and its attribution map, side by side.

  Args:
    image: the input, ``(H, W)`` or ``(H, W, 1)``, values in ``[0, 1]``.
    attribution: the map, same spatial shape.
    ax: two axes to draw into (default: a new figure).
    title: title of the map panel.
    vmax: colour limit (default :func:`symmetric_limit` of this map).
    signed: diverging colormap on ``[-vmax, vmax]`` (else sequential on ``[0, vmax]``).
    colorbar: draw a colourbar labelled with what colour means.

  Returns:
    The figure.

  Example:
    >>> import numpy as np
    >>> fig = plot_attribution(np.zeros((28, 28)), np.eye(28) - 0.5, title="demo")
    >>> len(fig.axes)  # digit, map, colourbar
    3
  """
  image = _as_2d(image, "image")
  attribution = _as_2d(attribution, "attribution")
  if image.shape != attribution.shape:
    raise ValueError(
        f"attribution: expected the image's spatial shape {image.shape}, got {attribution.shape}"
    )
  if ax is None:
    fig, ax = plt.subplots(1, 2, figsize=(5.2, 2.6), layout="constrained")
  else:
    fig = ax[0].figure
  ax[0].imshow(image, cmap="gray_r", vmin=0, vmax=1)
  ax[0].set_title("input")
  v = symmetric_limit(attribution) if vmax is None else float(vmax)
  im = _draw_map(ax[1], attribution, v, signed)
  ax[1].set_title(title or "attribution")
  for a in ax[:2]:
    a.set_xticks([])
    a.set_yticks([])
  if colorbar:
    _colorbar(fig, im, ax[1], signed)
  return fig


def _draw_map(ax: Axes, m: np.ndarray, v: float, signed: bool):
  if signed:
    return ax.imshow(m, cmap=SIGNED_CMAP, vmin=-v, vmax=v)
  return ax.imshow(m, cmap=UNSIGNED_CMAP, vmin=0, vmax=v)


def _colorbar(fig: Figure, im, ax: Axes | Sequence[Axes], signed: bool, label: str | None = None):
  bar = fig.colorbar(im, ax=ax, shrink=0.8, location="right")
  if label is None:
    label = "red > 0 · blue < 0" if signed else "attribution (≥ 0)"
  bar.set_label(label, fontsize=8)
  bar.ax.tick_params(labelsize=7)
  return bar


def plot_grid(
    images: np.ndarray,
    columns: Mapping[str, np.ndarray],
    *,
    row_labels: Sequence[str] | None = None,
    signed: bool | Mapping[str, bool] = True,
    title: str | None = None,
    percentile: float = 99.5,
    cell_size: float = 1.35,
) -> Figure:
  """A grid of maps: rows are digits, column 0 the input, one column per method.

  Each method column has **one** colour scale shared by all its rows (so rows
  can be compared within a column) and its own colourbar underneath.

  Args:
    images: ``(B, H, W)`` or ``(B, H, W, 1)`` input digits.
    columns: method name -> maps of the same shape as ``images``.
    row_labels: one label per row (e.g. ``"7 → explain 7"``).
    signed: whether maps are signed (diverging colormap centred on zero), for
      all columns or per column name.
    title: figure title.
    percentile: the colour limit of a column is this percentile of its ``|map|``.
    cell_size: inches per panel.

  Returns:
    The figure.

  Example:
    >>> import numpy as np
    >>> x = np.zeros((2, 28, 28))
    >>> fig = plot_grid(x, {"a": x - 1, "b": x + 1}, row_labels=["r0", "r1"])
    >>> len(fig.axes)  # 2 x 3 panels + 2 colourbars
    8
  """
  images = _as_stack(images, "images")
  stacks = {name: _as_stack(m, f"columns[{name!r}]") for name, m in columns.items()}
  for name, m in stacks.items():
    if m.shape[0] != images.shape[0]:
      raise ValueError(
          f"columns[{name!r}]: expected {images.shape[0]} maps (one per image), got {m.shape[0]}"
      )
  if row_labels is not None and len(row_labels) != len(images):
    raise ValueError(f"row_labels: expected {len(images)} labels, got {len(row_labels)}")
  rows, cols = len(images), len(stacks) + 1
  fig, axes = plt.subplots(
      rows, cols, figsize=(cell_size * cols + 0.4, cell_size * rows + 1.0),
      squeeze=False, layout="constrained",
  )
  for r in range(rows):
    axes[r, 0].imshow(images[r], cmap="gray_r", vmin=0, vmax=1)
    if row_labels is not None:
      axes[r, 0].set_ylabel(row_labels[r], fontsize=8)
  axes[0, 0].set_title("input", fontsize=9)
  for c, (name, maps) in enumerate(stacks.items(), start=1):
    is_signed = signed[name] if isinstance(signed, Mapping) else signed
    v = symmetric_limit(maps, percentile)
    for r in range(rows):
      im = _draw_map(axes[r, c], maps[r], v, is_signed)
    axes[0, c].set_title(name, fontsize=9)
    bar = fig.colorbar(im, ax=axes[:, c], location="bottom", shrink=0.9, aspect=12, pad=0.01)
    bar.ax.tick_params(labelsize=6)
    bar.set_label("blue − · red +" if is_signed else "≥ 0", fontsize=7)
    bar.locator = plt.MaxNLocator(3, symmetric=is_signed)
    bar.update_ticks()
  for a in axes.ravel():
    a.set_xticks([])
    a.set_yticks([])
  if title:
    fig.suptitle(title, fontsize=10)
  return fig


def plot_gallery(
    image: np.ndarray,
    maps: Mapping[str, np.ndarray],
    *,
    signed: bool | Mapping[str, bool] = True,
    columns: int = 7,
    title: str | None = None,
    percentile: float = 99.5,
    cell_size: float = 1.55,
) -> Figure:
  """One input and many methods' maps of it, each panel on its own colour scale.

  Different methods have different units, so every panel gets its own limit
  (signed: symmetric around zero, diverging colormap; unsigned: from zero) and
  its own small colourbar. The input is the first panel.

  Args:
    image: the input, ``(H, W)`` or ``(H, W, 1)``.
    maps: method name -> its map of ``image`` (same spatial shape).
    signed: whether maps are signed, for all or per method name.
    columns: panels per row.
    title: figure title.
    percentile: each panel's colour limit is this percentile of its ``|map|``.
    cell_size: inches per panel.

  Returns:
    The figure.

  Example:
    >>> import numpy as np
    >>> fig = plot_gallery(np.zeros((28, 28)), {"a": np.eye(28), "b": -np.eye(28)}, columns=3)
    >>> len([ax for ax in fig.axes if ax.images])  # the input and the 2 maps
    3
  """
  image = _as_2d(image, "image")
  panels = {name: _as_2d(m, f"maps[{name!r}]") for name, m in maps.items()}
  for name, m in panels.items():
    if m.shape != image.shape:
      raise ValueError(f"maps[{name!r}]: expected the image's shape {image.shape}, got {m.shape}")
  columns = check_positive_int("columns", columns)
  count = len(panels) + 1
  rows = -(-count // columns)
  fig, axes = plt.subplots(rows, columns, figsize=(cell_size * columns, cell_size * rows + 0.5),
                           squeeze=False, layout="constrained")
  flat = axes.ravel()
  flat[0].imshow(image, cmap="gray_r", vmin=0, vmax=1)
  flat[0].set_title("input", fontsize=9)
  for ax, (name, m) in zip(flat[1:], panels.items(), strict=False):
    is_signed = signed[name] if isinstance(signed, Mapping) else signed
    im = _draw_map(ax, m, symmetric_limit(m, percentile), is_signed)
    ax.set_title(name, fontsize=8)
    bar = fig.colorbar(im, ax=ax, location="bottom", shrink=0.85, aspect=10, pad=0.02)
    bar.ax.tick_params(labelsize=5)
    bar.locator = plt.MaxNLocator(3, symmetric=is_signed)
    bar.update_ticks()
  for ax in flat:
    ax.set_xticks([])
    ax.set_yticks([])
  for ax in flat[count:]:
    ax.set_axis_off()
  if title:
    fig.suptitle(title, fontsize=10)
  return fig


def _signal_1d(name: str, value: object, length: int | None = None) -> jax.Array:
  """``value`` as a finite 1-D float array (of ``length`` if given), else a clear error."""
  if not hasattr(value, "shape") or not hasattr(value, "dtype"):
    raise TypeError(f"{name}: expected a 1-D float array, got {describe(value)}")
  array = jnp.asarray(value, jnp.float32)
  if array.ndim != 1 or array.size < 2:
    raise ValueError(f"{name}: expected a 1-D array of at least 2 values, got shape {array.shape}")
  if length is not None and array.size != length:
    raise ValueError(f"{name}: expected {length} values (as forward_input), got {array.size}")
  if not bool(jnp.isfinite(array).all()):
    raise ValueError(f"{name}: expected finite values, got NaN or Inf")
  return array


def plot_relu_rules(
    rules: Mapping[str, Callable[[jax.Array], jax.Array]],
    forward_input: jax.Array,
    signal: jax.Array,
    *,
    positions: jax.Array | None = None,
) -> Figure:
  r"""What ReLUs with different backward rules send below, on a 1-D signal.

  A ReLU receives the forward input :math:`x` and, in the backward pass, a
  signal :math:`R` from the layer above; it sends below the vector-Jacobian
  product of its rule,

  .. math:: R_\text{in} = \operatorname{vjp}_\text{rule}(x)(R),

  which is :math:`R \cdot \mathbb{1}[x > 0]` for the ordinary ReLU and whatever
  a ``jax.custom_vjp`` defines for the others (``methods.deconv_relu``:
  :math:`\max(R, 0)`; ``methods.guided_relu``: :math:`\max(R, 0)\cdot
  \mathbb{1}[x > 0]`). Each :math:`R_\text{in}` is computed with ``jax.vjp``.

  The figure has one panel for :math:`x` (grey where the unit is on,
  :math:`x > 0`, in every panel), one for :math:`R`, and one per rule, on a
  shared horizontal axis.

  Args:
    rules: panel title -> a ReLU ``x -> max(x, 0)`` with its backward rule.
    forward_input: ``(N,)`` the ReLU's forward input :math:`x`.
    signal: ``(N,)`` the signal :math:`R` arriving from above.
    positions: ``(N,)`` horizontal coordinates (default ``0 .. N-1``).

  Returns:
    The figure; panel ``2 + k`` draws :math:`R_\text{in}` of the ``k``-th rule.

  Raises:
    TypeError: a rule is not callable, or an input is not an array.
    ValueError: no rules, or inputs that are not finite 1-D arrays of one length.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> x, r = jnp.array([-1.0, 0.5, 2.0]), jnp.array([1.0, -1.0, 1.0])
    >>> fig = plot_relu_rules({"gradient": jax.nn.relu}, x, r)
    >>> fig.axes[2].lines[-1].get_ydata().tolist()  # R where the unit is on
    [0.0, -1.0, 1.0]

  References:
    M. D. Zeiler, R. Fergus. *Visualizing and Understanding Convolutional
    Networks.* ECCV 2014. arXiv:1311.2901. J. T. Springenberg, A. Dosovitskiy,
    T. Brox, M. Riedmiller. *Striving for Simplicity: The All Convolutional Net.*
    ICLR workshop 2015. arXiv:1412.6806.
  """
  if not isinstance(rules, Mapping) or not rules:
    raise ValueError(f"rules: expected a non-empty mapping title -> ReLU, got {describe(rules)}")
  for title, rule in rules.items():
    check_callable(f"rules[{title!r}]", rule, "a ReLU x -> max(x, 0) with a backward rule")
  x = _signal_1d("forward_input", forward_input)
  r = _signal_1d("signal", signal, x.size)
  t = np.arange(x.size) if positions is None else np.asarray(
      _signal_1d("positions", positions, x.size))
  sent = {title: np.asarray(jax.vjp(rule, x)[1](r)[0]) for title, rule in rules.items()}
  x, r = np.asarray(x), np.asarray(r)

  fig, axes = plt.subplots(2 + len(sent), 1, figsize=(7, 1.3 * (2 + len(sent))), sharex=True,
                           layout="constrained")
  top = 1.1 * max(float(np.abs(v).max()) for v in (x, r, *sent.values()))
  for ax in axes:
    ax.fill_between(t, -top, top, where=x > 0, color="0.92", step="mid", lw=0)
    ax.axhline(0, color="0.5", lw=0.6)
    ax.set_ylim(-top, top)
  axes[0].plot(t, x, color="black")
  axes[0].set_title("forward input $x$ of the ReLU (grey: unit on, $x > 0$)", fontsize=9)
  axes[1].plot(t, r, color="tab:purple")
  axes[1].set_title("signal $R$ arriving from above", fontsize=9)
  colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for k, (ax, (title, values)) in enumerate(zip(axes[2:], sent.items(), strict=True)):
    ax.plot(t, values, color=colours[k % len(colours)])
    ax.set_title(f"$R_\\mathrm{{in}}$ sent below, {title}", fontsize=9)
  axes[-1].set_xlabel("position along the 1-D signal")
  fig.supylabel("value", fontsize=9)
  return fig
