"""Memorisation measures, per sample and for a set of samples. Two verdicts, always named apart:

- **copy (exact sources)**: the tool's own verdict. A sample is a *copy* of its nearest training
  item when that item, together with its exact duplicates (items tied at the nearest distance),
  carries at least `COPY_WEIGHT` (0.99) of its exact blend weight: a sample that lands on an item
  stored twice splits its weight between the two rows and is still a copy. A sample
  whose nearest item carries no weight is *close to an item it is not made of*, said as such.
- **memorised (distance criterion)**: the field's standard test (Carlini et al. 2023; Gu et al.,
  "On Memorization in Diffusion Models", TMLR 2025): memorised when d1 / d2 < `COPY_RATIO` (1/3),
  d1, d2 the L2 distances to the nearest and second-nearest training items.

Other measures:
- `nn_distance`: distance to the nearest training point; `nn_ratio`: d1 / d2 (0 for an exact
  copy, also of a duplicated training point; close to 1 between points).
- `effective_sources`: exp(entropy of the source weights): 1 for a copy, M for an even blend of
  M points.
- `diversity`: mean pairwise distance between samples divided by that between training points
  (1 means as spread out as the data).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cdm_core.analysis.dust import DUST

COPY_RATIO = 1.0 / 3.0  # distance criterion: memorised when d1 / d2 < 1/3 (Gu et al. 2025)
COPY_WEIGHT = 0.99  # exact sources: a copy when one item carries at least this much of the weight
CRITERION = "memorised: d1/d2 < 1/3 (Gu et al. 2025)"  # the criterion's name wherever it is shown


def criterion_name(ratio: float = COPY_RATIO) -> str:
    return CRITERION if ratio == COPY_RATIO else f"memorised: d1/d2 < {ratio:.3g} (criterion of Gu et al. 2025)"


def main_source(result) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, the item with most exact blend weight and that weight."""
    return result.source_ids[:, 0], np.where(result.source_ids[:, 0] >= 0, result.source_weights[:, 0], 0.0)


def nearest_tied(result) -> list[np.ndarray]:
    """Per sample, the nearest item's id and those of items tied with it at the nearest distance
    (exact duplicates, among the reported nearest)."""
    d1 = result.nn_dist[:, :1]
    tied = result.nn_dist <= d1 * (1 + 1e-9) + 1e-300
    return [ids[t] for ids, t in zip(result.nn_ids, tied)]


def copy_weight_of(result) -> np.ndarray:
    """(n,) the exact blend weight carried by each sample's nearest item and its tied duplicates.

    For the local models (per-pixel sources) it is the mean over pixels of the weight from that
    item *at the same pixel*: an ELS mosaic of one item's patches moved elsewhere is not a copy.
    For signed (affine) sources the others' absolute weight is subtracted, so a blend whose
    large weights cancel is not called a copy of its largest one."""
    out = np.zeros(len(result.samples))
    pixel_ids = getattr(result, "pixel_source_ids", None)
    signed = getattr(result, "ran", {}).get("sources") == "affine"
    for i, near in enumerate(nearest_tied(result)):
        if pixel_ids is not None:
            own = np.arange(pixel_ids.shape[1])[:, None]
            hit = np.isin(pixel_ids[i], near) & (result.pixel_source_pixels[i] == own)
            out[i] = result.pixel_source_weights[i][hit].sum() / pixel_ids.shape[1]
            continue
        ok = result.source_ids[i] >= 0
        mine = np.isin(result.source_ids[i], near) & ok
        out[i] = result.source_weights[i][mine].sum()
        if signed:
            out[i] -= np.abs(result.source_weights[i][~mine & ok]).sum()
    return out


def is_copy(result, copy_weight: float = COPY_WEIGHT) -> np.ndarray:
    """(n,) bool: made of its nearest item (with its exact duplicates): weight >= copy_weight."""
    return copy_weight_of(result) >= copy_weight


def nearest_not_a_source(result) -> np.ndarray:
    """(n,) bool: the nearest training item carries only dust of the sample's weight."""
    out = np.zeros(len(result.samples), bool)
    for i in range(len(out)):
        nn = result.nn_ids[i, 0]
        w = result.source_weights[i][result.source_ids[i] == nn]
        out[i] = not (w >= DUST).any()
    return out


def nn_ratio(nn_dist: np.ndarray) -> np.ndarray:
    if nn_dist.shape[1] < 2:
        return np.zeros(len(nn_dist))
    d1, d2 = nn_dist[:, 0], nn_dist[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d2 > 0, d1 / np.where(d2 > 0, d2, 1), 0.0)


def effective_sources(source_weights: np.ndarray) -> np.ndarray:
    """exp(entropy) of each row of weights; signed (affine) weights by their absolute values,
    normalised, so cancelling weights count as the sources they are."""
    if (source_weights < 0).any():
        a = np.abs(source_weights)
        source_weights = a / np.where(a.sum(1, keepdims=True) > 0, a.sum(1, keepdims=True), 1.0)
    w = np.clip(source_weights, 0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(w > 0, w * np.log(np.where(w > 0, w, 1)), 0.0).sum(1)
    return np.exp(ent)


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, how well samples b (n, D) match samples a from the same seeds: the pixel
    Pearson r, and r^2 = 1 - SS_res / SS_tot with a as the reference (SS_tot about a's own mean;
    Kamb & Ganguli's published "r^2" is the Pearson r). NaN where a sample is constant."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"agreement needs samples of the same shape, got {a.shape} and {b.shape}")
    da, db = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    sa, sb = np.sqrt((da * da).sum(1)), np.sqrt((db * db).sum(1))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where((sa > 0) & (sb > 0), (da * db).sum(1) / (sa * sb), np.nan)
        r2 = np.where(sa > 0, 1.0 - ((a - b) ** 2).sum(1) / (sa * sa), np.nan)
    return r, r2


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
    copy_fraction: float  # share of samples that copy one item (exact sources, `is_copy`)
    memorised_fraction: float  # share with d1/d2 < copy_ratio (the distance criterion)
    mean_nn_ratio: float
    mean_nn_distance: float
    mean_effective_sources: float
    diversity: float  # mean pairwise sample distance / mean pairwise training distance
    unique_nn_fraction: float  # distinct nearest training points / number of samples
    copy_ratio: float  # the distance criterion's threshold used
    copy_weight: float  # the exact-source copy threshold used

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def per_sample(result) -> dict:
    return {"nn_distance": result.nn_dist[:, 0], "nn_ratio": nn_ratio(result.nn_dist),
            "effective_sources": effective_sources(result.source_weights), "copy": is_copy(result)}


def set_metrics(result, train_points: np.ndarray | None = None, copy_ratio: float = COPY_RATIO,
                train_spread: float | None = None, copy_weight: float = COPY_WEIGHT) -> SetMetrics:
    """Memorisation metrics of a run; the training set's spread from `train_points` or given."""
    ps = per_sample(result)
    if train_spread is None:
        train_spread = mean_pairwise_distance(train_points)
    return SetMetrics(
        copy_fraction=float(np.mean(is_copy(result, copy_weight))),
        memorised_fraction=float(np.mean(ps["nn_ratio"] < copy_ratio)),
        mean_nn_ratio=float(ps["nn_ratio"].mean()),
        mean_nn_distance=float(ps["nn_distance"].mean()),
        mean_effective_sources=float(ps["effective_sources"].mean()),
        diversity=mean_pairwise_distance(result.samples) / train_spread if train_spread > 0 else 0.0,
        unique_nn_fraction=len(np.unique(result.nn_ids[:, 0])) / len(result.nn_ids),
        copy_ratio=copy_ratio, copy_weight=copy_weight)
