"""Euler sampler for any denoiser of the engine's protocol (models.py), sigma-CFDM first.

Pure function over arrays, in the style of k-diffusion: no I/O, no UI. Progress, the states and
the denoised values of every step are reported through `callback(info: dict)` (`step_info`).

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

import time
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from cdm_core import settings
from cdm_core.config import SamplerConfig
from cdm_core.engine.blend import F64, StepResult
from cdm_core.errors import CdmInputError


def check_request(config: SamplerConfig, n_train: int, dim: int, rows_per_process: int | None = None,
                  arrays_per_draw: float = 1.5, image_shape: tuple | None = None) -> int:
    """Refuse requests over the work limit, before allocating; return a batch size whose draw
    buffers (eps and their projections, float64) fit the per-batch memory limit of one process,
    which holds `rows_per_process` training points (all N, or the largest shard on Ray). Batching
    never changes results (per-sample seeding), so shrinking it is safe."""
    lim = settings.limits()
    work = config.work(n_train, dim, image_shape)
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


def euler_steps(model, x: torch.Tensor, scaled: torch.Tensor, ts: np.ndarray,
                sources_at_end: bool = True, draws: bool = False):
    """Yield each `Step` of the Euler integration from ts[0] to ts[-1] = 1 of any model (models.py).
    `scaled` holds the draws sigma eps_m (B, M, D), fixed along the trajectory (M = 1 when
    sigma = 0: all smoothing queries then coincide)."""
    state = model.begin(scaled)
    steps = len(ts) - 1
    for k in range(steps):
        t, h = float(ts[k]), float(ts[k + 1] - ts[k])
        last = k == steps - 1
        # D_sigma(x, t) = (1/M) sum_m D(x + sigma eps_m, t), the same eps_m at every step
        res = model.denoise(state, x, t, sources=last and sources_at_end, draws=draws)
        if last:
            x_next = res.smoothed  # Euler step of size (1 - t) lands exactly on D_sigma
        else:
            x_next = x + h * (res.smoothed - x) / (1.0 - t)  # x + h v(x, t)
        yield Step(k, t, h, x, res, x_next)
        x = x_next


def start_state(model, config: SamplerConfig, ids: np.ndarray):
    """Random numbers of samples `ids` and their centred start states x_T - T c = T (x_i - c) + (1 - T) z.

    Returns (x (B, D), sigma eps (B, M', D) with M' = 1 when sigma = 0, start ids (B,)), float64
    tensors on the compute device."""
    ts = model.training_set
    u, z, eps = random_draws(config.seed, ids, ts.dim, config.draws)
    start_ids = inverse_cdf(model.log_pi, u)
    dev = ts.device
    z_t = torch.as_tensor(z, dtype=F64, device=dev)
    x = config.start * ts.rows(torch.as_tensor(start_ids, device=dev)) + (1 - config.start) * z_t
    eps_t = torch.as_tensor(eps[:, :1] if config.sigma == 0 else eps, dtype=F64, device=dev)
    return x, config.sigma * eps_t, start_ids


@dataclass
class Batch:
    """One batch of samples at its start: the batch loop of every producer (`batches`)."""

    number: int  # 1-based
    count: int  # batches in the run
    ids: np.ndarray  # (B,) sample ids
    x: torch.Tensor  # (B, D) centred start states
    scaled: torch.Tensor  # (B, M', D) smoothing draws sigma eps
    start_ids: np.ndarray  # (B,) training point each start state was drawn around


def batches(model, config: SamplerConfig, batch_size: int, noise: np.ndarray | None = None):
    """The run's samples in batches of `batch_size`, each with its start states (per-sample seeds:
    the batching never changes a sample). `noise` (n, D): given start states at t = 0 (someone
    else's start noise) instead of the seeded z; the smoothing draws still come from the seeds."""
    n = config.n_samples
    count = -(-n // batch_size)
    for number, lo in enumerate(range(0, n, batch_size), 1):
        ids = np.arange(lo, min(lo + batch_size, n))
        x, scaled, start_ids = start_state(model, config, ids)
        if noise is not None:  # at t = 0 the centred state is the noise itself (x_0 - 0 c = z)
            x = torch.as_tensor(np.asarray(noise[ids], np.float64), dtype=F64, device=x.device)
            start_ids = np.full(len(ids), -1, np.int64)
        yield Batch(number, count, ids, x, scaled, start_ids)


def step_info(step: Step, batch: Batch, config: SamplerConfig, centre: torch.Tensor) -> dict:
    """The callback's one signature, for every producer (k-diffusion's): `i` the step (0-based),
    `t` the time of the state, `x` the states (B, D) and `denoised` D(x, t) (B, D), both float64
    tensors in the sampler's space and units (latents for a latent run) on the compute device;
    `step`/`steps` and `batch`/`batches` count progress (`fraction_done`), `sample_ids` (B,)."""
    c = centre.to(step.x.device)
    return {"i": step.k, "t": step.t, "x": step.x + step.t * c, "denoised": step.result.smoothed + c,
            "step": step.k + 1, "steps": config.steps, "batch": batch.number, "batches": batch.count,
            "sample_ids": batch.ids}


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
    ran: dict = field(default_factory=dict)  # what ran: model, strategy, index, device, backend, sources
    # local models (ls, els) only: pixel p of sample i is sum_k w x_{id_k}[pixel_k] (data units, all
    # channels), up to pixel_source_omitted x max |x|
    pixel_source_ids: np.ndarray | None = None  # (n, H*W, K) int64 training item, -1 padded
    pixel_source_pixels: np.ndarray | None = None  # (n, H*W, K) int64 flat pixel index in that item, row-major
    pixel_source_weights: np.ndarray | None = None  # (n, H*W, K) float64, 0 padded, largest first
    pixel_source_omitted: np.ndarray | None = None  # (n, H*W) float64 weight left out of the K kept
    pixel_entropy: np.ndarray | None = None  # (n, H*W) float64 entropy of each pixel's weights, nats

    OPTIONAL = ("trajectory", "pixel_source_ids", "pixel_source_pixels", "pixel_source_weights",
                "pixel_source_omitted", "pixel_entropy")

    def arrays(self) -> dict:
        out = {k: getattr(self, k) for k in ("samples", "source_ids", "source_weights", "nn_ids",
                                             "nn_dist", "truncation_bound", "start_ids")}
        out |= {k: getattr(self, k) for k in self.OPTIONAL if getattr(self, k) is not None}
        return out

    def extended(self, cls, **extra):
        """This result as `cls`, a subclass with more fields (latent, sharded), those given in `extra`."""
        return cls(**{f.name: getattr(self, f.name) for f in fields(SampleResult)}, **extra)

    @property
    def blend_space_points(self) -> np.ndarray:
        """The points the sources blend (latents for a latent run)."""
        return self.samples

    @property
    def data_nearest(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, distances) of the nearest training items measured in data units."""
        return self.nn_ids, self.nn_dist


def _merge_rows(blocks, fill):
    width = max(a.shape[1] for a in blocks)
    return np.concatenate([np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=fill)
                           for a in blocks])


def sample_model(model, config: SamplerConfig, callback=None, noise: np.ndarray | None = None) -> SampleResult:
    """Draw `config.n_samples` samples from `model` (a `Denoiser`, models.py) by the Euler steps of
    the module docstring. Pure: arrays in, arrays out; `callback(info)` gets `step_info` after
    every step. `noise` (n, D): start from these states at t = 0 (config.start must be 0); start
    ids are then -1."""
    if noise is not None:
        noise = np.asarray(noise)
        if config.start != 0:
            raise CdmInputError("a run from given noise starts at t = 0: set start 0")
        if noise.shape != (config.n_samples, model.training_set.dim):
            raise CdmInputError(f"noise must have shape ({config.n_samples}, {model.training_set.dim}), "
                                f"got {noise.shape}")
        if not np.all(np.isfinite(noise)):
            raise CdmInputError("noise contains NaN or infinite values")
    t0 = time.perf_counter()
    ts_set = model.training_set
    n_train, dim = ts_set.n, ts_set.dim
    bs = check_request(config, n_train, dim, getattr(ts_set, "rows_per_process", n_train), ts_set.arrays_per_draw,
                       ts_set.describe.get("image_shape"))
    grid = time_grid(config.start, config.steps)
    n = config.n_samples
    samples = np.empty((n, dim))
    bounds = np.zeros(n)
    start_ids = np.empty(n, np.int64)
    traj = np.empty((config.steps + 1, n, dim)) if config.trajectory else None
    src_ids, src_w, pixel = [], [], []
    dense_sum = 0.0
    for batch in batches(model, config, bs, noise):
        ids = batch.ids
        start_ids[ids] = batch.start_ids
        if traj is not None:
            traj[0, ids] = ts_set.uncentred(batch.x, float(grid[0]))
        # bounds and dense counts stay on the compute device until the batch ends: no host
        # synchronisation per step
        bound = torch.zeros(len(ids), dtype=torch.float64, device=batch.x.device)
        dense = torch.zeros((), dtype=torch.float64, device=batch.x.device)
        for step in euler_steps(model, batch.x, batch.scaled, grid):
            torch.maximum(bound, step.result.bound.to(bound.device), out=bound)
            dense += step.result.dense.sum().to(dense.device)
            if traj is not None:
                traj[step.k + 1, ids] = ts_set.uncentred(step.x_next, float(grid[step.k + 1]))
            if callback is not None:
                callback(step_info(step, batch, config, ts_set.centre))
            last = step
        bounds[ids] = bound.cpu().numpy()
        dense_sum += float(dense)
        samples[ids] = ts_set.uncentred(last.x_next)
        src_ids.append(last.result.sources.ids.cpu().numpy())
        src_w.append(last.result.sources.weights.cpu().numpy())
        if last.result.pixels is not None:
            pixel.append(last.result.pixels)
    nn_ids, nn_dist = ts_set.nearest(samples, config.nearest)
    return SampleResult(
        samples=samples, source_ids=_merge_rows(src_ids, -1), source_weights=_merge_rows(src_w, 0.0),
        nn_ids=nn_ids, nn_dist=nn_dist, truncation_bound=bounds, start_ids=start_ids, config=config,
        dataset=ts_set.describe, trajectory=traj, dense_fraction=dense_sum / (n * config.steps),
        seconds=time.perf_counter() - t0, ran=model.describe(), **_pixel_arrays(pixel))


def _pixel_arrays(blocks) -> dict:
    """The per-pixel sources of every batch as the result's arrays (none for whole-item models)."""
    if not blocks:
        return {}
    width = max(b.ids.shape[2] for b in blocks)

    def cat(name, fill):
        return np.concatenate([np.pad(getattr(b, name).cpu().numpy(), ((0, 0), (0, 0), (0, width - b.ids.shape[2])),
                                      constant_values=fill) for b in blocks])
    return {"pixel_source_ids": cat("ids", -1), "pixel_source_pixels": cat("pixels", -1),
            "pixel_source_weights": cat("weights", 0.0),
            "pixel_source_omitted": np.concatenate([b.omitted.cpu().numpy() for b in blocks]),
            "pixel_entropy": np.concatenate([b.entropy.cpu().numpy() for b in blocks])}
