"""Figures: one symmetric scale per column, a colourbar, clear errors."""

import jax
import numpy as np
import pytest

from saliency_guide.plotting import SIGNED_CMAP, plot_attribution, plot_grid, symmetric_limit


def test_grid_shares_one_symmetric_scale_per_column():
  rng = np.random.default_rng(0)
  images = rng.random((3, 28, 28))
  small, large = rng.normal(size=(3, 28, 28)), 100 * rng.normal(size=(3, 28, 28))
  fig = plot_grid(images, {"small": small, "large": large}, row_labels=["a", "b", "c"])
  panels = [ax for ax in fig.axes if ax.images]
  by_column = {}
  for ax in panels:
    if ax.get_subplotspec() is None:
      continue
    col = ax.get_subplotspec().colspan.start
    by_column.setdefault(col, set()).add(ax.images[0].get_clim())
  assert len(by_column[1]) == 1 and len(by_column[2]) == 1  # one scale per column
  (lo1, hi1), (lo2, hi2) = by_column[1].pop(), by_column[2].pop()
  assert lo1 == -hi1 and lo2 == -hi2  # centred on zero
  assert hi2 > 10 * hi1  # each column has its own scale
  assert all(ax.images[0].get_cmap().name == SIGNED_CMAP for ax in panels
             if ax.get_subplotspec() is not None and ax.get_subplotspec().colspan.start > 0)


def test_attribution_panel_has_a_labelled_colourbar():
  fig = plot_attribution(np.zeros((28, 28, 1)), np.linspace(-1, 2, 784).reshape(28, 28, 1))
  assert len(fig.axes) == 3
  assert "red" in fig.axes[2].get_ylabel()
  limit = symmetric_limit(np.linspace(-1, 2, 784))
  np.testing.assert_allclose(fig.axes[1].images[0].get_clim(), (-limit, limit), rtol=1e-6)


def test_symmetric_limit_of_zero_maps_is_positive():
  assert symmetric_limit(np.zeros((4, 4))) == 1.0


def test_errors_name_the_argument():
  with pytest.raises(ValueError, match="attribution: expected the image's spatial shape"):
    plot_attribution(np.zeros((28, 28)), np.zeros((14, 14)))
  with pytest.raises(ValueError, match=r"columns\['a'\]: expected 2 maps"):
    plot_grid(np.zeros((2, 28, 28)), {"a": np.zeros((3, 28, 28))})
  with pytest.raises(ValueError, match="percentile"):
    symmetric_limit(np.ones(3), percentile=0)


def test_relu_rules_panels_draw_each_rules_backward_signal():
  from saliency_guide.methods import deconv_relu, guided_relu
  from saliency_guide.plotting import plot_relu_rules

  rng = np.random.default_rng(1)
  x, r = rng.normal(size=50).astype(np.float32), rng.normal(size=50).astype(np.float32)
  x[0] = 0.0  # at the kink the unit counts as off
  fig = plot_relu_rules({"gradient": jax.nn.relu, "deconvnet": deconv_relu,
                         "guided": guided_relu}, x, r, positions=np.linspace(0, 1, 50))
  drawn = [ax.lines[-1].get_ydata() for ax in fig.axes[2:]]
  on = x > 0
  np.testing.assert_array_equal(drawn[0], np.where(on, r, 0))  # gradient: R * 1[x > 0]
  np.testing.assert_array_equal(drawn[1], np.maximum(r, 0))  # deconvnet: mask ignored
  np.testing.assert_array_equal(drawn[2], np.where(on, np.maximum(r, 0), 0))  # both
  np.testing.assert_array_equal(fig.axes[0].lines[-1].get_ydata(), x)
  np.testing.assert_allclose(fig.axes[0].lines[-1].get_xdata(), np.linspace(0, 1, 50))
  assert "guided" in fig.axes[4].get_title()


def test_relu_rules_errors_name_the_argument():
  from saliency_guide.plotting import plot_relu_rules

  x = np.ones(5, np.float32)
  with pytest.raises(ValueError, match="rules: expected a non-empty mapping"):
    plot_relu_rules({}, x, x)
  with pytest.raises(TypeError, match=r"rules\['a'\]: expected a ReLU"):
    plot_relu_rules({"a": 3}, x, x)
  with pytest.raises(ValueError, match="signal: expected 5 values"):
    plot_relu_rules({"a": jax.nn.relu}, x, np.ones(4, np.float32))
  with pytest.raises(ValueError, match="forward_input: expected a 1-D array"):
    plot_relu_rules({"a": jax.nn.relu}, np.ones((2, 2), np.float32), x)
  with pytest.raises(TypeError, match="forward_input: expected a 1-D float array"):
    plot_relu_rules({"a": jax.nn.relu}, [1.0, 2.0], x)
