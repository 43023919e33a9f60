"""Preparation shared by every sampler call on a training set: the float64 points on the compute
device and the neighbour index, built once and cached (keyed by the data's content hash)."""

from __future__ import annotations

import functools
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from cdm_core.config import SamplerConfig
from cdm_core.data.dataset import Dataset
from cdm_core.errors import CdmInputError
from cdm_core.data.files import check_points
from cdm_core.engine.neighbours import NeighbourIndex, TorchIndex, build_index, faiss_gpus

log = logging.getLogger(__name__)

def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise CdmInputError("device cuda asked for, but torch sees no CUDA GPU (use --device cpu or auto)")
    return torch.device(device)


def resolve_index(kind: str, n: int, dim: int, device: torch.device) -> str | None:
    """Backend for a sampler `index` option; None means dense and exact (no truncation).

    `auto` is dense too, but factorised (see `BlendEngine.smoothed`): M times cheaper than
    evaluating every smoothing query over all N points, and on large sets screened in float32
    with float64 where precision matters (`screened.py`)."""
    if kind in ("exact", "auto"):
        return None
    if kind == "flat" and device.type == "cuda":
        return "gpu" if faiss_gpus() > 0 else "torch"
    return kind


@dataclass
class Prepared:
    points: torch.Tensor  # (N, D) float64 on the compute device
    points32: np.ndarray  # (N, D) float32 on the host
    index: NeighbourIndex | None  # None: dense exact
    describe: dict
    factorised: bool = False  # dense with one x . X product per sample for all draws (index auto)
    _nn: NeighbourIndex | None = None

    @functools.cached_property
    def points32_t(self) -> torch.Tensor:
        """The float32 training points as a tensor on the compute device (no copy on the CPU)."""
        return torch.from_numpy(self.points32).to(self.points.device)

    @functools.cached_property
    def sq_norms(self) -> torch.Tensor:
        """|x_i|^2 in float64, computed once per training set."""
        return torch.einsum("nd,nd->n", self.points, self.points)

    def nearest(self, queries: np.ndarray, k: int):
        """Exact k nearest training points of each query: ids and Euclidean distances."""
        if self._nn is None:
            self._nn = self.index if self.index is not None and self.index.exact else \
                TorchIndex(self.points32, device=str(self.points.device))
        k = min(k, len(self.points32))
        _, ids = self._nn.search(queries, k)
        # exact float64 distances for the reported neighbours
        q = torch.as_tensor(queries, dtype=torch.float64, device=self.points.device)
        idt = torch.as_tensor(ids, device=self.points.device).clamp_min(0)
        dist = torch.linalg.vector_norm(q[:, None, :] - self.points[idt], dim=-1)
        order = torch.argsort(dist, dim=1, stable=True)
        return (torch.gather(idt, 1, order).cpu().numpy(), torch.gather(dist, 1, order).cpu().numpy())


_CACHE: "OrderedDict[tuple, Prepared]" = OrderedDict()
_CACHE_SIZE = 4
_LOCK = threading.Lock()


def as_dataset(data) -> Dataset:
    if isinstance(data, Dataset):
        return data
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().numpy()
    if isinstance(data, np.ndarray):
        return Dataset(name="array", points=check_points("array", data), source="in-memory array")
    raise CdmInputError(f"data must be a Dataset or an (N, D) array, got {type(data).__name__}")


def prepare(data, config: SamplerConfig) -> Prepared:
    ds = as_dataset(data)
    device = resolve_device(config.device)
    kind = resolve_index(config.index, ds.n, ds.dim, device)
    h = ds.content_hash
    key = (h, str(device), kind, config.index == "auto", config.nlist if kind == "ivf" else 0,
           config.nprobe if kind == "ivf" else 0)
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    pts32 = np.ascontiguousarray(ds.points, np.float32)
    index = None if kind is None else build_index(pts32, kind, device=str(device),
                                                  nlist=config.nlist, nprobe=config.nprobe)
    desc = ds.describe() | {"content_hash": h}
    prep = Prepared(torch.as_tensor(pts32, dtype=torch.float64, device=device), pts32, index, desc,
                    factorised=config.index == "auto")
    with _LOCK:
        _CACHE[key] = prep
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return prep
