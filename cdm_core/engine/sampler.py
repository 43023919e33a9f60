"""Euler sampler for the (smoothed) closed-form diffusion model.

Pure function over arrays, in the style of k-diffusion: no I/O, no UI. Progress, trajectories and
the blend of every step are reported through `callback(info: dict)`.

Steps (docs/maths.md), on the uniform grid t_k = T + (1 - T) k / S, k = 0..S:
    start    x_T = T x_i + (1 - T) z,  i ~ pi by inverse CDF of u,  z ~ N(0, I)
    step k   x_{k+1} = x_k + (t_{k+1} - t_k) v(x_k, t_k),   v = (D_sigma - x) / (1 - t)
    last     t_S = 1, so x_S = x + (1 - t)(D_sigma - x)/(1 - t) = D_sigma(x_{S-1}, t_{S-1}):
             every sample is exactly a convex combination of training points (its sources).
Sample i draws (u, z, eps_1..eps_M) from its own stream seeded by (seed, i), so it does not depend
on its batch, on how many samples are asked for, or on the training weights.

The recursion runs on centred points x_i - c from x_T - T c (training_set.py): the same Euler
steps, shifted by t c at each time (docs/maths.md), so samples come back by adding c.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from cdm_core import settings
from cdm_core.config import SamplerConfig
from cdm_core.engine.blend import F64, StepResult, normalise_log_weights
from cdm_core.engine.factory import make_strategy, opened
from cdm_core.engine.strategies import Strategy
from cdm_core.engine.training_set import TrainingSet, prepare
from cdm_core.errors import CdmInputError
from cdm_core.latent.space import latent_space

log = logging.getLogger(__name__)


def check_request(config: SamplerConfig, n_train: int, dim: int, rows_per_process: int | None = None,
                  arrays_per_draw: float = 1.5) -> int:
    """Refuse requests over the work limit, before allocating; return a batch size whose draw
    buffers (eps and their projections, float64) fit the per-batch memory limit of one process,
    which holds `rows_per_process` training points (all N, or the largest shard on Ray). Batching
    never changes results (per-sample seeding), so shrinking it is safe."""
    lim = settings.limits()
    work = config.work(n_train, dim)
    if work > lim.max_work:
        raise CdmInputError(f"this request needs about {work:.1e} floating-point operations, "
                            f"over the limit of {lim.max_work:.1e} (CDM_MAX_WORK); ask for fewer samples, "
                            "draws or steps")
    # sigma eps (float64, M x D), its projections on X (float64 and a float32 copy, M x N) and
    # the mean weights over N (float64)
    rows = n_train if rows_per_process is None else rows_per_process
    per_sample = 8 * config.draws * dim + 8 * arrays_per_draw * config.draws * rows + 8 * rows
    if per_sample > lim.max_batch_bytes:
        raise CdmInputError(f"one sample's {config.draws} smoothing draws need {per_sample / 2**20:.0f} MiB, over "
                            f"the limit of {lim.max_batch_bytes / 2**20:.0f} MiB (CDM_MAX_BATCH_MB)")
    return max(1, min(config.batch_size, int(lim.max_batch_bytes // per_sample)))


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
    """What one Euler step saw (centred coordinates): handed to callbacks and to the sensitivity
    recursion."""

    k: int  # step number, 0-based
    t: float  # time of the state the velocity was evaluated at
    h: float  # step size t_{k+1} - t_k
    x: torch.Tensor  # (B, D) state before the step
    result: StepResult  # D_sigma(x, t), its bound, and sources / draw weights when asked for
    x_next: torch.Tensor  # (B, D) state after the step


def euler_steps(strategy: Strategy, x: torch.Tensor, scaled: torch.Tensor, ts: np.ndarray,
                sources_at_end: bool = True, draws: bool = False):
    """Yield each `Step` of the Euler integration from ts[0] to ts[-1] = 1. `scaled` holds the
    draws sigma eps_m (B, M, D), fixed along the trajectory (M = 1 when sigma = 0: all smoothing
    queries then coincide)."""
    state = strategy.begin(scaled)
    steps = len(ts) - 1
    for k in range(steps):
        t, h = float(ts[k]), float(ts[k + 1] - ts[k])
        last = k == steps - 1
        # D_sigma(x, t) = (1/M) sum_m D(x + sigma eps_m, t), the same eps_m at every step
        res = strategy.step(state, x, t, sources=last and sources_at_end, draws=draws)
        if last:
            x_next = res.smoothed  # Euler step of size (1 - t) lands exactly on D_sigma
        else:
            x_next = x + h * (res.smoothed - x) / (1.0 - t)  # x + h v(x, t)
        yield Step(k, t, h, x, res, x_next)
        x = x_next


def start_state(ts: TrainingSet, log_pi: np.ndarray, config: SamplerConfig, ids: np.ndarray):
    """Random numbers of samples `ids` and their centred start states x_T - T c = T (x_i - c) + (1 - T) z.

    Returns (x (B, D), sigma eps (B, M', D) with M' = 1 when sigma = 0, start ids (B,)), float64
    tensors on the compute device."""
    u, z, eps = random_draws(config.seed, ids, ts.dim, config.draws)
    start_ids = inverse_cdf(log_pi, u)
    dev = ts.device
    z_t = torch.as_tensor(z, dtype=F64, device=dev)
    x = config.start * ts.rows(torch.as_tensor(start_ids, device=dev)) + (1 - config.start) * z_t
    eps_t = torch.as_tensor(eps[:, :1] if config.sigma == 0 else eps, dtype=F64, device=dev)
    return x, config.sigma * eps_t, start_ids


@dataclass
class SampleResult:
    samples: np.ndarray  # (n, D) float64, in the data's units
    source_ids: np.ndarray  # (n, k) int64, -1 padded, largest weight first
    source_weights: np.ndarray  # (n, k) float64: sum_k w_k x_{id_k} reproduces each sample
    nn_ids: np.ndarray  # (n, nearest) int64: nearest training points to each sample
    nn_dist: np.ndarray  # (n, nearest) float64: their Euclidean distances
    truncation_bound: np.ndarray  # (n,) max over steps of the mean omitted weight mass
    start_ids: np.ndarray  # (n,) training point each start state was drawn around
    config: SamplerConfig
    dataset: dict = field(default_factory=dict)  # Dataset.describe() of the training set
    trajectory: np.ndarray | None = None  # (S + 1, n, D) float64, data units
    dense_fraction: float = 0.0  # fraction of queries evaluated over all N points
    seconds: float = 0.0
    weights_given: bool = False
    # latent space only (config.space == "latent"); samples and trajectory are then decoded, and
    # source ids, nn_ids and nn_dist refer to the latents
    latents: np.ndarray | None = None  # (n, K) float64: the sampler's output, sum_k w_k z_{id_k}
    train_latents: np.ndarray | None = None  # (N, K) float64: encoder outputs of the training set
    latent_trajectory: np.ndarray | None = None  # (S + 1, n, K) when a trajectory is kept
    pixel_nn_ids: np.ndarray | None = None  # (n, nearest): nearest training items to the decoded samples
    pixel_nn_dist: np.ndarray | None = None  # (n, nearest): their distances in data units
    space: dict = field(default_factory=dict)  # LatentSpace.describe(): autoencoder hash, errors

    OPTIONAL = ("trajectory", "latents", "train_latents", "latent_trajectory", "pixel_nn_ids", "pixel_nn_dist")

    def arrays(self) -> dict:
        out = {k: getattr(self, k) for k in ("samples", "source_ids", "source_weights", "nn_ids",
                                             "nn_dist", "truncation_bound", "start_ids")}
        out |= {k: getattr(self, k) for k in self.OPTIONAL if getattr(self, k) is not None}
        return out

    @property
    def blend_space_points(self) -> np.ndarray:
        """The points the sources blend: latents in latent space, samples otherwise."""
        return self.samples if self.latents is None else self.latents


def _merge_rows(blocks, fill):
    width = max(a.shape[1] for a in blocks)
    return np.concatenate([np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=fill)
                           for a in blocks])


def sample(data, config: SamplerConfig, weights=None, callback=None,
           prepared: TrainingSet | None = None) -> SampleResult:
    """Draw `config.n_samples` samples. `data`: a `Dataset` or an (N, D) array."""
    space = latent_space(data, config, callback) if config.space == "latent" else None
    t0 = time.perf_counter()  # after the autoencoder is ready: a first latent run's training is not sampling time
    with opened(data, config, prepared) as ts_set:
        res = _sample(ts_set, config, weights, callback, t0)
    if space is not None:
        res = _decoded(res, space, config)
        res.seconds = time.perf_counter() - t0
    return res


def _decoded(res: SampleResult, space, config: SamplerConfig) -> SampleResult:
    """A latent run in data units: samples (and trajectory) decoded, latents kept beside them,
    and the nearest training items to each decoded sample measured in data units too."""
    res.latents, res.train_latents = res.samples, space.latents.astype(np.float64)
    res.samples = space.decode(res.latents)
    if res.trajectory is not None:
        res.latent_trajectory = res.trajectory
        steps, n, k = res.trajectory.shape
        res.trajectory = space.decode(res.trajectory.reshape(-1, k)).reshape(steps, n, -1)
    pixels = prepare(space.data, config.replace(space="data", ae_weights="", index="exact"))
    res.pixel_nn_ids, res.pixel_nn_dist = pixels.nearest(res.samples, config.nearest)
    res.dataset, res.space = space.data.describe(), space.describe()
    return res


def _sample(ts_set, config: SamplerConfig, weights, callback, t0: float) -> SampleResult:
    n_train, dim = ts_set.n, ts_set.dim
    bs = check_request(config, n_train, dim, getattr(ts_set, "rows_per_process", n_train), ts_set.arrays_per_draw)
    log_pi = normalise_log_weights(weights, n_train)
    strategy = make_strategy(ts_set, log_pi, config.neighbours, config.truncation_tol)
    grid = time_grid(config.start, config.steps)
    n = config.n_samples
    batches = [np.arange(lo, min(lo + bs, n)) for lo in range(0, n, bs)]
    samples = np.empty((n, dim))
    bounds = np.zeros(n)
    start_ids = np.empty(n, np.int64)
    traj = np.empty((config.steps + 1, n, dim)) if config.trajectory else None
    src_ids, src_w = [], []
    dense_sum = 0.0
    for bi, ids in enumerate(batches):
        x, scaled, start_ids[ids] = start_state(ts_set, log_pi, config, ids)
        if traj is not None:
            traj[0, ids] = ts_set.uncentred(x, float(grid[0]))
        # bounds and dense counts stay on the compute device until the batch ends: no host
        # synchronisation per step
        bound = torch.zeros(len(ids), dtype=torch.float64, device=x.device)
        dense = torch.zeros((), dtype=torch.float64, device=x.device)
        for step in euler_steps(strategy, x, scaled, grid):
            torch.maximum(bound, step.result.bound.to(bound.device), out=bound)
            dense += step.result.dense.sum().to(dense.device)
            if traj is not None:
                traj[step.k + 1, ids] = ts_set.uncentred(step.x_next, float(grid[step.k + 1]))
            if callback is not None:
                callback({"step": step.k + 1, "steps": config.steps, "t": float(grid[step.k + 1]),
                          "batch": bi + 1, "batches": len(batches), "sample_ids": ids})
            last = step
        bounds[ids] = bound.cpu().numpy()
        dense_sum += float(dense)
        samples[ids] = ts_set.uncentred(last.x_next)
        src_ids.append(last.result.sources.ids.cpu().numpy())
        src_w.append(last.result.sources.weights.cpu().numpy())
    nn_ids, nn_dist = ts_set.nearest(samples, config.nearest)
    return SampleResult(
        samples=samples, source_ids=_merge_rows(src_ids, -1), source_weights=_merge_rows(src_w, 0.0),
        nn_ids=nn_ids, nn_dist=nn_dist, truncation_bound=bounds, start_ids=start_ids, config=config,
        dataset=ts_set.describe, trajectory=traj, dense_fraction=dense_sum / (n * config.steps),
        seconds=time.perf_counter() - t0, weights_given=weights is not None)


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
