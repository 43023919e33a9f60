"""`index auto` on large training sets: a certified float32 screen, then float64 on what survives.

Notation as in strategies.py; for sample b, smoothing draw m and training point i at time t,
    l_bmi = log pi_i - c |x_i|^2 + a (x_b . x_i + p_bmi),   p_bmi = sigma eps_bm . x_i,
with the points centred (training_set.py). Per step, one float32 product x . X (B x N) and the
float32 p (made once per batch) give screened logits. With a rigorous bound `slack` on their
error (the float32 dot-product bound |fl(x . y) - x . y| <= gamma_D |x| |y|, an absolute term
for products that underflow, and the rounding of each float32 operation), a point whose screened
logit is more than ln(1e30) + 2 slack below its draw's screened maximum has exact weight below
1e-30, which every strategy flushes to zero anyway (`flush_tiny`). So the screen changes nothing
but the work: the survivors' weights are computed in float64, exactly as `FactorisedStrategy`
would, and the bound reported is the flushed mass (at most N x 1e-30 per draw).

Each sample takes its own route (never decided per batch):
- few survivors (at most N / (4 (M + 1)); 1/4 measured best on Fashion-MNIST, BENCHMARKS.md):
  their rows of X are gathered and the logits, weights and
  D_sigma computed from them in float64;
- many survivors, or logits too large for float32 (|logit| >= 1e36): the float64 factorised path
  over all N points, with p in float64 made for that sample once per batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from cdm_core.engine.blend import (
    F32,
    F64,
    Sources,
    StepResult,
    flush_tiny,
    flushed_mass_bound,
    logit_scales,
    pad_rows,
    weighted_sum,
)
from cdm_core.engine.kernels import expanded_logits
from cdm_core.engine.refine import REFINE_NATS
from cdm_core.engine.strategies import CACHE_VALUES, FactorisedStrategy

U32 = 2.0 ** -24  # unit roundoff of float32
LN_FLUSH = math.log(1e30)  # weights below exp(-LN_FLUSH) are flushed to zero
F32_SAFE = 1e36  # logits bounded by this stay finite in float32 (max 3.4e38) through every operation
GATHER_VALUES = 1 << 22  # gathered candidates are processed in groups of about this many float64 values


U64 = 2.0 ** -53  # unit roundoff of float64
F32_MAX = float(torch.finfo(torch.float32).max)


def gamma(d: int, unit: float = U32) -> float:
    """Rigorous relative bound of a dot product of length d (any summation order) in a format of
    unit roundoff `unit`, with a 1% margin; for float32 products it includes the rounding of the
    float64 inputs to float32 (two more roundings)."""
    inputs = 2 * U32 if unit == U32 else 0.0
    return (d * unit / (1 - d * unit) + inputs) * 1.01


@dataclass
class Draws:
    """The smoothing draws of one batch, fixed along its trajectories, and their projections."""

    scaled: torch.Tensor  # (B, M, D) float64: sigma eps_bm
    fast: torch.Tensor | None  # (B, M, N) float32 p_bmi; None when sigma = 0
    # (B,) float64: bound on |fast - p| over m and i where fast is a normal float32 number (the
    # slack's underflow term covers the subnormal range)
    fast_err: torch.Tensor
    fast_abs: torch.Tensor  # (B,) float64: bound on |p_bmi| over m and i; inf where fast overflowed
    exact: torch.Tensor | None = None  # (B, M, N) float64 p; None when sigma = 0
    support: torch.Tensor | None = None  # (B,) each sample's number of weights >= 1e-30 at its last step


class ScreenedStrategy(FactorisedStrategy):
    # a sample's survivors are gathered while they number at most N x this / (M + 1): beyond
    # that the float64 factorised pass over all N points costs less
    gather_fraction = 0.25

    def begin(self, scaled):
        """p in float64 once per batch (the early, wide steps read it for every sample) and its
        float32 rounding for the screen: |fast - p| <= |fl64(p) - p| + u32 |fl64(p)|, the float64
        product's error bounded by `gamma(D, 2^-53)`. A sample whose p leaves float32's range gets
        fast_abs = inf, which sends it to the float64 route at every step."""
        b, m, d = scaled.shape
        norms = torch.linalg.vector_norm(scaled, dim=-1).amax(1)  # (B,)
        if not bool((norms > 0).any()):
            return Draws(scaled, None, norms, norms)
        exact = (scaled.reshape(b * m, d) @ self.x.T).reshape(b, m, self.n)
        fast = exact.to(F32)
        flat = exact.reshape(b, -1)  # no (B, M, N) temporary; amax and amin beat aminmax here
        magnitude = torch.maximum(flat.amin(1).abs(), flat.amax(1))  # (B,) max |fl64(p)|
        err = gamma(d, U64) * norms * self.ts.norm_max + U32 * magnitude
        fast_abs = torch.where(magnitude < F32_MAX, magnitude + err, torch.inf)
        return Draws(scaled, fast, err, fast_abs, exact)

    def step(self, batch: Draws, x, t, sources=False, draws=False):
        b, m, d = batch.scaled.shape
        if t == 0.0:
            return self._at_zero(b, m, sources, draws)
        everyone = torch.arange(b, device=x.device)
        if draws:  # sensitivity reads every draw's full weights: the float64 path for all
            mean_w, full = self.mean_weights(x, batch.exact, t, m, draws=True, rows=everyone, scaled=batch.scaled)
            return self._result(weighted_sum(mean_w, self.x), mean_w, sources, full)
        a, c, _ = logit_scales(t)
        static = self.static_logits(c)  # (N,) float64, -inf where pi = 0
        x_norm = torch.linalg.vector_norm(x, dim=1)
        magnitude = float(static[torch.isfinite(static)].abs().max()) + a * (x_norm * self.ts.norm_max + batch.fast_abs)
        safe = magnitude < F32_SAFE
        cutoff = self.n * self.gather_fraction / (m + 1)
        # a sample whose blend was far wider than the cutoff at its last step is not screened again
        # yet (supports shrink as t grows): its own history decides, never the batch's
        if batch.support is None:
            batch.support = torch.zeros(b, dtype=torch.int64, device=x.device)
        screened = torch.nonzero(safe & (batch.support <= 4 * cutoff)).flatten()
        keep = torch.zeros(b, self.n, dtype=torch.bool, device=x.device)
        counts = torch.full((b,), self.n, dtype=torch.int64, device=x.device)
        if len(screened):
            keep[screened] = self._screen(x, batch, a, static, x_norm, magnitude, screened)
            counts[screened] = keep[screened].sum(1)
        # a screened sample with no survivor means the screen failed (it always keeps each draw's maximum):
        # never trusted, it takes the float64 route over all N points
        # a sample far from the data's centre (expanded float64 logits off by more than
        # REFINE_NATS, refine.py) takes the float64 route, which recomputes them in direct form
        noise = torch.linalg.vector_norm(batch.scaled, dim=-1)  # (B, M)
        near = (self.logit_error(a, c, x_norm[:, None] + noise) <= REFINE_NATS).all(1)
        gathered = safe & near & (counts <= cutoff) & (counts > 0)
        smoothed = torch.empty(b, d, dtype=F64, device=x.device)
        src_ids: list = [None] * b
        src_w: list = [None] * b
        wide = torch.nonzero(~gathered).flatten()
        if len(wide):
            mean_w, _ = self.mean_weights(x[wide], batch.exact, t, m, rows=wide, scaled=batch.scaled)
            smoothed[wide] = weighted_sum(mean_w, self.x)
            batch.support[wide] = (mean_w > 0).sum(1)
            if sources:
                s = Sources.from_dense(mean_w)
                for j, row in enumerate(wide.tolist()):
                    src_ids[row], src_w[row] = s.ids[j], s.weights[j]
        rows = torch.nonzero(gathered).flatten()
        batch.support[rows] = counts[rows]
        if len(rows):
            self._gathered(x, batch, keep, counts, rows, static, a, smoothed, src_ids, src_w, sources)
        bound = torch.full((b,), flushed_mass_bound(self.n), dtype=F64, device=x.device)
        dense = (~gathered).to(F64)
        src = None
        if sources:
            width = max(len(i) for i in src_ids)
            src = Sources(torch.stack([pad_rows(i[None], width, -1)[0] for i in src_ids]),
                          torch.stack([pad_rows(w[None], width, 0.0)[0] for w in src_w]))
        return StepResult(smoothed, bound, dense, src, None)

    # -------------------------------------------------------------- the screen
    def slack(self, a: float, x_norm, magnitude, draws: Draws, which=None) -> torch.Tensor:
        """Rigorous bound (B,) on |float32 screened logit - exact logit|: the float32 dot products
        x . x_i and sigma eps_bm . x_i (with an absolute term for products that underflow), and six
        float32 roundings (cast of the static term, products, sums, the threshold) of values below
        `magnitude`."""
        underflow = 2 * self.ts.dim * 2.0 ** -149
        fast_err = draws.fast_err if which is None else draws.fast_err[which]
        return a * (gamma(self.ts.dim) * self.ts.norm_max * x_norm + fast_err + underflow) + 6 * U32 * magnitude

    def _screen(self, x, draws: Draws, a: float, static, x_norm, magnitude, which=None) -> torch.Tensor:
        """(R, N) bool for the samples `which` (default all): points that may carry weight
        >= 1e-30 in some draw of each sample."""
        which = torch.arange(len(x), device=x.device) if which is None else which
        rows = expanded_logits(torch.mm(x[which].to(F32), self.ts.points32_t.T), a, static.to(F32))  # (R, N) float32
        slack = self.slack(a, x_norm[which], magnitude[which], draws, which)
        margin = (LN_FLUSH + 2 * slack).clamp(max=3e38).to(F32)  # (R,)
        if draws.fast is None:
            return rows >= rows.amax(1, keepdim=True) - margin[:, None]
        r, (_, m, n) = len(which), draws.fast.shape
        keep = torch.empty(r, n, dtype=torch.bool, device=x.device)
        chunk = max(1, 2 * CACHE_VALUES // (m * n))
        for lo in range(0, r, chunk):
            hi = min(lo + chunk, r)
            lg = torch.add(rows[lo:hi, None, :], draws.fast[which[lo:hi]], alpha=a)  # (c, M, N)
            lg -= lg.amax(2, keepdim=True) - margin[lo:hi, None, None]  # >= 0: kept in that draw
            torch.ge(lg.amax(1), 0.0, out=keep[lo:hi])
        return keep

    # -------------------------------------------------------------- few survivors: gathered rows
    def _gathered(self, x, draws: Draws, keep, counts, rows, static, a, smoothed, src_ids, src_w, sources):
        """Float64 weights over each sample's survivors, one softmax per draw, in groups of samples
        with similar survivor counts (padded within a group)."""
        m, d = draws.scaled.shape[1], draws.scaled.shape[2]
        table = _survivor_table(keep[rows], counts[rows])  # (r, max count) training ids, -1 padded
        for group, width in _groups(counts[rows], m + 2 + d):
            pos = table[group, :width]
            valid = pos >= 0
            ids = pos.clamp_min(0)
            xc = self.x[ids]  # (g, W, D)
            samples = rows[group]
            lg = expanded_logits(torch.einsum("gd,gwd->gw", x[samples], xc), a, static[ids])
            lg = lg[:, None, :] + a * torch.einsum("gmd,gwd->gmw", draws.scaled[samples], xc)
            w = flush_tiny(torch.softmax(torch.where(valid[:, None, :], lg, -math.inf), dim=-1))  # (g, M, W)
            mean_w = flush_tiny(torch.where(valid, w.mean(1), 0.0))
            smoothed[samples] = torch.einsum("gw,gwd->gd", mean_w, xc)
            if sources:
                order = torch.argsort(mean_w, dim=1, descending=True, stable=True)
                sorted_w = torch.gather(mean_w, 1, order)
                sorted_i = torch.where(sorted_w > 0, torch.gather(ids, 1, order), -1)
                for j, row in enumerate(samples.tolist()):
                    keep_n = int((sorted_w[j] > 0).sum())
                    src_ids[row], src_w[row] = sorted_i[j, :max(1, keep_n)], sorted_w[j, :max(1, keep_n)]


def _survivor_table(keep: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Column ids of each row's True entries, left-aligned and -1 padded: (rows, max count)."""
    pairs = torch.nonzero(keep)  # (P, 2), by row then column
    first = torch.cumsum(counts, 0) - counts
    table = torch.full((len(keep), max(1, int(counts.max()))), -1, dtype=torch.int64, device=keep.device)
    table[pairs[:, 0], torch.arange(len(pairs), device=keep.device) - first[pairs[:, 0]]] = pairs[:, 1]
    return table


def _groups(counts: torch.Tensor, values_per_slot: int):
    """Positions in order of count, grouped while (rows x largest count x values_per_slot) fits
    GATHER_VALUES: yields (positions, padded width)."""
    order = torch.argsort(counts, stable=True)
    sorted_counts = [max(1, c) for c in counts[order].tolist()]
    lo = 0
    while lo < len(order):
        hi = lo + 1
        while hi < len(order) and (hi + 1 - lo) * sorted_counts[hi] * values_per_slot <= GATHER_VALUES:
            hi += 1
        yield order[lo:hi], sorted_counts[hi - 1]
        lo = hi
