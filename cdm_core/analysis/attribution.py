"""Samples from any model: what did it copy, and what would an analytic model have made?

For each sample (of the user's own trained network, say): its exact nearest training items, the
standard memorisation criterion (d1 / d2 < 1/3, Gu et al. 2025), and the closest blend of
training items, by non-negative least squares over its K nearest items with the weights summing
to one. Given each sample's start noise (its state at t = 0), the chosen analytic model is run
from that very noise (same steps, t = 0 start, no start draws of its own) and its agreement with
the sample is reported per sample: pixel Pearson r and r^2 = 1 - SS_res / SS_tot (the comparison
of Kamb & Ganguli, arXiv 2412.20292).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from cdm_core.analysis import metrics
from cdm_core.config import SamplerConfig
from cdm_core.errors import CdmInputError
from cdm_core.pipeline.inputs import as_dataset
from cdm_core.pipeline.prepared import prepare
from cdm_core.pipeline.run import sample

SUM_WEIGHT = 1e4  # the sum-to-one row's weight in the least-squares system, relative to the data's scale


@dataclass
class Attribution:
    nn_ids: np.ndarray  # (n, k) int64 nearest training items, exact (float64 distances)
    nn_dist: np.ndarray  # (n, k) float64
    nn_ratio: np.ndarray  # (n,) d1 / d2
    memorised: np.ndarray  # (n,) bool: d1 / d2 < ratio
    ratio: float  # the criterion's threshold
    blend_ids: np.ndarray  # (n, K) int64 the K nearest items the blend is fitted over
    blend_weights: np.ndarray  # (n, K) float64 >= 0, summing to one
    blend_residual: np.ndarray  # (n,) float64 L2 distance from the sample to its blend
    agreement_r: np.ndarray | None = None  # (n,) pixel Pearson r against the analytic model from the same noise
    agreement_r2: np.ndarray | None = None  # (n,) 1 - SS_res / SS_tot (the sample as reference)
    model_samples: np.ndarray | None = None  # (n, D) the analytic model's samples from the same noise

    def arrays(self) -> dict:
        out = {k: getattr(self, k) for k in ("nn_ids", "nn_dist", "nn_ratio", "memorised", "blend_ids",
                                             "blend_weights", "blend_residual")}
        out |= {k: getattr(self, k) for k in ("agreement_r", "agreement_r2", "model_samples")
                if getattr(self, k) is not None}
        return out


def closest_blend(x: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, float]:
    """min |x - sum_k w_k items_k| over w >= 0 with sum w = 1 (non-negative least squares on the
    differences items_k - x, plus a heavily weighted sum-to-one row); returns (w, residual)."""
    diff = (items - x).T  # (D, K): sum w (items - x) = blend - x when sum w = 1
    scale = max(1.0, float(np.abs(diff).max()))
    a = np.vstack([diff, np.full((1, items.shape[0]), SUM_WEIGHT * scale)])
    b = np.concatenate([np.zeros(diff.shape[0]), [SUM_WEIGHT * scale]])
    w, _ = nnls(a, b, maxiter=50 * items.shape[0])
    total = w.sum()
    w = w / total if total > 0 else np.full(len(w), 1.0 / len(w))
    return w, float(np.linalg.norm(x - w @ items))


def check_samples(samples, dim: int, name: str = "samples") -> np.ndarray:
    arr = np.asarray(samples)
    if arr.dtype.kind not in "biuf":
        raise CdmInputError(f"{name}: must be numeric, got dtype {arr.dtype}")
    arr = arr.reshape(len(arr), -1).astype(np.float64) if arr.ndim > 1 else arr
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise CdmInputError(f"{name}: expected {dim} values per sample (the data set's), got shape {np.shape(samples)}")
    if len(arr) == 0:
        raise CdmInputError(f"{name}: no samples")
    if not np.all(np.isfinite(arr)):
        raise CdmInputError(f"{name}: contains NaN or infinite values")
    return arr


def attribute(data, samples, config: SamplerConfig = SamplerConfig(), noise=None, k: int = 64,
              ratio: float = metrics.COPY_RATIO, callback=None) -> Attribution:
    """Attribute samples (n, D) to the training set `data`; with `noise` (n, D), also run
    `config`'s model from it (config.n_samples and start are set to match)."""
    ds = as_dataset(data)
    x = check_samples(samples, ds.dim)
    if not 1 <= k <= min(ds.n, 1024):
        raise CdmInputError(f"K (items the blend is fitted over) must be in [1, {min(ds.n, 1024)}], got {k}")
    if not 0 < ratio < 1:
        raise CdmInputError(f"the criterion's ratio must be in (0, 1), got {ratio}")
    ts = prepare(ds, SamplerConfig(index="flat", device=config.device))  # faiss, certified, float64 distances
    ids, dist = ts.nearest(x, max(k, 2))
    q = metrics.nn_ratio(dist)
    weights = np.empty((len(x), k))
    residual = np.empty(len(x))
    pts = np.asarray(ds.points, np.float64)
    for i in range(len(x)):
        weights[i], residual[i] = closest_blend(x[i], pts[ids[i, :k]])
    order = np.argsort(-weights, axis=1, kind="stable")  # largest weight first
    out = Attribution(ids, dist, q, q < ratio, ratio, np.take_along_axis(ids[:, :k], order, 1),
                      np.take_along_axis(weights, order, 1), residual)
    if noise is not None:
        z = check_samples(noise, ds.dim, "noise")
        if len(z) != len(x):
            raise CdmInputError(f"noise: {len(z)} start states for {len(x)} samples")
        res = sample(ds, config.replace(n_samples=len(x), start=0.0, subset=0), noise=z, callback=callback)
        out.model_samples = res.samples
        out.agreement_r, out.agreement_r2 = metrics.agreement(x, res.samples)
    return out
