"""The closed-form model: blend weights, denoiser, score, smoothed denoiser and velocity.

Notation (DESIGN.md section 2): training points x_i in R^D with weights pi_i, time t in [0, 1),
    w_i(y, t) = softmax_i( log pi_i - |y - t x_i|^2 / (2 (1 - t)^2) )      blend weights
    D(y, t)   = sum_i w_i(y, t) x_i                                       denoiser
    score     = (t D(x, t) - x) / (1 - t)^2
    D_sigma   = (1/M) sum_m D(x + sigma eps_m, t)                         smoothed denoiser
    v(x, t)   = (D_sigma(x, t) - x) / (1 - t)                             velocity
All of it runs in float64: at t close to 1 the logits are scaled by 1 / (2 (1 - t)^2), so float32
distances would leave visible errors in the weights.

`BlendEngine` evaluates the weights for a batch of queries either densely over all N points
(exact) or over the top-K neighbours from an index, with a certified bound on the omitted mass and
a dense fallback for queries whose bound exceeds a tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .errors import CdmInputError

F64 = torch.float64
# Chunking keeps every temporary under roughly this many float64 values (32 MiB).
CHUNK_VALUES = 1 << 22
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


class BlendEngine:
    """Evaluates blends for queries, densely or through a top-K neighbour index."""

    def __init__(self, points: torch.Tensor, log_pi: np.ndarray, index=None, neighbours: int = 64,
                 truncation_tol: float = 1e-6):
        self.x = points  # (N, D) float64 on the compute device
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

    # ------------------------------------------------------------------ public
    def blend(self, y: torch.Tensor, t: float, support: bool = False) -> Blend:
        """Blend of queries y (q, D) float64 at time t; `support` asks for ids and weights."""
        if t == 0.0:
            return self._at_zero(len(y), support)
        if self.index is None:
            return self._dense(y, t, support)
        return self._truncated(y, t, support)

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
        chunk = max(1, CHUNK_VALUES // self.n)
        outs, ids, ws = [], [], []
        for lo in range(0, len(y), chunk):
            w = blend_weights(y[lo:lo + chunk], t, self.x, self.log_pi)
            outs.append(w @ self.x)
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


def _pad(a: torch.Tensor, width: int, value) -> torch.Tensor:
    if a.shape[1] >= width:
        return a.clone()
    return torch.cat([a, torch.full((a.shape[0], width - a.shape[1]), value, dtype=a.dtype,
                                    device=a.device)], 1)
