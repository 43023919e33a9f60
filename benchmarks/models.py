"""The analytic models (#23) on one machine: `ls`, `gaussian` and `els` through the library's
`sample`, each against a baseline measured in the same run (BENCHMARKS.md, "The analytic models").

    python benchmarks/models.py [--repeats 3] [--mnist-repeats 1] [--quick] [--fresh]

1. `ls` against a plain float64 torch implementation written here from the maths (`plain_ls`):
   per step, every training item's per-pixel |y_q - t x_iq|^2, zero-padded box sums of the window
   (two separable `avg_pool2d` passes, times k^2), logits log(1/N) - window / (2 (1 - t)^2), a softmax over
   items per pixel and the weighted sum of the training pixels; Euler steps from the library's own
   start state (`trajectory=True`, `res.trajectory[0]`). Its final samples must match the library's
   to 1e-8, which shows both compute the same thing. Ratio = library / plain.
2. `gaussian`: the one-off eigendecomposition (first call with `gaussian._CACHE` cleared, minus a
   warm call) and the cost per step of a warm call (its seconds / S, and the marginal step: 40
   steps minus 20, / 20), beside cfdm `auto` (sigma 0) on the same set.
3. `els` against cfdm `exact` on digits, and on a 500-item Fashion-MNIST subset its work estimate
   (`SamplerConfig.work`) against the measured time.
`--fresh` also times a first call in a fresh process (what a CLI run pays) against a second one.
`--cuda` runs only the GPU cases (benchmarks/gpu_session.sh): LS on MNIST-5k against cfdm on the same
GPU, and ELS on the whole of Fashion-MNIST (4 and 16 samples) against cfdm `exact`.

Every timed case follows a warm-up call that prepares the set and settles the allocator (a shorter
run where a full one is long); each figure is the median of `--repeats` timed calls unless the
table says "1 run". About 11 minutes on a 2-core VM (`--quick`: about 3). The machine's load
average is printed before and after: this VM's timings move by 10-20% between runs, and by
several times when other work shares its two cores (a run under load is not a measurement).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cdm_core.config import SamplerConfig  # noqa: E402
from cdm_core.data.dataset import Dataset  # noqa: E402
from cdm_core.data.registry import load  # noqa: E402
from cdm_core.engine import gaussian  # noqa: E402
from cdm_core.pipeline.run import sample  # noqa: E402

PRESET = "fashion-resnet"
LABEL = {"digits": "digits", "mnist": "MNIST-5k", "fashion-mnist": "Fashion-MNIST 60k"}


def timed(fn, repeats: int):
    """(median seconds of `repeats` calls, the last call's result)."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def cfg(**kw) -> SamplerConfig:
    return SamplerConfig(device="cpu", **kw)


# ---------------------------------------------------------------------------------------------
# 1. ls against a plain float64 implementation

def box_sums(sq: torch.Tensor, k: int) -> torch.Tensor:
    """Sums of sq (M, 1, H, W) over the k x k window around each pixel, zero padding: two
    separable average pools (count_include_pad) times k^2."""
    r = k // 2
    v = F.avg_pool2d(sq, (k, 1), stride=1, padding=(r, 0), count_include_pad=True)
    return F.avg_pool2d(v, (1, k), stride=1, padding=(0, r), count_include_pad=True).mul_(k * k)


def plain_ls_denoise(y: torch.Tensor, t: float, k: int, x: torch.Tensor, hw: tuple) -> torch.Tensor:
    """D(y)_p = sum_i softmax_i(log 1/N - |y - t x_i|^2 summed over W_k(p) / (2 (1 - t)^2)) x_ip,
    states y (B, D) and training images x (N, D) in data units, float64."""
    n, d = x.shape
    h, w = hw
    s = 1.0 / (2.0 * (1.0 - t) ** 2)
    block = max(1, (1 << 22) // (n * d))  # samples whose (N, D) logits are held at once (32 MiB)
    out = torch.empty_like(y)
    for lo in range(0, len(y), block):
        yb = y[lo:lo + block]
        b = len(yb)
        logits = torch.empty(b, n, d, dtype=torch.float64)
        items = max(1, (1 << 20) // (b * d))  # items per box-filter chunk (8 MiB of squares)
        for i0 in range(0, n, items):
            sq = (yb[:, None, :] - t * x[None, i0:i0 + items]).square_()  # (b, n_c, D)
            logits[:, i0:i0 + items] = box_sums(sq.reshape(-1, 1, h, w), k).reshape(b, -1, d)
        weights = torch.softmax(logits.mul_(-s).add_(np.log(1.0 / n)), dim=1)  # over items, per pixel
        out[lo:lo + block] = (weights * x[None]).sum(1)
    return out


def plain_ls(x0: np.ndarray, x: np.ndarray, hw: tuple, sizes: tuple, steps: int) -> np.ndarray:
    """Euler steps x += h (D - x) / (1 - t) on t_k = k / S from x0; the last lands on D."""
    state = torch.as_tensor(x0, dtype=torch.float64)
    xt = torch.as_tensor(np.asarray(x, np.float64))
    for k in range(steps):
        t, h = k / steps, 1.0 / steps
        den = plain_ls_denoise(state, t, sizes[k], xt, hw)
        state = den if k == steps - 1 else state + h * (den - state) / (1.0 - t)
    return state.numpy()


def ls_case(name: str, repeats: int) -> dict:
    ds = load(name)
    c = cfg(n_samples=64, steps=20, model="ls", patch_schedule=PRESET, trajectory=True)
    sample(ds, c.replace(steps=1, trajectory=False))  # warm-up: the prepared set, the allocator
    lib_s, res = timed(lambda: sample(ds, c), repeats)
    base_s, base = timed(lambda: plain_ls(res.trajectory[0], ds.points, ds.image_shape, c.patch_sizes, c.steps),
                         repeats)
    dev = float(np.abs(base - res.samples).max())
    assert dev < 1e-8, f"plain ls differs from the library by {dev:.1e} on {name}"
    return {"case": f"{LABEL[name]}, 64 samples, S = 20, {PRESET}", "repeats": repeats, "lib": lib_s,
            "base": base_s, "dev": dev}


def ls_table(rows: list) -> str:
    out = ["| case | runs | library (s) | plain f64 torch (s) | library / plain | max abs deviation |",
           "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        runs = "1 run" if r["repeats"] == 1 else f"median of {r['repeats']}"
        out.append(f"| {r['case']} | {runs} | {r['lib']:.2f} | {r['base']:.2f} | {r['lib'] / r['base']:.2f} "
                   f"| {r['dev']:.1e} |")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# 2. gaussian: the eigendecomposition once, then the steps

def gaussian_case(name: str, repeats: int) -> dict:
    ds = load(name)
    g, a = cfg(n_samples=64, steps=20, model="gaussian"), cfg(n_samples=64, steps=20)  # cfdm auto, sigma 0
    sample(ds, a)  # warm-up: the prepared set (shared by both models), the allocator
    colds = []
    for _ in range(repeats):
        gaussian._CACHE.clear()
        t0 = time.perf_counter()
        sample(ds, g)
        colds.append(time.perf_counter() - t0)
    warm, _ = timed(lambda: sample(ds, g), repeats)
    warm40, _ = timed(lambda: sample(ds, g.replace(steps=40)), repeats)
    auto, _ = timed(lambda: sample(ds, a), repeats)
    auto40, _ = timed(lambda: sample(ds, a.replace(steps=40)), repeats)
    return {"case": LABEL[name], "n": ds.n, "repeats": repeats, "eig": statistics.median(colds) - warm,
            "cold": statistics.median(colds), "warm": warm, "auto": auto,
            "g_step": warm / 20, "a_step": auto / 20,
            "g_marg": (warm40 - warm) / 20, "a_marg": (auto40 - auto) / 20}


def gaussian_table(rows: list) -> str:
    out = ["| set | first call (s) | warm call (s) | eigendecomposition (s) | gaussian per step (us) "
           "| cfdm auto per step (us) | gaussian / auto | marginal step: gaussian / auto (us) |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        out.append(f"| {r['case']}, 64 samples, S = 20 | {r['cold']:.2f} | {r['warm']:.3f} | {r['eig']:.2f} "
                   f"| {r['g_step'] * 1e6:,.0f} | {r['a_step'] * 1e6:,.0f} | {r['warm'] / r['auto']:.2f} "
                   f"| {r['g_marg'] * 1e6:,.0f} / {r['a_marg'] * 1e6:,.0f} |")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# 3. els: interactive on digits? and the work model on a Fashion-MNIST subset

def els_digits(n: int, repeats: int) -> dict:
    ds = load("digits")
    e = cfg(n_samples=n, steps=20, model="els", patch_schedule=PRESET)
    x = cfg(n_samples=n, steps=20, index="exact")
    sample(ds, x)  # warm-up (the exact set)
    sample(ds, e)  # warm-up (the auto set the local models run on, the allocator)
    els_s, _ = timed(lambda: sample(ds, e), repeats)
    exact_s, _ = timed(lambda: sample(ds, x), repeats)
    work = e.work(ds.n, ds.dim, ds.image_shape)
    return {"case": f"digits, {n} samples, S = 20, {PRESET}", "repeats": repeats, "els": els_s,
            "base": exact_s, "work": work}


def els_fashion(items: int, n: int) -> dict:
    full = load("fashion-mnist")
    ds = Dataset(name=f"fashion-mnist[:{items}]", points=full.points[:items], image_shape=full.image_shape)
    e = cfg(n_samples=n, steps=20, model="els", patch_schedule=PRESET)
    sample(ds, e.replace(steps=1))  # warm-up: the prepared subset, the allocator
    x = cfg(n_samples=n, steps=20, index="exact")
    sample(ds, x)
    els_s, _ = timed(lambda: sample(ds, e), 1)
    exact_s, _ = timed(lambda: sample(ds, x), 3)
    return {"case": f"Fashion-MNIST first {items}, {n} samples, S = 20, {PRESET}", "repeats": 1, "els": els_s,
            "base": exact_s, "work": e.work(ds.n, ds.dim, ds.image_shape)}


def els_table(rows: list) -> str:
    out = ["| case | runs | els (s) | cfdm exact (s) | els / exact | work estimate (FLOP) | achieved GFLOP/s |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        runs = "1 run" if r["repeats"] == 1 else f"median of {r['repeats']}"
        out.append(f"| {r['case']} | {runs} | {r['els']:.2f} | {r['base']:.3f} | {r['els'] / r['base']:.0f} "
                   f"| {r['work']:.2e} | {r['work'] / r['els'] / 1e9:.1f} |")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# 4. on a GPU (--cuda): LS where cfdm is live, ELS on the whole of Fashion-MNIST

def device_name(device: str) -> str:
    return torch.cuda.get_device_name(0) if device == "cuda" else cpu_name()


def synced(fn, device: str):
    """fn with the device's queue drained before the clock stops."""
    def run():
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return out
    return run


def gpu_cases(device: str, els_items: int, els_samples: list, repeats: int) -> str:
    """LS on MNIST-5k against cfdm (its dashboard defaults, sigma 1, M = 4) on the same device, and
    ELS on the first `els_items` Fashion-MNIST items (all 60,000 by default) against cfdm exact."""
    lines = [f"On {device_name(device)} (device {device}), torch {torch.__version__}.", ""]
    ds = load("mnist")
    ls = SamplerConfig(device=device, n_samples=64, steps=20, model="ls", patch_schedule=PRESET, trajectory=False)
    cf = SamplerConfig(device=device, n_samples=64, steps=20, sigma=1.0, draws=4, trajectory=False)
    sample(ds, ls.replace(steps=1))
    sample(ds, cf)
    ls_s, _ = timed(synced(lambda: sample(ds, ls), device), repeats)
    cf_s, _ = timed(synced(lambda: sample(ds, cf), device), repeats)
    lines += ["| case | runs | ls (s) | cfdm sigma 1, M 4 (s) | ls / cfdm |", "| --- | ---: | ---: | ---: | ---: |",
              f"| MNIST-5k, 64 samples, S = 20, {PRESET} | median of {repeats} | {ls_s:.3f} | {cf_s:.3f} "
              f"| {ls_s / cf_s:.1f} |", ""]
    full = load("fashion-mnist")
    sub = Dataset(name=f"fashion-mnist[:{els_items}]", points=full.points[:els_items], image_shape=full.image_shape)
    rows = []
    for n in els_samples:
        e = SamplerConfig(device=device, n_samples=n, steps=20, model="els", patch_schedule=PRESET, trajectory=False)
        x = SamplerConfig(device=device, n_samples=n, steps=20, index="exact", trajectory=False)
        sample(sub, e.replace(steps=1, n_samples=1))
        sample(sub, x)
        els_s, _ = timed(synced(lambda: sample(sub, e), device), 1)
        exact_s, _ = timed(synced(lambda: sample(sub, x), device), repeats)
        rows.append({"case": f"Fashion-MNIST first {sub.n:,}, {n} samples, S = 20, {PRESET}", "repeats": 1,
                     "els": els_s, "base": exact_s, "work": e.work(sub.n, sub.dim, sub.image_shape)})
        print(f"els, {n} samples: {els_s:.1f} s", flush=True)
    return "\n".join(lines) + "\n" + els_table(rows)


# ---------------------------------------------------------------------------------------------
# first call in a fresh process: what a CLI run or a new dashboard worker pays

FRESH = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from cdm_core import SamplerConfig, load, sample
from cdm_core.pipeline.prepared import prepare
if sys.argv[3] == "adapted":
    from cdm_core.runtime import adapt_allocator; adapt_allocator()
ds = load("digits")
c = SamplerConfig(n_samples=64, steps=20, model=sys.argv[2], patch_schedule="fashion-resnet", device="cpu")
prepare(ds, c)
t0 = time.perf_counter(); sample(ds, c); first = time.perf_counter() - t0
t0 = time.perf_counter(); sample(ds, c); second = time.perf_counter() - t0
print(first, second)
"""


def fresh_case(model: str, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", FRESH, str(ROOT), model, mode], capture_output=True, text=True,
                         check=True, cwd=str(ROOT))
    first, second = map(float, out.stdout.split()[-2:])
    return {"case": f"digits {model}, 64 samples, S = 20, {PRESET}", "mode": mode, "first": first, "second": second}


def fresh_table(rows: list) -> str:
    out = ["| case | allocator | first call (s) | second call (s) | first / second |",
           "| --- | --- | ---: | ---: | ---: |"]
    for r in rows:
        how = "as the library leaves it" if r["mode"] == "plain" else "`adapt_allocator()` called first"
        out.append(f"| {r['case']} | {how} | {r['first']:.2f} | {r['second']:.2f} | {r['first'] / r['second']:.1f} |")
    return "\n".join(out)


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def gemm_rate() -> float:
    """This machine's float64 GEMM rate now, GFLOP/s (2048^2 products, best of 3 x 5): the yardstick
    for the achieved rates, and a check of how fast this VM runs today."""
    x, y = torch.randn(2048, 2048, dtype=torch.float64), torch.randn(2048, 2048, dtype=torch.float64)
    x @ y
    best = min(timed(lambda: [x @ y for _ in range(5)], 1)[0] for _ in range(3)) / 5
    return 2 * 2048 ** 3 / best / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="timed calls per median (small cases)")
    p.add_argument("--mnist-repeats", type=int, default=1, help="timed calls of the long MNIST-5k ls case")
    p.add_argument("--quick", action="store_true", help="leave out the long cases (MNIST-5k ls, Fashion-MNIST els)")
    p.add_argument("--fresh", action="store_true", help="also time a first call in a fresh process (digits ls, els)")
    p.add_argument("--cuda", action="store_true", help="only the GPU cases (LS on MNIST-5k against cfdm, ELS on "
                   "the whole of Fashion-MNIST), on the CUDA device")
    p.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # --cuda --device cpu: a dry run
    p.add_argument("--els-items", type=int, default=60000, help="Fashion-MNIST items for the --cuda ELS case")
    p.add_argument("--els-samples", default="4,16", help="samples of the --cuda ELS runs, comma-separated")
    a = p.parse_args()
    t_start = time.perf_counter()
    if a.cuda:
        text = gpu_cases(a.device, a.els_items, [int(v) for v in a.els_samples.split(",")], a.repeats)
        print("### the local models on a GPU\n\n" + text + f"\n\n{time.perf_counter() - t_start:.0f} s in all.")
        if os.environ.get("OUT"):
            Path(os.environ["OUT"], "models_cuda.md").write_text(text + "\n")
        return
    print(f"Measured {datetime.date.today()} on {cpu_name()}, {platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, CPU; "
          f"load average at start {os.getloadavg()[0]:.2f}; float64 GEMM {gemm_rate():.1f} GFLOP/s.\n", flush=True)

    rows = [ls_case("digits", max(a.repeats, 5))]
    if not a.quick:
        rows.append(ls_case("mnist", a.mnist_repeats))
    print("### ls against plain float64 torch\n\n" + ls_table(rows) + "\n", flush=True)

    rows = [gaussian_case("mnist", a.repeats), gaussian_case("fashion-mnist", a.repeats)]
    print("### gaussian against cfdm auto\n\n" + gaussian_table(rows) + "\n", flush=True)

    rows = [els_digits(64, a.repeats), els_digits(16, a.repeats)]
    if not a.quick:
        rows.append(els_fashion(500, 4))
    print("### els against cfdm exact\n\n" + els_table(rows) + "\n", flush=True)

    if a.fresh:
        rows = [fresh_case(m, mode) for m in ("ls", "els") for mode in ("plain", "adapted")]
        print("### first call in a fresh process\n\n" + fresh_table(rows) + "\n", flush=True)

    print(f"Load average at end {os.getloadavg()[0]:.2f}; {time.perf_counter() - t_start:.0f} s in all.")


if __name__ == "__main__":
    main()
