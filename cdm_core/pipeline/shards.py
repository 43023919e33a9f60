"""Training sets split across Ray actors (`--backend ray --shards K [--ray-address A]`): the
shard files, Ray's lifecycle and the actors. The numerics are the engine's
(cdm_core/engine/sharded.py: `ShardKernel` in each actor, `ShardedStrategy` in the driver).

An actor that dies stops the run with a one-line error (no sample is ever computed from fewer
shards than the manifest lists).
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cdm_core import settings
from cdm_core.config import SamplerConfig
from cdm_core.data.dataset import Dataset
from cdm_core.data.shards import ShardManifest, open_shard, read_manifest, write_shards
from cdm_core.engine.blend import F64
from cdm_core.engine.kernels import merge_nearest
from cdm_core.engine.sampler import SampleResult
from cdm_core.engine.sharded import CHUNK_ROWS, ShardKernel
from cdm_core.errors import BackendError, CdmInputError
from cdm_core.pipeline.inputs import as_dataset

log = logging.getLogger(__name__)

START_TIMEOUT = 600.0  # seconds for every actor to open and verify its shard


@dataclass
class ShardedSampleResult(SampleResult):
    """A run on Ray shards: the plain result, plus what the run cost in traffic."""

    shards: int = 0  # actors (shards) the training set was split across
    bytes_moved: int = 0  # bytes sent to and received from the actors during the run
    calls: int = 0  # rounds of calls to all actors during the run


class ShardWorker(ShardKernel):
    """One shard in one Ray actor: opens and verifies its memory-mapped shard file, then computes
    with the engine's `ShardKernel`. A refused shard is reported by `ping` (an error raised in
    the constructor would only say that the actor died)."""

    def __init__(self, folder: str, index: int, device: str = "cpu", verify: bool = True,
                 keep_bytes: int = 512 * 2**20, chunk_rows: int = CHUNK_ROWS):
        self.error = None
        try:
            m = read_manifest(folder)
            shard = m.shards[index]
            rows = open_shard(m, shard, verify)  # memory-mapped; refused if its hash does not match
            super().__init__(rows, m.centre, shard.offset, m.n, device, keep_bytes, chunk_rows)
        except CdmInputError as e:
            self.error = e
        except Exception as e:  # reported in one line by `ping`, naming the shard
            self.error = BackendError(f"shard {index} of {folder}: {type(e).__name__}: {e}")

    def ping(self) -> int:
        if self.error is not None:
            raise self.error
        return self.n


_SESSION_LOCK = threading.Lock()
_SESSION = {"users": 0, "owned": False}  # runs of this process inside `ray_session`


@contextmanager
def ray_session(address: str = ""):
    """Joins the cluster at `address`, or starts a local Ray instance, for the runs of this process
    that need it, and stops it when the last of them ends; a Ray session the caller initialised
    itself is reused and left running. (Concurrent runs share one session: the first run's
    address is the one used.)"""
    try:
        import ray
    except ImportError:
        raise CdmInputError("--backend ray needs the ray package (pip install ray==2.60.0)") from None
    with _SESSION_LOCK:
        if _SESSION["users"] == 0:
            _SESSION["owned"] = not ray.is_initialized()
            if _SESSION["owned"]:
                try:
                    if address:
                        ray.init(address=address, log_to_driver=False)
                    else:
                        ray.init(include_dashboard=False, log_to_driver=False)
                except Exception as e:  # ConnectionError, RuntimeError, ...: one line for the user
                    raise BackendError(f"cannot start or join Ray{f' at {address}' if address else ''}: "
                                       f"{' '.join(str(e).split())[:200]}") from None
        _SESSION["users"] += 1
    try:
        yield ray
    finally:
        with _SESSION_LOCK:
            _SESSION["users"] -= 1
            if _SESSION["users"] == 0 and _SESSION["owned"]:
                ray.shutdown()


def shard_folder(ds: Dataset, k: int) -> Path:
    return settings.cache_dir() / "shards" / f"{ds.content_hash}-k{k}"


def manifest_for(data, config: SamplerConfig) -> ShardManifest:
    """The shard manifest to run on: given, or written once into the cache for an in-memory set."""
    if isinstance(data, ShardManifest):
        if config.shards not in (0, len(data.shards)):
            raise CdmInputError(f"--shards {config.shards} does not match the manifest's {len(data.shards)} shards")
        return data
    if isinstance(data, (str, Path)):
        return manifest_for(read_manifest(data), config)
    ds = as_dataset(data)
    if config.shards < 1:
        raise CdmInputError("--backend ray needs --shards K (the number of actors) for a data set held in memory")
    folder = shard_folder(ds, config.shards)
    try:
        m = read_manifest(folder)
        if m.content_hash == ds.content_hash and len(m.shards) == config.shards:
            return m
    except CdmInputError:
        pass
    return write_shards(ds, config.shards, folder)


class ShardedSet:
    """The training-set seam for a sharded set: what the sampler asks of a `TrainingSet`,
    answered by the actors (the driver never holds the points)."""

    points = None  # never in the driver
    sharded = True  # engine.factory picks the sharded strategy for it

    def __init__(self, manifest: ShardManifest, config: SamplerConfig, ray, actors, describe: dict | None = None):
        self.manifest, self.ray, self.actors = manifest, ray, actors
        self.n, self.dim, self.kind = manifest.n, manifest.dim, config.index
        self.device = torch.device("cpu")
        self.centre = torch.as_tensor(manifest.centre, dtype=F64)
        self.describe = (describe or manifest.describe()) | {"backend": "ray", "shards": len(actors)}
        self.rows_per_process = max(s.rows for s in manifest.shards)  # what one actor's batch buffers span
        self.arrays_per_draw = 4.0  # an actor's float64 (B, M, N_s) arrays: projection, logits, exp, weights
        self.bytes_moved = 0  # numbers sent to and received from the actors, in bytes
        self.calls = 0

    @staticmethod
    @contextmanager
    def open(data, config: SamplerConfig):
        manifest = manifest_for(data, config)
        describe = data.describe() if isinstance(data, Dataset) else None  # the data set's own words
        with ray_session(config.ray_address) as ray:
            gpu = 1 if config.device == "cuda" else 0
            if config.device == "auto":  # a GPU for each actor when the cluster has enough of them
                gpu = 1 if ray.cluster_resources().get("GPU", 0) >= len(manifest.shards) else 0
            elif gpu and ray.cluster_resources().get("GPU", 0) < len(manifest.shards):
                raise BackendError(f"device cuda needs a GPU for each of the {len(manifest.shards)} shard actors; "
                                   f"the Ray cluster has {ray.cluster_resources().get('GPU', 0):g}")
            worker = ray.remote(num_cpus=0, num_gpus=gpu)(ShardWorker)
            device = "cuda" if gpu else "cpu"
            keep = settings.shard_keep_bytes()
            actors = [worker.remote(str(manifest.folder), i, device, True, keep, CHUNK_ROWS)
                      for i in range(len(manifest.shards))]
            s = ShardedSet(manifest, config, ray, actors, describe)
            try:
                s.call("ping", timeout=START_TIMEOUT)  # every shard opened and verified before the run
                yield s
            finally:
                for a in actors:
                    ray.kill(a)

    # ------------------------------------------------------------ calls to the actors
    def call(self, method: str, *args, per_actor=None, timeout: float | None = None):
        """Call `method` on every actor (or `per_actor[i]` args on actor i) and wait for all."""
        ray = self.ray
        refs = [getattr(a, method).remote(*(per_actor[i] if per_actor is not None else args))
                for i, a in enumerate(self.actors)]
        self.calls += 1
        self.bytes_moved += len(self.actors) * _nbytes(args) if per_actor is None else _nbytes(per_actor)
        try:
            out = ray.get(refs, timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            for r in refs:
                ray.cancel(r, force=True)
            raise BackendError(f"the shard actors did not answer '{method}' within {timeout:g} s (not enough "
                               "resources on the Ray cluster?); the run stopped") from None
        except ray.exceptions.RayActorError as e:
            raise BackendError(f"a shard actor died during '{method}' ({type(e).__name__}); the run stopped and "
                               "no result was written") from None
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, CdmInputError):
                raise cause from None
            raise BackendError(f"shard actor failed in '{method}': {' '.join(str(cause or e).split())[:200]}") from None
        except ray.exceptions.RayError as e:  # out of memory, lost objects, ...
            raise BackendError(f"Ray could not finish '{method}' ({type(e).__name__}): "
                               f"{' '.join(str(e).split())[:160]}; no result was written") from None
        self.bytes_moved += _nbytes(out)
        return out

    # ------------------------------------------------------------ the TrainingSet seam
    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        ids = np.asarray(ids.cpu())
        out = torch.empty(len(ids), self.dim, dtype=F64)
        bounds = [(s.offset, s.offset + s.rows) for s in self.manifest.shards]
        where = [np.flatnonzero((ids >= lo) & (ids < hi)) for lo, hi in bounds]
        parts = self.call("rows", per_actor=[(ids[w],) for w in where])
        for w, rows in zip(where, parts):
            out[w] = rows
        return out

    def uncentred(self, x: torch.Tensor, t: float = 1.0) -> np.ndarray:
        return (x.cpu() + t * self.centre).numpy()

    def nearest(self, queries, k: int):
        parts = self.call("nearest", np.asarray(queries, np.float64), k)
        ids, dist = merge_nearest([(torch.from_numpy(np.array(i)), torch.from_numpy(np.array(d))) for i, d in parts], k)
        return ids.numpy(), dist.numpy()


def sharded_result(res: SampleResult, ts: ShardedSet, bytes_before: int, calls_before: int) -> ShardedSampleResult:
    """`res` with the traffic of the run on `ts` since the counters read (bytes_before, calls_before)."""
    return res.extended(ShardedSampleResult, shards=len(ts.actors), bytes_moved=ts.bytes_moved - bytes_before,
                        calls=ts.calls - calls_before)


def _nbytes(obj) -> int:
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        return obj.nbytes if isinstance(obj, np.ndarray) else obj.element_size() * obj.nelement()
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(o) for o in obj)
    return 8


