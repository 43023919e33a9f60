"""Top-K strategy (index flat, ivf, torch): each smoothing query keeps its K nearest points.

With y a query at time t, |y - t x_i|^2 = t^2 |y/t - x_i|^2, so the points with the largest
weights (uniform pi) are the nearest neighbours of y/t among the unscaled x_i: one index built on
the (centred) training set serves every t.

Per query (all decisions per query, so a sample does not depend on its batch):
1. The index proposes K' = K + max(K/4, 16) candidates with a certified lower bound L on the
   squared distance of every point it did not return (neighbours.py).
2. The candidates' distances are recomputed in float64 and ordered by (distance, id); the first K
   are kept. If the (K+1)-th distance e' is below L, the kept points are exactly the K nearest and
   every omitted point i has |y - t x_i|^2 >= e', so its unnormalised weight is at most
   pi_max exp(-e' / (2 (1-t)^2)). With Z the kept sum and B the sum of those bounds over the
   n_omit omitted points, the omitted fraction of the weight is at most B / (Z + B): the bound.
3. A query that is not certified (e' >= L), or whose bound exceeds `truncation_tol`, is computed
   densely over all N points (exact).
"""

from __future__ import annotations

import math

import torch

from cdm_core.engine.blend import (
    CHUNK_VALUES,
    F64,
    FLUSH,
    Sources,
    SparseDrawWeights,
    StepResult,
    flush_tiny,
    flushed_mass_bound,
    logit_scales,
    pad_rows,
)
from cdm_core.engine.kernels import row_blocks, sort_by_distance
from cdm_core.engine.strategies import DENSE_CHUNK_VALUES, Strategy


class TruncatedStrategy(Strategy):
    def __init__(self, ts, log_pi, neighbours: int, truncation_tol: float):
        super().__init__(ts, log_pi)
        self.index = ts.index
        self.k = min(neighbours, len(self.eligible))
        self.fetch = min(len(self.eligible), self.k + max(self.k // 4, 16))
        self.tol = truncation_tol

    def step(self, scaled, x, t, sources=False, draws=False):
        b, m, d = scaled.shape
        if t == 0.0:
            return self._at_zero(b, m, sources, draws)
        y = (x[:, None, :] + scaled).reshape(b * m, d)
        ids, w, den, bound, dense = self._blend(y, t, weights=sources or draws)
        smoothed = den.reshape(b, m, d).mean(1)
        src = Sources.merge(ids.reshape(b, -1), (w / m).reshape(b, -1)) if sources else None
        per_draw = SparseDrawWeights(ids, w, den, m) if draws else None
        return StepResult(smoothed, bound.reshape(b, m).mean(1), dense.to(F64).reshape(b, m).mean(1), src, per_draw)

    def _blend(self, y: torch.Tensor, t: float, weights: bool = True):
        """Per query: kept ids (q, W) -1 padded and their weights (None unless `weights`), D(y, t),
        the omitted-mass bound, and whether it was computed densely."""
        q, dev = len(y), y.device
        excluded = self.excluded if len(self.excluded) else None
        cand, lower = self.index.certified_search((y / t).cpu().numpy(), self.fetch, exclude=excluded)
        cand = torch.as_tensor(cand, device=dev)
        lower = torch.as_tensor(lower, dtype=F64, device=dev) * (t * t)  # in |y - t x|^2 units
        _, _, s = logit_scales(t)
        # exact float64 distances of the candidates (in chunks: the gathered rows are large), then
        # every query's candidates ordered by (distance, id) at once
        e = torch.empty(cand.shape, dtype=F64, device=dev)
        for lo, hi in row_blocks(q, self.fetch * self.x.shape[1], CHUNK_VALUES):
            e[lo:hi] = ((y[lo:hi, None, :] - t * self.x[cand[lo:hi].clamp_min(0)]) ** 2).sum(-1)
        cand, e = sort_by_distance(cand, torch.where(cand >= 0, e, math.inf))
        kept, e_kept = cand[:, :self.k], e[:, :self.k]
        e_next = e[:, self.k] if e.shape[1] > self.k else torch.full((q,), math.inf, dtype=F64, device=dev)
        valid = kept >= 0
        lg = torch.where(valid, self.log_pi[kept.clamp_min(0)] - e_kept * s, -math.inf)
        log_z = torch.logsumexp(lg, 1)
        # renormalised after the flush: exp(l - log Z) on logits of 1e5 (far queries, early steps)
        # sums to 1 only within 1e-11, and sources times points far from the origin then miss the
        # sample by that much of its distance from the origin
        w = flush_tiny(torch.exp(lg - log_z[:, None]))
        w = w / w.sum(1, keepdim=True)
        ids = torch.where(w > 0, kept, -1)
        denoised = torch.empty(q, self.x.shape[1], dtype=F64, device=dev)
        for lo, hi in row_blocks(q, self.k * self.x.shape[1], CHUNK_VALUES):
            gathered = self.x[kept[lo:hi].clamp_min(0)]  # (c, K, D)
            denoised[lo:hi] = torch.einsum("ck,ckd->cd", w[lo:hi], gathered)
        # every omitted point is at least as far as the (K+1)-th nearest (when certified)
        n_omit = len(self.eligible) - valid.sum(1)
        log_b = torch.log(n_omit.to(F64).clamp_min(1)) + self.log_pi_max - e_next * s
        r = torch.exp((log_b - log_z).clamp(max=700))
        bound = torch.where(n_omit > 0, r / (1 + r), 0.0) + 2 * valid.sum(1) * FLUSH  # + the flushed kept weights
        certified = (n_omit == 0) | (e_next < lower)
        dense = ~certified | (bound > self.tol)
        if dense.any():
            rows_d = torch.nonzero(dense).flatten()
            d_ids, d_w, d_den = self._dense(y[rows_d], t, weights)
            denoised[rows_d] = d_den
            bound[rows_d] = flushed_mass_bound(self.n)
            if weights:
                width = max(self.k, d_ids.shape[1])
                ids, w = pad_rows(ids, width, -1), pad_rows(w, width, 0.0)
                ids[rows_d], w[rows_d] = pad_rows(d_ids, width, -1), pad_rows(d_w, width, 0.0)
        return (ids, w, denoised, bound, dense) if weights else (None, None, denoised, bound, dense)

    def _dense(self, y: torch.Tensor, t: float, weights: bool = True):
        """Queries over all N points: D(y, t) and, when asked for, their non-zero weights."""
        out_i, out_w, out_d = [], [], []
        for lo, hi in row_blocks(len(y), self.n, DENSE_CHUNK_VALUES):
            w = flush_tiny(torch.softmax(self.dense_logits(y[lo:hi], t), dim=1))
            out_d.append(w @ self.x)
            if weights:
                src = Sources.from_dense(w)
                out_i.append(src.ids)
                out_w.append(src.weights)
        if not weights:
            return None, None, torch.cat(out_d)
        width = max(i.shape[1] for i in out_i)
        return (torch.cat([pad_rows(i, width, -1) for i in out_i]), torch.cat([pad_rows(v, width, 0.0) for v in out_w]),
                torch.cat(out_d))
