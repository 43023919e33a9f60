"""k-nearest-neighbour search over the training set, behind one small interface.

`index.search(queries, k, exclude=None) -> (sq_dist, ids)`: float32 queries (q, D), the `k`
nearest training points by squared Euclidean distance, ids int64 padded with -1 (and distance
+inf) when fewer than `k` points are eligible; `exclude` is an optional array of training ids to
skip. Backends:

- `TorchIndex`: dense torch, blocks of queries x blocks of training points with merged top-k
  (exact; the reference, and the CUDA path without faiss-gpu);
- `FlatIndex`: faiss `IndexFlatL2` (exact);
- `IVFIndex`: faiss `IndexIVFFlat` (approximate, `nprobe` lists per query);
- `GpuFlatIndex`: faiss flat index on the GPU when `faiss.get_num_gpus() > 0`.

An index is built once per training set and reused for every time `t` (queries are
`(x + sigma eps) / t`).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from cdm_core.errors import CdmInputError

log = logging.getLogger(__name__)


def _check_queries(queries, dim: int) -> np.ndarray:
    if isinstance(queries, torch.Tensor):
        queries = queries.detach().cpu().numpy()
    if not isinstance(queries, np.ndarray):
        raise CdmInputError(f"queries must be a numpy array or torch tensor, got {type(queries).__name__}")
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise CdmInputError(f"queries must have shape (q, {dim}), got {queries.shape}")
    if queries.dtype.kind not in "fiu":
        raise CdmInputError(f"queries must be numeric, got dtype {queries.dtype}")
    return np.ascontiguousarray(queries, dtype=np.float32)


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise CdmInputError(f"k must be a positive integer, got {k!r}")
    return int(k)


class NeighbourIndex:
    kind = "base"
    exact = True

    def __init__(self, points: np.ndarray):
        if not isinstance(points, np.ndarray) or points.ndim != 2 or points.shape[0] < 1:
            raise CdmInputError(f"training points must be a non-empty (N, D) array, got "
                                f"{getattr(points, 'shape', type(points).__name__)}")
        self.n, self.dim = points.shape

    def search(self, queries, k: int, exclude: np.ndarray | None = None):
        q = _check_queries(queries, self.dim)
        k = _check_k(k)
        exclude = None if exclude is None or len(exclude) == 0 else np.unique(np.asarray(exclude, np.int64))
        kk = min(k, self.n)
        dist, ids = self._search(q, kk, exclude)
        if kk < k:  # pad to the requested width
            pad = k - kk
            dist = np.concatenate([dist, np.full((len(q), pad), np.inf, np.float32)], 1)
            ids = np.concatenate([ids, np.full((len(q), pad), -1, np.int64)], 1)
        dist = np.where(ids < 0, np.inf, dist).astype(np.float32)
        return dist, ids.astype(np.int64)

    def _search(self, q, k, exclude):  # pragma: no cover - abstract
        raise NotImplementedError


class TorchIndex(NeighbourIndex):
    """Exact search with torch: blocks of queries against blocks of points, merged top-k."""

    kind = "torch"

    def __init__(self, points: np.ndarray, device: str = "cpu", block: int = 16384):
        super().__init__(points)
        self.device = torch.device(device)
        self.x = torch.as_tensor(np.ascontiguousarray(points, np.float32), device=self.device)
        self.sq = (self.x * self.x).sum(1)
        self.block = block

    def _search(self, q, k, exclude):
        qt = torch.as_tensor(q, device=self.device)
        qsq = (qt * qt).sum(1, keepdim=True)
        best_d = torch.full((len(q), k), math.inf, device=self.device)
        best_i = torch.full((len(q), k), -1, dtype=torch.int64, device=self.device)
        excl = None if exclude is None else torch.as_tensor(exclude, device=self.device)
        for lo in range(0, self.n, self.block):
            hi = min(lo + self.block, self.n)
            d = (qsq - 2 * qt @ self.x[lo:hi].T + self.sq[lo:hi]).clamp_min_(0)
            if excl is not None:
                sel = excl[(excl >= lo) & (excl < hi)] - lo
                d[:, sel] = math.inf
            kb = min(k, hi - lo)
            bd, bi = torch.topk(d, kb, dim=1, largest=False)
            # merge this block's top-k with the running top-k
            cat_d = torch.cat([best_d, bd], 1)
            cat_i = torch.cat([best_i, bi + lo], 1)
            best_d, pos = torch.topk(cat_d, k, dim=1, largest=False)
            best_i = torch.gather(cat_i, 1, pos)
        best_i = torch.where(torch.isinf(best_d), torch.full_like(best_i, -1), best_i)
        return best_d.cpu().numpy(), best_i.cpu().numpy()


def _faiss():
    import faiss  # imported lazily: faiss pulls in OpenMP at import time
    return faiss


def _selector(exclude):
    faiss = _faiss()
    inner = faiss.IDSelectorBatch(exclude)
    sel = faiss.IDSelectorNot(inner)
    sel._keep_alive = inner  # the C++ object must outlive the search
    return sel


class FlatIndex(NeighbourIndex):
    kind = "flat"

    def __init__(self, points: np.ndarray):
        super().__init__(points)
        faiss = _faiss()
        self.index = faiss.IndexFlatL2(self.dim)
        self.index.add(np.ascontiguousarray(points, np.float32))

    def _search(self, q, k, exclude):
        faiss = _faiss()
        params = None if exclude is None else faiss.SearchParameters(sel=_selector(exclude))
        return self.index.search(q, k, params=params)


class IVFIndex(NeighbourIndex):
    kind = "ivf"
    exact = False

    def __init__(self, points: np.ndarray, nlist: int = 0, nprobe: int = 32, seed: int = 1234):
        super().__init__(points)
        faiss = _faiss()
        nlist = nlist or max(1, int(4 * math.sqrt(self.n)))
        nlist = min(nlist, self.n)
        self.nprobe = min(nprobe, nlist)
        self.quantizer = faiss.IndexFlatL2(self.dim)
        self.index = faiss.IndexIVFFlat(self.quantizer, self.dim, nlist)
        x = np.ascontiguousarray(points, np.float32)
        # k-means on a deterministic subsample (faiss samples 256 points per list at most)
        self.index.cp.seed = seed
        self.index.train(x)
        self.index.add(x)
        self.nlist = nlist

    def _search(self, q, k, exclude):
        faiss = _faiss()
        sel = None if exclude is None else _selector(exclude)
        params = faiss.SearchParametersIVF(nprobe=self.nprobe, sel=sel) if sel is not None \
            else faiss.SearchParametersIVF(nprobe=self.nprobe)
        return self.index.search(q, k, params=params)


class GpuFlatIndex(FlatIndex):
    kind = "gpu"

    def __init__(self, points: np.ndarray):
        NeighbourIndex.__init__(self, points)
        faiss = _faiss()
        self.res = faiss.StandardGpuResources()
        self.index = faiss.GpuIndexFlatL2(self.res, self.dim)
        self.index.add(np.ascontiguousarray(points, np.float32))


def faiss_gpus() -> int:
    try:
        return _faiss().get_num_gpus()
    except Exception:  # faiss-gpu imports without a GPU, but any GPU call may raise
        return 0


def build_index(points: np.ndarray, kind: str = "flat", *, device: str = "cpu",
                nlist: int = 0, nprobe: int = 32) -> NeighbourIndex:
    """Build a neighbour index of the given backend kind ('torch', 'flat', 'ivf', 'gpu')."""
    if kind == "torch":
        return TorchIndex(points, device=device)
    if kind == "flat":
        return FlatIndex(points)
    if kind == "ivf":
        return IVFIndex(points, nlist=nlist, nprobe=nprobe)
    if kind == "gpu":
        return GpuFlatIndex(points)
    raise CdmInputError(f"unknown neighbour index kind {kind!r} (torch, flat, ivf, gpu)")


def recall(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Fraction of the exact k nearest neighbours that an approximate search found."""
    hits = sum(len(np.intersect1d(a[a >= 0], e[e >= 0])) for a, e in zip(approx_ids, exact_ids))
    total = int((exact_ids >= 0).sum())
    return hits / max(total, 1)
