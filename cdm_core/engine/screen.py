"""The fast path of `index auto` on large training sets: float32 where it is safe, screened by a
certified bound where it is not, float64 for every weight that is reported.

Notation as in `model.py`; for sample b, smoothing draw m and training point i at time t,
    l_bmi = log pi_i - c |x_i|^2 + a (x_b . x_i + p_bmi),   a = t/(1-t)^2,  c = t^2/(2(1-t)^2),
    p_bmi = sigma eps_bm . x_i  (fixed along the trajectory: one float32 product per batch).
Per step, one float32 product x . X (B x N) serves every draw. Two regimes:

- Diffuse (early) steps, while the weights spread over many points and the logit scale `a` is
  small: the softmax over (B, M, N) runs in float32. A float32 dot product of length D rounds by
  about u sqrt(D) |x| |x_i| (u = 2^-24); this regime is used only while that estimate, times `a`
  and summed over both products, stays under F32_LOGIT_TOL logits. Measured deviation from the
  float64 path: BENCHMARKS.md.
- Concentrated (late) steps, and every step that reports supports: the float32 logits only
  *screen*. With a rigorous bound `slack` on their error (the float32 dot-product bound
  |fl(x . y) - x . y| <= gamma_D sum_k |x_k y_k| <= gamma_D |x| |y|, plus the rounding of each
  float32 operation), a point whose screened logit is more than ln(1e30) + 2 slack below its draw's
  screened maximum has exact weight below 1e-30, which the float64 path flushes to zero anyway
  (`flush_tiny`). The candidates left are evaluated in float64, so the result equals the float64
  path's up to the dropped mass: at most N x 1e-30 per draw, reported as the truncation bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from cdm_core.engine.blend import CACHE_VALUES, F64, Blend, _gather_blend, _pad, _sparse_matmul, _support, flush_tiny

F32 = torch.float32
U32 = 2.0 ** -24  # unit roundoff of float32
LN_FLUSH = math.log(1e30)  # weights below exp(-LN_FLUSH) are flushed to zero by the float64 path
# Diffuse steps run in float32 while the estimate a(t) u sqrt(D) (|x| + |sigma eps|) max|x_i| of
# the logits' rounding stays under this. The estimate is pessimistic: for Fashion-MNIST's start
# states, x . X rounded by at most 3.8e-5 against an estimate u sqrt(D) |x| max|x_i| of 1.1e-3
# (over a whole run, the largest rounding measured was 1.3e-4). Chosen by
# measured sample deviations: at most 2e-5 from `exact` (BENCHMARKS.md), 50x inside the 1e-3 the
# speed target allows.
F32_LOGIT_TOL = 2e-2
F32_SAFE = 1e36  # logits bounded by this stay finite in float32 (max 3.4e38) through every operation
# Screened steps gather their candidates' logits in chunks of at most this many float64 values.
GATHER_VALUES = 1 << 22  # 32 MiB
# Few candidates have their rows of X gathered while these total at most this many passes over X.
# Measured on Fashion-MNIST: gathering 383 candidates per sample (0.4 passes) beat making the
# float64 sigma eps . X (0.5 s) for the run, 2.2 s against 2.7 s.
GATHER_PASSES = 1.0


def gamma(d: int) -> float:
    """Rigorous relative bound of a float32 dot product of length d (any summation order), with a
    margin for the rounding of its float64 inputs to float32."""
    return (d * U32 / (1 - d * U32) + 2 * U32) * 1.01


@dataclass
class Draws:
    """The smoothing draws of one batch, fixed along its trajectories, and their projections."""

    scaled: torch.Tensor  # (B, M, D) float64: sigma eps_bm (zeros when sigma = 0)
    fast: torch.Tensor | None  # (B, M, N) float32 product for p_bmi; None when sigma = 0
    norms: torch.Tensor  # (B,) float64: max over m of |sigma eps_bm|
    fast_err: torch.Tensor  # (B,) float64: bound on |fast - p| over m and i
    fast_abs: torch.Tensor  # (B,) float64: bound on |p_bmi| over m and i
    exact: torch.Tensor | None = None  # (B, M, N) float64 p_bmi, made only when a step needs it
    diffuse: bool = True  # weights still spread widely (updated after each float32 step)


def project(scaled: torch.Tensor, x32: torch.Tensor, x_norm_max: float) -> Draws:
    """p_bmi = sigma eps_bm . x_i for all draws and points as a float32 product, with its bound."""
    b, m, d = scaled.shape
    norms = torch.linalg.vector_norm(scaled, dim=-1).amax(1)  # (B,)
    if not bool((norms > 0).any()):
        return Draws(scaled, None, norms, norms, norms)  # all zeros
    fast = (scaled.reshape(b * m, d).to(F32) @ x32.T).reshape(b, m, -1)
    err = gamma(d) * norms * x_norm_max
    return Draws(scaled, fast, norms, err, fast.abs().amax((1, 2)).to(F64) + err)


class ScreenedSteps:
    """Evaluates `BlendEngine.smoothed` for a large training set (see the module docstring)."""

    def __init__(self, engine):
        self.e = engine
        self.norm_max = float(torch.sqrt(engine.sq_norms.max()))  # max |x_i|
        self.diffuse_max = engine.n // 2  # sum over a batch of per-sample supports: "diffuse" above

    def project(self, eps: torch.Tensor, sigma: float) -> Draws:
        return project(sigma * eps, self.e.x32, self.norm_max)

    def logits32(self, x: torch.Tensor, draws: Draws, t: float):
        """Float32 logits before the per-draw terms, static_i + a x_b . x_i (B, N), with what the
        error bounds need: static (N,) float64, |x_b| (B,) and a bound on |logit| (B,). None when
        that bound leaves float32's safe range (overflow), for the float64 path to take over."""
        e = self.e
        a, c = t / (1 - t) ** 2, t * t / (2 * (1 - t) ** 2)
        static = e.log_pi - c * e.sq_norms  # (N,) float64, -inf where pi = 0
        x_norm = torch.linalg.vector_norm(x, dim=1)
        magnitude = float(static[torch.isfinite(static)].abs().max()) + a * (x_norm * self.norm_max + draws.fast_abs)
        if not float(magnitude.max()) < F32_SAFE:
            return None
        rows = torch.add(static.to(F32), x.to(F32) @ e.x32.T, alpha=a)
        return rows, static, x_norm, magnitude

    def slack(self, t: float, x_norm: torch.Tensor, magnitude: torch.Tensor, draws: Draws) -> torch.Tensor:
        """Rigorous bound (B,) on |float32 logit - exact logit|: the float32 dot products x . x_i
        and sigma eps_bm . x_i (with an absolute term for products that underflow), and about six
        float32 roundings (cast of static, products, sums, the threshold) of values below
        `magnitude`."""
        a = t / (1 - t) ** 2
        underflow = 2 * self.e.dim * 2.0 ** -149
        return a * (gamma(self.e.dim) * self.norm_max * x_norm + draws.fast_err + underflow) + 6 * U32 * magnitude

    def exact_projection(self, draws: Draws) -> torch.Tensor | None:
        """p_bmi in float64 (B, M, N), made on first use and kept for the batch."""
        if draws.exact is None and draws.fast is not None:
            b, m, d = draws.scaled.shape
            draws.exact = (draws.scaled.reshape(b * m, d) @ self.e.x.T).reshape(b, m, -1)
        return draws.exact

    def smoothed(self, x: torch.Tensor, draws: Draws, t: float, support: bool):
        """(Blend, D_sigma) as `BlendEngine.smoothed`, or None where float32 would overflow."""
        a = t / (1 - t) ** 2
        logits = self.logits32(x, draws, t)
        if logits is None:
            return None
        rows, static, x_norm, magnitude = logits
        if not support and draws.diffuse:
            # typical float32 rounding of the logits (about sqrt(D) u per dot product)
            typical = a * U32 * math.sqrt(self.e.dim) * (x_norm + draws.norms) * self.norm_max + 3 * U32 * magnitude
            if float(typical.max()) <= F32_LOGIT_TOL:
                return self._float32(rows, draws, a)
        keep = self._screen(rows, draws, a, self.slack(t, x_norm, magnitude, draws))
        return self._exact(x, draws, keep, static, a, support)

    # -------------------------------------------------------------- diffuse: float32
    def _float32(self, rows: torch.Tensor, draws: Draws, a: float):
        e = self.e
        b = len(rows)
        m = 1 if draws.fast is None else draws.fast.shape[1]
        mean_w = torch.empty(b, e.n, dtype=F32, device=rows.device)
        chunk = max(1, 2 * CACHE_VALUES // (m * e.n))  # about 1 MiB per chunk: stays in cache
        for lo in range(0, b, chunk):
            hi = min(lo + chunk, b)
            lg = rows[lo:hi, None, :] if draws.fast is None else torch.add(
                rows[lo:hi, None, :], draws.fast[lo:hi], alpha=a)  # (r, M, N) logits
            # softmax per draw, then the mean over draws as one product. Exponents are clamped at
            # -70 after the max shift: float32 turns subnormal below about e^-87, which makes this
            # loop several times slower, and weights below e^-70 (< 1e-30) are flushed anyway.
            lg = lg - lg.amax(-1, keepdim=True)
            lg.clamp_(min=-70.0).exp_()
            inv = 1.0 / (m * lg.sum(-1))  # (r, M)
            torch.bmm(inv[:, None, :], lg, out=mean_w[lo:hi, None, :])
        mean_w = flush_tiny(mean_w)
        draws.diffuse = int(torch.count_nonzero(mean_w)) > self.diffuse_max
        q = b * m
        zeros = torch.zeros(q, dtype=F64, device=rows.device)
        blend = Blend(None, None, None, zeros, torch.ones(q, dtype=torch.bool), float32=True)
        return blend, (mean_w @ e.x32).to(F64)

    # -------------------------------------------------------------- concentrated: screen + exact
    def _screen(self, rows: torch.Tensor, draws: Draws, a: float, slack: torch.Tensor) -> torch.Tensor:
        """(B, N) bool: points that may carry weight >= 1e-30 in some draw of each sample."""
        margin = (LN_FLUSH + 2 * slack).to(F32)  # (B,)
        if draws.fast is None:
            return rows >= rows.amax(1, keepdim=True) - margin[:, None]
        b, m, n = draws.fast.shape
        keep = torch.empty(b, n, dtype=torch.bool, device=rows.device)
        chunk = max(1, 2 * CACHE_VALUES // (m * n))
        for lo in range(0, b, chunk):
            hi = min(lo + chunk, b)
            lg = torch.add(rows[lo:hi, None, :], draws.fast[lo:hi], alpha=a)  # (r, M, N)
            lg -= lg.amax(2, keepdim=True) - margin[lo:hi, None, None]  # >= 0: kept in that draw
            torch.ge(lg.amax(1), 0.0, out=keep[lo:hi])
        return keep

    def _exact(self, x, draws: Draws, keep: torch.Tensor, static: torch.Tensor, a: float, support: bool):
        """Float64 weights over each sample's candidates, one softmax per draw, padded within
        groups of samples with similar candidate counts. Few candidates: their rows of X are
        gathered and x . x_i, sigma eps_bm . x_i and D_sigma computed from them. Many: x . X on
        the union of candidates, sigma eps . X in float64 (made once per batch), and
        D_sigma = mean_w @ X as in the float64 path."""
        e = self.e
        b, m, d = draws.scaled.shape
        counts = keep.sum(1)
        gathered = int(counts.sum()) <= GATHER_PASSES * e.n
        if gathered:
            union = torch.arange(e.n, device=x.device)
        else:
            self.exact_projection(draws)
            union = torch.nonzero(keep.any(0)).flatten()
            if len(union) > e.n // 2:  # a gather would cost more than it saves
                union = torch.arange(e.n, device=x.device)
            else:
                keep, static = keep[:, union], static[union]
            x_u = e.x[union] if len(union) < e.n else e.x
            dots = x @ x_u.T  # (B, U) float64
            mean_w = torch.zeros(b, len(union), dtype=F64, device=x.device)
        table = _candidate_table(keep, counts)  # (B, max count) positions in `union`, -1 padded
        smoothed = torch.empty(b, d, dtype=F64, device=x.device)
        sup_ids, sup_w = [None] * b, [None] * b
        for group, width in _groups(counts, (m + 2 + (d if gathered else 0))):
            valid = table[group, :width] >= 0  # (r, W)
            pos = table[group, :width].clamp_min(0)
            if gathered:
                xc = e.x[pos]  # (r, W, D)
                lg = static[pos] + a * torch.einsum("rd,rwd->rw", x[group], xc)
                lg = lg[:, None, :] + a * torch.einsum("rmd,rwd->rmw", draws.scaled[group], xc)
            else:
                lg = (static[pos] + a * torch.gather(dots[group], 1, pos))[:, None, :]
                if draws.exact is not None:
                    lg = lg + a * draws.exact[group[:, None, None], torch.arange(m, device=x.device)[None, :, None],
                                              union[pos][:, None, :]]
            w = torch.softmax(torch.where(valid[:, None, :], lg, -math.inf), dim=-1)  # (r, M, W)
            mean_group = torch.where(valid, w.mean(1), 0.0)
            if gathered:
                smoothed[group] = torch.einsum("rw,rwd->rd", flush_tiny(mean_group), xc)
            else:  # padded slots point at position 0 with weight 0: accumulate
                mean_w.index_put_((group[:, None].expand_as(pos), pos), mean_group, accumulate=True)
            if support:
                kept, ws = _support(w.reshape(-1, width))
                ids = union[torch.gather(pos.repeat_interleave(m, 0), 1, kept.clamp_min(0))]
                ids = torch.where(kept >= 0, ids, -1)
                for j, row in enumerate(group.tolist()):
                    sup_ids[row], sup_w[row] = ids[j * m:(j + 1) * m], ws[j * m:(j + 1) * m]
        if not gathered:
            smoothed = _sparse_matmul(mean_w, x_u, e.x32 if len(union) == e.n else None)
        # each dropped point had weight below 1e-30 in its draw
        bound = ((e.n - counts).to(F64) * 1e-30).clamp(max=1.0).repeat_interleave(m)
        dense = torch.ones(b * m, dtype=torch.bool, device=x.device)
        if not support:
            return Blend(None, None, None, bound, dense), smoothed
        width = max(i.shape[1] for i in sup_ids)
        ids = torch.cat([_pad(i, width, -1) for i in sup_ids])
        ws = torch.cat([_pad(i, width, 0.0) for i in sup_w])
        return Blend(_gather_blend(ids, ws, e.x), ids, ws, bound, dense), smoothed


def _candidate_table(keep: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Column positions of each row's True entries, left-aligned and -1 padded: (B, max count)."""
    pairs = torch.nonzero(keep)  # (P, 2), by row then column
    first = torch.cumsum(counts, 0) - counts
    table = torch.full((len(keep), max(1, int(counts.max()))), -1, dtype=torch.int64, device=keep.device)
    table[pairs[:, 0], torch.arange(len(pairs), device=keep.device) - first[pairs[:, 0]]] = pairs[:, 1]
    return table


def _groups(counts: torch.Tensor, values_per_slot: int):
    """Rows in order of count, grouped while (rows x largest count x values_per_slot) fits
    GATHER_VALUES: yields (row ids, padded width)."""
    order = torch.argsort(counts)
    sorted_counts = [max(1, c) for c in counts[order].tolist()]
    lo = 0
    while lo < len(order):
        hi = lo + 1
        while hi < len(order) and (hi + 1 - lo) * sorted_counts[hi] * values_per_slot <= GATHER_VALUES:
            hi += 1
        yield order[lo:hi], sorted_counts[hi - 1]
        lo = hi
