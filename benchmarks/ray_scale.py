"""Scale-out benchmark: the training set split across Ray actors on this machine.

1. Per-step latency and bytes moved per step against the number of shards (Fashion-MNIST 60k x 784,
   16 samples, M = 4, 10 steps), each against one process (`backend local`, index auto with the
   screen off, i.e. the same dense float64 arithmetic) measured in the same run.
2. One run of 10M x 128 points over 8 actors from memory-mapped shards (synthetic data written
   shard by shard, never whole in one process).

Writes the `ray-results` block of BENCHMARKS.md. Usage: `python benchmarks/ray_scale.py [--big-only]`.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import ray

from cdm_core import SamplerConfig, load, sample
from cdm_core.data.shards import write_shard_blocks
from cdm_core.engine import strategies
from cdm_core.pipeline.shards import ShardedSet

HERE = Path(__file__).resolve().parent
TMP = Path("/tmp/cdm-ray-bench")


def timed_run(data, cfg, prepared=None):
    """(result, seconds, bytes moved per step between the first and the last step)."""
    marks = []

    def callback(info):  # the first batch's steps after the first (which also projects the draws)
        if prepared is not None and info["batch"] == 1 and info["step"] in (1, cfg.steps - 1):
            marks.append(prepared.bytes_moved)

    t0 = time.perf_counter()
    res = sample(data, cfg, prepared=prepared, callback=callback)
    per_step = (marks[-1] - marks[0]) / max(1, cfg.steps - 2) if len(marks) == 2 else 0.0
    return res, time.perf_counter() - t0, per_step


def shards_table(steps: int = 10) -> list[str]:
    ds = load("fashion-mnist")
    cfg = SamplerConfig(n_samples=16, sigma=1.0, draws=4, steps=steps, seed=0)
    strategies.SCREEN_MIN_VALUES = 1 << 62  # one process in float64 over all points, as the actors compute
    sample(ds, cfg.replace(n_samples=1, steps=2))
    local, local_s, _ = timed_run(ds, cfg)
    rows = ["| shards | s per step | vs one process | bytes moved per step | max abs deviation |",
            "| ---: | ---: | ---: | ---: | ---: |",
            f"| one process | {local_s / steps:.3f} | 1.00x | 0 | 0 |"]
    for k in (1, 2, 4, 8):
        rcfg = cfg.replace(backend="ray", shards=k)
        with ShardedSet.open(ds, rcfg) as ts:
            sample(ds, rcfg.replace(n_samples=1, steps=2), prepared=ts)  # actors warm
            res, secs, moved = timed_run(ds, rcfg, prepared=ts)
        dev = float(np.abs(res.samples - local.samples).max())
        rows.append(f"| {k} | {secs / steps:.3f} | {local_s / secs:.2f}x | {moved / 1e6:.2f} MB | {dev:.1e} |")
        print(rows[-1], flush=True)
    return rows


def big_run(n: int = 10_000_000, dim: int = 128, actors: int = 8) -> list[str]:
    folder = TMP / f"synthetic-{n}x{dim}"
    if not (folder / "manifest.json").exists():
        shutil.rmtree(folder, ignore_errors=True)
        t0 = time.perf_counter()
        blocks = np.array_split(np.arange(n), actors)

        def rows_of(block):  # a mixture of 64 Gaussian clusters, generated block by block
            rng = np.random.default_rng(int(block[0]))
            centres = np.random.default_rng(0).standard_normal((64, dim)).astype(np.float32) * 4
            return centres[rng.integers(0, 64, len(block))] + rng.standard_normal((len(block), dim), np.float32)

        write_shard_blocks(blocks, rows_of, folder, "synthetic", dim, None, f"synthetic-{n}x{dim}")
        print(f"wrote shards in {time.perf_counter() - t0:.1f} s", flush=True)
    from cdm_core.data.shards import read_manifest
    m = read_manifest(folder)
    cfg = SamplerConfig(n_samples=8, sigma=1.0, draws=2, steps=5, seed=0, backend="ray")
    t0 = time.perf_counter()
    with ShardedSet.open(m, cfg) as ts:
        opened = time.perf_counter() - t0
        res, secs, moved = timed_run(m, cfg, prepared=ts)
    src = res.source_ids[res.source_ids >= 0]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return [f"- 10M x 128 (5.1 GB of float32 shards) over {actors} actors: opening and verifying the shards "
            f"(sha256) took {opened:.1f} s; 8 samples, M = 2, 5 steps took {secs:.1f} s "
            f"({secs / cfg.steps:.2f} s per step, including the draws' projection at the first step), "
            f"{moved / 1e3:.1f} kB moved per step (after the first); every sample has "
            f"{int(src.size / len(res.samples))} "
            f"sources on average; peak driver memory {peak_mb:.0f} MB."]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--big-only", action="store_true")
    a = ap.parse_args()
    TMP.mkdir(exist_ok=True)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        rows = [] if a.big_only else shards_table()
        big = big_run()
    finally:
        ray.shutdown()
    import run  # the shared writer of BENCHMARKS.md blocks
    run.write_block("ray-results", f"Measured {time.strftime('%Y-%m-%d')} on {run.cpu_model()}, 2 threads, one local "
                    "Ray instance (num_cpus=2); Fashion-MNIST 60k x 784, 16 samples, M = 4, 10 steps.\n\n"
                    + "\n".join(rows) + "\n\n" + "\n".join(big))


if __name__ == "__main__":
    main()
