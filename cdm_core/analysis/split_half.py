"""The split-half test (Kadkhodaie et al., ICLR 2024): does a model generalise?

The training set is split once into two disjoint halves (seeded; within each class its items
alternate between the halves, so both stay class-balanced); the model of each size is built on
the first `size` items of each half (nested, as data/subsets.py orders them) and both are sampled
from the same seeds, so sample i of both starts from the same noise. A model that generalises
gives the same sample from both halves as the size grows; a memorising one gives two unrelated
training items. Per size: the mean cosine similarity of paired samples, each centred on the
whole data set's mean, its spread over the pairs, and the mean paired distance relative to the
data's spread (mean pairwise distance of the training items).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from cdm_core.analysis.metrics import mean_pairwise_distance
from cdm_core.analysis.sweep import _within
from cdm_core.config import SamplerConfig
from cdm_core.data.subsets import SUBSET_SEED, nested_order, rank_within_class
from cdm_core.errors import CdmInputError
from cdm_core.pipeline.inputs import as_dataset
from cdm_core.pipeline.run import sample

COLUMNS = ("size", "similarity", "similarity_sd", "distance", "samples")


def halves(n: int, labels=None, seed: int = SUBSET_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves of 0..n-1, each in nested (prefix = subset) order: items alternate
    between the halves by their rank within their class in `nested_order`."""
    order = nested_order(n, labels, seed)
    rank = rank_within_class(np.zeros(n, np.int64) if labels is None else np.asarray(labels)[order])
    return order[rank % 2 == 0], order[rank % 2 == 1]


def paired_similarity(a: np.ndarray, b: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Cosine similarity of each pair of samples (rows), both centred on `centre`."""
    ca, cb = a - centre, b - centre
    na, nb = np.linalg.norm(ca, axis=1), np.linalg.norm(cb, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((na > 0) & (nb > 0), (ca * cb).sum(1) / (na * nb), np.nan)


def split_half(data, base: SamplerConfig, sizes, callback=None, keep_samples: bool = False):
    """Rows (COLUMNS) per size; with `keep_samples`, also the two halves' samples per size."""
    ds = as_dataset(data)
    a_all, b_all = halves(ds.n, ds.labels)
    sizes = sorted({int(s) for s in sizes})
    if not sizes or sizes[0] < 2 or sizes[-1] > len(b_all):
        raise CdmInputError(f"sizes (items per half) must lie in [2, {len(b_all)}], half of the data set, got {sizes}")
    if base.subset:
        raise CdmInputError("split-half chooses its own subsets: set subset 0")
    centre = np.asarray(ds.points, np.float64).mean(0)
    spread = mean_pairwise_distance(np.asarray(ds.points))
    rows, kept, total = [], [], 2 * len(sizes)
    for k, size in enumerate(sizes):
        pair = []
        for h, ids in enumerate((a_all[:size], b_all[:size])):
            ids = np.sort(ids)
            half = replace(ds, name=f"{ds.name} (half {'AB'[h]}, {size:,})",
                           points=np.ascontiguousarray(ds.points[ids]),
                           labels=None if ds.labels is None else ds.labels[ids])
            res = sample(half, base, callback=None if callback is None else _within(callback, 2 * k + h, total))
            pair.append(res.samples)
        sim = paired_similarity(pair[0], pair[1], centre)
        dist = np.linalg.norm(pair[0] - pair[1], axis=1)
        rows.append({"size": size, "similarity": float(np.nanmean(sim)),
                     "similarity_sd": float(np.nanstd(sim, ddof=1)) if len(sim) > 1 else 0.0,
                     "distance": float(dist.mean() / spread) if spread > 0 else 0.0, "samples": len(sim)})
        kept.append(pair)
    return (rows, kept) if keep_samples else rows
