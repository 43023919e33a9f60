"""The closed-form model: blend weights, denoiser, score, smoothed denoiser and velocity.

Notation (DESIGN.md section 2): training points x_i in R^D with weights pi_i, time t in [0, 1),
    w_i(y, t) = softmax_i( log pi_i - |y - t x_i|^2 / (2 (1 - t)^2) )      blend weights
    D(y, t)   = sum_i w_i(y, t) x_i                                       denoiser
    score     = (t D(x, t) - x) / (1 - t)^2
    D_sigma   = (1/M) sum_m D(x + sigma eps_m, t)                         smoothed denoiser
    v(x, t)   = (D_sigma(x, t) - x) / (1 - t)                             velocity
All of it runs in float64: at t close to 1 the logits are scaled by 1 / (2 (1 - t)^2), so float32
distances would leave visible errors in the weights. (On large sets, `index auto` uses float32
where a bound or a measured tolerance allows it and float64 elsewhere: `screened.py`.)

`BlendEngine` evaluates the weights for a batch of queries either densely over all N points
(exact) or over the top-K neighbours from an index, with a certified bound on the omitted mass and
a dense fallback for queries whose bound exceeds a tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from cdm_core.errors import CdmInputError

F64 = torch.float64
# Chunking keeps every temporary under roughly this many float64 values (32 MiB).
CHUNK_VALUES = 1 << 22
DENSE_CHUNK_VALUES = 1 << 24  # 128 MiB of float64 logits per chunk in the dense reference path
# Factorised mode multiplies dense early-step weights by a float32 copy of X from this size on.
FLOAT32_PRODUCT_MIN = 10_000_000
CACHE_VALUES = 1 << 17  # about 1 MiB of float64: element-wise chunks that stay in cache
SMALL_VALUES = 1 << 16  # training sets up to this many values (N x D) skip column pruning
# Dense support pruning: weights below this are dropped from reported supports (sources).
SUPPORT_TOL = 1e-15
MAX_SUPPORT = 4096


def normalise_log_weights(weights, n: int, name: str = "weights") -> np.ndarray:
    """Validate training weights and return log pi (normalised), -inf where pi = 0."""
    if weights is None:
        return np.full(n, -math.log(n))
    w = np.asarray(weights)
    if w.dtype == object or w.dtype.kind not in "biuf":
        raise CdmInputError(f"{name}: must be numeric, got dtype {w.dtype}")
    w = w.astype(np.float64).reshape(-1) if w.ndim == 1 else w
    if w.shape != (n,):
        raise CdmInputError(f"{name}: expected {n} training weights, got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise CdmInputError(f"{name}: contains NaN or infinite values")
    if np.any(w < 0):
        raise CdmInputError(f"{name}: weights must be non-negative (first negative at {int(np.argmax(w < 0))})")
    total = w.sum()
    if not total > 0:
        raise CdmInputError(f"{name}: weights sum to zero; at least one must be positive")
    with np.errstate(divide="ignore"):
        return np.log(w) - math.log(total)


def logits(y: torch.Tensor, t: float, x: torch.Tensor, log_pi: torch.Tensor) -> torch.Tensor:
    """log pi_i - |y - t x_i|^2 / (2 (1 - t)^2) for queries y (q, D) and points x (N, D)."""
    sq = (y * y).sum(1, keepdim=True) - 2 * t * (y @ x.T) + (t * t) * (x * x).sum(1)
    return log_pi - sq.clamp_min(0) / (2 * (1 - t) ** 2)


def blend_weights(y, t, x, log_pi):
    """w_i(y, t): softmax of the logits (max subtraction inside torch.softmax)."""
    return torch.softmax(logits(y, t, x, log_pi), dim=1)


def denoiser(y, t, x, log_pi):
    """D(y, t) = sum_i w_i(y, t) x_i, the posterior mean of the data point."""
    return blend_weights(y, t, x, log_pi) @ x


def score(y, t, x, log_pi):
    """Exact score of the noised empirical distribution: (t D(y, t) - y) / (1 - t)^2."""
    return (t * denoiser(y, t, x, log_pi) - y) / (1 - t) ** 2


def smoothed_denoiser(xs, t, x, log_pi, sigma, eps):
    """D_sigma(x, t) = (1/M) sum_m D(x + sigma eps_m, t); xs (q, D), eps (q, M, D)."""
    q, m, d = eps.shape
    y = (xs[:, None, :] + sigma * eps).reshape(q * m, d)
    return denoiser(y, t, x, log_pi).reshape(q, m, d).mean(1)


def velocity(xs, t, x, log_pi, sigma, eps):
    """v(x, t) = (D_sigma(x, t) - x) / (1 - t): finite at t = 0, singular only at t = 1."""
    return (smoothed_denoiser(xs, t, x, log_pi, sigma, eps) - xs) / (1 - t)


@dataclass
class Blend:
    """Blend of a batch of q queries at one time t."""

    denoised: torch.Tensor  # (q, D) float64: D(y, t)
    ids: torch.Tensor | None  # (q, K') int64 training ids carrying weight, -1 padded
    weights: torch.Tensor | None  # (q, K') float64 weights of those ids (sum to 1 per row)
    bound: torch.Tensor  # (q,) float64: bound on the weight mass left out (0 when dense)
    dense: torch.Tensor  # (q,) bool: computed over all N points
    float32: bool = False  # weights from float32 logits (the fast path's diffuse regime)


class BlendEngine:
    """Evaluates blends for queries, densely or through a top-K neighbour index."""

    def __init__(self, points: torch.Tensor, log_pi: np.ndarray, index=None, neighbours: int = 64,
                 truncation_tol: float = 1e-6, factorised: bool = False,
                 points32: torch.Tensor | None = None, sq_norms: torch.Tensor | None = None):
        self.x = points  # (N, D) float64 on the compute device
        self.factorised = factorised and index is None  # see `smoothed`
        self.sq_norms = sq_norms if sq_norms is not None else torch.einsum("nd,nd->n", points, points)
        big = (self.factorised and points.shape[0] * points.shape[1] >= FLOAT32_PRODUCT_MIN
               and full_float32_products())
        # the float32 copy comes from the caller's cache when it has one (it is large)
        self.x32 = (points32 if points32 is not None else points.to(torch.float32)) if big else None
        self.n, self.dim = points.shape
        self.log_pi = torch.as_tensor(log_pi, dtype=F64, device=points.device)
        self.eligible = np.flatnonzero(np.isfinite(log_pi))  # ids with pi > 0
        self.excluded = np.flatnonzero(~np.isfinite(log_pi))
        self.log_pi_max = float(self.log_pi.max())
        self.index = index
        self.k = min(neighbours, len(self.eligible))
        self.tol = truncation_tol
        pi = torch.exp(self.log_pi)
        self.mean = pi @ points  # D(y, 0): at t = 0 every logit is the same up to log pi
        self.screened = None
        if big:
            from cdm_core.engine.screen import ScreenedSteps  # it builds on this module's helpers
            self.screened = ScreenedSteps(self)

    # ------------------------------------------------------------------ public
    def blend(self, y: torch.Tensor, t: float, support: bool = False) -> Blend:
        """Blend of queries y (q, D) float64 at time t; `support` asks for ids and weights."""
        if t == 0.0:
            return self._at_zero(len(y), support)
        if self.index is None:
            return self._dense(y, t, support)
        return self._truncated(y, t, support)

    def _full(self, x, eps, sigma, t, projected):
        """Factorised mode, for sensitivity: every draw's full weights (B, M, N) in
        `Blend.weights` (ids None: all N points) and per-draw denoised (B*M, D)."""
        b, m, d = eps.shape
        if t == 0.0:
            w = torch.exp(self.log_pi).expand(b, m, self.n)
        else:
            a, c = t / (1 - t) ** 2, t * t / (2 * (1 - t) ** 2)
            base = self.log_pi + a * (x @ self.x.T) - c * self.sq_norms
            lg = base[:, None, :] if projected is None else base[:, None, :] + a * projected
            w = torch.softmax(lg.expand(b, m, self.n), dim=-1)
        den = (w.reshape(b * m, self.n) @ self.x)
        q = b * m
        zeros = torch.zeros(q, dtype=F64, device=x.device)
        return Blend(den, None, w, zeros, torch.ones(q, dtype=torch.bool)), den.reshape(b, m, d).mean(1)

    def project_draws(self, eps: torch.Tensor, sigma: float, exact: bool = False):
        """sigma eps_m . x_i for every draw and training point, (B, M, N): computed once per batch,
        since the draws are fixed along the trajectory (factorised mode only). On large sets a
        `screened.Draws` (float32, with its error bound) unless `exact` asks for float64."""
        if self.screened is not None and not exact:
            return self.screened.project(eps, sigma)
        if not self.factorised or sigma == 0.0:
            return None
        b, m, d = eps.shape
        return (sigma * eps.reshape(b * m, d) @ self.x.T).reshape(b, m, self.n)

    def smoothed(self, x: torch.Tensor, eps: torch.Tensor, sigma: float, t: float, support: bool,
                 projected: torch.Tensor | None = None, full: bool = False):
        """(blend of the B*M smoothing queries, D_sigma(x, t) (B, D)).

        Factorised mode evaluates the same weights without forming each query: with y = x + sigma eps_m,
            logit_mi = log pi_i + t/(1-t)^2 (x . x_i + sigma eps_m . x_i) - t^2/(2(1-t)^2) |x_i|^2 + c_m
        (c_m constant in i), so one x . X product per sample serves all M draws, and
        D_sigma = (mean_m w_m) @ X needs one product per sample instead of M. Exact, not truncated.
        On large sets (`self.screened`) the same weights are screened in float32 first."""
        b, m, d = eps.shape
        if full and self.factorised:
            return self._full(x, eps, sigma, t, projected)
        if self.screened is not None and t != 0.0 and not isinstance(projected, torch.Tensor | None):
            out = self.screened.smoothed(x, projected, t, support)
            if out is not None:
                return out
            projected = self.screened.exact_projection(projected)  # float64 from here on
        if not self.factorised or t == 0.0:
            y = (x[:, None, :] + sigma * eps).reshape(b * m, d)
            blend = self.blend(y, t, support)
            return blend, blend.denoised.reshape(b, m, d).mean(1)
        a, c = t / (1 - t) ** 2, t * t / (2 * (1 - t) ** 2)
        # One pass over X per product for the whole batch: X is large and memory-bound.
        base = self.log_pi + a * (x @ self.x.T) - c * self.sq_norms  # (B, N)
        mean_w = torch.empty(b, self.n, dtype=F64, device=x.device)  # mean_m w_m, (B, N)
        # The element-wise work on (B, M, N) logits is memory-bound: chunks of about a megabyte
        # stay in cache, and the scaled add is fused into one pass.
        chunk = max(1, 2 * CACHE_VALUES // (m * self.n))  # 2 MiB: the L2 cache of one core
        ids_out, w_out, den_out = [], [], []
        for lo in range(0, b, chunk):
            hi = min(lo + chunk, b)
            lg = base[lo:hi, None, :] if projected is None else torch.add(base[lo:hi, None, :], projected[lo:hi], alpha=a)
            w = torch.softmax(lg, dim=-1)  # (c, M or 1, N)
            torch.mean(w, 1, out=mean_w[lo:hi])
            if support:
                ids, ws = _support(w.expand(hi - lo, m, self.n).reshape(-1, self.n))
                ids_out.append(ids)
                w_out.append(ws)
                den_out.append(_gather_blend(ids, ws, self.x))
        smoothed = _sparse_matmul(mean_w, self.x, self.x32)
        q = b * m
        zeros = torch.zeros(q, dtype=F64, device=x.device)
        dense = torch.ones(q, dtype=torch.bool)
        if not support:
            return Blend(None, None, None, zeros, dense), smoothed
        width = max(i.shape[1] for i in ids_out)
        blend = Blend(torch.cat(den_out), torch.cat([_pad(i, width, -1) for i in ids_out]),
                      torch.cat([_pad(i, width, 0.0) for i in w_out]), zeros, dense)
        return blend, smoothed

    # ------------------------------------------------------------------ cases
    def _at_zero(self, q: int, support: bool) -> Blend:
        ids = w = None
        if support:
            top = torch.topk(self.log_pi, min(MAX_SUPPORT, self.n))
            w = torch.exp(top.values)
            keep = w >= SUPPORT_TOL
            ids = torch.where(keep, top.indices, -1)[None].expand(q, -1).clone()
            w = torch.where(keep, w, 0.0)
            w = (w / w.sum())[None].expand(q, -1).clone()
        zeros = torch.zeros(q, dtype=F64, device=self.x.device)
        return Blend(self.mean[None].expand(q, -1).clone(), ids, w, zeros, torch.ones(q, dtype=torch.bool))

    def _dense(self, y, t, support) -> Blend:
        # Large chunks: each chunk re-reads X, and the products are memory-bound when thin.
        chunk = max(1, DENSE_CHUNK_VALUES // self.n)
        outs, ids, ws = [], [], []
        for lo in range(0, len(y), chunk):
            w = blend_weights(y[lo:lo + chunk], t, self.x, self.log_pi)
            outs.append(flush_tiny(w) @ self.x)
            if support:
                top = torch.topk(w, min(MAX_SUPPORT, self.n), dim=1)
                keep = top.values >= SUPPORT_TOL
                vals = torch.where(keep, top.values, 0.0)
                ids.append(torch.where(keep, top.indices, -1))
                ws.append(vals / vals.sum(1, keepdim=True))
        q = len(y)
        zeros = torch.zeros(q, dtype=F64, device=self.x.device)
        return Blend(torch.cat(outs), torch.cat(ids) if support else None,
                     torch.cat(ws) if support else None, zeros, torch.ones(q, dtype=torch.bool))

    def _truncated(self, y, t, support) -> Blend:
        q = len(y)
        # Nearest neighbours of y / t among the unscaled points: |y - t x|^2 = t^2 |y/t - x|^2.
        _, ids_np = self.index.search((y / t).to(torch.float32).cpu().numpy(), self.k,
                                      exclude=self.excluded if len(self.excluded) else None)
        ids = torch.as_tensor(ids_np, device=self.x.device)
        valid = ids >= 0
        safe = ids.clamp_min(0)
        chunk = max(1, CHUNK_VALUES // (self.k * self.dim))
        denoised = torch.empty(q, self.dim, dtype=F64, device=self.x.device)
        weights = torch.empty(q, self.k, dtype=F64, device=self.x.device)
        log_z = torch.empty(q, dtype=F64, device=self.x.device)
        e_k = torch.empty(q, dtype=F64, device=self.x.device)
        scale = 1.0 / (2 * (1 - t) ** 2)
        for lo in range(0, q, chunk):
            hi = min(lo + chunk, q)
            xk = self.x[safe[lo:hi]]  # (c, K, D)
            # Re-rank in float64: exact |y - t x_k|^2 for the K candidates.
            e = ((y[lo:hi, None, :] - t * xk) ** 2).sum(-1)
            e = torch.where(valid[lo:hi], e, math.inf)
            lg = self.log_pi[safe[lo:hi]] - e * scale
            lg = torch.where(valid[lo:hi], lg, -math.inf)
            log_z[lo:hi] = torch.logsumexp(lg, 1)
            w = torch.exp(lg - log_z[lo:hi, None])
            weights[lo:hi] = w
            denoised[lo:hi] = torch.einsum("ck,ckd->cd", w, xk)
            e_k[lo:hi] = torch.where(valid[lo:hi], e, -math.inf).max(1).values
        # Omitted mass: each of the n_omit points left out has |y - t x|^2 >= e_K (the K-th
        # smallest, less a relative slack for the float32 search) and pi <= pi_max, so its
        # unnormalised weight is at most exp(log pi_max - e_K scale). With B the sum of those and
        # Z the kept sum, the omitted fraction is at most B / (Z + B).
        n_omit = len(self.eligible) - valid.sum(1)
        log_b = torch.log(n_omit.to(F64).clamp_min(1)) + self.log_pi_max - e_k * (1 - 1e-5) * scale
        r = torch.exp((log_b - log_z).clamp(max=700))
        bound = torch.where(n_omit > 0, r / (1 + r), torch.zeros_like(r))
        dense = bound > self.tol
        if dense.any():
            rows = torch.nonzero(dense).flatten()
            exact = self._dense(y[rows], t, support)
            denoised[rows] = exact.denoised
            bound[rows] = 0.0
            if support:
                width = max(self.k, exact.ids.shape[1])
                ids = _pad(ids, width, -1)
                weights = _pad(weights, width, 0.0)
                ids[rows] = _pad(exact.ids, width, -1)
                weights[rows] = _pad(exact.weights, width, 0.0)
        ids = torch.where(weights > 0, ids, -1) if support else None
        return Blend(denoised, ids, weights if support else None, bound, dense)


def _support(w: torch.Tensor):
    """Ids and weights (renormalised) of the entries >= SUPPORT_TOL, at most MAX_SUPPORT per row."""
    width = int((w >= SUPPORT_TOL).sum(1).max().clamp(1, MAX_SUPPORT))
    top = torch.topk(w, width, dim=1)
    keep = top.values >= SUPPORT_TOL
    vals = torch.where(keep, top.values, 0.0)
    return torch.where(keep, top.indices, -1), vals / vals.sum(1, keepdim=True)


def _gather_blend(ids: torch.Tensor, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum_k w_k x_{ids_k} per row, in chunks that bound the gathered block."""
    out = torch.empty(len(ids), x.shape[1], dtype=F64, device=x.device)
    rows = max(1, CHUNK_VALUES // max(1, ids.shape[1] * x.shape[1]))
    for lo in range(0, len(ids), rows):
        out[lo:lo + rows] = torch.einsum("rk,rkd->rd", w[lo:lo + rows], x[ids[lo:lo + rows].clamp_min(0)])
    return out


def full_float32_products() -> bool:
    """Whether float32 products are true float32: the screen's error bound (and the float32 product
    of dense weights) assume it. `torch.set_float32_matmul_precision("high")` or TF32 on CUDA
    would round inputs to about 10 bits, so the large-set fast path is then not used."""
    return (torch.get_float32_matmul_precision() == "highest"
            and not (torch.cuda.is_available() and torch.backends.cuda.matmul.allow_tf32))


def flush_tiny(w: torch.Tensor) -> torch.Tensor:
    """Weights below 1e-30 set to zero before a product with X: denormal numbers (below ~1e-308
    in float64, ~1e-38 in float32) make products many times slower on x86 (measured 0.4 s
    against 0.03 s); the dropped mass is at most N * 1e-30."""
    return torch.where(w >= 1e-30, w, 0.0)


def _sparse_matmul(w: torch.Tensor, x: torch.Tensor, x32: torch.Tensor | None = None) -> torch.Tensor:
    """w @ x for convex weight rows. Late in sampling they are mostly (numerically) zero: only the
    columns with weight above 1e-18 enter (dropped mass below N * 1e-18), in float64. Early, when
    dense, `x32` (a float32 copy of a large x) may be used: weights in [0, 1] are not amplified, so
    the product keeps float32's ~1e-7 relative accuracy; only the logits need float64."""
    if x.numel() <= SMALL_VALUES:  # a small X: the product costs less than finding its columns
        return flush_tiny(w) @ x
    nz = w > 1e-18
    w = flush_tiny(w)
    if nz.sum() > 0.1 * w.numel():  # measured: gathering still pays when the union of columns is large
        if x32 is not None:
            return (w.to(torch.float32) @ x32).to(F64)
        return w @ x
    cols = torch.nonzero(nz.any(0)).flatten()
    return w[:, cols] @ x[cols]


def _pad(a: torch.Tensor, width: int, value) -> torch.Tensor:
    if a.shape[1] >= width:
        return a.clone()
    return torch.cat([a, torch.full((a.shape[0], width - a.shape[1]), value, dtype=a.dtype,
                                    device=a.device)], 1)
