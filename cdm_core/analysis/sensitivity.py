"""Exact sensitivity of samples to the training data, and counterfactuals by re-sampling.

With every random number held fixed (start state, smoothing draws), a sample x(1) is a
differentiable function of the training log-weights theta = log pi. We propagate
J_j = dx/dtheta_j forward through the Euler steps (docs/maths.md, "Sensitivity"; Scarvelis and Solomon,
*Sensitivity Analysis for Diffusion Models*, arXiv:2509.23092):

    blend of a draw y = x + sigma eps:   D = sum_k w_k x_k
    dD/dtheta_j = (t / (1 - t)^2) Cov_w[x] J_j  +  w_j (x_j - D)
                  (dD/dy = t/(1-t)^2 Cov_w, dy/dtheta = J;   dD/dlog pi_j = w_j (x_j - D))
    dD_sigma/dtheta_j = mean over the M draws
    Euler step:  J_j <- J_j + h (dD_sigma/dtheta_j - J_j) / (1 - t);   last step: J_j <- dD_sigma/dtheta_j

The start state depends on pi only through a discrete choice (inverse CDF), so J starts at 0,
and a column stays 0 until its training point first carries weight: points that never carry
weight along a trajectory have J = 0 exactly. For truncated indexes the recursion differentiates
the truncated sampler (the neighbour sets do not depend on pi), so it matches finite differences
of exactly what `sample` computes. Columns are computed only for the requested training ids, so
memory is (samples in a batch) x (ids) x D.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from cdm_core.analysis.dust import DUST, length_dust
from cdm_core.config import SamplerConfig
from cdm_core.engine.blend import F64, logit_scales, normalise_log_weights
from cdm_core.engine.models import build_model
from cdm_core.engine.sampler import batches, check_request, euler_steps, step_info, time_grid
from cdm_core.engine.training_set import TrainingSet
from cdm_core.errors import CdmInputError
from cdm_core.latent.space import latent_space
from cdm_core.pipeline.prepared import check_prepared, opened, prepare
from cdm_core.pipeline.run import sample

log = logging.getLogger(__name__)


# Derivatives at or below DUST (1e-6) of the data's scale are drawn and reported as numerically
# zero (analysis/dust.py): an e-fold weight change would move the sample by a millionth of the
# data's extent, invisible in any figure and, for the sizes the dashboard runs, close to what
# float64 rounding resolves far from the data's centre (docs/numerics.md).
NUMERICAL_ZERO_REL = DUST


def numerical_zero(points: np.ndarray) -> float:
    """|J| at or below which a derivative is numerically zero, in data units (placement-free:
    relative to max |x_i - c|)."""
    return length_dust(points)


@dataclass
class SensitivityResult:
    samples: np.ndarray  # (n, D) float64, data units
    training_ids: np.ndarray  # (n, m) int64, most influential first (-1 padded)
    jacobian: np.ndarray  # (n, m, D) float64: d samples / d log pi for those ids, data units
    influence: np.ndarray  # (n, m) float64: Euclidean norms of the jacobian rows
    config: SamplerConfig
    dataset: dict
    latents: np.ndarray | None = None  # latent space: (n, K) samples before decoding
    latent_jacobian: np.ndarray | None = None  # latent space: (n, m, K) d latents / d log pi

    def arrays(self) -> dict:
        out = {k: getattr(self, k) for k in ("samples", "training_ids", "jacobian", "influence")}
        return out | {k: getattr(self, k) for k in ("latents", "latent_jacobian") if getattr(self, k) is not None}


def jacobian(data, config: SamplerConfig, ids, weights=None, callback=None,
             prepared: TrainingSet | None = None):
    """J (n, c, D) = d x_i(1) / d log pi_j for training ids `ids` ((c,) shared, or (n, c) per
    sample, -1 for none), plus the samples (n, D) float64 from the same pass. Every strategy hands
    over every draw's weights (all N points for the dense ones), so J is exact for any N. In latent
    space both are in data units: J = Dec'(z) dz/dlog pi (the chain rule through the decoder)."""
    return _jacobian_in_space(data, config, ids, weights, callback, prepared)[:2]


def _jacobian_in_space(data, config, ids, weights, callback, prepared):
    """(J, samples) in data units, plus (latent J, latents) in latent space (else None, None)."""
    space = latent_space(data, config, callback) if config.space == "latent" else None
    with opened(data, config, prepared) as ts_set:
        jac, samples = _jacobian(config, ids, weights, callback, ts_set)
    if space is None:
        return jac, samples, None, None
    dec = space.decoder_jacobian(samples)  # (n, D, K)
    return np.einsum("ndk,nck->ncd", dec, jac), space.decode(samples), jac, samples


def _jacobian(config: SamplerConfig, ids, weights, callback, ts_set):
    n_train, dim = ts_set.n, ts_set.dim
    log_pi = normalise_log_weights(weights, n_train)
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim == 1:
        ids = np.broadcast_to(ids, (config.n_samples, len(ids)))
    if ids.shape[0] != config.n_samples or ((ids < -1) | (ids >= n_train)).any():
        raise CdmInputError(f"training ids must be in [0, {n_train}) with one row per sample, got shape {ids.shape}")
    model = sensitive_model(ts_set, log_pi, config)
    grid = time_grid(config.start, config.steps)
    out = np.zeros((config.n_samples, ids.shape[1], dim))
    samples = np.zeros((config.n_samples, dim))
    bs = check_request(config, n_train, dim, getattr(ts_set, "rows_per_process", n_train), ts_set.arrays_per_draw)
    for batch in batches(model, config, bs):
        rows = batch.ids
        cols = torch.as_tensor(np.ascontiguousarray(ids[rows]), device=ts_set.device)
        jac = torch.zeros(len(rows), cols.shape[1], dim, dtype=F64, device=ts_set.device)
        for step in euler_steps(model, batch.x, batch.scaled, grid, sources_at_end=False, draws=True):
            d_smooth = step.result.draws.d_smoothed(ts_set.points, cols, jac, step.t)
            if step.k == len(grid) - 2:
                jac = d_smooth  # the last step lands on D_sigma
            else:
                jac = jac + step.h * (d_smooth - jac) / (1 - step.t)
            if callback is not None:
                callback(step_info(step, batch, config, ts_set.centre))
            last = step
        out[rows] = jac.cpu().numpy()
        samples[rows] = ts_set.uncentred(last.x_next)
    return out, samples


def sensitive_model(ts_set, log_pi, config: SamplerConfig):
    """The model of `config`, refused in one line when it cannot hand over its draws' weights."""
    if config.subset:
        raise CdmInputError("sensitivity runs on the whole training set: set subset 0 (or pass the subset as data)")
    model = build_model(ts_set, log_pi, config)
    if not model.supports_sensitivity:
        raise CdmInputError(f"model {config.model} has no sensitivity (it does not expose its blend weights)")
    return model


def candidate_ids(result, count: int) -> np.ndarray:
    """Per sample, the `count` training ids with most blend weight (sources first, then nearest
    points): the candidates among which the most influential are ranked."""
    rows = []
    for i in range(len(result.samples)):
        src = result.source_ids[i][result.source_ids[i] >= 0]
        cand = list(dict.fromkeys(list(src) + list(result.nn_ids[i])))[:count]
        rows.append(cand + [-1] * (count - len(cand)))
    return np.asarray(rows, dtype=np.int64)


def sensitivity(data, config: SamplerConfig, ids=None, top: int | None = None, weights=None,
                callback=None, prepared: TrainingSet | None = None) -> SensitivityResult:
    """Jacobian of the samples for the given training `ids`, or for each sample's `top` most
    influential training points (ranked by |J| among its blend sources and nearest points)."""
    if (ids is None) == (top is None):
        raise CdmInputError("give either ids or top (the K most influential per sample)")
    with opened(data, config, prepared) as prep:
        return _sensitivity(data, config, ids, top, weights, callback, prep)


def _sensitivity(data, config, ids, top, weights, callback, prep) -> SensitivityResult:
    if top is not None:
        if not isinstance(top, (int, np.integer)) or top < 1:
            raise CdmInputError(f"top must be a positive integer, got {top!r}")
        base = sample(data, config, weights=weights, prepared=prep)
        cols = candidate_ids(base, max(2 * top, top + config.nearest))
    else:
        cols = np.asarray(ids, dtype=np.int64)
        if cols.ndim != 1 or len(cols) == 0:
            raise CdmInputError("ids must be a non-empty list of training ids")
    jac, samples, jac_latent, latents = _jacobian_in_space(data, config, cols, weights, callback, prep)
    cols = np.broadcast_to(cols, jac.shape[:2]).copy()
    infl = np.linalg.norm(jac, axis=2)
    infl = np.where(cols >= 0, infl, -1.0)
    order = np.argsort(-infl, axis=1, kind="stable")
    if top is not None:
        order = order[:, :top]
    cols = np.take_along_axis(cols, order, 1)
    jac = np.take_along_axis(jac, order[..., None], 1)
    infl = np.maximum(np.take_along_axis(infl, order, 1), 0.0)
    if jac_latent is not None:
        jac_latent = np.take_along_axis(jac_latent, order[..., None], 1)
    desc = prep.describe if config.space != "latent" else latent_space(data, config).data.describe()
    return SensitivityResult(samples, cols, jac, infl, config, desc, latents, jac_latent)


@dataclass
class Counterfactual:
    original: np.ndarray  # (n, D) samples with the given weights
    actual: np.ndarray  # (n, D) re-sampled with the edited weights, same seeds
    predicted: np.ndarray  # (n, D) original + first-order prediction
    edited_ids: np.ndarray
    factors: np.ndarray  # new weight / old weight per edited id (0 = removed)
    correlation: float  # Pearson r between predicted and actual displacements (all entries)
    error: np.ndarray  # (n,) |predicted - actual| per sample
    displacement: np.ndarray  # (n,) |actual - original| per sample


def counterfactual(data, config: SamplerConfig, edits: dict, weights=None, prepared: TrainingSet | None = None,
                   callback=None) -> Counterfactual:
    """Remove (factor 0) or re-weight training points and re-sample with identical seeds; compare
    the actual displacement with the first-order prediction from J.

    Prediction: re-weighting by factors f_j moves a sample by sum_j log(f_j) J_j. Removal is the
    mixture direction pi -> (pi restricted to the rest, renormalised): since sum_j J_j = 0, it
    moves a sample by about -(1 / (1 - P)) sum_{j removed} J_j, P the removed weight mass
    (-(N/(N-1)) J_j for one of N uniform points)."""
    with opened(data, config, prepared) as prep:
        return _counterfactual(data, config, edits, weights, callback, prep)


def _counterfactual(data, config, edits, weights, callback, prep) -> Counterfactual:
    n_train = prep.n
    if not edits:
        raise CdmInputError("no training points to remove or re-weight")
    ids = np.array(sorted(edits), dtype=np.int64)
    factors = np.array([float(edits[j]) for j in ids])
    if ((ids < 0) | (ids >= n_train)).any():
        raise CdmInputError(f"training ids must be in [0, {n_train})")
    if not np.all(np.isfinite(factors)) or (factors < 0).any():
        raise CdmInputError("re-weighting factors must be finite and non-negative (0 removes)")
    base_w = np.ones(n_train) if weights is None else np.asarray(weights, np.float64).copy()
    pi = np.exp(normalise_log_weights(base_w, n_train))
    new_w = base_w.copy()
    new_w[ids] *= factors
    normalise_log_weights(new_w, n_train, name="edited weights")  # e.g. everything removed
    original = sample(data, config, weights=weights, prepared=prep)
    actual = sample(data, config, weights=new_w, prepared=prep)
    jac, _ = jacobian(data, config, ids, weights=weights, prepared=prep, callback=callback)
    removed = factors == 0
    p_removed = pi[ids[removed]].sum()
    coef = np.where(removed, -1.0 / max(1.0 - p_removed, 1e-300), np.log(np.where(removed, 1.0, factors)))
    delta_pred = np.einsum("c,ncd->nd", coef, jac)
    delta_act = actual.samples.astype(np.float64) - original.samples
    a, b = delta_pred.ravel(), delta_act.ravel()
    corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
    return Counterfactual(original.samples, actual.samples, original.samples + delta_pred,
                          ids, factors, corr, np.linalg.norm(delta_pred - delta_act, axis=1),
                          np.linalg.norm(delta_act, axis=1))


def position_derivative(data, config: SamplerConfig, j: int, direction, weights=None,
                        prepared: TrainingSet | None = None) -> np.ndarray:
    """d x_i(1) / d x_j . v for every sample i: how samples move when training point j moves
    along `direction` v (for images: "what if this training image were brighter here").

    With y = x + sigma eps, l_k = log pi_k - |y - t x_k|^2 / (2 (1-t)^2) and u = dx/de:
        dD = (t/(1-t)^2) Cov_w u + w_j [v + (x_j - D) t (y - t x_j) . v / (1-t)^2]
    (moving x_j moves its own term w_j x_j and its logit), propagated through the Euler steps
    like J; the start state x_T = T x_i + (1-T) z moves by T v when it was drawn around j."""
    if config.backend != "local":
        raise CdmInputError("position derivatives run in one process (backend local)")
    space = latent_space(data, config) if config.space == "latent" else None
    prep = prepare(data, config) if prepared is None else check_prepared(data, config, prepared)
    n_train = prep.points.shape[0]
    dim = prep.points.shape[1] if space is None else space.data.dim
    if not (isinstance(j, (int, np.integer)) and 0 <= j < n_train):
        raise CdmInputError(f"training id must be in [0, {n_train}), got {j!r}")
    v = np.asarray(direction, dtype=np.float64).reshape(-1)
    if v.shape != (dim,) or not np.all(np.isfinite(v)):
        raise CdmInputError(f"direction must be {dim} finite numbers, got shape {v.shape}")
    if space is None:
        return _position_derivative(prep, config, j, v, weights)[0]
    # latent space: the image moves along v, so its latent moves along E'(x_j) v; samples move
    # in data units by Dec'(z_i) times their latent derivative
    u, latents = _position_derivative(prep, config, j, space.encoder_jvp(space.data.points[j], v), weights)
    return np.einsum("ndk,nk->nd", space.decoder_jacobian(latents), u)


def _position_derivative(prep, config, j, v, weights):
    n_train, dim = prep.points.shape
    log_pi = normalise_log_weights(weights, n_train)
    model = sensitive_model(prep, log_pi, config)
    grid = time_grid(config.start, config.steps)
    dev = prep.device
    vt = torch.as_tensor(v, dtype=F64, device=dev)
    xj = prep.points[j]  # centred: every difference below is unchanged by the centre
    out = np.zeros((config.n_samples, dim))
    samples = np.zeros((config.n_samples, dim))
    for batch in batches(model, config, check_request(config, n_train, dim)):
        rows, scaled = batch.ids, batch.scaled
        u = config.start * torch.as_tensor(batch.start_ids == j, dtype=F64, device=dev)[:, None] * vt
        for step in euler_steps(model, batch.x, scaled, grid, sources_at_end=False, draws=True):
            t, draws = step.t, step.result.draws
            y = step.x[:, None, :] + scaled  # (B, M, D) smoothing queries
            w_j = draws.weight_of(j)  # (B, M)
            den = draws.draw_means()  # (B, M, D)
            a = logit_scales(t)[0]  # t / (1-t)^2
            own = w_j[..., None] * (vt + (xj - den) * (a * ((y - t * xj) @ vt))[..., None])
            d_smooth = own.mean(1)
            if t > 0:
                d_smooth = d_smooth + a * draws.mean_cov_apply(prep.points, u[:, None, :])[:, 0]
            u = d_smooth if step.k == len(grid) - 2 else u + step.h * (d_smooth - u) / (1 - step.t)
            last = step
        out[rows] = u.cpu().numpy()
        samples[rows] = prep.uncentred(last.x_next)
    return out, samples
