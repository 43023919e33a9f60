"""How D_sigma(x, t) is evaluated: one strategy per way, chosen once by `factory.make_strategy`.

Every strategy takes a batch of B samples with their fixed smoothing draws and returns a
`StepResult` (blend.py): D_sigma, a bound on the weight mass it left out, and on request the
sources (the weights D_sigma was formed with) and every draw's weights (for sensitivity).

- `DenseStrategy` (index exact): every smoothing query y_m = x + sigma eps_m over all N points;
  the float64 reference.
- `FactorisedStrategy` (index auto): the same weights without forming the queries. With
  p_mi = sigma eps_m . x_i (fixed along the trajectory, computed once per batch),
      logit_mi = log pi_i + a (x . x_i + p_mi) - c |x_i|^2 + const_m,
  so one x . X product per sample serves all M draws (a, c from `logit_scales`). Exact, float64.
- `ScreenedStrategy` (index auto on large sets, screen.py): the factorised weights, with a
  certified float32 screen that drops points of weight below 1e-30 before the float64 work.
- `TruncatedStrategy` (flat, ivf, torch): each query's top-K neighbours from an index, with a
  certified bound on the omitted mass and a dense fallback for queries whose bound exceeds the
  tolerance (truncated.py).
- `ShardedStrategy` (backend ray, sharded.py): the dense weights over shards held by Ray actors,
  merged by log-sum-exp.

Decisions that change a number (fallbacks, candidate sets) are made per sample, never per batch,
so a sample does not depend on the batch it is computed in.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from cdm_core.engine.blend import (
    F64,
    FullDrawWeights,
    Sources,
    StepResult,
    flush_tiny,
    flush_tiny_,
    flushed_mass_bound,
    logit_scales,
    weighted_sum,
)
from cdm_core.engine.kernels import expanded_logits, row_blocks
from cdm_core.engine.refine import REFINE_NATS, expanded_error, refine_
from cdm_core.engine.training_set import TrainingSet

# Dense logits are computed in chunks of about this many float64 values (128 MiB).
DENSE_CHUNK_VALUES = 1 << 24
# On a CPU the factorised softmax runs over chunks of about 2 MiB (one core's L2 cache): it is
# memory-bound, and the loop over chunks costs nothing next to their work.
CACHE_VALUES = 1 << 17
# On a GPU each chunk is a handful of kernel launches, so the whole batch is one chunk while its
# (B, M, N) float64 logits take at most 1/32 of the device's memory (three such temporaries live
# at once): a constant number of launches per step, whatever the number of samples.
GPU_MEMORY_SHARE = 32
# Factorised on sets from this many values (N x D) on screens in float32 first (screen.py).
SCREEN_MIN_VALUES = 10_000_000


class Strategy:
    """Common state: the training set, log pi, and the t = 0 blend (every logit equal up to log pi)."""

    def __init__(self, ts: TrainingSet, log_pi: np.ndarray):
        self.ts = ts
        self.x = ts.points
        self.n = ts.n
        self.log_pi = torch.as_tensor(log_pi, dtype=F64, device=ts.device)
        self.pi = torch.exp(self.log_pi)
        self.eligible = np.flatnonzero(np.isfinite(log_pi))  # ids with pi > 0
        self.excluded = np.flatnonzero(~np.isfinite(log_pi))
        self.log_pi_max = float(self.log_pi.max())
        self.log_pi_abs = float(self.log_pi[torch.isfinite(self.log_pi)].abs().max())
        self.on_gpu = ts.device.type == "cuda"
        self.softmax_values = gpu_chunk_values(ts.device) if self.on_gpu else 2 * CACHE_VALUES
        self.workspace = Workspace(ts.device)
        self._bound_key, self._y_bound = object(), 0.0  # may_refine's per-batch bound on a GPU

    def logit_error(self, a: float, c: float, y_norm: torch.Tensor) -> torch.Tensor:
        """Bound on the rounding of the expanded logits of queries with |y| <= y_norm (refine.py)."""
        return expanded_error(a, c, y_norm, self.ts.norm_max, self.log_pi_abs, self.ts.dim)

    def may_refine(self, a: float, c: float, x: torch.Tensor, scaled: torch.Tensor | None, batch=None) -> bool:
        """Whether any query of these samples could need refined logits, from a host-side bound
        on |y|. On a GPU the bound is taken once per batch (one synchronisation, then none in the
        middle steps): every later state is a convex combination of the earlier one and a blend of
        centred points (h / (1 - t) <= 1 on the uniform grid), so |x| <= max(|x|, R) holds on."""
        if self.on_gpu:
            key = scaled if batch is None else batch  # the batch's draws tensor: one object per batch
            if key is None or self._bound_key is not key:
                self._bound_key = key
                self._y_bound = max(float(torch.linalg.vector_norm(x, dim=1).max()), self.ts.norm_max) + \
                    (0.0 if scaled is None else float(torch.linalg.vector_norm(scaled, dim=-1).max()))
            y_bound = self._y_bound
        else:
            y_bound = float(torch.linalg.vector_norm(x, dim=1).max()) + \
                (0.0 if scaled is None else float(torch.linalg.vector_norm(scaled, dim=-1).max()))
        return float(self.logit_error(a, c, y_bound)) > REFINE_NATS

    def static_logits(self, c: float) -> torch.Tensor:
        """log pi_i - c |x_i|^2 (N,) float64, -inf where pi = 0."""
        return self.log_pi - c * self.ts.sq_norms

    def dense_logits(self, y: torch.Tensor, t: float, far: bool | None = None) -> torch.Tensor:
        """Logits (q, N) of queries y (q, D) over all N points, up to a constant per query: the
        expanded form (kernels.py), with the queries whose rounding bound exceeds REFINE_NATS
        recomputed in direct form (refine.py). `far`: the caller's `may_refine` verdict for these
        queries (taken from |y| when not given)."""
        a, c, _ = logit_scales(t)
        lg = expanded_logits(y @ self.x.T, a, self.static_logits(c))
        if self.may_refine(a, c, y, None) if far is None else far:
            refine_(lg, y, t, self.x, self.log_pi, self.logit_error(a, c, torch.linalg.vector_norm(y, dim=1)))
        return lg

    def begin(self, scaled: torch.Tensor):
        """Per-batch state from the draws sigma eps (B, M, D), fixed along the trajectories."""
        return scaled

    def step(self, state, x: torch.Tensor, t: float, sources: bool = False, draws: bool = False) -> StepResult:
        raise NotImplementedError

    # ------------------------------------------------------------------ shared pieces
    def _at_zero(self, b: int, m: int, sources: bool, draws: bool) -> StepResult:
        """At t = 0 every query's weights are pi: D(y, 0) = sum_i pi_i x_i."""
        w = flush_tiny(self.pi)[None].expand(b, -1)
        smoothed = weighted_sum(w[:1], self.x).expand(b, -1).clone()
        full = None
        if draws:
            full = FullDrawWeights(w[:, None, :].expand(b, m, -1), smoothed[:, None, :].expand(b, m, -1))
        return self._result(smoothed, w, sources, full)

    def _result(self, smoothed, mean_w, sources: bool, full=None) -> StepResult:
        """A dense result: the bound is the flushed mass (`flushed_mass_bound`)."""
        b = len(smoothed)
        bound = torch.full((b,), flushed_mass_bound(self.n), dtype=F64, device=smoothed.device)
        return StepResult(smoothed, bound, torch.ones(b, dtype=F64, device=smoothed.device),
                          Sources.from_dense(mean_w) if sources else None, full)


class DenseStrategy(Strategy):
    """Every smoothing query over all N points, float64: the reference (`index exact`)."""

    def step(self, scaled, x, t, sources=False, draws=False):
        b, m, d = scaled.shape
        if t == 0.0:
            return self._at_zero(b, m, sources, draws)
        y = (x[:, None, :] + scaled).reshape(b * m, d)
        mean_w = torch.zeros(b, self.n, dtype=F64, device=x.device)
        per_draw = torch.empty(b * m, self.n, dtype=F64, device=x.device) if draws else None
        a, c, _ = logit_scales(t)
        far = self.may_refine(a, c, x, scaled)
        # whole samples per chunk, so each sample's mean over its draws is formed in one place
        for lo, hi in row_blocks(b, self.n * m, DENSE_CHUNK_VALUES):
            w = flush_tiny_(torch.softmax(self.dense_logits(y[lo * m:hi * m], t, far), dim=1))
            mean_w[lo:hi] = w.reshape(hi - lo, m, self.n).mean(1)
            if per_draw is not None:
                per_draw[lo * m:hi * m] = w
        mean_w = flush_tiny(mean_w)
        full = None
        if per_draw is not None:
            full = FullDrawWeights(per_draw.reshape(b, m, self.n), (per_draw @ self.x).reshape(b, m, d))
        return self._result(weighted_sum(mean_w, self.x), mean_w, sources, full)


class FactorisedStrategy(Strategy):
    """The dense weights in factorised form (see the module docstring): `index auto`."""

    def begin(self, scaled):
        """p_bmi = sigma eps_bm . x_i, (B, M, N) float64; None when sigma = 0."""
        if not bool(scaled.any()):
            return scaled, None
        b, m, d = scaled.shape
        return scaled, (scaled.reshape(b * m, d) @ self.x.T).reshape(b, m, self.n)

    def step(self, state, x, t, sources=False, draws=False):
        scaled, projected = state
        b, m, _ = scaled.shape
        if t == 0.0:
            return self._at_zero(b, m, sources, draws)
        mean_w, full = self.mean_weights(x, projected, t, m, draws, scaled=scaled)
        return self._result(weighted_sum(mean_w, self.x, not self.on_gpu), mean_w, sources, full)

    def mean_weights(self, x, projected, t, m, draws=False, rows=None, scaled=None):
        """(mean over draws of the weights (B, N) flushed, FullDrawWeights or None). `rows`, when
        given, are the rows of `projected` and `scaled` (sigma eps, (B', M, D)) that belong to the
        samples x (read chunk by chunk, so the large projection is never copied). Queries whose
        expanded logits may be off by more than refine.REFINE_NATS are refined (refine.py)."""
        a, c, _ = logit_scales(t)
        b = len(x)
        # per sample and draw: |x| + |sigma eps| bounds both products of the factorised logit
        if projected is not None and scaled is None:
            raise ValueError("mean_weights needs the draws (scaled) with their projection")
        err = None
        if self.may_refine(a, c, x, None if projected is None else scaled, batch=scaled):
            noise = None if projected is None else \
                torch.linalg.vector_norm(scaled if rows is None else scaled[rows], dim=-1)
            x_norm = torch.linalg.vector_norm(x, dim=1)
            err = self.logit_error(a, c, x_norm[:, None] + (0.0 if noise is None else noise))  # (B, M or 1)
        # the two (B, N) blocks of a step live in the strategy's workspace: reallocating them every
        # step made the allocator hand memory back and fault it in again (BENCHMARKS.md)
        base = expanded_logits(torch.mm(x, self.x.T, out=self.workspace.get("base", (b, self.n))), a,
                               self.static_logits(c))  # log pi_i - c |x_i|^2 + a x . x_i
        mean_w = self.workspace.get("mean_w", (b, self.n))
        m_eff = 1 if projected is None else m
        per_draw = torch.empty(b, m_eff, self.n, dtype=F64, device=x.device) if draws else None
        for lo, hi in row_blocks(b, m_eff * self.n, self.softmax_values):
            if projected is None:
                lg = base[lo:hi, None, :]
            else:
                p = projected[lo:hi] if rows is None else projected[rows[lo:hi]]
                lg = torch.add(base[lo:hi, None, :], p, alpha=a)
            e = None if err is None else err[lo:hi].expand(-1, lg.shape[1])
            if e is not None and bool((e > REFINE_NATS).any()):  # far from the centre: direct form (refine.py)
                lg = lg.clone()  # never write into the shared base
                y = x[lo:hi, None, :] if projected is None else \
                    x[lo:hi, None, :] + (scaled[lo:hi] if rows is None else scaled[rows[lo:hi]])
                y = y.expand(-1, lg.shape[1], -1)
                flat = lg.reshape(-1, self.n)
                refine_(flat, y.reshape(-1, y.shape[-1]), t, self.x, self.log_pi, e.reshape(-1))
                lg = flat.reshape(lg.shape)
            w = flush_tiny_(torch.softmax(lg, dim=-1))  # (r, M or 1, N)
            torch.mean(w, 1, out=mean_w[lo:hi])
            if per_draw is not None:
                per_draw[lo:hi] = w
        full = None
        if per_draw is not None:
            per_draw = per_draw.expand(b, m, self.n)
            full = FullDrawWeights(per_draw, torch.einsum("bmn,nd->bmd", per_draw, self.x))
        return flush_tiny_(mean_w), full


class Workspace:
    """Float64 blocks a strategy reuses from step to step. A block handed out is valid until the
    same name is asked for again, so results that outlive a step never point into it."""

    def __init__(self, device: torch.device):
        self.device = device
        self._blocks: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple) -> torch.Tensor:
        size = math.prod(shape)
        block = self._blocks.get(name)
        if block is None or block.numel() < size:
            block = self._blocks[name] = torch.empty(size, dtype=F64, device=self.device)
        return block[:size].view(shape)


def gpu_chunk_values(device: torch.device) -> int:
    """Float64 values per softmax chunk on a GPU (`GPU_MEMORY_SHARE`)."""
    return torch.cuda.get_device_properties(device).total_memory // (8 * GPU_MEMORY_SHARE)


def screen_is_certified() -> bool:
    """Whether float32 products are true float32, as the screen's error bound assumes.
    `torch.set_float32_matmul_precision("high")` or TF32 on CUDA would round inputs to about
    10 bits; the factorised float64 path is then used instead."""
    return (torch.get_float32_matmul_precision() == "highest"
            and not (torch.cuda.is_available() and torch.backends.cuda.matmul.allow_tf32))

