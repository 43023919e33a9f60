"""A change costs no speed: the library's sampler on a git revision against the working tree, in
one run on one machine (BENCHMARKS.md, "The engine refactor").

    python benchmarks/revision_ab.py [REV] [--rounds 3] [--repeats 5]

REV (default HEAD~1) is checked out into a temporary git worktree. Each case runs in a fresh
process per side (so neither side's caches or allocator state help the other), sides alternate
round by round, and each figure is the median of `repeats` timed calls after one warm-up call.
The ratio working tree / REV of the medians over rounds is what to read: 1.00 is no change, and
the spread between rounds is the noise of this machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> (data set, SamplerConfig keyword arguments): the paths the refactor touched
CASES = {
    "moons n64 S100 M4 auto": ("moons", dict(n_samples=64, sigma=0.1, draws=4, steps=100)),
    "digits n64 S20 M8 auto": ("digits", dict(n_samples=64, sigma=0.5, draws=8, steps=20)),
    "digits n64 S20 M8 exact": ("digits", dict(n_samples=64, sigma=0.5, draws=8, steps=20, index="exact")),
    "digits n64 S20 M4 flat": ("digits", dict(n_samples=64, sigma=0.5, draws=4, steps=20, index="flat")),
    "mnist-5k n64 S20 M8 auto": ("mnist", dict(n_samples=64, sigma=0.5, draws=8, steps=20)),
}

TIMER = r"""
import json, statistics, sys, time
sys.path.insert(0, sys.argv[1])
import cdm_core
from cdm_core import SamplerConfig, load, sample
assert cdm_core.__file__.startswith(sys.argv[1]), cdm_core.__file__
data, kwargs, repeats = sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
ds, cfg = load(data), SamplerConfig(device="cpu", **kwargs)
sample(ds, cfg)  # warm: the prepared set, the allocator
times = []
for _ in range(repeats):
    t0 = time.perf_counter()
    sample(ds, cfg)
    times.append(time.perf_counter() - t0)
print(statistics.median(times))
"""


def timed(tree: Path, data: str, kwargs: dict, repeats: int) -> float:
    out = subprocess.run([sys.executable, "-c", TIMER, str(tree), data, json.dumps(kwargs), str(repeats)],
                         capture_output=True, text=True, check=True, cwd=tempfile.gettempdir())
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rev", nargs="?", default="HEAD~1")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="cfdm-ab-") as tmp:
        old = Path(tmp) / "rev"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(old), a.rev], check=True)
        try:
            print(f"{'case':<28} {a.rev + ' (s)':>14} {'tree (s)':>10} {'tree / rev':>11}  per round")
            for name, (data, kwargs) in CASES.items():
                pairs = []
                for r in range(a.rounds):
                    sides = [(old, "rev"), (ROOT, "tree")] if r % 2 == 0 else [(ROOT, "tree"), (old, "rev")]
                    got = {label: timed(tree, data, kwargs, a.repeats) for tree, label in sides}
                    pairs.append((got["rev"], got["tree"]))
                rev_s = statistics.median(p[0] for p in pairs)
                tree_s = statistics.median(p[1] for p in pairs)
                rounds = " ".join(f"{t / r:.2f}" for r, t in pairs)
                print(f"{name:<28} {rev_s:>14.3f} {tree_s:>10.3f} {tree_s / rev_s:>11.2f}  {rounds}", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False)


if __name__ == "__main__":
    main()
