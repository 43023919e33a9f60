"""A 2-D map of the training set (UMAP, or PCA as the instant option), cached on disk.

The cache key is the data set's content hash plus the method's parameters, so a second launch is
instant and a different data set or parameter recomputes. Large or high-dimensional sets are
reduced with PCA to `pca_dims` first, and UMAP is fed a faiss kNN graph (`precomputed_knn`)
rather than running its own neighbour search. Sets larger than `max_points` are mapped on a fixed
random subset (the returned `ids` say which points have positions).

Samples are placed without another fit: at the weight-averaged map position of their exact blend
sources (`place_by_sources`), or with UMAP's `transform` when the fitted model is in memory and
has its own neighbour index (small sets).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cdm_core import settings
from cdm_core.data.dataset import Dataset
from cdm_core.data.store import atomic_write_bytes, npz_bytes
from cdm_core.errors import CdmInputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MapConfig:
    method: str = "umap"  # umap | pca
    n_neighbors: int = 15  # UMAP neighbourhood size (points)
    min_dist: float = 0.1  # UMAP minimum distance between embedded points (map units)
    pca_dims: int = 50  # reduce to this many principal components before UMAP (0 = never)
    max_points: int = 20000  # map at most this many training points (fixed random subset)
    seed: int = 0  # UMAP / subset seed

    def __post_init__(self):
        if self.method not in ("umap", "pca"):
            raise CdmInputError(f"map method must be umap or pca, got {self.method!r}")
        if not (2 <= self.n_neighbors <= 200):
            raise CdmInputError(f"n_neighbors must be in [2, 200], got {self.n_neighbors}")
        if not (0.0 <= self.min_dist <= 1.0):
            raise CdmInputError(f"min_dist must be in [0, 1], got {self.min_dist}")
        if self.max_points < 3:
            raise CdmInputError(f"max_points must be at least 3, got {self.max_points}")

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class Embedding:
    ids: np.ndarray  # (m,) int64 training ids that have positions
    positions: np.ndarray  # (m, 2) float32
    config: MapConfig
    content_hash: str
    from_cache: bool
    model: object = None  # fitted UMAP (in memory only; never written to disk)

    def position_of(self) -> np.ndarray:
        """(N_max_id + 1, 2) lookup with NaN for training points without a position."""
        table = np.full((int(self.ids.max()) + 1, 2), np.nan, np.float32)
        table[self.ids] = self.positions
        return table


def _subset(n: int, cfg: MapConfig) -> np.ndarray:
    if n <= cfg.max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(cfg.seed).choice(n, cfg.max_points, replace=False))


def _pca(x: np.ndarray, dims: int) -> np.ndarray:
    from sklearn.decomposition import PCA
    dims = min(dims, x.shape[1], x.shape[0])
    if x.shape[1] <= dims:
        return x
    return PCA(n_components=dims, random_state=0).fit_transform(x).astype(np.float32)


def knn_graph(x: np.ndarray, k: int):
    """faiss exact kNN graph with each point first in its own row (UMAP's convention, also for
    duplicate rows, which faiss may list before the point itself)."""
    from cdm_core.engine.neighbours import FlatIndex
    kk = min(k + 1, len(x))
    dist, ids = FlatIndex(x).search(x, kk)
    out_i = np.empty((len(x), k), np.int64)
    out_d = np.empty((len(x), k), np.float32)
    for r in range(len(x)):
        others = [(i, d) for i, d in zip(ids[r], dist[r]) if i != r and i >= 0][: k - 1]
        while len(others) < k - 1:  # fewer points than k: repeat the last neighbour
            others.append(others[-1] if others else (r, 0.0))
        out_i[r] = [r] + [i for i, _ in others]
        out_d[r] = [0.0] + [float(np.sqrt(max(d, 0.0))) for _, d in others]
    return out_i, out_d


def compute_map(ds: Dataset, cfg: MapConfig = MapConfig(), cache_dir: Path | None = None,
                callback=None) -> Embedding:
    """The 2-D map of `ds`, from the disk cache when there is one."""
    cache_dir = Path(cache_dir or settings.cache_dir()) / "maps"
    path = cache_dir / f"{ds.content_hash}-{cfg.key()}.npz"
    if path.exists():
        try:
            z = np.load(path, allow_pickle=False)
            return Embedding(z["ids"], z["positions"], cfg, ds.content_hash, from_cache=True)
        except (OSError, ValueError, KeyError):
            log.warning("ignoring unreadable map cache %s", path)
    say = callback or (lambda stage, frac: None)
    ids = _subset(ds.n, cfg)
    x = ds.points[ids]
    model = None
    if cfg.method == "pca" or len(ids) < 4:
        say("PCA", 0.3)
        pos = _pca(x, 2) if x.shape[1] >= 2 else np.c_[x, np.zeros(len(x))]
    else:
        say("PCA before UMAP", 0.1)
        xr = _pca(x, cfg.pca_dims) if cfg.pca_dims else x
        import umap
        k = min(cfg.n_neighbors, len(ids) - 1)
        if len(ids) > 4096:
            say("faiss kNN graph", 0.3)
            knn = knn_graph(np.ascontiguousarray(xr, np.float32), k)
            reducer = umap.UMAP(n_neighbors=k, min_dist=cfg.min_dist, random_state=cfg.seed,
                                precomputed_knn=(knn[0], knn[1]), n_jobs=1)
        else:
            reducer = umap.UMAP(n_neighbors=k, min_dist=cfg.min_dist, random_state=cfg.seed, n_jobs=1)
        say("UMAP layout", 0.5)
        pos = reducer.fit_transform(xr)
        model = reducer if len(ids) <= 4096 else None
        if model is not None and xr is not x:
            model = None  # transform would need the same PCA; keep it simple and honest
    pos = np.asarray(pos, np.float32)
    say("saving", 0.95)
    try:
        atomic_write_bytes(path, npz_bytes({"ids": ids.astype(np.int64), "positions": pos}))
    except OSError as e:
        log.warning("could not cache the map in %s: %s", path, e)
    return Embedding(ids.astype(np.int64), pos, cfg, ds.content_hash, from_cache=False, model=model)


def place_by_sources(emb: Embedding, source_ids: np.ndarray, source_weights: np.ndarray) -> np.ndarray:
    """Each sample at the weight-averaged map position of its blend sources (renormalised over the
    sources that have a position; NaN if none has)."""
    table = emb.position_of()
    out = np.full((len(source_ids), 2), np.nan, np.float32)
    for i, (ids, w) in enumerate(zip(source_ids, source_weights)):
        ok = (ids >= 0) & (ids < len(table))
        ids, w = ids[ok], w[ok]
        pos = table[ids]
        has = ~np.isnan(pos[:, 0])
        if has.any() and w[has].sum() > 0:
            out[i] = (w[has, None] * pos[has]).sum(0) / w[has].sum()
    return out


def place_by_top_source(emb: Embedding, source_ids: np.ndarray, source_weights: np.ndarray) -> np.ndarray:
    """Each sample at the map position of its largest mapped blend source (NaN if none is mapped):
    a real training item's place, never a point between clusters."""
    table = emb.position_of()
    out = np.full((len(source_ids), 2), np.nan, np.float32)
    for i, (ids, w) in enumerate(zip(source_ids, source_weights)):
        ok = (ids >= 0) & (ids < len(table))
        ids, w = ids[ok], w[ok]
        has = ~np.isnan(table[ids][:, 0]) if len(ids) else np.zeros(0, bool)
        if has.any():
            out[i] = table[ids[has][np.argmax(w[has])]]
    return out


def source_spread(emb: Embedding, sample_pos: np.ndarray, source_ids: np.ndarray, source_weights: np.ndarray,
                  ) -> np.ndarray:
    """Per sample, the weighted RMS map distance of its mapped sources from its placed position,
    as a fraction of the map's extent (bounding-box diagonal of the training points): near 0 when
    the sources sit together, large when the sample's position averages distant clusters."""
    table = emb.position_of()
    pos = emb.positions
    extent = float(np.linalg.norm(np.nanmax(pos, 0) - np.nanmin(pos, 0))) if len(pos) else 1.0
    out = np.full(len(source_ids), np.nan)
    for i, (ids, w) in enumerate(zip(source_ids, source_weights)):
        ok = (ids >= 0) & (ids < len(table))
        p, w = table[ids[ok]], w[ok]
        has = ~np.isnan(p[:, 0]) if len(p) else np.zeros(0, bool)
        if has.any() and w[has].sum() > 0 and not np.isnan(sample_pos[i, 0]):
            d2 = ((p[has] - sample_pos[i]) ** 2).sum(1)
            out[i] = np.sqrt((w[has] * d2).sum() / w[has].sum()) / max(extent, 1e-300)
    return out


def source_edges(emb: Embedding, sample_pos: np.ndarray, source_ids: np.ndarray, source_weights: np.ndarray,
                 samples) -> list:
    """Edges from the chosen samples to their mapped blend sources, for `figures.map_figure`:
    (sample position (2,), source positions (k, 2), weights (k,)) per sample."""
    table = emb.position_of()
    edges = []
    for i in samples:
        if 0 <= i < len(source_ids):
            ok = (source_ids[i] >= 0) & (source_ids[i] < len(table))
            edges.append((sample_pos[i], table[source_ids[i][ok]], source_weights[i][ok]))
    return edges


def place_by_transform(emb: Embedding, samples: np.ndarray) -> np.ndarray | None:
    if emb.model is None:
        return None
    return np.asarray(emb.model.transform(samples), np.float32)
