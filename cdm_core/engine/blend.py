"""The closed-form model's maths and the typed results every strategy returns.

Notation (docs/maths.md): training points x_i in R^D with weights pi_i, time t in [0, 1),
    w_i(y, t) = softmax_i( log pi_i - |y - t x_i|^2 / (2 (1 - t)^2) )      blend weights
    D(y, t)   = sum_i w_i(y, t) x_i                                       denoiser
    score     = (t D(x, t) - x) / (1 - t)^2
    D_sigma   = (1/M) sum_m D(x + sigma eps_m, t)                         smoothed denoiser
    v(x, t)   = (D_sigma(x, t) - x) / (1 - t)                             velocity
The engine evaluates all of it in float64 on *centred* points x_i - c (docs/numerics.md): float32
appears only in certified screens and neighbour searches, never in a reported number.

Reference: Scarvelis, Sáez de Ocáriz Borde and Solomon, *Closed-Form Diffusion Models*,
arXiv:2310.12395 (the smoothed closed-form score and its sampler).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from cdm_core.errors import CdmInputError

F64 = torch.float64
F32 = torch.float32
FLUSH = 1e-30  # weights below this are set to zero before any product (see `flush_tiny`)
CHUNK_VALUES = 1 << 22  # element-wise temporaries stay under about this many float64 values
SMALL_VALUES = 1 << 16  # training sets up to this many values (N x D) skip column pruning


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


def logit_scales(t: float) -> tuple[float, float, float]:
    """(a, c, s) with a = t/(1-t)^2, c = t^2/(2(1-t)^2), s = 1/(2(1-t)^2): the logit is
    log pi_i - s |y - t x_i|^2 = log pi_i + a y . x_i - c |x_i|^2 - s |y|^2."""
    s = 1.0 / (2 * (1 - t) ** 2)
    return 2 * t * s, t * t * s, s


# ------------------------------------------------------------------ reference formulas
def logits(y: torch.Tensor, t: float, x: torch.Tensor, log_pi: torch.Tensor) -> torch.Tensor:
    """log pi_i - |y - t x_i|^2 / (2 (1 - t)^2) for queries y (q, D) and points x (N, D)."""
    sq = (y * y).sum(1, keepdim=True) - 2 * t * (y @ x.T) + (t * t) * (x * x).sum(1)
    return log_pi - sq.clamp_min(0) * logit_scales(t)[2]


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


# ------------------------------------------------------------------ shared numerics
def flush_tiny(w: torch.Tensor) -> torch.Tensor:
    """Weights below FLUSH (1e-30) set to zero before a product with X: denormal numbers make
    products many times slower on x86 (measured 0.4 s against 0.03 s). Every strategy flushes the
    same way, and the sources keep exactly the flushed weights, so they reproduce the sample;
    the mass dropped is at most N x 1e-30 per query and is added to the reported bound."""
    return torch.where(w >= FLUSH, w, 0.0)


# `threshold_` zeroes values <= its threshold: the largest double below FLUSH keeps w >= FLUSH
_BELOW_FLUSH = math.nextafter(FLUSH, 0.0)


def flush_tiny_(w: torch.Tensor) -> torch.Tensor:
    """`flush_tiny` in place (no new block of float64): NaN, like any value below 1e-30, becomes 0.
    Two in-place passes (`threshold_`, which keeps NaN, then `nan_to_num_`) take 0.07 ms on a
    (64, 4, 1000) block where `torch.where` took 0.19 ms and a mask with `masked_fill_` 0.16 ms."""
    return torch.nan_to_num_(torch.threshold_(w, _BELOW_FLUSH, 0.0), nan=0.0, posinf=math.inf, neginf=0.0)


def flushed_mass_bound(n: int) -> float:
    """Upper bound on the weight mass the flushes leave out of a sample: each of the n points
    loses below 1e-30 in a draw's flush and below 1e-30 more when the mean over draws is flushed."""
    return min(1.0, 2 * n * FLUSH)


def weighted_sum(w: torch.Tensor, x: torch.Tensor, find_columns: bool | None = None) -> torch.Tensor:
    """w @ x in float64 for flushed weight rows (B, N). Late in sampling most columns are zero
    in every row: only the columns some row uses enter the product. Finding them needs a host
    synchronisation, which costs more than the dense product on a GPU: by default columns are
    looked for on a CPU only."""
    if find_columns is None:
        find_columns = not x.is_cuda
    if not find_columns or x.numel() <= SMALL_VALUES:  # the product costs less than finding its columns
        return w @ x
    used = (w > 0).any(0)
    if int(used.sum()) > 0.5 * len(used):
        return w @ x
    cols = torch.nonzero(used).flatten()
    return w[:, cols] @ x[cols]


def pad_rows(a: torch.Tensor, width: int, value) -> torch.Tensor:
    if a.shape[1] >= width:
        return a
    return torch.cat([a, torch.full((a.shape[0], width - a.shape[1]), value, dtype=a.dtype,
                                    device=a.device)], 1)


@dataclass
class Sources:
    """Per-sample blend sources: the exact weights D_sigma was formed with, largest first.

    sum_k weights[b, k] x_{ids[b, k]} reproduces the sample (in float64 rounding), however wide
    the blend: nothing is capped or renormalised."""

    ids: torch.Tensor  # (B, W) int64 training ids, -1 padded
    weights: torch.Tensor  # (B, W) float64, 0 where padded

    @staticmethod
    def from_dense(w: torch.Tensor) -> "Sources":
        """The non-zero entries of flushed weight rows (B, N)."""
        width = max(1, int((w > 0).sum(1).max())) if len(w) else 1
        top = torch.topk(w, min(width, w.shape[1]), dim=1)
        # canonical order: weight descending, ties by id (as `merge` and the screened route)
        by_id = torch.argsort(top.indices, dim=1)
        ids, vals = torch.gather(top.indices, 1, by_id), torch.gather(top.values, 1, by_id)
        order = torch.argsort(vals, dim=1, descending=True, stable=True)
        ids, vals = torch.gather(ids, 1, order), torch.gather(vals, 1, order)
        return Sources(torch.where(vals > 0, ids, -1), vals)

    @staticmethod
    def merge(ids: torch.Tensor, weights: torch.Tensor) -> "Sources":
        """Rows of (id, weight) pairs with repeats (e.g. one block per smoothing draw): weights of
        the same id summed, zero and padded entries dropped, sorted by weight."""
        rows_i, rows_w = [], []
        for i, w in zip(ids.cpu().numpy(), weights.cpu().numpy()):
            ok = (i >= 0) & (w > 0)
            uniq, inv = np.unique(i[ok], return_inverse=True)
            tot = np.zeros(len(uniq))
            np.add.at(tot, inv, w[ok])
            order = np.argsort(-tot, kind="stable")
            rows_i.append(uniq[order])
            rows_w.append(tot[order])
        width = max(1, max(len(r) for r in rows_i))
        out_i = np.full((len(rows_i), width), -1, np.int64)
        out_w = np.zeros((len(rows_i), width))
        for r, (i, w) in enumerate(zip(rows_i, rows_w)):
            out_i[r, :len(i)], out_w[r, :len(w)] = i, w
        dev = ids.device
        return Sources(torch.as_tensor(out_i, device=dev), torch.as_tensor(out_w, device=dev))


def shifted_moments(x: torch.Tensor, w: torch.Tensor, r: torch.Tensor, v: torch.Tensor | None):
    """Two-pass moments of draw weights around a reference point per sample, over the points x
    (n, D) with weights w (B, M, n), references r (B, D) and vectors v (B, c, D) or None:
        S_b = sum_k wbar_bk (x_k - r_b) ((x_k - r_b) . v_bc)     (B, c, D), wbar the mean over draws
        d_bm = sum_k w_bmk (x_k - r_b)                            (B, M, D)
    so that mean_m Cov_{w_m}[x] v = S - mean_m d_m (d_m . v) exactly. The differences x_k - r are
    formed before any product: with r the blend's own mean they are of the blend's size, and the
    cancellation of the one-pass form X^T (w * X v) - D (D . v), whose error grows with the square
    of the data's distance from the centre, never happens (docs/numerics.md, "Sensitivity").
    Only the points some draw of a sample weights enter its sums (weights are flushed)."""
    b, m, _ = w.shape
    d = torch.zeros(b, m, x.shape[1], dtype=F64, device=x.device)
    s = None if v is None else torch.zeros(b, v.shape[1], x.shape[1], dtype=F64, device=x.device)
    for i in range(b):
        wbar = w[i].mean(0)
        used = torch.nonzero(wbar > 0).flatten()
        if len(used) == 0:
            continue
        xs = x[used] - r[i]  # (u, D): the two-pass differences
        d[i] = w[i][:, used] @ xs
        if v is not None:
            s[i] = (wbar[used, None] * (xs @ v[i].T)).T @ xs
    return s, d


class _SensitivityStep:
    def d_smoothed(self, x: torch.Tensor, cols: torch.Tensor, jac: torch.Tensor, t: float) -> torch.Tensor:
        """dD_sigma/dtheta_j (B, c, D) for columns `cols` (B, c), given J (B, c, D) before the step:
        mean over draws of (t/(1-t)^2) Cov_w[x] J_j + w_j (x_j - D)."""
        if t == 0.0:
            return self.mean_direct(x, cols)  # dD/dy = 0 at t = 0
        cov = self.mean_cov_apply(x, jac)  # first: it also forms the offsets the direct term uses
        return logit_scales(t)[0] * cov + self.mean_direct(x, cols)


@dataclass
class FullDrawWeights(_SensitivityStep):
    """Every draw's weights over all N points (dense strategies, for sensitivity). Moments are
    taken around each sample's blend mean r = mean_m D(y_m, t) (`shifted_moments`)."""

    weights: torch.Tensor  # (B, M, N) float64
    denoised: torch.Tensor  # (B, M, D) float64: D(y_m, t) per draw

    def weight_of(self, j: int) -> torch.Tensor:
        return self.weights[:, :, j]  # (B, M)

    def draw_means(self) -> torch.Tensor:
        return self.denoised  # (B, M, D)

    @property
    def reference(self) -> torch.Tensor:
        """r (B, D): the sample's smoothed denoiser, the point the moments are taken around."""
        return self.denoised.mean(1)

    def _offsets(self, x: torch.Tensor) -> torch.Tensor:
        """d_bm = D(y_m) - r_b (B, M, D), summed from the two-pass differences (cached per step)."""
        if getattr(self, "_d", None) is None:
            self._d = shifted_moments(x, self.weights, self.reference, None)[1]
        return self._d

    def mean_cov_apply(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """mean_m Cov_{w_m}[x] v_c for per-sample vectors v (B, c, D), two-pass around r."""
        s, d = shifted_moments(x, self.weights, self.reference, v)
        self._d = d
        m = self.weights.shape[1]
        return s - torch.einsum("bmd,bmc->bcd", d, torch.einsum("bmd,bcd->bmc", d, v)) / m

    def mean_direct(self, x: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """mean_m w_mj (x_j - D_m) for per-sample columns cols (B, c), -1 for none: (B, c, D), as
        mean_m w_mj ((x_j - r) - d_m)."""
        b, m, _ = self.weights.shape
        safe = cols.clamp_min(0)
        w_cols = torch.gather(self.weights, 2, safe[:, None, :].expand(b, m, -1)) * (cols >= 0)[:, None, :]
        own = x[safe] - self.reference[:, None, :]  # (B, c, D)
        return w_cols.mean(1)[..., None] * own - torch.einsum("bmc,bmd->bcd", w_cols, self._offsets(x)) / m


@dataclass
class SparseDrawWeights(_SensitivityStep):
    """Every draw's weights over its own candidates (truncated strategy, for sensitivity)."""

    ids: torch.Tensor  # (B*M, W) int64, -1 padded
    weights: torch.Tensor  # (B*M, W) float64
    denoised: torch.Tensor  # (B*M, D) float64
    draws: int  # M

    def weight_of(self, j: int) -> torch.Tensor:
        return (self.weights * (self.ids == j)).sum(1).reshape(-1, self.draws)  # (B, M)

    def draw_means(self) -> torch.Tensor:
        return self.denoised.reshape(-1, self.draws, self.denoised.shape[1])  # (B, M, D)

    def mean_cov_apply(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, m = len(self.ids), self.draws
        out = torch.empty(q, v.shape[1], v.shape[2], dtype=F64, device=x.device)
        rows = max(1, CHUNK_VALUES // max(1, self.ids.shape[1] * x.shape[1]))
        for lo in range(0, q, rows):
            hi = min(lo + rows, q)
            a = x[self.ids[lo:hi].clamp_min(0)] - self.denoised[lo:hi, None, :]  # x_k - D, (r, W, D)
            vq = v[torch.arange(lo, hi, device=x.device) // m]  # (r, c, D)
            proj = torch.einsum("rkd,rcd->rkc", a, vq)
            out[lo:hi] = torch.einsum("rkd,rk,rkc->rcd", a, self.weights[lo:hi], proj)
        return out.reshape(-1, m, v.shape[1], v.shape[2]).mean(1)

    def mean_direct(self, x: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        m = self.draws
        cq = cols.repeat_interleave(m, 0)  # (B*M, c)
        w_col = (self.weights[:, :, None] * (self.ids[:, :, None] == cq[:, None, :])).sum(1)
        direct = w_col[..., None] * (x[cq.clamp_min(0)] - self.denoised[:, None, :])
        direct = torch.where((cq >= 0)[..., None], direct, 0.0)
        return direct.reshape(-1, m, cols.shape[1], x.shape[1]).mean(1)


@dataclass
class StepResult:
    """What a strategy computed for a batch of B samples at one time t."""

    smoothed: torch.Tensor  # (B, D) float64: D_sigma(x, t), centred coordinates
    bound: torch.Tensor  # (B,) float64: mean over draws of a bound on the weight mass left out
    dense: torch.Tensor  # (B,) float64: fraction of the sample's draws evaluated over all N points
    sources: Sources | None = None  # when asked for: the weights `smoothed` was formed with
    draws: FullDrawWeights | SparseDrawWeights | None = None  # when asked for (sensitivity)
    pixels: object | None = None  # local models, with the sources: per-pixel sources (local.PixelSources)
