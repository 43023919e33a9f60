"""Training sets split across Ray actors (`--backend ray --shards K [--ray-address A]`).

The blend weights are a softmax over all N points, so they split exactly across shards. For the
queries of a batch each actor, holding one memory-mapped shard (centred on the *global* centre),
returns per sample b and draw m its largest logit m_s and the sum z_s = sum_i exp(l_i - m_s). The
driver merges them by log-sum-exp into the global log-partition
    log Z = M + log sum_s exp(m_s - M) z_s,   M = max_s m_s,
and sends it back: each shard then knows its points' exact weights w_i = exp(l_i - log Z) and
returns its part of D_sigma, sum_i (mean_m w_i) x_i, which the driver adds up. That is the
denoiser of one process (float64 throughout, the same flushing; only the order of the sums
differs). The same second round gives the sources at the last step, and for sensitivity every
draw's denoiser and the partial sums X_s^T (wbar * X_s J) with the weights of the requested points.

Each step moves O(B M + B D) numbers per shard (O(B M D) with sensitivity), never the points. An
actor that dies stops the run with a one-line error (no sample is ever computed from fewer shards
than the manifest lists).
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from cdm_core import settings
from cdm_core.config import SamplerConfig
from cdm_core.data.dataset import Dataset
from cdm_core.data.shards import ShardManifest, open_shard, read_manifest, write_shards
from cdm_core.engine.blend import (
    F64,
    Sources,
    StepResult,
    flush_tiny,
    flushed_mass_bound,
    logit_scales,
    shifted_moments,
)
from cdm_core.engine.refine import REFINE_NATS, expanded_error, refine_
from cdm_core.engine.training_set import sort_by_distance
from cdm_core.errors import BackendError, CdmInputError

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ the actor
CHUNK_ROWS = 1 << 16  # rows of a shard turned into centred float64 at a time
START_TIMEOUT = 600.0  # seconds for every actor to open and verify its shard


class ShardWorker:
    """One shard in one process. Its rows stay memory-mapped (float32, as written) and are used in
    float64 centred on the global centre: converted once when that copy fits `keep_bytes`
    (CDM_SHARD_KEEP_MB), otherwise chunk by chunk on each pass, so a large shard costs the actor
    only its per-batch arrays (B x M x N_s)."""

    def __init__(self, folder: str, index: int, device: str = "cpu", verify: bool = True,
                 keep_bytes: int = 512 * 2**20, chunk_rows: int = CHUNK_ROWS):
        # a refused shard is reported by `ping` (an error raised here would only say the actor died)
        self.error = None
        self.keep_bytes, self.chunk_rows = keep_bytes, chunk_rows
        try:
            self._open(folder, index, device, verify)
        except CdmInputError as e:
            self.error = e
        except Exception as e:  # reported in one line by `ping`, naming the shard
            self.error = BackendError(f"shard {index} of {folder}: {type(e).__name__}: {e}")

    def _open(self, folder: str, index: int, device: str, verify: bool) -> None:
        m = read_manifest(folder)
        shard = m.shards[index]
        self.rows32 = open_shard(m, shard, verify)  # memory-mapped; refused if its hash does not match
        self.device = torch.device(device)
        self.centre = torch.as_tensor(m.centre, dtype=F64, device=self.device)
        self.offset, self.n = shard.offset, shard.rows
        self.kept = None
        if self.n * m.dim * 8 <= self.keep_bytes:
            self.kept = torch.cat([x for _, _, x in self._chunks()])
        self.sq = torch.cat([(c * c).sum(1) for _, _, c in self._chunks()])  # |x_i - c|^2
        self.log_pi = torch.full((self.n,), -float(np.log(m.n)), dtype=F64, device=self.device)
        self.p = self.lg = self.w = None

    def _chunks(self):
        """(lo, hi, centred float64 rows) over the shard."""
        if self.kept is not None:
            yield 0, self.n, self.kept
            return
        for lo in range(0, self.n, self.chunk_rows):
            hi = min(lo + self.chunk_rows, self.n)
            rows = torch.from_numpy(self.rows32[lo:hi].astype(np.float64)).to(self.device)  # one converting copy
            yield lo, hi, rows.sub_(self.centre)

    def _times_points(self, w: torch.Tensor) -> torch.Tensor:
        """w (..., N_s) @ X_s (N_s, D), in chunks."""
        out = torch.zeros(w.shape[:-1] + (self.centre.shape[0],), dtype=F64, device=self.device)
        for lo, hi, x in self._chunks():
            out += w[..., lo:hi] @ x
        return out

    def _dots(self, q: torch.Tensor) -> torch.Tensor:
        """q (R, D) . X_s^T, (R, N_s)."""
        out = torch.empty(len(q), self.n, dtype=F64, device=self.device)
        for lo, hi, x in self._chunks():
            out[:, lo:hi] = q @ x.T
        return out

    def ping(self) -> int:
        if self.error is not None:
            raise self.error
        return self.n

    def norm_max(self) -> float:
        """max |x_i - c| over this shard (c the global centre)."""
        return float(torch.sqrt(self.sq.max()))

    def set_log_weights(self, log_pi: np.ndarray, r_max: float = 0.0, log_pi_abs: float = 0.0) -> None:
        """This shard's log pi, with the global max |x_i - c| and max |log pi| that decide, the same
        way in every shard, which queries are refined (refine.py)."""
        self.log_pi = torch.as_tensor(log_pi, dtype=F64, device=self.device)
        self.r_max, self.log_pi_abs = float(r_max), float(log_pi_abs)

    def _gather(self, ids: torch.Tensor) -> torch.Tensor:
        """Centred float64 rows of local ids (for refined logits)."""
        if self.kept is not None:
            return self.kept[ids]
        return self.rows(ids.cpu().numpy() + self.offset).to(self.device)

    def begin(self, scaled: torch.Tensor) -> None:
        """sigma eps_bm . x_i for this batch's draws (B, M, N_s), kept along the trajectories."""
        b, m, d = scaled.shape
        scaled = scaled.to(self.device)
        self.scaled = scaled
        self.p = None if not bool(scaled.any()) else self._dots(scaled.reshape(b * m, d)).reshape(b, m, self.n)

    def _logits(self, x: torch.Tensor, t: float, m: int) -> torch.Tensor:
        a, c, _ = logit_scales(t)
        x = x.to(self.device)
        base = self.log_pi + a * self._dots(x) - c * self.sq  # (B, N_s)
        lg = base[:, None, :].expand(-1, m, -1) if self.p is None else base[:, None, :] + a * self.p
        y_norm = torch.linalg.vector_norm(x, dim=1)[:, None] + torch.linalg.vector_norm(self.scaled, dim=-1)
        err = expanded_error(a, c, y_norm, self.r_max, self.log_pi_abs, x.shape[1])  # (B, M): global
        if bool((err > REFINE_NATS).any()):  # every shard refines the same queries (global err)
            lg = lg.clone().reshape(-1, self.n)
            y = (x[:, None, :] + self.scaled).reshape(-1, x.shape[1])
            refine_(lg, y, t, self._gather, self.log_pi, err.reshape(-1))
            lg = lg.reshape(len(x), m, self.n)
        return lg

    def log_partition(self, x: torch.Tensor, t: float, m: int):
        """Round 1 of a step: (max logit (B, M), sum of exp(logit - max) (B, M)); the logits are kept
        for round 2."""
        self.lg = self._logits(x, t, m)
        top = self.lg.amax(-1)
        safe = torch.where(torch.isfinite(top), top, 0.0)  # a shard whose points all have pi = 0
        return top.cpu(), torch.exp(self.lg - safe[..., None]).sum(-1).cpu()

    def weighted_mean(self, log_z: torch.Tensor, sources: bool, per_draw: bool):
        """Round 2, given the global log-partition (B, M): this shard's part of D_sigma,
        sum_i (mean_m w_bmi) x_i (B, D), from the flushed weights as in one process; on request its
        part of every draw's denoiser (B, M, D) and its sources (global ids, mean weights)."""
        w = flush_tiny(torch.exp(self.lg - log_z.to(self.device)[..., None]))  # (B, M, N_s)
        self.lg = None
        mean_w = flush_tiny(w.mean(1))
        self.w = w if per_draw else None  # kept for the sensitivity round
        out = [self._times_points(mean_w).cpu(), None, None]
        if per_draw:
            out[1] = self._times_points(w).cpu()
        if sources:
            s = Sources.from_dense(mean_w)
            out[2] = (torch.where(s.ids >= 0, s.ids + self.offset, -1).cpu(), s.weights.cpu())
        return out

    def sensitivity(self, jac: torch.Tensor, cols: torch.Tensor, ref: torch.Tensor):
        """Round 3 (sensitivity), with the weights of round 2 and each sample's reference point r
        (B, D): this shard's two-pass moments around r (`shifted_moments`: S (B, c, D) and
        d (B, M, D)), the weights of the local columns (B, M, c) and their rows (B, c, D); zeros
        for columns held by other shards."""
        w = self.w
        jac, cols, ref = jac.to(self.device), cols.to(self.device), ref.to(self.device)
        b, c, d = jac.shape
        s_sum = torch.zeros(b, c, d, dtype=F64, device=self.device)
        d_sum = torch.zeros(b, w.shape[1], d, dtype=F64, device=self.device)
        for lo, hi, x in self._chunks():
            s_part, d_part = shifted_moments(x, w[:, :, lo:hi], ref, jac)
            s_sum += s_part
            d_sum += d_part
        local = (cols >= self.offset) & (cols < self.offset + self.n)
        idx = torch.where(local, cols - self.offset, 0)
        w_cols = torch.gather(w, 2, idx[:, None, :].expand(-1, w.shape[1], -1)) * local[:, None, :]
        rows = self.rows(idx.reshape(-1).cpu().numpy() + self.offset).reshape(b, c, d) * local[..., None].cpu()
        return s_sum.cpu(), d_sum.cpu(), w_cols.cpu(), rows

    def rows(self, ids: np.ndarray) -> torch.Tensor:
        """Centred float64 rows of global ids held by this shard."""
        local = np.asarray(ids, np.int64) - self.offset
        return torch.from_numpy(np.asarray(self.rows32[local], np.float64)) - self.centre.cpu()

    def nearest(self, queries: np.ndarray, k: int):
        """Exact k nearest points of this shard (float64 distances; ties by id): global ids, distances."""
        q = torch.as_tensor(np.asarray(queries, np.float64), device=self.device) - self.centre
        k = min(k, self.n)
        best_i = torch.empty(len(q), 0, dtype=torch.int64, device=self.device)
        best_d = torch.empty(len(q), 0, dtype=F64, device=self.device)
        for lo, hi, x in self._chunks():
            d = torch.cdist(q, x, compute_mode="donot_use_mm_for_euclid_dist")  # exact, not |q|^2 - 2 q.x + |x|^2
            ids = torch.arange(lo, hi, device=self.device).expand(len(q), -1)
            cat_i, cat_d = sort_by_distance(torch.cat([best_i, ids], 1), torch.cat([best_d, d], 1))
            best_i, best_d = cat_i[:, :k], cat_d[:, :k]
        return (best_i + self.offset).cpu().numpy(), best_d.cpu().numpy()


# ------------------------------------------------------------------ the driver
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
    from cdm_core.engine.training_set import as_dataset
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
        ids = torch.as_tensor(np.concatenate([p[0] for p in parts], 1))
        dist = torch.as_tensor(np.concatenate([p[1] for p in parts], 1))
        ids, dist = sort_by_distance(ids, dist)
        return ids[:, :k].numpy(), dist[:, :k].numpy()


def _nbytes(obj) -> int:
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        return obj.nbytes if isinstance(obj, np.ndarray) else obj.element_size() * obj.nelement()
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(o) for o in obj)
    return 8


class ShardedStrategy:
    """Dense float64 weights over all shards, merged by log-sum-exp (index auto and exact)."""

    def __init__(self, ts: ShardedSet, log_pi: np.ndarray):
        self.ts, self.n = ts, ts.n
        r_max = max(ts.call("norm_max"))
        lp_abs = float(np.abs(log_pi[np.isfinite(log_pi)]).max())
        ts.call("set_log_weights", per_actor=[(log_pi[s.offset:s.offset + s.rows], r_max, lp_abs)
                                              for s in ts.manifest.shards])

    def begin(self, scaled: torch.Tensor):
        self.ts.call("begin", scaled.cpu())
        return scaled.shape[1]

    def step(self, m: int, x, t, sources=False, draws=False):
        x = x.cpu()
        parts = self.ts.call("log_partition", x, t, m)
        top = torch.stack([p[0] for p in parts])  # (K, B, M)
        peak = top.amax(0)
        z = (torch.exp(top - peak) * torch.stack([p[1] for p in parts])).sum(0)  # (B, M)
        log_z = peak + torch.log(z)
        got = self.ts.call("weighted_mean", log_z, sources, draws)
        smoothed = sum(g[0] for g in got)  # D_sigma: the shards' parts of (mean_m w_m) X
        b = len(x)
        src = None
        if sources:
            src = Sources.merge(torch.cat([g[2][0] for g in got], 1), torch.cat([g[2][1] for g in got], 1))
        full = ShardedDrawWeights(self.ts, sum(g[1] for g in got)) if draws else None
        bound = torch.full((b,), flushed_mass_bound(self.n), dtype=F64)
        return StepResult(smoothed, bound, torch.ones(b, dtype=F64), src, full)


class ShardedDrawWeights:
    """Every draw's weights, held by the actors: the sensitivity step from their partial sums."""

    def __init__(self, ts: ShardedSet, per_draw: torch.Tensor):
        self.ts, self.per_draw = ts, per_draw  # per_draw: D(y_m, t), (B, M, D)

    def d_smoothed(self, _points, cols: torch.Tensor, jac: torch.Tensor, t: float) -> torch.Tensor:
        """mean_m [a Cov_w[x] J + w_j (x_j - D_m)] from the shards' two-pass partial sums around
        each sample's blend mean r (as `FullDrawWeights` in one process), a = t/(1-t)^2."""
        ref = self.per_draw.mean(1)  # (B, D)
        parts = self.ts.call("sensitivity", jac.cpu(), cols.cpu(), ref)
        m = self.per_draw.shape[1]
        d = sum(p[1] for p in parts)  # (B, M, D): D(y_m) - r from the differences
        cov = sum(p[0] for p in parts) - torch.einsum("bmd,bmc->bcd", d, torch.einsum("bmd,bcd->bmc", d, jac.cpu())) / m
        w_cols = sum(p[2] for p in parts)  # (B, M, c)
        rows = sum(p[3] for p in parts)  # (B, c, D)
        direct = w_cols.mean(1)[..., None] * (rows - ref[:, None, :]) - torch.einsum("bmc,bmd->bcd", w_cols, d) / m
        direct = torch.where((cols.cpu() >= 0)[..., None], direct, 0.0)
        return (logit_scales(t)[0] * cov if t > 0 else 0.0) + direct
