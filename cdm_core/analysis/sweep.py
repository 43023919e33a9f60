"""Memorisation against smoothing: sample at several settings with the same seeds and measure.

One row per (sigma, draws, start) setting, with the set-level metrics of `cdm_core.analysis.metrics`.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from cdm_core.analysis.metrics import mean_pairwise_distance, set_metrics
from cdm_core.config import SamplerConfig
from cdm_core.engine.factory import opened
from cdm_core.engine.sampler import sample
from cdm_core.errors import CdmInputError

COLUMNS = ("sigma", "draws", "start", "near_copy_fraction", "mean_nn_ratio", "mean_nn_distance",
           "mean_effective_sources", "diversity", "unique_nn_fraction", "seconds")


def sweep(data, base: SamplerConfig, sigmas, draws=None, starts=None, weights=None, callback=None,
          keep_samples: bool = False):
    """Rows (dicts with COLUMNS) for every setting; the same seeds across settings. With
    `keep_samples`, also the SampleResult of each setting, in the same order."""
    sigmas = [float(s) for s in sigmas]
    if not sigmas:
        raise CdmInputError("give at least one sigma")
    draws = [int(m) for m in (draws or [base.draws])]
    starts = [float(t) for t in (starts or [base.start])]
    settings = list(itertools.product(sigmas, draws, starts))
    configs = [base.replace(sigma=s, draws=m, start=t) for s, m, t in settings]  # validates all up front
    rows, results = [], []
    with opened(data, base) as prep:  # one training set (or one set of Ray actors) for every setting
        spread = training_spread(prep)
        for k, cfg in enumerate(configs):
            res = sample(data, cfg, weights=weights, prepared=prep)
            m = set_metrics(res, train_spread=spread)
            rows.append({"sigma": cfg.sigma, "draws": cfg.draws, "start": cfg.start} | m.as_dict()
                        | {"seconds": res.seconds})
            if keep_samples:
                results.append(res)
            if callback is not None:
                callback({"step": k + 1, "steps": len(configs), "batch": 1, "batches": 1, "setting": rows[-1]})
    return (rows, results) if keep_samples else rows


def training_spread(ts, max_points: int = 2000, seed: int = 0) -> float:
    """Mean pairwise distance of (a fixed random subset of) the training points."""
    ids = np.arange(ts.n) if ts.n <= max_points else np.sort(
        np.random.default_rng(seed).choice(ts.n, max_points, replace=False))
    return mean_pairwise_distance(ts.rows(torch.as_tensor(ids)).cpu().numpy(), max_points=max_points)


def rows_to_csv(rows) -> str:
    lines = [",".join(COLUMNS)]
    for r in rows:
        lines.append(",".join(repr(float(r[c])) if c not in ("draws",) else str(int(r[c])) for c in COLUMNS))
    return "\n".join(lines) + "\n"


def parse_floats(text: str, name: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CdmInputError(f"{name} must be comma-separated numbers, got {text!r}") from None
    if not vals or not all(np.isfinite(vals)):
        raise CdmInputError(f"{name} must be finite numbers, got {text!r}")
    return vals
