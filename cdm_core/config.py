"""The sampler's configuration: one frozen dataclass, validated up front.

The same object is serialised (``to_json``) into every `.npz` result and exported manifest so a
result can be reproduced from its file alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

from cdm_core import patches
from cdm_core.errors import CdmInputError

INDEX_KINDS = ("auto", "exact", "flat", "ivf", "torch")
DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("local", "ray")
SPACES = ("data", "latent")
MODELS = ("cfdm", "gaussian", "ls", "els")  # denoisers behind the engine's protocol (cdm_core/engine/models.py)
PATCH_MODELS = ("ls", "els")  # the local models: images only, sizes from `patch_schedule`
MAX_PIXEL_SOURCES = 256

# Upper limits that keep a single request bounded; named in the error when exceeded.
MAX_SAMPLES = 100_000
MAX_DRAWS = 256
MAX_STEPS = 10_000
MAX_NEIGHBOURS = 4096
MAX_SHARDS = 1024


@dataclass(frozen=True)
class SamplerConfig:
    """How to draw samples from the (smoothed) closed-form diffusion model (docs/maths.md)."""

    n_samples: int = 64  # number of samples to draw; sample i depends only on (seed, i)
    sigma: float = 0.0  # smoothing scale, in the data's own units; 0 = exact, memorising model
    draws: int = 1  # M: smoothing draws per sample, fixed along its trajectory
    steps: int = 20  # S: Euler steps on a uniform grid from `start` to 1
    start: float = 0.0  # T: start time in [0, 1); 0 starts from pure noise
    neighbours: int = 64  # K: training points kept per query by truncated indexes
    index: str = "auto"  # auto | exact (dense, no truncation) | flat | ivf | torch (dense top-K)
    seed: int = 0  # base seed; sample i uses the random stream (seed, i)
    device: str = "auto"  # auto (CUDA when available) | cpu | cuda
    nearest: int = 8  # how many nearest training points to report per sample
    batch_size: int = 64  # samples processed together; bounds memory, never changes results
    truncation_tol: float = 1e-6  # a truncated query whose omitted-mass bound exceeds this is
    #                               recomputed densely (exactly); 1.0 disables the fallback
    nprobe: int = 32  # IVF only: inverted lists visited per query
    nlist: int = 0  # IVF only: number of inverted lists; 0 picks about 4 sqrt(N)
    trajectory: bool = False  # keep the state after every step, shape (steps + 1, n, D)
    backend: str = "local"  # local (one process) | ray (the training set split across Ray actors)
    shards: int = 0  # ray: number of shards / actors (0: as many as the shard manifest lists)
    ray_address: str = ""  # ray: cluster to join ("" starts a local instance for the run)
    space: str = "data"  # data (the data's own units) | latent (an autoencoder's latents; images only)
    latent_dim: int = 16  # latent: K, latent coordinates per image
    ae_weights: str = ""  # latent: a safetensors file of the built-in autoencoder ("" = train / cache)
    model: str = "cfdm"  # the denoiser: cfdm (sigma-smoothed closed form; sigma = 0 is the exact empirical
    #                      model) | gaussian (the data's mean and covariance) | ls (local score) | els
    #                      (equivariant local score); ls and els are for images (docs/maths.md)
    patch_schedule: str = ""  # ls / els: window size in pixels, odd: one size ("7"), one per step
    #                           ("3,3,5,..."), or a preset name (patches.PRESETS); "" = fashion-resnet
    subset: int = 0  # use only this many training items, the first of one seeded, class-balanced
    #                  order (nested: 500 lie inside 1000; data/subsets.py); 0 = all. Ids stay the full set's
    pixel_sources: int = 16  # ls / els: per-pixel sources kept per pixel (largest weights); the
    #                          weight left out is bounded and recorded per pixel

    def __post_init__(self) -> None:
        def check_int(name: str, lo: int, hi: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise CdmInputError(f"{name} must be an integer, got {v!r}")
            if not lo <= v <= hi:
                raise CdmInputError(f"{name} must be between {lo} and {hi}, got {v}")

        def check_float(name: str, lo: float, hi: float, hi_open: bool = False) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise CdmInputError(f"{name} must be a finite number, got {v!r}")
            if v < lo or v > hi or (hi_open and v >= hi):
                bracket = ")" if hi_open else "]"
                raise CdmInputError(f"{name} must be in [{lo}, {hi}{bracket}, got {v}")

        check_int("n_samples", 1, MAX_SAMPLES)
        check_float("sigma", 0.0, 1e15)  # data come in their own units; finiteness is what matters
        check_int("draws", 1, MAX_DRAWS)
        check_int("steps", 1, MAX_STEPS)
        check_float("start", 0.0, 1.0, hi_open=True)
        check_int("neighbours", 1, MAX_NEIGHBOURS)
        check_int("seed", 0, 2**63 - 1)
        check_int("nearest", 1, MAX_NEIGHBOURS)
        check_int("batch_size", 1, MAX_SAMPLES)
        check_float("truncation_tol", 0.0, 1.0)
        check_int("nprobe", 1, 1 << 20)
        check_int("nlist", 0, 1 << 20)
        if self.index not in INDEX_KINDS:
            raise CdmInputError(f"index must be one of {', '.join(INDEX_KINDS)}, got {self.index!r}")
        check_int("shards", 0, MAX_SHARDS)
        if self.backend not in BACKENDS:
            raise CdmInputError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if not isinstance(self.ray_address, str):
            raise CdmInputError(f"ray_address must be text, got {self.ray_address!r}")
        if self.backend == "ray" and self.index not in ("auto", "exact"):
            raise CdmInputError(f"backend ray evaluates all points (index auto or exact), not index {self.index!r}")
        if self.backend == "local" and (self.shards or self.ray_address):
            raise CdmInputError("shards and ray_address need backend ray")
        if self.space not in SPACES:
            raise CdmInputError(f"space must be one of {', '.join(SPACES)}, got {self.space!r}")
        check_int("latent_dim", 1, 512)
        if not isinstance(self.ae_weights, str):
            raise CdmInputError(f"ae_weights must be a file path, got {self.ae_weights!r}")
        if self.ae_weights and self.space != "latent":
            raise CdmInputError("ae_weights needs space latent")
        if self.space == "latent" and self.backend != "local":
            raise CdmInputError("latent space runs in one process (backend local)")
        if self.model not in MODELS:
            raise CdmInputError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        check_int("pixel_sources", 1, MAX_PIXEL_SOURCES)
        check_int("subset", 0, 100_000_000)
        if self.subset and (self.backend != "local" or self.space != "data"):
            raise CdmInputError("subset needs backend local and space data")
        if not isinstance(self.patch_schedule, str):
            raise CdmInputError(f"patch_schedule must be text, got {self.patch_schedule!r}")
        if self.model != "cfdm":
            if self.sigma != 0:
                raise CdmInputError(f"sigma smooths model cfdm only; model {self.model} takes sigma 0")
            if self.backend != "local":
                raise CdmInputError(f"model {self.model} runs in one process (backend local)")
        if self.model in PATCH_MODELS:
            if self.space != "data":
                raise CdmInputError(f"model {self.model} works on image pixels (space data), not latents")
            try:
                patches.parse(self.patch_schedule, self.steps)
            except patches.ScheduleError as e:
                raise CdmInputError(str(e)) from None
        elif self.patch_schedule:
            raise CdmInputError(f"patch_schedule applies to models ls and els, not {self.model}")
        if self.device not in DEVICES:
            raise CdmInputError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")

    def replace(self, **changes) -> "SamplerConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_options(cls, options: dict, **extra) -> "SamplerConfig":
        """A configuration from outside names (CLI flags without dashes, URL query keys, UI
        state): the one mapping from those names to fields (`OPTIONS`). Values may be strings
        (a URL) or numbers; unknown names are an error."""
        fields = {}
        for name, value in options.items():
            if name not in OPTIONS:
                raise CdmInputError(f"unknown sampler option {name!r}")
            field_name, kind = OPTIONS[name]
            try:
                if isinstance(value, bool):
                    raise TypeError(value)
                fields[field_name] = kind(value)
            except (TypeError, ValueError, OverflowError):
                wanted = "an integer" if kind is _int else "a number" if kind is float else "text"
                raise CdmInputError(f"{name} must be {wanted}, got {value!r}") from None
        return cls(**(fields | extra))

    @property
    def patch_sizes(self) -> tuple[int, ...]:
        """ls / els: the window size of each Euler step (patches.sizes_per_step); () otherwise."""
        if self.model not in PATCH_MODELS:
            return ()
        return patches.sizes_per_step(self.patch_schedule, self.start, self.steps)

    def work(self, n_train: int, dim: int, image_shape: tuple | None = None) -> float:
        """Floating-point work of one run (the one cost model: the sampler's limit and the
        dashboard's "regenerate as you move a slider" both use it). cfdm `auto` needs two
        per-sample products per step plus one per draw up front and a softmax over draws x N;
        the other paths evaluate every draw over all (or the top-K) points at every step. The
        Gaussian model costs one eigendecomposition (cached) and two products per step; ls and
        els count their window sums and softmaxes (patches.py); `image_shape` is needed for them."""
        n, m, s = self.n_samples, (1 if self.sigma == 0 else self.draws), self.steps
        if self.model == "gaussian":
            r = min(n_train, dim)
            return 4.0 * n * dim * r * s + 2.0 * n * n_train * r
        if self.model in PATCH_MODELS:
            shape = tuple(image_shape) if image_shape else (dim, 1)
            if self.model == "ls":
                return n * s * patches.ls_work_per_step(shape, n_train)
            return n * sum(patches.els_work_per_step(shape, k, n_train) for k in self.patch_sizes)
        softmax = 5.0 * n * m * n_train * s  # exp and sums over every draw's N logits
        if self.index == "auto":
            return n * n_train * dim * (2.0 * s + m) + softmax
        return 2.0 * n * m * n_train * dim * s + softmax

    @classmethod
    def from_dict(cls, d: dict) -> "SamplerConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise CdmInputError(f"unknown sampler option(s): {', '.join(unknown)}")
        return cls(**d)


def _int(v) -> int:
    f = float(v)
    if f != int(f):
        raise ValueError(v)
    return int(f)


# Outside name (CLI flag without dashes, URL key, UI state key) -> (SamplerConfig field, parser).
OPTIONS = {
    "n": ("n_samples", _int), "sigma": ("sigma", float), "draws": ("draws", _int),
    "steps": ("steps", _int), "start": ("start", float), "neighbours": ("neighbours", _int),
    "index": ("index", str), "seed": ("seed", _int), "device": ("device", str),
    "nearest": ("nearest", _int), "batch_size": ("batch_size", _int),
    "truncation_tol": ("truncation_tol", float), "nprobe": ("nprobe", _int), "nlist": ("nlist", _int),
    "backend": ("backend", str), "shards": ("shards", _int), "ray_address": ("ray_address", str),
    "space": ("space", str), "latent_dim": ("latent_dim", _int), "ae_weights": ("ae_weights", str),
    "model": ("model", str), "patch_schedule": ("patch_schedule", str), "pixel_sources": ("pixel_sources", _int),
    "subset": ("subset", _int),
}
