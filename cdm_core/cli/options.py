"""What every sub-command shares: the one-line parser, the progress line, the sampler flags
(named as in `cdm_core.config.OPTIONS`) and reading the inputs."""

from __future__ import annotations

import argparse
import sys
import time

from cdm_core.config import BACKENDS, INDEX_KINDS, MODELS, OPTIONS, SPACES, SamplerConfig
from cdm_core.errors import CdmInputError


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage + message; we want one line
        raise CdmInputError(f"{self.prog}: {message}")


class Progress:
    """A progress line on stderr: 'sampling  [=====     ]  50%  batch 1/2  step 10/20  1.2 s'."""

    def __init__(self, label: str, stream=None):
        self.label, self.stream, self.t0, self.last = label, stream or sys.stderr, time.perf_counter(), 0.0

    def __call__(self, info: dict) -> None:
        from cdm_core.engine.sampler import fraction_done
        done = fraction_done(info)
        now = time.perf_counter()
        if done < 1 and now - self.last < 0.1:
            return
        self.last = now
        bar = "=" * int(20 * done)
        label = info.get("stage", self.label)
        where = f"setting {info['setting']}/{info['settings']}" if "setting" in info else \
            f"batch {info['batch']}/{info['batches']}"
        self.stream.write(f"\r{label}  [{bar:<20}] {100 * done:3.0f}%  {where}  step {info['step']}/"
                          f"{info['steps']}  {now - self.t0:.1f} s")
        if done >= 1:
            self.stream.write("\n")
        self.stream.flush()


def add_sampler_options(p: argparse.ArgumentParser) -> None:
    d = SamplerConfig()
    p.add_argument("--data", required=True, help="registered data set (see `datasets`) or a file path")
    p.add_argument("--n", type=int, default=d.n_samples, help="number of samples")
    p.add_argument("--model", choices=MODELS, default=d.model,
                   help="the denoiser: cfdm, the sigma-smoothed closed-form model (sigma 0: the exact empirical one); "
                   "gaussian, the linear denoiser of the data's mean and covariance; ls, the local score; els, the "
                   "equivariant local score (ls and els: images, sigma 0)")
    p.add_argument("--patch-schedule", default=d.patch_schedule,
                   help="ls/els: odd window size(s) in pixels: one (7), one per step (3,3,5,...) or a preset: "
                   "fashion-resnet (default), fashion-unet, mnist-resnet, mnist-unet, cifar-resnet")
    p.add_argument("--subset", type=int, default=d.subset,
                   help="use only this many training items: the first of one seeded, class-balanced order (nested: "
                   "the 500 lie inside the 1000); ids still index the whole set; 0 = all")
    p.add_argument("--pixel-sources", type=int, default=d.pixel_sources,
                   help="ls/els: per-pixel sources kept per pixel (the weight left out is recorded)")
    p.add_argument("--sigma", type=float, default=d.sigma, help="smoothing scale (data units)")
    p.add_argument("--draws", type=int, default=d.draws, help="smoothing draws M per sample")
    p.add_argument("--steps", type=int, default=d.steps, help="Euler steps S")
    p.add_argument("--start", type=float, default=d.start, help="start time T in [0, 1)")
    p.add_argument("--neighbours", type=int, default=d.neighbours, help="neighbours K kept per query")
    p.add_argument("--index", choices=INDEX_KINDS, default=d.index,
                   help="auto: all points in float64, factorised over draws (on large sets on a CPU a certified "
                   "float32 screen first); exact: the float64 reference; flat/ivf/torch: top-K neighbours "
                   "with a certified bound on the omitted weight and a dense fallback")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--weights", help=".npy of N non-negative training weights (default uniform)")
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    p.add_argument("--nearest", type=int, default=d.nearest, help="nearest training points reported")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--truncation-tol", type=float, default=d.truncation_tol,
                   help="omitted-mass bound above which a query is computed densely")
    p.add_argument("--nprobe", type=int, default=d.nprobe)
    p.add_argument("--nlist", type=int, default=d.nlist)
    p.add_argument("--backend", choices=BACKENDS, default=d.backend,
                   help="local: one process; ray: the training set split across Ray actors")
    p.add_argument("--shards", type=int, default=d.shards, help="ray: number of shards (actors)")
    p.add_argument("--ray-address", default=d.ray_address, help="ray: cluster to join (default: a local instance)")
    p.add_argument("--space", choices=SPACES, default=d.space,
                   help="data: sample the data themselves; latent: sample an autoencoder's latents (images; "
                   "the autoencoder is trained once per data set and cached)")
    p.add_argument("--latent-dim", type=int, default=d.latent_dim, help="latent: latent coordinates K")
    p.add_argument("--ae-weights", default=d.ae_weights,
                   help="latent: a .safetensors file of the built-in autoencoder (default: train or use the cache)")


def config_from_args(a, **extra) -> SamplerConfig:
    """The parsed flags through the one mapping from outside names to `SamplerConfig`."""
    return SamplerConfig.from_options({name: getattr(a, name) for name in OPTIONS}, **extra)


def load_inputs(a):
    """The training set named by --data (a shard manifest with --backend ray: never loaded here)
    and the optional --weights."""
    from pathlib import Path

    from cdm_core.data.registry import load
    from cdm_core.data.shards import read_manifest
    from cdm_core.pipeline.run import check_weights_file
    p = Path(a.data)
    if p.name == "manifest.json" or (p.is_dir() and (p / "manifest.json").exists()):
        if getattr(a, "backend", "local") != "ray":
            raise CdmInputError(f"{a.data} is a shard manifest: run it with --backend ray")
        ds = read_manifest(p)
    else:
        ds = load(a.data)
    weights = check_weights_file(a.weights, ds.n) if a.weights else None
    return ds, weights


def check_out(path: str, suffix: str) -> None:
    if not path.endswith(suffix):
        raise CdmInputError(f"--out must end in {suffix}, got {path!r}")
