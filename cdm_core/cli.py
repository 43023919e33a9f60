"""Command line: `python -m cdm_core {sample,datasets,...}`.

Same operations and parameter names as the Python API. Bad input exits with code 2 and one
line on stderr; progress goes to stderr as a single updating line.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from .config import INDEX_KINDS, SamplerConfig
from .errors import CdmInputError
from .runtime import keep_freed_memory

log = logging.getLogger("cdm_core")


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage + message; we want one line
        raise CdmInputError(f"{self.prog}: {message}")


class Progress:
    """A progress line on stderr: 'sampling  [=====     ]  50%  batch 1/2  step 10/20  1.2 s'."""

    def __init__(self, label: str, stream=None):
        self.label, self.stream, self.t0, self.last = label, stream or sys.stderr, time.perf_counter(), 0.0

    def __call__(self, info: dict) -> None:
        from .sampler import fraction_done
        done = fraction_done(info)
        now = time.perf_counter()
        if done < 1 and now - self.last < 0.1:
            return
        self.last = now
        bar = "=" * int(20 * done)
        self.stream.write(f"\r{self.label}  [{bar:<20}] {100 * done:3.0f}%  batch {info['batch']}/"
                          f"{info['batches']}  step {info['step']}/{info['steps']}  {now - self.t0:.1f} s")
        if done >= 1:
            self.stream.write("\n")
        self.stream.flush()


def add_sampler_options(p: argparse.ArgumentParser) -> None:
    d = SamplerConfig()
    p.add_argument("--data", required=True, help="registered data set (see `datasets`) or a file path")
    p.add_argument("--n", type=int, default=d.n_samples, help="number of samples")
    p.add_argument("--sigma", type=float, default=d.sigma, help="smoothing scale (data units)")
    p.add_argument("--draws", type=int, default=d.draws, help="smoothing draws M per sample")
    p.add_argument("--steps", type=int, default=d.steps, help="Euler steps S")
    p.add_argument("--start", type=float, default=d.start, help="start time T in [0, 1)")
    p.add_argument("--neighbours", type=int, default=d.neighbours, help="neighbours K kept per query")
    p.add_argument("--index", choices=INDEX_KINDS, default=d.index,
                   help="auto: all points, factorised over draws (float32-screened on large sets, within "
                   "about 1e-5 of exact); exact: the float64 reference; flat/ivf/torch: top-K neighbours "
                   "with a bound on the omitted weight")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--weights", help=".npy of N non-negative training weights (default uniform)")
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    p.add_argument("--nearest", type=int, default=d.nearest, help="nearest training points reported")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--truncation-tol", type=float, default=d.truncation_tol,
                   help="omitted-mass bound above which a query is computed densely")
    p.add_argument("--nprobe", type=int, default=d.nprobe)
    p.add_argument("--nlist", type=int, default=d.nlist)


def config_from_args(a, **extra) -> SamplerConfig:
    return SamplerConfig(n_samples=a.n, sigma=a.sigma, draws=a.draws, steps=a.steps, start=a.start,
                         neighbours=a.neighbours, index=a.index, seed=a.seed, device=a.device,
                         nearest=a.nearest, batch_size=a.batch_size, truncation_tol=a.truncation_tol,
                         nprobe=a.nprobe, nlist=a.nlist, **extra)


def load_inputs(a):
    from .datasets import load
    from .sampler import check_weights_file
    ds = load(a.data)
    weights = check_weights_file(a.weights, ds.n) if a.weights else None
    return ds, weights


def check_out(path: str, suffix: str) -> None:
    if not path.endswith(suffix):
        raise CdmInputError(f"--out must end in {suffix}, got {path!r}")


def cmd_sample(a) -> int:
    from .export_io import save_result
    from .sampler import sample
    check_out(a.out, ".npz")
    cfg = config_from_args(a, trajectory=a.trajectory)
    ds, weights = load_inputs(a)
    res = sample(ds, cfg, weights=weights, callback=Progress("sampling"))
    save_result(a.out, res)
    print(f"wrote {a.out}: {res.samples.shape[0]} samples of {ds.name} (D={ds.dim}) in {res.seconds:.2f} s; "
          f"max truncation bound {res.truncation_bound.max():.2e}"
          + (f"; {100 * res.float32_fraction:.0f}% of steps with float32 logits" if res.float32_fraction else ""),
          file=sys.stderr)
    return 0


def cmd_datasets(a) -> int:
    from .datasets import REGISTRY, availability
    width = max(map(len, REGISTRY))
    for name, entry in REGISTRY.items():
        ok, msg = availability(name)
        print(f"{name:<{width}}  {'yes' if ok else 'no ':<3}  {entry.kind:<5}  {entry.summary}"
              + ("" if ok else f"  ({msg})"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m cdm_core", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    s = sub.add_parser("sample", help="draw samples and write them with sources to an .npz")
    add_sampler_options(s)
    s.add_argument("--trajectory", action="store_true", help="keep every step's state")
    s.add_argument("--out", required=True, help="output .npz")
    s.set_defaults(func=cmd_sample)
    sub.add_parser("datasets", help="list registered data sets and their availability").set_defaults(func=cmd_datasets)
    for extra in EXTRA_COMMANDS:
        extra(sub)
    return p


# Other modules (sensitivity, sweep, figure) register their sub-commands here.
EXTRA_COMMANDS: list = []


def main(argv=None) -> int:
    from . import commands  # noqa: F401  registers the extra sub-commands
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    keep_freed_memory()  # see cdm_core/runtime.py
    try:
        a = build_parser().parse_args(argv)
        if a.verbose:
            logging.getLogger().setLevel(logging.INFO)
        return a.func(a)
    except CdmInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory; ask for fewer samples, draws or a smaller batch size", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
