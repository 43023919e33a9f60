"""Memorisation measures, per sample and for a set of samples.

- `nn_distance`: Euclidean distance from a sample to its nearest training point.
- `nn_ratio`: nearest / second-nearest distance (0 for an exact copy, also of a duplicated
  training point; close to 1 when the sample sits between points). A sample is a *near-copy*
  when this ratio is below `copy_ratio` (1/3 by default, the criterion of Carlini et al. 2023).
- `effective_sources`: exp(entropy of the source weights): 1 for a copy, M for an even blend of
  M points.
- `diversity`: mean pairwise distance between samples divided by that between training points
  (1 means as spread out as the data).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COPY_RATIO = 1.0 / 3.0


def nn_ratio(nn_dist: np.ndarray) -> np.ndarray:
    if nn_dist.shape[1] < 2:
        return np.zeros(len(nn_dist))
    d1, d2 = nn_dist[:, 0], nn_dist[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d2 > 0, d1 / np.where(d2 > 0, d2, 1), 0.0)


def effective_sources(source_weights: np.ndarray) -> np.ndarray:
    w = np.clip(source_weights, 0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(w > 0, w * np.log(np.where(w > 0, w, 1)), 0.0).sum(1)
    return np.exp(ent)


def mean_pairwise_distance(x: np.ndarray, max_points: int = 2000, seed: int = 0) -> float:
    if len(x) < 2:
        return 0.0
    if len(x) > max_points:
        x = x[np.random.default_rng(seed).choice(len(x), max_points, replace=False)]
    x = x.astype(np.float64)
    x = x - x.mean(0)  # distances do not change; the expansion below stays accurate far from 0
    sq = (x * x).sum(1)
    d2 = np.clip(sq[:, None] + sq[None] - 2 * x @ x.T, 0, None)
    n = len(x)
    return float(np.sqrt(d2).sum() / (n * (n - 1)))


@dataclass(frozen=True)
class SetMetrics:
    near_copy_fraction: float  # share of samples with nn_ratio < copy_ratio
    mean_nn_ratio: float
    mean_nn_distance: float
    mean_effective_sources: float
    diversity: float  # mean pairwise sample distance / mean pairwise training distance
    unique_nn_fraction: float  # distinct nearest training points / number of samples
    copy_ratio: float  # the near-copy threshold used

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def per_sample(result) -> dict:
    return {"nn_distance": result.nn_dist[:, 0], "nn_ratio": nn_ratio(result.nn_dist),
            "effective_sources": effective_sources(result.source_weights)}


def set_metrics(result, train_points: np.ndarray | None = None, copy_ratio: float = COPY_RATIO,
                train_spread: float | None = None) -> SetMetrics:
    """Memorisation metrics of a run; the training set's spread from `train_points` or given."""
    ps = per_sample(result)
    if train_spread is None:
        train_spread = mean_pairwise_distance(train_points)
    return SetMetrics(
        near_copy_fraction=float(np.mean(ps["nn_ratio"] < copy_ratio)),
        mean_nn_ratio=float(ps["nn_ratio"].mean()),
        mean_nn_distance=float(ps["nn_distance"].mean()),
        mean_effective_sources=float(ps["effective_sources"].mean()),
        diversity=mean_pairwise_distance(result.samples) / train_spread if train_spread > 0 else 0.0,
        unique_nn_fraction=len(np.unique(result.nn_ids[:, 0])) / len(result.nn_ids),
        copy_ratio=copy_ratio)
