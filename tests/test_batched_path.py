"""The GPU plan of `index auto` (factorised float64 weights over all N points, the batch in one
softmax chunk, a dense weighted sum): a constant number of tensor operations per step, whatever
the number of samples, so a GPU runs a fixed number of kernel launches per step. The plan is
device-independent code; here it runs on the CPU with the GPU's choices switched on, and
tests/test_gpu.py repeats the count on CUDA where a GPU is present."""

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from cdm_core import SamplerConfig, load
from cdm_core.engine.blend import normalise_log_weights
from cdm_core.engine.factory import make_strategy
from cdm_core.engine.models import CFDM
from cdm_core.engine.sampler import euler_steps, start_state, time_grid
from cdm_core.engine.strategies import FactorisedStrategy
from cdm_core.pipeline.prepared import prepare


class CountOps(TorchDispatchMode):
    """Counts the aten operations run under it (each is one kernel launch or less on a GPU)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def ops_per_step(strategy, ts, cfg, n):
    ts.sq_norms, ts.norm_max  # computed once per training set, on first use: not part of any step
    lp = normalise_log_weights(None, ts.n)
    model = CFDM(ts, lp, cfg)
    model.strategy = strategy
    x, scaled, _ = start_state(model, cfg, np.arange(n))
    steps = euler_steps(model, x, scaled, time_grid(cfg.start, cfg.steps))
    counts, results = [], []
    for _ in range(cfg.steps):
        with CountOps() as counter:
            step = next(steps)
        counts.append(counter.count)
        results.append(step.x_next)
    return counts, results[-1]


def gpu_plan(ts):
    strategy = FactorisedStrategy(ts, normalise_log_weights(None, ts.n))
    strategy.on_gpu, strategy.softmax_values = True, 1 << 24  # as on a GPU (strategies.py)
    return strategy


@pytest.mark.parametrize("data,draws", [("digits", 4), ("moons", 1)])
def test_gpu_plan_runs_the_same_operations_for_3_and_40_samples(data, draws):
    ds = load(data)
    cfg = SamplerConfig(n_samples=40, sigma=0.5 if draws > 1 else 0.0, draws=draws, steps=8, seed=3)
    ts = prepare(ds, cfg)
    few, _ = ops_per_step(gpu_plan(ts), ts, cfg, 3)
    many, _ = ops_per_step(gpu_plan(ts), ts, cfg, 40)
    assert few == many
    assert max(few[1:-1]) < 40  # a handful of kernels per step, not one per sample


def test_cpu_plan_loops_over_samples_and_gpu_plan_agrees_with_it():
    """On a CPU the softmax runs sample by sample (cache-sized chunks), so its operation count
    grows with the batch; both plans give the same samples (float64 rounding)."""
    ds = load("mnist")
    cfg = SamplerConfig(n_samples=40, sigma=0.5, draws=4, steps=6, seed=5)
    ts = prepare(ds, cfg)
    cpu = make_strategy(ts, normalise_log_weights(None, ts.n))
    assert type(cpu) is FactorisedStrategy and not cpu.on_gpu
    cpu_small, _ = ops_per_step(cpu, ts, cfg, 3)
    cpu_big, cpu_out = ops_per_step(cpu, ts, cfg, 40)
    assert cpu_big[1] > cpu_small[1]
    _, gpu_out = ops_per_step(gpu_plan(ts), ts, cfg, 40)
    torch.testing.assert_close(gpu_out, cpu_out, rtol=0, atol=1e-12)
