"""The training-set seam: what every strategy needs from a training set, prepared once.

`TrainingSet` holds the points *centred* on their mean c, in float64 on the compute device, with
their squared norms, a float32 copy for screens and searches, and the neighbour index (built on
the centred float32 copy). Centring leaves the maths unchanged (docs/maths.md: the sampler run on
x_i - c from x_T - T c gives x_1 - c) and makes every float32 shortcut accurate relative to the
data's spread rather than to their distance from the origin (docs/numerics.md). A sharded
training set (cdm_core.pipeline.shards) is another implementation of the same few members.

`build` makes one from a data set's points; caching prepared sets, latent spaces and files are
the pipeline's business (cdm_core.pipeline), never the engine's.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from cdm_core.config import SamplerConfig
from cdm_core.data.dataset import Dataset
from cdm_core.engine.blend import F64
from cdm_core.engine.kernels import row_blocks, sort_by_distance
from cdm_core.engine.neighbours import NeighbourIndex, TorchIndex, build_index, faiss_gpus
from cdm_core.errors import CdmInputError

log = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise CdmInputError("device cuda asked for, but torch sees no CUDA GPU (use --device cpu or auto)")
    return torch.device(device)


def index_backend(kind: str, device: torch.device) -> str | None:
    """Neighbour-index backend for a sampler `index` option; None for the dense ones (auto, exact)."""
    if kind in ("exact", "auto"):
        return None
    if kind == "flat" and device.type == "cuda":
        return "gpu" if faiss_gpus() > 0 else "torch"
    return kind


@dataclass
class TrainingSet:
    """A training set ready for the strategies: centred float64 points on the compute device."""

    points: torch.Tensor  # (N, D) float64: x_i - c, on the compute device
    centre: torch.Tensor  # (D,) float64: c, the mean of the points as given
    points32: np.ndarray  # (N, D) float32 copy of the centred points, on the host
    index: NeighbourIndex | None  # top-K search over the centred points; None for dense strategies
    kind: str  # the sampler `index` option it was prepared for
    describe: dict  # Dataset.describe() plus the content hash
    params: dict = field(default_factory=dict)  # index parameters it was built with (nlist, nprobe for ivf)
    arrays_per_draw = 1.5  # float64 (B, M, N) arrays a batch holds per draw (float64 and float32 projections)

    @property
    def n(self) -> int:
        return self.points.shape[0]

    @property
    def dim(self) -> int:
        return self.points.shape[1]

    @property
    def device(self) -> torch.device:
        return self.points.device

    @functools.cached_property
    def points32_t(self) -> torch.Tensor:
        """The float32 centred points on the compute device (no copy on the CPU)."""
        return torch.from_numpy(self.points32).to(self.device)

    @functools.cached_property
    def sq_norms(self) -> torch.Tensor:
        """|x_i - c|^2 in float64."""
        return torch.einsum("nd,nd->n", self.points, self.points)

    @functools.cached_property
    def norm_max(self) -> float:
        """max_i |x_i - c|."""
        return float(torch.sqrt(self.sq_norms.max()))

    @functools.cached_property
    def _search_index(self) -> NeighbourIndex:
        return self.index if self.index is not None and self.index.exact else \
            TorchIndex(self.points32, device=str(self.device))

    # ---------------------------------------------------------------- coordinates
    def centred(self, x) -> torch.Tensor:
        """Data-unit points (n, D) as centred float64 tensors on the compute device."""
        return torch.as_tensor(np.asarray(x, np.float64), device=self.device) - self.centre

    def uncentred(self, x: torch.Tensor, t: float = 1.0) -> np.ndarray:
        """States of the centred recursion at time t back to data units (float64, host): the
        centred state is x - t c (docs/maths.md), so t c is added; samples (t = 1) get c."""
        return (x + t * self.centre).cpu().numpy()

    # ---------------------------------------------------------------- operations
    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Gathered centred rows x_ids - c."""
        return self.points[ids]

    def nearest(self, queries, k: int):
        """Exact k nearest training points of each query (data units): ids and float64 Euclidean
        distances, ordered by distance then id. A float32 search proposes candidates; their
        distances are recomputed in float64, and a query whose k-th distance is not certified
        below every other point's lower bound is computed densely in float64."""
        q = self.centred(queries)
        k = min(k, self.n)
        extra = min(self.n, k + max(k, 16))
        ids, lower = self._search_index.certified_search(q.cpu().numpy(), extra)
        idt = torch.as_tensor(ids, device=self.device)
        dist = torch.linalg.vector_norm(q[:, None, :] - self.points[idt.clamp_min(0)], dim=-1)
        dist = torch.where(idt >= 0, dist, torch.inf)
        idt, dist = sort_by_distance(idt, dist)
        idt, dist = idt[:, :k], dist[:, :k]
        lower_t = torch.as_tensor(lower, dtype=F64, device=self.device)
        uncertain = torch.nonzero(~(dist[:, -1] ** 2 < lower_t)).flatten()
        if len(uncertain):
            d_ids, d_dist = self._dense_nearest(q[uncertain], k)
            idt[uncertain], dist[uncertain] = d_ids, d_dist
        return idt.cpu().numpy(), dist.cpu().numpy()

    def _dense_nearest(self, q: torch.Tensor, k: int):
        out_i, out_d = [], []
        for lo, hi in row_blocks(len(q), self.n, 1 << 22):
            d = torch.cdist(q[lo:hi], self.points, compute_mode="donot_use_mm_for_euclid_dist")  # exact
            ids = torch.arange(self.n, device=self.device).expand_as(d)
            i, dd = sort_by_distance(ids, d)
            out_i.append(i[:, :k])
            out_d.append(dd[:, :k])
        return torch.cat(out_i), torch.cat(out_d)


def centred_points(ds: Dataset, device: torch.device):
    """The centred float64 points (N, D) on `device`, their centre (D,) and a float32 host copy."""
    arr = np.asarray(ds.points)
    if not arr.flags.writeable:  # a read-only memory map (cached decoded data): torch wants its own copy
        arr = arr.astype(np.float64)
    pts = torch.as_tensor(arr, dtype=F64, device=device)
    centre = pts.mean(0)
    pts = pts - centre  # a new tensor: float64 input arrays are shared by as_tensor, never modified
    return pts, centre, pts.to(torch.float32).cpu().numpy()


def build(ds: Dataset, config: SamplerConfig, centred=None) -> TrainingSet:
    """The TrainingSet of data set `ds` for `config`'s device and index (nlist, nprobe for ivf).
    `centred`: the (points, centre, float32 copy) of `centred_points` for this data set and
    device, when a caller already holds them (every index kind shares them)."""
    device = resolve_device(config.device)
    backend = index_backend(config.index, device)
    pts, centre, pts32 = centred_points(ds, device) if centred is None else centred
    index = None if backend is None else build_index(pts32, backend, device=str(device),
                                                     nlist=config.nlist, nprobe=config.nprobe)
    params = {"nlist": config.nlist, "nprobe": config.nprobe} if backend == "ivf" else {}
    return TrainingSet(pts, centre, pts32, index, config.index, ds.describe() | {"content_hash": ds.content_hash},
                       params)
