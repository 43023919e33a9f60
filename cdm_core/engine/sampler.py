"""Euler sampler for the (smoothed) closed-form diffusion model.

Pure function over arrays, in the style of k-diffusion: no I/O, no UI. Progress, trajectories and
the blend of every step are reported through `callback(info: dict)`.

Steps (DESIGN.md section 2), on the uniform grid t_k = T + (1 - T) k / S, k = 0..S:
    start    x_T = T x_i + (1 - T) z,  i ~ pi by inverse CDF of u,  z ~ N(0, I)
    step k   x_{k+1} = x_k + (t_{k+1} - t_k) v(x_k, t_k),   v = (D_sigma - x) / (1 - t)
    last     t_S = 1, so x_S = x + (1 - t)(D_sigma - x)/(1 - t) = D_sigma(x_{S-1}, t_{S-1}):
             every sample is exactly a convex combination of training points (its sources).
Sample i draws (u, z, eps_1..eps_M) from its own stream seeded by (seed, i), so it does not depend
on its batch, on how many samples are asked for, or on the training weights.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from cdm_core import settings
from cdm_core.config import SamplerConfig
from cdm_core.errors import CdmInputError
from cdm_core.engine.blend import F64, Blend, BlendEngine, normalise_log_weights
from cdm_core.engine.training_set import Prepared, prepare

log = logging.getLogger(__name__)


def check_request(config: SamplerConfig, n_train: int, dim: int) -> int:
    """Refuse requests over the work limit, before allocating; return a batch size whose draw
    buffers (eps and their projections, float64) fit the per-batch memory limit. Batching never
    changes results (per-sample seeding), so shrinking it is safe."""
    lim = settings.limits()
    work = config.work(n_train, dim)
    if work > lim.max_work:
        raise CdmInputError(f"this request needs about {work:.1e} floating-point operations, "
                            f"over the limit of {lim.max_work:.1e} (CDM_MAX_WORK); ask for fewer samples, "
                            "draws or steps")
    # sigma eps (float64, M x D) and its projections on X (float64 and a float32 copy, M x N)
    per_sample = 8 * config.draws * dim + 12 * config.draws * n_train
    if per_sample > lim.max_batch_bytes:
        raise CdmInputError(f"one sample's {config.draws} smoothing draws need {per_sample / 2**20:.0f} MiB, over "
                            f"the limit of {lim.max_batch_bytes / 2**20:.0f} MiB (CDM_MAX_BATCH_MB)")
    return max(1, min(config.batch_size, lim.max_batch_bytes // per_sample))


def random_draws(seed: int, ids: np.ndarray, dim: int, draws: int):
    """Per-sample random numbers: u (B,), z (B, D), eps (B, M, D), float64.

    Drawn in a fixed order (u, z, eps) from numpy's PCG64 seeded by (seed, i): identical on every
    device and independent of the batch, of M for (u, z), and of the training weights.
    """
    u = np.empty(len(ids))
    z = np.empty((len(ids), dim))
    eps = np.empty((len(ids), draws, dim))
    for row, i in enumerate(ids):
        rng = np.random.default_rng([int(seed), int(i)])
        u[row] = rng.random()
        z[row] = rng.standard_normal(dim)
        eps[row] = rng.standard_normal((draws, dim))
    return u, z, eps


def inverse_cdf(log_pi: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Training index drawn from pi by inverse CDF of the uniform numbers u."""
    cdf = np.cumsum(np.exp(log_pi))
    idx = np.searchsorted(cdf, u * cdf[-1], side="right")
    idx = np.minimum(idx, len(cdf) - 1)
    # never land on a zero-weight point (possible only through rounding at a flat CDF step)
    zero = ~np.isfinite(log_pi[idx])
    if zero.any():
        pos = np.flatnonzero(np.isfinite(log_pi))
        idx[zero] = pos[np.minimum(np.searchsorted(pos, idx[zero]), len(pos) - 1)]
    return idx


def fraction_done(info: dict) -> float:
    """Progress of a run from a callback's info (batches x steps), in [0, 1]."""
    return min(1.0, ((info["batch"] - 1) * info["steps"] + info["step"]) / (info["batches"] * info["steps"]))


def time_grid(start: float, steps: int) -> np.ndarray:
    ts = start + (1.0 - start) * np.arange(steps + 1) / steps
    ts[-1] = 1.0
    return ts


@dataclass
class Step:
    """What one Euler step saw: handed to callbacks and to the sensitivity recursion."""

    k: int  # step number, 0-based
    t: float  # time of the state the velocity was evaluated at
    h: float  # step size t_{k+1} - t_k
    x: torch.Tensor  # (B, D) state before the step
    blend: Blend  # blend of the B*M smoothing queries
    smoothed: torch.Tensor  # (B, D) D_sigma(x, t)
    x_next: torch.Tensor  # (B, D) state after the step


def euler_steps(engine: BlendEngine, x: torch.Tensor, eps: torch.Tensor, sigma: float,
                ts: np.ndarray, support_every_step: bool = False, full_weights: bool = False):
    """Yield each `Step` of the Euler integration from ts[0] to ts[-1] = 1."""
    if sigma == 0.0:
        eps = eps[:, :1]  # all smoothing queries coincide; evaluate one
    projected = engine.project_draws(eps, sigma, exact=full_weights)  # sigma eps_m . x_i, fixed
    steps = len(ts) - 1
    for k in range(steps):
        t, h = float(ts[k]), float(ts[k + 1] - ts[k])
        last = k == steps - 1
        # Smoothing queries y_m = x + sigma eps_m (the same eps_m at every step) and
        # D_sigma(x, t) = (1/M) sum_m D(y_m, t).
        blend, smoothed = engine.smoothed(x, eps, sigma, t, last or support_every_step, projected,
                                          full=full_weights)
        if last:
            x_next = smoothed  # Euler step of size (1 - t) lands exactly on D_sigma
        else:
            x_next = x + h * (smoothed - x) / (1.0 - t)  # x + h v(x, t)
        yield Step(k, t, h, x, blend, smoothed, x_next)
        x = x_next


def start_state(prep: Prepared, log_pi: np.ndarray, config: SamplerConfig, ids: np.ndarray):
    """Random numbers of samples `ids` and their start states x_T = T x_i + (1 - T) z.

    Returns (x (B, D), eps (B, M, D), start ids (B,)), tensors float64 on the compute device."""
    dim = prep.points.shape[1]
    u, z, eps = random_draws(config.seed, ids, dim, config.draws)
    start_ids = inverse_cdf(log_pi, u)
    dev = prep.points.device
    z_t = torch.as_tensor(z, dtype=F64, device=dev)
    x = config.start * prep.points[torch.as_tensor(start_ids, device=dev)] + (1 - config.start) * z_t
    return x, torch.as_tensor(eps, dtype=F64, device=dev), start_ids


@dataclass
class SampleResult:
    samples: np.ndarray  # (n, D) float32
    source_ids: np.ndarray  # (n, k) int64, -1 padded, sorted by weight
    source_weights: np.ndarray  # (n, k) float64, rows sum to 1
    nn_ids: np.ndarray  # (n, nearest) int64: nearest training points to each sample
    nn_dist: np.ndarray  # (n, nearest) float64: their Euclidean distances
    truncation_bound: np.ndarray  # (n,) max over steps of the mean omitted weight mass
    start_ids: np.ndarray  # (n,) training point each start state was drawn around
    config: SamplerConfig
    dataset: dict = field(default_factory=dict)  # Dataset.describe() of the training set
    trajectory: np.ndarray | None = None  # (S + 1, n, D) float32
    dense_fraction: float = 0.0  # fraction of queries evaluated over all N points
    float32_fraction: float = 0.0  # fraction of steps whose weights came from float32 logits
    bound_certified: bool = True  # False for IVF, whose search may miss neighbours
    seconds: float = 0.0
    weights_given: bool = False

    def arrays(self) -> dict:
        out = {k: getattr(self, k) for k in ("samples", "source_ids", "source_weights", "nn_ids",
                                             "nn_dist", "truncation_bound", "start_ids")}
        if self.trajectory is not None:
            out["trajectory"] = self.trajectory
        return out


def aggregate_sources(ids: torch.Tensor, weights: torch.Tensor, b: int, m: int):
    """Merge the final blends of M draws into per-sample sources: weights averaged over draws."""
    ids = ids.reshape(b, -1).cpu().numpy()
    w = weights.reshape(b, -1).cpu().numpy() / m
    rows = []
    for i in range(b):
        ok = ids[i] >= 0
        uniq, inv = np.unique(ids[i][ok], return_inverse=True)
        tot = np.zeros(len(uniq))
        np.add.at(tot, inv, w[i][ok])
        order = np.argsort(-tot, kind="stable")
        rows.append((uniq[order], tot[order] / tot.sum()))
    width = max(len(r[0]) for r in rows)
    out_ids = np.full((b, width), -1, np.int64)
    out_w = np.zeros((b, width))
    for i, (u, tw) in enumerate(rows):
        out_ids[i, :len(u)] = u
        out_w[i, :len(u)] = tw
    return out_ids, out_w


def _merge_rows(blocks, fill):
    width = max(a.shape[1] for a in blocks)
    return np.concatenate([np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=fill)
                           for a in blocks])


def sample(data, config: SamplerConfig, weights=None, callback=None,
           prepared: Prepared | None = None) -> SampleResult:
    """Draw `config.n_samples` samples. `data`: a `Dataset` or an (N, D) array."""
    t0 = time.perf_counter()
    prep = prepared or prepare(data, config)
    n_train, dim = prep.points.shape
    bs = check_request(config, n_train, dim)
    log_pi = normalise_log_weights(weights, n_train)
    engine = BlendEngine(prep.points, log_pi, prep.index, config.neighbours, config.truncation_tol,
                         factorised=prep.factorised, points32=prep.points32_t,
                         sq_norms=prep.sq_norms)
    ts = time_grid(config.start, config.steps)
    n = config.n_samples
    batches = [np.arange(lo, min(lo + bs, n)) for lo in range(0, n, bs)]
    samples = np.empty((n, dim), np.float32)
    bounds = np.zeros(n)
    start_ids = np.empty(n, np.int64)
    traj = np.empty((config.steps + 1, n, dim), np.float32) if config.trajectory else None
    src_ids, src_w = [], []
    dense_count = total_count = float32_steps = 0
    for bi, ids in enumerate(batches):
        x, eps_t, start_ids[ids] = start_state(prep, log_pi, config, ids)
        if traj is not None:
            traj[0, ids] = x.cpu().numpy()
        m_eff = 1 if config.sigma == 0 else config.draws
        for step in euler_steps(engine, x, eps_t, config.sigma, ts):
            bounds[ids] = np.maximum(bounds[ids], step.blend.bound.reshape(len(ids), m_eff).mean(1).cpu().numpy())
            dense_count += int(step.blend.dense.sum())
            total_count += len(step.blend.dense)
            float32_steps += step.blend.float32
            if traj is not None:
                traj[step.k + 1, ids] = step.x_next.cpu().numpy()
            if callback is not None:
                callback({"step": step.k + 1, "steps": config.steps, "t": float(ts[step.k + 1]),
                          "batch": bi + 1, "batches": len(batches), "sample_ids": ids,
                          "x": step.x_next, "denoised": step.smoothed, "blend": step.blend})
            last = step
        samples[ids] = last.x_next.cpu().numpy()
        si, sw = aggregate_sources(last.blend.ids, last.blend.weights, len(ids), m_eff)
        src_ids.append(si)
        src_w.append(sw)
    nn_ids, nn_dist = prep.nearest(samples, config.nearest)
    return SampleResult(
        samples=samples, source_ids=_merge_rows(src_ids, -1), source_weights=_merge_rows(src_w, 0.0),
        nn_ids=nn_ids, nn_dist=nn_dist, truncation_bound=bounds, start_ids=start_ids, config=config,
        dataset=prep.describe, trajectory=traj, dense_fraction=dense_count / max(total_count, 1),
        float32_fraction=float32_steps / (len(batches) * config.steps),
        bound_certified=prep.index is None or prep.index.exact, seconds=time.perf_counter() - t0,
        weights_given=weights is not None)


def check_weights_file(path: str, n: int) -> np.ndarray:
    """Load a `.npy` of N training weights (never unpickled) and validate it."""
    from cdm_core.data.files import read_npy_bytes
    try:
        raw = open(path, "rb").read()
    except OSError as e:
        raise CdmInputError(f"{path}: cannot read weights ({e.strerror})") from None
    w = read_npy_bytes(path, raw)
    normalise_log_weights(w, n, name=path)
    return w
