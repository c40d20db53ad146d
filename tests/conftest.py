"""Shared test configuration."""

import matplotlib

matplotlib.use("Agg")  # no display in CI
