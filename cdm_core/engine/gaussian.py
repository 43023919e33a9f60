"""The Gaussian (linear) model: the denoiser of the Gaussian with the training set's moments.

Wang & Vastola (arXiv 2311.10892, 2412.09726): replace the data by N(mu, Sigma) with
mu = sum_i pi_i x_i and Sigma = sum_i pi_i (x_i - mu)(x_i - mu)^T. With y = t x + (1 - t) z,
    D(y, t) = mu + t Sigma (t^2 Sigma + (1 - t)^2 I)^-1 (y - t mu)
exactly. In the eigenbasis Sigma = U diag(lambda) U^T it is a gain per component,
    D = mu + U diag(g) U^T (y - t mu),  g_k = t lambda_k / (t^2 lambda_k + (1 - t)^2),
finite for every t in [0, 1) and every lambda >= 0 (no inverse of a singular matrix is formed).
Its sources are an *affine* (signed) combination of the training items:
    D = sum_i c_i x_i,  c_i = pi_i (1 + (x_i - mu) . v),  v = U diag(h) U^T (y - t mu),
    h_k = t / (t^2 lambda_k + (1 - t)^2),
and sum_i c_i = 1 because sum_i pi_i (x_i - mu) = 0. (The part of v outside the span of U is
orthogonal to every x_i - mu with pi_i > 0, so it never enters c.)

The eigenbasis comes from one eigendecomposition per training set and weights, kept in memory
(`moments`): the D x D covariance when D <= N, else a thin SVD of the N x D weighted deviations
(rank at most N), both in float64 on centred points, so large D costs N^2 D, not D^3.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from cdm_core.config import SamplerConfig
from cdm_core.engine.blend import F64, Sources, StepResult
from cdm_core.errors import CdmInputError

MAX_SOURCE_VALUES = 50_000_000  # n samples x N items of signed weights kept (400 MB of float64)
_CACHE: OrderedDict = OrderedDict()  # (content hash, weights hash, device) -> Moments
_CACHE_SIZE = 4


@dataclass
class Moments:
    """mu and the eigenbasis of Sigma, centred coordinates, float64 on the compute device."""

    mu: torch.Tensor  # (D,)
    basis: torch.Tensor  # (r, D): orthonormal rows U^T, r = rank bound min(N, D)
    eigenvalues: torch.Tensor  # (r,) lambda_k >= 0
    projections: torch.Tensor  # (N, r): (x_i - mu) U, for the sources


def moments(points: torch.Tensor, log_pi: np.ndarray) -> Moments:
    """Moments of the weighted points (N, D), two-pass (deviations formed before any product)."""
    pi = torch.as_tensor(np.exp(log_pi), dtype=F64, device=points.device)
    mu = pi @ points
    dev = points - mu
    a = torch.sqrt(pi)[:, None] * dev  # A^T A = Sigma
    n, d = a.shape
    if d <= n:
        lam, vec = torch.linalg.eigh(a.T @ a)
        basis = vec.T
    else:
        _, s, basis = torch.linalg.svd(a, full_matrices=False)
        lam = s * s
    lam = lam.clamp_min(0.0)
    return Moments(mu, basis.contiguous(), lam, dev @ basis.T)


def cached_moments(training_set, log_pi: np.ndarray) -> Moments:
    weights_hash = hashlib.sha256(np.ascontiguousarray(log_pi).tobytes()).hexdigest()
    key = (training_set.describe.get("content_hash"), weights_hash, str(training_set.device))
    if key[0] is None:
        return moments(training_set.points, log_pi)
    if key not in _CACHE:
        _CACHE[key] = moments(training_set.points, log_pi)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    _CACHE.move_to_end(key)
    return _CACHE[key]


class Gaussian:
    """The linear denoiser of the data's mean and covariance (module docstring)."""

    name = "gaussian"
    supports_sensitivity = False
    source_kind = "affine"  # signed weights over every item, summing to one

    def __init__(self, training_set, log_pi: np.ndarray, config: SamplerConfig):
        if config.n_samples * training_set.n > MAX_SOURCE_VALUES:
            raise CdmInputError(f"model gaussian keeps every item's signed weight for each sample: {config.n_samples} "
                                f"x {training_set.n} values, over {MAX_SOURCE_VALUES:.0e}; ask for fewer samples")
        self.training_set, self.log_pi = training_set, log_pi
        self.pi = torch.as_tensor(np.exp(log_pi), dtype=F64, device=training_set.device)
        self.m = cached_moments(training_set, log_pi)

    def begin(self, scaled):
        return None  # no smoothing draws

    def _coefficients(self, x: torch.Tensor, t: float, gain: bool) -> torch.Tensor:
        """(B, r) coordinates of diag(g or h) U^T (y - t mu)."""
        lam = self.m.eigenvalues
        denom = t * t * lam + (1.0 - t) ** 2
        scale = (t * lam if gain else torch.full_like(lam, t)) / denom
        return ((x - t * self.m.mu) @ self.m.basis.T) * scale

    def denoise(self, state, x, t, sources=False, draws=False):
        # D = mu + U diag(g) U^T (y - t mu)
        smoothed = self.m.mu + self._coefficients(x, t, gain=True) @ self.m.basis
        zero = torch.zeros(len(x), dtype=F64, device=x.device)
        src = None
        if sources:
            # c_i = pi_i (1 + (x_i - mu) . v), v = U diag(h) U^T (y - t mu)
            c = self.pi * (1.0 + self._coefficients(x, t, gain=False) @ self.m.projections.T)
            order = torch.argsort(c.abs(), dim=1, descending=True, stable=True)
            w = torch.gather(c, 1, order)
            src = Sources(torch.where(w != 0, order, -1), w)
        return StepResult(smoothed, zero, torch.ones(len(x), dtype=F64, device=x.device), src)

    def describe(self) -> dict:
        ts = self.training_set
        lam = self.m.eigenvalues
        top = float(lam.max()) if len(lam) else 0.0
        return {"model": self.name, "strategy": "eigenbasis", "index": ts.kind, "device": str(ts.device),
                "backend": "local", "sources": self.source_kind,
                "rank": int((lam > top * 1e-12).sum()) if top > 0 else 0,
                "variance": float(lam.sum())}
