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
`(x + sigma eps) / t`). The engine builds it on centred points and centred queries, where float32
distances are accurate relative to the data's spread.

`index.certified_search(queries64, k, exclude)` adds what makes truncation honest: for each query
a *lower bound* on the squared distance of every eligible point the search did not return. For
the exhaustive indexes it is the k-th float32 distance less a rigorous bound on float32 rounding,
`rounding * (|q| + max_i |x_i|)^2`, which holds for any summation order and for both the direct
and the `|q|^2 - 2 q.x + |x|^2` (BLAS) kernels; for IVF it also covers the lists not visited, by
the distance from the query to each list's centroid less the list's radius.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from cdm_core.engine.kernels import merge_nearest
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


U32 = 2.0 ** -24  # unit roundoff of float32
U_TF32 = 2.0 ** -11  # unit roundoff of TF32 / reduced-precision GPU products


def float32_rounding(dim: int, unit: float = U32) -> float:
    """Relative bound `r` with |fl(|q - x|^2) - |q - x|^2| <= r (|q| + |x|)^2 for a float32
    squared distance of length `dim` computed in any order, directly or as |q|^2 - 2 q.x + |x|^2,
    including the rounding of float64 inputs to float32 (the 10 unit roundoffs) and a 1% margin."""
    return (dim * unit / (1 - dim * unit) + 10 * unit) * 1.01


class NeighbourIndex:
    kind = "base"
    exact = True

    def __init__(self, points: np.ndarray):
        if not isinstance(points, np.ndarray) or points.ndim != 2 or points.shape[0] < 1:
            raise CdmInputError(f"training points must be a non-empty (N, D) array, got "
                                f"{getattr(points, 'shape', type(points).__name__)}")
        self.n, self.dim = points.shape
        # the largest norm, with a margin for the float32 copy: the rounding bound needs it
        self.norm_max = float(np.sqrt((points.astype(np.float64) ** 2).sum(1).max())) * (1 + 1e-6)
        self.rounding = float32_rounding(self.dim)

    def certified_search(self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None):
        """(ids (q, k) int64 -1 padded, lower (q,) float64): the search's ids, and a lower bound on
        |q - x_i|^2 for every point i that is neither returned nor excluded (+inf when none is
        left). `queries` are float64: the bound is about the exact distances."""
        q64 = np.asarray(queries, np.float64)
        dist, ids = self.search(q64, k, exclude)
        return ids, self._lower(q64, dist, ids)

    def _lower(self, q64: np.ndarray, dist: np.ndarray, ids: np.ndarray) -> np.ndarray:
        err = self.rounding * (np.sqrt((q64 ** 2).sum(1)) + self.norm_max) ** 2
        lower = np.maximum(dist[:, -1].astype(np.float64) - err, 0.0)
        return np.where(ids[:, -1] < 0, np.inf, lower)  # fewer than k returned: none left out

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

    @property
    def rounding(self) -> float:
        """Decided at search time: torch's float32 precision settings may change after the index
        is built (TF32 on CUDA, or `set_float32_matmul_precision` below "highest")."""
        reduced = ((self.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32)
                   or torch.get_float32_matmul_precision() != "highest")
        return float32_rounding(self.dim, U_TF32 if reduced else U32)

    @rounding.setter
    def rounding(self, value) -> None:  # the base class sets the float32 default; the property decides
        pass

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
            bd, bi = torch.topk(d, min(k, hi - lo), dim=1, largest=False)
            best_i, best_d = merge_nearest([(best_i, best_d), (bi + lo, bd)], k)  # with the running top-k
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
    """Inverted lists: approximate search, but its truncation bound is certified (see
    `certified_search`): a query whose bound is loose falls back to the dense computation."""

    kind = "ivf"
    exact = False

    def __init__(self, points: np.ndarray, nlist: int = 0, nprobe: int = 32, seed: int = 1234):
        super().__init__(points)
        if self.norm_max > 1e18:  # squared distances would overflow faiss's float32 k-means (it aborts)
            raise CdmInputError(f"index ivf: point norms up to {self.norm_max:.1e} are too large for its float32 "
                                "clustering; use index auto, exact, flat or torch")
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
        # each list's centroid and radius (float64, over the points as given): a point in a list
        # not visited is at least |q - centroid| - radius from the query
        self.centroids = self.quantizer.reconstruct_n(0, nlist).astype(np.float64)
        pts = points.astype(np.float64)
        self.radii = np.zeros(nlist)
        for lst in range(nlist):
            size = self.index.invlists.list_size(lst)
            if size:
                members = faiss.rev_swig_ptr(self.index.invlists.get_ids(lst), size).copy()
                self.radii[lst] = np.sqrt(((pts[members] - self.centroids[lst]) ** 2).sum(1).max())
        self.radii = self.radii * (1 + 1e-9) + 4 * U32 * self.norm_max  # the float32 copy's rounding
        self.index.nprobe = self.nprobe

    def _assign(self, q64: np.ndarray):
        """The `nprobe` nearest lists by float64 centroid distance (ours, not faiss's, so the
        visited lists are known exactly), and those distances."""
        d = ((q64 ** 2).sum(1)[:, None] - 2 * q64 @ self.centroids.T + (self.centroids ** 2).sum(1)).clip(0)
        lists = np.argsort(d, axis=1, kind="stable")[:, :self.nprobe]
        return lists, np.take_along_axis(d, lists, 1), d

    def _search(self, q, k, exclude):
        lists, dis, _ = self._assign(q.astype(np.float64))
        return self._preassigned(q, k, exclude, lists, dis)[:2]

    def _preassigned(self, q, k, exclude, lists, dis):
        """(dist, ids, last): search_preassigned takes no selector, so excluded points are dropped
        afterwards; `last` is the k-th distance before that (+inf when the visited lists held
        fewer than k points): every point of the visited lists not returned is at least as far."""
        fetch = min(self.n, k + (0 if exclude is None else len(exclude)))
        dist, ids = self.index.search_preassigned(np.ascontiguousarray(q, np.float32), fetch, lists.astype(np.int64),
                                                  dis.astype(np.float32))
        last = np.where(ids[:, -1] >= 0, dist[:, -1].astype(np.float64), np.inf)
        if exclude is not None:
            drop = np.isin(ids, exclude)
            ids = np.where(drop, -1, ids)
            dist = np.where(drop, np.inf, dist).astype(np.float32)
            order = np.argsort(dist, axis=1, kind="stable")
            ids, dist = np.take_along_axis(ids, order, 1), np.take_along_axis(dist, order, 1)
            if ids.shape[1] > k:  # eligible points fetched but cut after the k-th are omitted too
                last = np.minimum(last, np.where(ids[:, k] >= 0, dist[:, k].astype(np.float64), np.inf))
        return dist[:, :k], ids[:, :k], last

    def certified_search(self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None):
        q64 = np.asarray(queries, np.float64)
        lists, dis, all_d = self._assign(q64)
        excl = None if exclude is None or len(exclude) == 0 else np.unique(np.asarray(exclude, np.int64))
        kk = min(k, self.n)
        _, ids, last = self._preassigned(q64, kk, excl, lists, dis)
        # in the visited lists: the float32 search's own bound
        err = self.rounding * (np.sqrt((q64 ** 2).sum(1)) + self.norm_max) ** 2
        visited = np.maximum(last - err, 0.0)
        # in the other lists: |q - x| >= |q - centroid| - radius
        gap = np.maximum(np.sqrt(all_d) * (1 - 1e-12) - self.radii[None, :], 0.0) ** 2
        np.put_along_axis(gap, lists, np.inf, 1)
        lower = np.minimum(visited, gap.min(1)) if gap.shape[1] > self.nprobe else visited
        if kk < k:
            ids = np.concatenate([ids, np.full((len(q64), k - kk), -1, np.int64)], 1)
        return ids.astype(np.int64), lower


class GpuFlatIndex(FlatIndex):
    kind = "gpu"

    def __init__(self, points: np.ndarray):
        NeighbourIndex.__init__(self, points)
        faiss = _faiss()
        self.res = faiss.StandardGpuResources()
        self.index = faiss.GpuIndexFlatL2(self.res, self.dim)
        self.index.add(np.ascontiguousarray(points, np.float32))
        self.rounding = float32_rounding(self.dim, U_TF32)  # GPU products may round inputs to TF32


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
