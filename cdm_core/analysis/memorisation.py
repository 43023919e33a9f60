"""Memorisation against training-set size: the field's standard criterion on nested subsets.

For each model setting (a model; for cfdm each sigma) and each size, the model is built on the
nested, class-balanced subset of that size (data/subsets.py) and sampled from the same seeds. A
sample is *memorised* by the standard criterion when d1 / d2 < ratio (1/3: Gu et al., "On
Memorization in Diffusion Models", TMLR 2025), d1 and d2 its distances to the nearest and
second-nearest items of the training set it was built on. Each row holds the memorised fraction
with its Wilson 95% interval over the samples, the mean d1/d2, the mean effective number of
sources and the tool's own exact-source verdict (copies), named apart. The effective model
memorisation (EMM) of a curve is the largest size up to which the fraction stays at or above 90%.
"""

from __future__ import annotations

import math

import numpy as np

from cdm_core.analysis import metrics
from cdm_core.analysis.sweep import _within
from cdm_core.config import SamplerConfig
from cdm_core.errors import CdmInputError
from cdm_core.pipeline.inputs import as_dataset
from cdm_core.pipeline.run import sample

COLUMNS = ("model", "sigma", "size", "samples", "memorised", "lo", "hi", "mean_nn_ratio", "effective_sources",
           "copies", "seconds")
EMM_LEVEL = 0.9  # the EMM: the largest size whose memorised fraction stays at or above this


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a proportion k / n (95% by default)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    # exact ends: no rounding residue above 0 (k = 0) or below 1 (k = n)
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


def settings_of(base: SamplerConfig, models, sigmas) -> list[SamplerConfig]:
    """One configuration per curve: cfdm at each sigma, every other model once (sigma 0)."""
    out = []
    for m in models:
        if m == "cfdm":
            out += [base.replace(model="cfdm", sigma=float(s), patch_schedule="") for s in sigmas]
        else:
            out.append(base.replace(model=m, sigma=0.0,
                                    patch_schedule=base.patch_schedule if m in ("ls", "els") else ""))
    return out


def memorisation_curves(data, base: SamplerConfig, sizes, models=("cfdm",), sigmas=(0.0,), seeds: int = 1,
                        ratio: float = metrics.COPY_RATIO, callback=None) -> list[dict]:
    """Rows (COLUMNS) for every curve and size; sample sets of `base.n_samples` per seed (seeds
    seed, seed + 1, ...), pooled for the fraction and its interval."""
    ds = as_dataset(data)
    sizes = sorted({int(s) for s in sizes})
    if not sizes or sizes[0] < 2 or sizes[-1] > ds.n:
        raise CdmInputError(f"sizes must lie in [2, {ds.n}] (the data set's size), got {sizes}")
    if not 0 < ratio < 1:
        raise CdmInputError(f"the criterion's ratio must be in (0, 1), got {ratio}")
    if not 1 <= seeds <= 32:
        raise CdmInputError(f"seeds must be between 1 and 32, got {seeds}")
    configs = settings_of(base, models, sigmas)  # validated up front
    total, done, rows = len(configs) * len(sizes) * seeds, 0, []
    for cfg in configs:
        for size in sizes:
            ratios, eff, copies, seconds = [], [], [], 0.0
            for r in range(seeds):
                run_cfg = cfg.replace(subset=size if size < ds.n else 0, seed=cfg.seed + r)
                res = sample(ds, run_cfg, callback=None if callback is None else _within(callback, done, total))
                done += 1
                ratios.append(metrics.nn_ratio(res.nn_dist))
                eff.append(metrics.effective_sources(res.source_weights))
                copies.append(metrics.is_copy(res))
                seconds += res.seconds
            q = np.concatenate(ratios)
            k = int((q < ratio).sum())
            lo, hi = wilson(k, len(q))
            rows.append({"model": cfg.model, "sigma": cfg.sigma, "size": size, "samples": len(q),
                         "memorised": k / len(q), "lo": lo, "hi": hi, "mean_nn_ratio": float(q.mean()),
                         "effective_sources": float(np.concatenate(eff).mean()),
                         "copies": float(np.concatenate(copies).mean()), "seconds": seconds})
    return rows


def emm(rows: list[dict], level: float = EMM_LEVEL) -> list[dict]:
    """Per curve (model, sigma): the largest size up to which the memorised fraction stays at or
    above `level` (None when it is below already at the smallest size); `every_size` says it never
    dropped, so the EMM is at least the largest size tested."""
    out = []
    for key in dict.fromkeys((r["model"], r["sigma"]) for r in rows):
        curve = sorted((r for r in rows if (r["model"], r["sigma"]) == key), key=lambda r: r["size"])
        best, every = None, True
        for r in curve:
            if r["memorised"] < level:
                every = False
                break
            best = r["size"]
        out.append({"model": key[0], "sigma": key[1], "emm": best, "every_size": every})
    return out


def rows_to_csv(rows: list[dict], columns=COLUMNS) -> str:
    def cell(v):
        return "" if v is None else v if isinstance(v, str) else str(v) if isinstance(v, (int, np.integer)) \
            else repr(float(v))
    return "\n".join([",".join(columns)] + [",".join(cell(r[c]) for c in columns) for r in rows]) + "\n"
