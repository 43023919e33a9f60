"""Benchmarks: wall time, samples/s, peak memory and deviation from `--index exact`, each
speed-up a ratio against a baseline measured in the same run. Prints a table and rewrites
BENCHMARKS.md. Each case runs in its own process so peak resident memory is its own.

    python benchmarks/run.py            # everything (about 10 minutes on 2 cores)
    python benchmarks/run.py --quick    # skip the Fashion-MNIST exact baselines
    python benchmarks/run.py --cuda     # the CUDA figures (on a machine with a GPU)
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cdm_core import SamplerConfig, load, sample  # installed into .venv by `make` (pip install -e .)
from cdm_core.engine.sampler import random_draws, time_grid

ROOT = Path(__file__).resolve().parents[1]


def plain_dense(points: np.ndarray, cfg: SamplerConfig, dtype=torch.float64, device: str = "cpu",
                logits: str = "cdist") -> np.ndarray:
    """A straightforward dense implementation with the same random numbers: every query
    y = x + sigma eps_m against all N points at every step, then a softmax and one matmul back.
    The logits come from `torch.cdist` ("cdist") or from one matmul ("matmul", the plain float32
    loop of issue #14)."""
    arr = np.asarray(points)
    x_all = torch.as_tensor(arr if arr.flags.writeable else arr.copy(), dtype=dtype, device=device)  # memmaps
    sq = (x_all * x_all).sum(1)
    u, z, eps = random_draws(cfg.seed, np.arange(cfg.n_samples), points.shape[1], cfg.draws)
    idx = np.minimum(np.searchsorted(np.arange(1, len(points) + 1) / len(points), u, side="right"), len(points) - 1)
    x = cfg.start * x_all[torch.as_tensor(idx, device=device)] + (1 - cfg.start) * torch.as_tensor(z, dtype=dtype,
                                                                                                   device=device)
    e = torch.as_tensor(eps, dtype=dtype, device=device)
    ts = time_grid(cfg.start, cfg.steps)
    for k in range(cfg.steps):
        t = float(ts[k])
        s = 1.0 / (2 * (1 - t) ** 2)
        y = (x[:, None, :] + cfg.sigma * e).reshape(-1, points.shape[1])
        if logits == "cdist":
            w = torch.softmax(-s * torch.cdist(y, t * x_all) ** 2, dim=1)
        else:  # log w = -s |y - t x_i|^2 up to a constant per query
            w = torch.softmax(2 * t * s * (y @ x_all.T) - t * t * s * sq, dim=1)
        den = (w @ x_all).reshape(cfg.n_samples, cfg.draws, -1).mean(1)
        x = den if k == cfg.steps - 1 else x + (ts[k + 1] - t) * (den - x) / (1 - t)
    return x.to(torch.float64).cpu().numpy()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def gemm_gflops() -> float:
    a = torch.randn(2048, 2048, dtype=torch.float64)
    a @ a
    t0 = time.perf_counter()
    for _ in range(5):
        a @ a
    return 5 * 2 * 2048 ** 3 / (time.perf_counter() - t0) / 1e9


def run_case(spec: dict) -> dict:
    ds = load(spec["data"])
    if spec.get("subset"):
        from cdm_core.data.dataset import Dataset
        ds = Dataset(name=f"{ds.name}[:{spec['subset']}]", points=ds.points[:spec["subset"]],
                     image_shape=ds.image_shape)
    if spec.get("offset"):  # the same data far from the origin (the values stay exact in float32)
        from cdm_core.data.dataset import Dataset
        ds = Dataset(name=f"{ds.name}+{spec['offset']}", points=ds.points + np.float32(spec["offset"]),
                     image_shape=ds.image_shape)
    cfg = SamplerConfig(**spec["config"])
    kind = spec.get("kind", "sample")
    # warm cache: data and index prepared (and torch's thread pool started) before timing, as in the
    # dashboard after the first run; both sides of every ratio are measured the same way
    sample(ds, cfg.replace(n_samples=1, steps=2))
    if spec.get("repeat", 1) > 1:  # interactive cases: median of several runs, this VM is noisy
        from cdm_core.analysis.sensitivity import sensitivity
        times = []
        for _ in range(spec["repeat"]):
            t0 = time.perf_counter()
            out = (sample(ds, cfg).samples if kind == "sample" else
                   sensitivity(ds, cfg, top=spec["top"]).samples)
            times.append(time.perf_counter() - t0)
        np.save(spec["out"], np.asarray(out, np.float64))
        return {"seconds": float(np.median(times)),
                "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "n": ds.n, "dim": ds.dim}
    t0 = time.perf_counter()
    if kind == "sample":
        out = sample(ds, cfg).samples.astype(np.float64)
    elif kind == "plain64":
        out = plain_dense(ds.points, cfg, torch.float64)
    elif kind == "plain32":
        out = plain_dense(ds.points, cfg, torch.float32)
    elif kind == "sensitivity":
        from cdm_core.analysis.sensitivity import sensitivity
        out = sensitivity(ds, cfg, top=spec["top"]).samples.astype(np.float64)
    secs = time.perf_counter() - t0
    np.save(spec["out"], out)
    res = {"seconds": secs, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "n": ds.n, "dim": ds.dim}
    if cfg.device == "cuda":  # GPU memory is what matters there
        res["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return res


def measure(spec: dict, tmp: Path, name: str) -> dict:
    spec = dict(spec, out=str(tmp / f"{name}.npy"))
    p = subprocess.run([sys.executable, __file__, "--case", json.dumps(spec)], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-2000:])
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res["samples"] = np.load(spec["out"])
    res["per_s"] = spec["config"].get("n_samples", 64) / res["seconds"]
    print(f"  {name:<38} {res['seconds']:8.2f} s  {res['peak_mb']:7.0f} MB", flush=True)
    return res


def table(rows) -> str:
    lines = ["| case | wall s | samples/s | peak MB | speed-up vs exact | max abs deviation vs exact |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for label, r, ratio, dev in rows:
        lines.append(f"| {label} | {r['seconds']:.2f} | {r['per_s']:.1f} | {r['peak_mb']:.0f} | "
                     f"{'' if ratio is None else f'{ratio:.1f}x'} | {'' if dev is None else f'{dev:.1e}'} |")
    return "\n".join(lines)


def write_block(marker: str, body: str) -> None:
    """Replace the block between `<!-- marker -->` and `<!-- /marker -->` in BENCHMARKS.md."""
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else ""
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    block = f"{start}\n{body}\n{end}"
    if start in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text + "\n" + block + "\n"
    path.write_text(text)


def device_cases(device: str, tmp: Path, data: str = "fashion-mnist", n_samples: int = 64) -> list:
    """The Fashion-MNIST target on one device: exact, auto and flat, ratios against exact there."""
    rows = []
    for start in (0.0, 0.5):
        base = dict(n_samples=n_samples, sigma=1.0, draws=8, steps=20, start=start, device=device)
        exact = measure({"data": data, "config": base | {"index": "exact"}}, tmp, f"{device}-exact-T{start}")
        rows.append((f"{data}, {device}, T={start}: exact (baseline)", exact, 1.0, 0.0))
        for index in ("auto", "flat"):
            r = measure({"data": data, "config": base | {"index": index}}, tmp, f"{device}-{index}-T{start}")
            rows.append((f"{data}, {device}, T={start}: {index}", r, exact["seconds"] / r["seconds"],
                         float(np.abs(r["samples"] - exact["samples"]).max())))
    return rows


def cuda_main(tmp: Path) -> None:
    """GPU figures, written to their own block of BENCHMARKS.md with the GPU's name."""
    if not torch.cuda.is_available():
        print("no CUDA GPU visible to torch: nothing measured, BENCHMARKS.md left as it is")
        return
    from cdm_core.engine.neighbours import faiss_gpus
    gpu = torch.cuda.get_device_name(0)
    print(f"GPU: {gpu}; faiss GPUs: {faiss_gpus()}")
    rows = device_cases("cuda", tmp)
    print(table(rows))
    write_block("cuda-results", f"Measured {time.strftime('%Y-%m-%d')} on {gpu} (torch {torch.__version__}, "
                f"faiss GPUs: {faiss_gpus()}; flat uses faiss-gpu when it sees one, else torch on CUDA). "
                "Peak MB is torch's peak GPU allocation.\n\n" + table(rows) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--case")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cuda", action="store_true", help="measure the CUDA path instead (needs a GPU)")
    a = ap.parse_args()
    if a.case:
        print(json.dumps(run_case(json.loads(a.case))))
        return
    tmp = Path("/tmp/cdm-bench")
    tmp.mkdir(exist_ok=True)
    if a.cuda:
        cuda_main(tmp)
        return
    rows, notes = [], []
    machine = f"{cpu_model()}, {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    gflops = gemm_gflops()
    print(f"machine: {machine}; float64 GEMM {gflops:.1f} GFLOP/s")

    # 1. Fashion-MNIST target: auto vs exact, T = 0 and 0.5
    fm = {"data": "fashion-mnist"}
    for start in (0.0, 0.5):
        base = dict(n_samples=64, sigma=1.0, draws=8, steps=20, start=start)
        auto = measure(fm | {"config": base | {"index": "auto"}}, tmp, f"fmnist-auto-T{start}")
        if a.quick:
            rows.append((f"Fashion-MNIST 60k, T={start}, auto", auto, None, None))
            continue
        exact = measure(fm | {"config": base | {"index": "exact"}}, tmp, f"fmnist-exact-T{start}")
        plain = measure(fm | {"config": base, "kind": "plain64"}, tmp, f"fmnist-plain64-T{start}")
        dev = float(np.abs(auto["samples"] - exact["samples"]).max())
        rows.append((f"Fashion-MNIST 60k, T={start}: exact (baseline)", exact, 1.0, 0.0))
        rows.append((f"Fashion-MNIST 60k, T={start}: auto", auto, exact["seconds"] / auto["seconds"], dev))
        rows.append((f"Fashion-MNIST 60k, T={start}: plain dense torch f64", plain,
                     exact["seconds"] / plain["seconds"], float(np.abs(plain["samples"] - exact["samples"]).max())))
        if start == 0.0:
            flops = 20 * 2 * (64 * 8 + 64) * 60000 * 784  # per step: every draw's logits, then (mean_m w) X
            notes.append(f"exact path at T=0: {flops / exact['seconds'] / 1e9:.1f} GFLOP/s, "
                         f"{100 * flops / exact['seconds'] / 1e9 / gflops:.0f}% of this machine's float64 GEMM "
                         f"({gflops:.1f} GFLOP/s)")

    # 1b. the same on data offset by 1000 and with a batch of one: agreement with exact, not speed
    if not a.quick:
        base = dict(n_samples=16, sigma=1.0, draws=8, steps=20)
        off = fm | {"offset": 1000.0}
        exact = measure(off | {"config": base | {"index": "exact"}}, tmp, "fmnist1000-exact")
        auto = measure(off | {"config": base | {"index": "auto"}}, tmp, "fmnist1000-auto")
        single = measure(off | {"config": base | {"index": "auto", "batch_size": 1}}, tmp, "fmnist1000-auto-b1")
        rows.append(("Fashion-MNIST + 1000, 16 samples, T=0: exact (baseline)", exact, 1.0, 0.0))
        rows.append(("Fashion-MNIST + 1000, 16 samples, T=0: auto", auto, exact["seconds"] / auto["seconds"],
                     float(np.abs(auto["samples"] - exact["samples"]).max())))
        rows.append(("Fashion-MNIST + 1000, 16 samples, T=0: auto, batches of 1", single,
                     exact["seconds"] / single["seconds"], float(np.abs(single["samples"] - exact["samples"]).max())))
        notes.append("batch independence on Fashion-MNIST + 1000: auto with batches of 1 against one batch of 16 "
                     f"differs by {float(np.abs(single['samples'] - auto['samples']).max()):.1e}")

    # 2. interactive latency (warm cache)
    inter = [("MNIST 5k, 64 samples, M=4, S=20 (warm, median of 5)",
              {"data": "mnist", "config": dict(n_samples=64, sigma=1.0, draws=4, steps=20)}),
             ("moons 1k, 64 samples, M=4, S=100 (warm, median of 5)",
              {"data": "moons", "config": dict(n_samples=64, sigma=0.1, draws=4, steps=100)}),
             ("MNIST 5k sensitivity, 16 samples x top 8 (median of 5)",
              {"data": "mnist", "kind": "sensitivity", "top": 8,
               "config": dict(n_samples=16, sigma=1.0, draws=4, steps=20)})]
    for label, spec in inter:
        r = measure(spec | {"repeat": 5}, tmp, label.split(",")[0].replace(" ", "-") + spec.get("kind", ""))
        rows.append((label, r, None, None))

    # 3. growth with N and M (auto, 32 samples, S = 20)
    for n in (5000, 20000, 60000):
        r = measure({"data": "fashion-mnist", "subset": n, "config": dict(n_samples=32, sigma=1.0, draws=8, steps=20)},
                    tmp, f"scale-N{n}")
        rows.append((f"auto, N={n}, 32 samples, M=8", r, None, None))
    for m in (1, 4, 16):
        r = measure({"data": "fashion-mnist", "subset": 20000,
                     "config": dict(n_samples=32, sigma=1.0, draws=m, steps=20)}, tmp, f"scale-M{m}")
        rows.append((f"auto, N=20000, 32 samples, M={m}", r, None, None))

    print(table(rows))
    write_block("cpu-results", f"Measured {time.strftime('%Y-%m-%d')} on {machine}.\n\n{table(rows)}\n\n"
                + "".join(f"- {n}\n" for n in notes))


if __name__ == "__main__":
    main()
