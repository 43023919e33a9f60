"""Numerical dust: the one threshold below which a number is not signal.

A blend weight of 1e-27, a displacement of 1e-8 of the data's size or a derivative a millionth
of it are rounding-level or physically invisible effects: they do not make an item "a source",
a sample "moved", or a map "influence". One relative threshold, `DUST = 1e-6`, decides all of it:

- weights (dimensionless): a weight below DUST is dust (an item is a source of a sample only
  with at least a millionth of its weight);
- lengths in data units (displacements, derivatives d x / d log pi, which are lengths per unit of
  log-weight): below DUST x the data's scale, where the scale is max_i ||x_i - c|| (Euclidean)
  over the training points around their mean c (so it does not change when the data are
  translated; the same R as the engine's error model, docs/numerics.md).

The numbers themselves are always returned unchanged; only words, counts and drawings use this.
docs/numerics.md ("Numerical dust") states the reason for the value.
"""

from __future__ import annotations

import numpy as np

DUST = 1e-6


def data_scale(points: np.ndarray) -> float:
    """max_i ||x_i - c|| over the points (c their mean); 1 for empty or constant data."""
    pts = np.asarray(points)
    if pts.size == 0:
        return 1.0
    pts = pts.reshape(len(pts), -1).astype(np.float64, copy=False)
    scale = float(np.sqrt(((pts - pts.mean(0)) ** 2).sum(1).max()))
    return scale if scale > 0 else 1.0


def length_dust(points: np.ndarray) -> float:
    """Lengths (data units) at or below this are dust: DUST x `data_scale`."""
    return DUST * data_scale(points)


def is_source(weights: np.ndarray) -> np.ndarray:
    """Whether blend weights are more than dust."""
    return np.asarray(weights) >= DUST


def fmt(value: float, digits: int = 3) -> str:
    """A number for words and tables: scientific notation for small and large magnitudes
    (1e-27, not 0.000...), plain otherwise; 0 stays 0."""
    v = float(value)
    if v == 0 or not np.isfinite(v):
        return f"{v:g}"
    if abs(v) < 1e-3 or abs(v) >= 1e5:
        return f"{v:.{max(0, digits - 1)}e}".replace("e-0", "e-").replace("e+0", "e+")
    return f"{v:.{digits}g}"
