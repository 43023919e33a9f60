"""Training sets split across processes (Ray actors, `--backend ray --shards K`): the numerics.

The blend weights are a softmax over all N points, so they split exactly across shards. For the
queries of a batch each shard's process (one `ShardKernel`, centred on the *global* centre)
returns per sample b and draw m its largest logit m_s and the sum z_s = sum_i exp(l_i - m_s). The
driver merges them by log-sum-exp into the global log-partition
    log Z = M + log sum_s exp(m_s - M) z_s,   M = max_s m_s,
and sends it back: each shard then knows its points' exact weights w_i = exp(l_i - log Z) and
returns its part of D_sigma, sum_i (mean_m w_i) x_i, which the driver adds up. That is the
denoiser of one process (float64 throughout, the same flushing; only the order of the sums
differs). The same second round gives the sources at the last step, and for sensitivity every
draw's denoiser and the partial sums X_s^T (wbar * X_s J) with the weights of the requested points.

Each step moves O(B M + B D) numbers per shard (O(B M D) with sensitivity), never the points.
Files, Ray's lifecycle and the actors are the pipeline's (cdm_core.pipeline.shards): the
strategy here talks to any sharded set that answers `call(method, *args)` on every shard.
"""

from __future__ import annotations

import numpy as np
import torch

from cdm_core.engine.blend import (
    F64,
    Sources,
    StepResult,
    flush_tiny,
    flushed_mass_bound,
    logit_scales,
    shifted_moments,
)
from cdm_core.engine.kernels import expanded_logits, merge_nearest, row_blocks
from cdm_core.engine.refine import REFINE_NATS, expanded_error, refine_

CHUNK_ROWS = 1 << 16  # rows of a shard turned into centred float64 at a time


# ------------------------------------------------------------------ one shard


class ShardKernel:
    """The numerics of one shard, in the process that holds it (a Ray actor: see
    cdm_core.pipeline.shards, which opens the shard's file). Its rows (N_s, D) stay as given
    (float32, typically memory-mapped) and are used in float64 centred on the global centre:
    converted once when that copy fits `keep_bytes`, otherwise chunk by chunk on each pass, so a
    large shard costs its process only the per-batch arrays (B x M x N_s)."""

    def __init__(self, rows, centre, offset: int, n_total: int, device: str = "cpu",
                 keep_bytes: int = 512 * 2**20, chunk_rows: int = CHUNK_ROWS):
        self.keep_bytes, self.chunk_rows = keep_bytes, chunk_rows
        self.rows32 = rows
        self.device = torch.device(device)
        self.centre = torch.as_tensor(np.asarray(centre, np.float64), dtype=F64, device=self.device)
        self.offset, self.n = int(offset), len(rows)
        self.kept = None
        if self.n * self.centre.shape[0] * 8 <= self.keep_bytes:
            self.kept = torch.cat([x for _, _, x in self._chunks()])
        self.sq = torch.cat([(c * c).sum(1) for _, _, c in self._chunks()])  # |x_i - c|^2
        self.log_pi = torch.full((self.n,), -float(np.log(n_total)), dtype=F64, device=self.device)
        self.p = self.lg = self.w = None

    def _chunks(self):
        """(lo, hi, centred float64 rows) over the shard."""
        if self.kept is not None:
            yield 0, self.n, self.kept
            return
        for lo, hi in row_blocks(self.n, 1, self.chunk_rows):
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
        base = expanded_logits(self._dots(x), a, self.log_pi - c * self.sq)  # (B, N_s)
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
            best_i, best_d = merge_nearest([(best_i, best_d), (ids, d)], k)
        return (best_i + self.offset).cpu().numpy(), best_d.cpu().numpy()


class ShardedStrategy:
    """Dense float64 weights over all shards, merged by log-sum-exp (index auto and exact)."""

    def __init__(self, ts, log_pi: np.ndarray):
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

    def __init__(self, ts, per_draw: torch.Tensor):
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
