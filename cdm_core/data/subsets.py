"""Nested training subsets: the first n items of one seeded order, class-balanced where the data
set has labels, so the subset of 500 is inside the subset of 1,000 (memorisation against size,
and the local models on a CPU)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from cdm_core.data.dataset import Dataset

SUBSET_SEED = 0  # the order's seed: the same subsets in every run, link and manifest


def nested_order(n: int, labels: np.ndarray | None = None, seed: int = SUBSET_SEED) -> np.ndarray:
    """A permutation of 0..n-1 whose every prefix is a seeded random subset, with the classes
    taken in turn (each prefix balanced to within one item per class, while classes last)."""
    perm = np.random.default_rng([int(seed), 7151]).permutation(n)
    if labels is None:
        return perm
    lab = np.asarray(labels)[perm]
    # rank of each item within its class (in permuted order), then round-robin over the classes
    return perm[np.lexsort((lab, rank_within_class(lab)))]


def rank_within_class(labels: np.ndarray) -> np.ndarray:
    """(n,) each item's position among the items of its class, in the given order."""
    rank = np.empty(len(labels), np.int64)
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        rank[where] = np.arange(len(where))
    return rank


def subset(ds: Dataset, size: int, seed: int = SUBSET_SEED) -> tuple[Dataset, np.ndarray]:
    """(the data set restricted to the first `size` items of `nested_order`, their ids in `ds`,
    sorted). `size` >= N gives the data set itself."""
    if size >= ds.n:
        return ds, np.arange(ds.n)
    ids = np.sort(nested_order(ds.n, ds.labels, seed)[:size])
    labels = None if ds.labels is None else ds.labels[ids]
    return replace(ds, name=f"{ds.name} (subset of {size:,})", points=np.ascontiguousarray(ds.points[ids]),
                   labels=labels, params=dict(ds.params) | {"subset": size, "subset_seed": seed}), ids
