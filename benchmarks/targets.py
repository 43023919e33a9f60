"""The speed targets of issue #14, each a ratio against a baseline measured in the same run.

    python benchmarks/targets.py            # CPU: library and CLI figures (about 3 minutes, 2 cores)
    python benchmarks/targets.py --cuda     # GPU: the same plus 1024 samples, 1M points, kernel launches
    python benchmarks/targets.py --smoke    # the GPU script's code path on the CPU at toy sizes (no writing)

The baseline is the issue's "plain dense float32 loop": per step one matmul for every smoothing
query's logits, a softmax, one matmul back, on the same random numbers. Results are written to
the `targets-cpu` / `targets-cuda` blocks of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import run  # the shared helpers and BENCHMARKS.md writer (benchmarks/run.py)
import torch

from cdm_core import SamplerConfig, load, sample

ROOT = Path(__file__).resolve().parents[1]


def plain_float32_loop(points, cfg: SamplerConfig, device: str = "cpu") -> np.ndarray:
    """The baseline: every query y = x + sigma eps_m against all N points in float32 per step."""
    return run.plain_dense(points, cfg, torch.float32, device, logits="matmul")


def timed(fn, repeat: int = 1, sync=lambda: None) -> tuple[float, object]:
    """Median wall time of `repeat` calls after one warm-up call, and the last result."""
    fn()
    sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


# ---------------------------------------------------------------------------- CPU
def in_process_case(spec: dict) -> dict:
    """One fresh process: auto through the library and the plain float32 loop, both warm."""
    ds = load(spec["data"])
    cfg = SamplerConfig(**spec["config"])
    auto_s, res = timed(lambda: sample(ds, cfg), spec["repeat"])
    plain_s, plain = timed(lambda: plain_float32_loop(ds.points, cfg), spec["plain_repeat"])
    return {"auto": auto_s, "plain": plain_s,
            "deviation": float(np.abs(plain - res.samples).max())}


def cli_seconds(args: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cdm_core", "sample", *args, "--out", f"{tmp}/s.npz"],
                       check=True, capture_output=True)
        return time.perf_counter() - t0


# what the dashboard and the CLI used to set before the engine adapted the allocator itself
MALLOPT = ("import ctypes; m=ctypes.CDLL('libc.so.6').mallopt; "
           "[m(p, v << 20) for p, v in ((-3, 32), (-1, 512), (-2, 64))]; ")


def first_calls(data: str, config: dict, calls: int = 3, prelude: str = "") -> list[float]:
    """Library calls in a fresh process (after `prelude`): what a notebook user sees."""
    code = (prelude + "import json,time; from cdm_core import SamplerConfig, load, sample; ds=load(%r); "
            "c=SamplerConfig(**%r); t=[]\nfor _ in range(%d):\n t0=time.perf_counter(); sample(ds,c); "
            "t.append(time.perf_counter()-t0)\nprint(json.dumps(t))" % (data, config, calls))
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def cpu_targets() -> str:
    machine = f"{run.cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    lines = [f"Measured {time.strftime('%Y-%m-%d')} on {machine}.", "",
             "| target | ours | baseline (same run) | ratio | target ratio |", "| --- | ---: | ---: | ---: | ---: |"]
    against = "library `auto` vs plain float32 loop"
    cases = [(f"Fashion-MNIST 60k, 64 samples, M=8, S=20: {against}", "fashion-mnist", 3, 1, 15),
             (f"MNIST 5k, 64 samples, M=8, S=20: {against}", "mnist", 5, 3, 8)]
    for label, data, rep, prep, want in cases:
        spec = {"data": data, "config": dict(n_samples=64, sigma=1.0, draws=8, steps=20), "repeat": rep,
                "plain_repeat": prep}
        out = subprocess.run([sys.executable, __file__, "--case", json.dumps(spec)], check=True,
                             capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(label, r, flush=True)
        lines.append(f"| {label} (deviation {r['deviation']:.0e}) | {r['auto']:.2f} s | {r['plain']:.2f} s | "
                     f"{r['plain'] / r['auto']:.1f}x | {want}x |")
    for start in ("0", "0.5"):
        args = ["--data", "fashion-mnist", "--n", "64", "--sigma", "1", "--draws", "8", "--steps", "20",
                "--start", start]
        auto, exact = cli_seconds(args + ["--index", "auto"]), cli_seconds(args + ["--index", "exact"])
        print("cli", start, auto, exact, flush=True)
        lines.append(f"| CLI end to end, Fashion-MNIST 64 samples, T={start}: `auto` vs `exact` | {auto:.1f} s | "
                     f"{exact:.1f} s | {exact / auto:.1f}x | 10x |")
    lines.append("")
    for data, config in (("moons", dict(n_samples=64, sigma=0.1, draws=4, steps=100)),
                         ("moons", dict(n_samples=64, sigma=1.0, draws=4, steps=20)),
                         ("mnist", dict(n_samples=64, sigma=1.0, draws=8, steps=20))):
        plain = [first_calls(data, config) for _ in range(3)]
        tuned = [first_calls(data, config, prelude=MALLOPT) for _ in range(3)]
        med = float(np.median(plain)), float(np.median(tuned))
        print(data, config, plain, tuned, flush=True)
        listed = [", ".join(f"{t:.3f}" for r in runs for t in r) for runs in (plain, tuned)]
        what = f"{data}, {config['n_samples']} samples, sigma {config['sigma']}, M = {config['draws']}, " \
               f"{config['steps']} steps"
        lines.append(f"- library in fresh processes, {what}: nothing configured {listed[0]} s "
                     f"(median {med[0]:.3f}); with the malloc setting the entry points used to apply "
                     f"{listed[1]} s (median {med[1]:.3f}); ratio {med[0] / med[1]:.2f}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- GPU
def tiled(points: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """`points` repeated to n rows with a little jitter, so no two rows coincide."""
    reps = -(-n // len(points))
    rng = np.random.default_rng(seed)
    out = np.tile(points, (reps, 1))[:n]
    return out + rng.normal(0.0, 0.01, out.shape).astype(np.float32)


def launches_per_step(fn, steps: int) -> float:
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    kernels = sum(e.count for e in prof.key_averages() if e.device_type.name == "CUDA")
    return kernels / steps


def device_targets(device: str, fashion, sizes=(64, 1024), big_n: int = 1_000_000, repeat: int = 5) -> list[str]:
    from cdm_core.data.dataset import Dataset
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rows = ["| case | `auto` | plain float32 loop | ratio | `exact` | deviation of `auto` from `exact` "
            "| kernels per step |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    base = dict(sigma=1.0, draws=8, steps=20, device=device)
    cases = [(f"{fashion.name} {fashion.n} x {fashion.dim}, {n} samples", fashion, n) for n in sizes]
    big = Dataset(name="tiled", points=tiled(fashion.points, big_n))
    cases.append((f"{fashion.name} tiled with jitter to {big_n} x {fashion.dim}, {sizes[0]} samples", big, sizes[0]))
    for label, ds, n in cases:
        cfg = SamplerConfig(n_samples=n, **base)
        auto_s, res = timed(lambda: sample(ds, cfg), repeat, sync)
        plain_s, _ = timed(lambda: plain_float32_loop(ds.points, cfg, device), max(1, repeat // 2), sync)
        exact_s, ex = timed(lambda: sample(ds, cfg.replace(index="exact")), 1, sync)
        kernels = launches_per_step(lambda: sample(ds, cfg), cfg.steps) if device == "cuda" else float("nan")
        dev = float(np.abs(res.samples - ex.samples).max())
        print(label, auto_s, plain_s, exact_s, dev, kernels, flush=True)
        rows.append(f"| {label} | {auto_s * 1e3:.1f} ms | {plain_s * 1e3:.1f} ms | {plain_s / auto_s:.1f}x | "
                    f"{exact_s * 1e3:.0f} ms | {dev:.1e} | {kernels:.0f} |")
    return rows


def cuda_targets() -> str | None:
    if not torch.cuda.is_available():
        print("no CUDA GPU visible to torch: nothing measured, BENCHMARKS.md left as it is")
        return None
    gpu = torch.cuda.get_device_name(0)
    rows = device_targets("cuda", load("fashion-mnist"))
    return (f"Measured {time.strftime('%Y-%m-%d')} on {gpu} (torch {torch.__version__}), warm, median of 5 "
            "(`auto`), of 2 (plain loop), one run (`exact`). Targets: 64 samples <= 15 ms and >= 5x the plain "
            "loop; 1024 samples <= 0.15 s; 1M points <= 0.25 s; deviation <= 1e-4; kernels per step "
            "independent of the number of samples.\n\n" + "\n".join(rows))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--case")
    ap.add_argument("--cuda", action="store_true")
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    if a.case:
        print(json.dumps(in_process_case(json.loads(a.case))))
    elif a.smoke:
        print("\n".join(device_targets("cpu", load("digits"), sizes=(4, 8), big_n=5000, repeat=1)))
    elif a.cuda:
        body = cuda_targets()
        if body:
            run.write_block("targets-cuda", body)
    else:
        run.write_block("targets-cpu", cpu_targets())


if __name__ == "__main__":
    main()
