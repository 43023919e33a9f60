"""Memorisation against smoothing: sample at several settings with the same seeds and measure.

One row per (sigma, draws, start) setting, with the set-level metrics of `cdm_core.analysis.metrics`.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from cdm_core.analysis.metrics import mean_pairwise_distance, set_metrics
from cdm_core.config import SamplerConfig
from cdm_core.errors import CdmInputError
from cdm_core.pipeline.inputs import as_dataset
from cdm_core.pipeline.prepared import opened
from cdm_core.pipeline.run import sample

METRICS = ("copy_fraction", "memorised_fraction", "mean_nn_ratio", "mean_nn_distance", "mean_effective_sources",
           "diversity", "unique_nn_fraction")
COLUMNS = ("sigma", "draws", "start", *METRICS, "seconds", "seeds", *(f"{m}_sd" for m in METRICS))
MAX_SEEDS = 32


def default_sigmas(sigma: float) -> list[float]:
    """The σ grid the Memorisation page and the exported figure use by default: 11 values from 0
    to 2.5 σ (at least to 0.1)."""
    top = max(sigma * 2.5, 0.1)
    return [float(f"{v:.3g}") for v in np.linspace(0, top, 11)]


def sweep(data, base: SamplerConfig, sigmas, draws=None, starts=None, weights=None, callback=None,
          keep_samples: bool = False, seeds: int = 1):
    """Rows (dicts with COLUMNS) for every setting; the same seeds across settings. With `seeds`
    > 1, each setting is sampled with base seeds seed, seed + 1, ... (independent sample sets, by
    per-sample seeding) and a row holds the mean of each metric and its standard deviation over
    seeds (`<metric>_sd`; 0 for one seed). With `keep_samples`, also the SampleResult of each
    setting (first seed), in the same order."""
    sigmas = [float(s) for s in sigmas]
    if not sigmas:
        raise CdmInputError("give at least one sigma")
    if isinstance(seeds, bool) or not isinstance(seeds, (int, np.integer)) or not 1 <= seeds <= MAX_SEEDS:
        raise CdmInputError(f"seeds must be an integer between 1 and {MAX_SEEDS}, got {seeds!r}")
    draws = [int(m) for m in (draws or [base.draws])]
    starts = [float(t) for t in (starts or [base.start])]
    settings = list(itertools.product(sigmas, draws, starts))
    configs = [base.replace(sigma=s, draws=m, start=t) for s, m, t in settings]  # validates all up front
    for cfg in configs:
        cfg.replace(seed=cfg.seed + seeds - 1)
    rows, results = [], []
    total = len(configs) * seeds
    with opened(data, base) as prep:  # one training set (or one set of Ray actors) for every setting
        # diversity compares the samples' spread with the training set's, in the samples' units: decoded
        # samples (data units) in latent space, as on the Generate page
        spread = training_spread(prep) if base.space == "data" else mean_pairwise_distance(as_dataset(data).points)
        for k, cfg in enumerate(configs):
            per_seed, seconds = [], 0.0
            for r in range(seeds):
                res = sample(data, cfg.replace(seed=cfg.seed + r), weights=weights, prepared=prep,
                             callback=None if callback is None else _within(callback, k * seeds + r, total))
                per_seed.append(set_metrics(res, train_spread=spread).as_dict())
                seconds += res.seconds
                if keep_samples and r == 0:
                    results.append(res)
            row = {"sigma": cfg.sigma, "draws": cfg.draws, "start": cfg.start, "seconds": seconds, "seeds": seeds}
            row |= per_seed[0] | {m: float(np.mean([d[m] for d in per_seed])) for m in METRICS}
            row |= {f"{m}_sd": float(np.std([d[m] for d in per_seed], ddof=1)) if seeds > 1 else 0.0 for m in METRICS}
            rows.append(row)
    return (rows, results) if keep_samples else rows


def _within(callback, done: int, total: int):
    """The sampler's per-step callback of one run among `total` (`done` before it): the same info
    (i, t, x, denoised, ...), with `setting`/`settings` added and the batch counters spanning the
    whole sweep, so `fraction_done` measures the sweep."""
    def forward(info: dict) -> None:
        callback(info | {"setting": done + 1, "settings": total, "batch": done * info["batches"] + info["batch"],
                         "batches": total * info["batches"]})
    return forward


def training_spread(ts, max_points: int = 2000, seed: int = 0) -> float:
    """Mean pairwise distance of (a fixed random subset of) the training points."""
    ids = np.arange(ts.n) if ts.n <= max_points else np.sort(
        np.random.default_rng(seed).choice(ts.n, max_points, replace=False))
    return mean_pairwise_distance(ts.rows(torch.as_tensor(ids)).cpu().numpy(), max_points=max_points)


def rows_to_csv(rows) -> str:
    lines = [",".join(COLUMNS)]
    for r in rows:
        lines.append(",".join(repr(float(r[c])) if c not in ("draws", "seeds") else str(int(r[c])) for c in COLUMNS))
    return "\n".join(lines) + "\n"


def parse_floats(text: str, name: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CdmInputError(f"{name} must be comma-separated numbers, got {text!r}") from None
    if not vals or not all(np.isfinite(vals)):
        raise CdmInputError(f"{name} must be finite numbers, got {text!r}")
    return vals
