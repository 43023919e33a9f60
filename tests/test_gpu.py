"""CUDA path: the same interface on the GPU (torch on CUDA, faiss-gpu when installed).
Skipped, with the reason, on machines without a CUDA GPU (like the CI machine)."""

import numpy as np
import pytest
import torch

from cdm_core import SamplerConfig, load, sample
from cdm_core.engine import blend as model
from cdm_core.engine.neighbours import FlatIndex, faiss_gpus

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; torch sees none here")]


@pytest.mark.parametrize("index", ["auto", "exact", "flat", "torch"])
def test_cuda_sampler_matches_cpu(index):
    ds = load("digits")
    cfg = SamplerConfig(n_samples=16, sigma=0.5, draws=4, steps=12, index=index)
    cpu = sample(ds, cfg.replace(device="cpu"))
    gpu = sample(ds, cfg.replace(device="cuda"))
    np.testing.assert_allclose(gpu.samples, cpu.samples, atol=1e-5)
    np.testing.assert_array_equal(gpu.start_ids, cpu.start_ids)


def test_cuda_auto_is_the_batched_float64_plan_and_matches_cpu_exact():
    """On CUDA, auto is the factorised float64 weights over all N points with the batch in one
    softmax chunk (no screen, no gathers): it agrees with the CPU reference to float64 rounding."""
    from cdm_core.engine.factory import make_strategy
    from cdm_core.engine.strategies import FactorisedStrategy
    from cdm_core.pipeline.prepared import prepare
    ds = load("mnist")
    cfg = SamplerConfig(n_samples=8, sigma=1.0, draws=4, steps=20, seed=4)
    strategy = make_strategy(prepare(ds, cfg.replace(device="cuda")), model.normalise_log_weights(None, len(ds.points)))
    assert type(strategy) is FactorisedStrategy and strategy.on_gpu
    gpu = sample(ds, cfg.replace(device="cuda"))
    cpu = sample(ds, cfg.replace(device="cpu", index="exact"))
    assert np.abs(gpu.samples - cpu.samples).max() < 1e-8
    np.testing.assert_array_equal(gpu.source_ids[:, 0], cpu.source_ids[:, 0])


def test_cuda_steps_launch_the_same_kernels_for_8_and_256_samples():
    from test_batched_path import ops_per_step

    from cdm_core.engine.factory import make_strategy
    from cdm_core.pipeline.prepared import prepare
    ds = load("mnist")
    cfg = SamplerConfig(n_samples=256, sigma=1.0, draws=8, steps=10, seed=1, device="cuda")
    ts = prepare(ds, cfg)
    counts = [ops_per_step(make_strategy(ts, model.normalise_log_weights(None, ts.n)), ts, cfg, n)[0] for n in (8, 256)]
    assert counts[0] == counts[1]


def test_cuda_sensitivity_matches_cpu():
    from cdm_core.analysis.sensitivity import jacobian
    ds = load("digits")
    cfg = SamplerConfig(n_samples=4, sigma=0.5, draws=3, steps=8)
    a, _ = jacobian(ds, cfg.replace(device="cpu"), [1, 2, 3])
    b, _ = jacobian(ds, cfg.replace(device="cuda"), [1, 2, 3])
    np.testing.assert_allclose(a, b, atol=1e-8)


@pytest.mark.skipif(faiss_gpus() == 0, reason="faiss-gpu is not installed or sees no GPU")
def test_faiss_gpu_index_matches_flat():
    from cdm_core.engine.neighbours import GpuFlatIndex
    ds = load("digits")
    q = ds.points[:100] + 0.01
    np.testing.assert_array_equal(GpuFlatIndex(ds.points).search(q, 8)[1][:, 0],
                                  FlatIndex(ds.points).search(q, 8)[1][:, 0])


def test_cuda_middle_steps_never_wait_for_the_gpu():
    """Between the first step (which checks the draws once) and the last (which reads the sources),
    a step of auto needs no host synchronisation: the CPU queues the next step's kernels at once."""
    from cdm_core.engine.factory import make_strategy
    from cdm_core.engine.sampler import euler_steps, start_state, time_grid
    from cdm_core.pipeline.prepared import prepare
    ds = load("mnist")
    cfg = SamplerConfig(n_samples=64, sigma=1.0, draws=8, steps=10, seed=2, device="cuda")
    ts = prepare(ds, cfg)
    lp = model.normalise_log_weights(None, ts.n)
    from cdm_core.engine.models import CFDM
    m = CFDM(ts, lp, cfg)
    assert type(m.strategy) is type(make_strategy(ts, lp))
    x, scaled, _ = start_state(m, cfg, np.arange(64))
    steps = euler_steps(m, x, scaled, time_grid(0.0, cfg.steps))
    next(steps)
    torch.cuda.synchronize()
    try:
        torch.cuda.set_sync_debug_mode("error")
        for _ in range(cfg.steps - 2):
            next(steps)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("model", ["ls", "els"])
def test_cuda_local_models_are_batch_independent_and_match_cpu(model):
    """The local models on CUDA: a sample and its per-pixel sources are bitwise the same alone and
    in batches (as on the CPU, tests/test_models_reference.py), and agree with the CPU to float64
    rounding. ELS takes one product per sample; whether CUDA's reductions keep a sample's sums
    independent of the batch had not been measured when this test was written."""
    ds = load("digits")
    cfg = SamplerConfig(n_samples=19, steps=6, model=model, patch_schedule="3,5,7,5,3,3", seed=3, device="cuda")
    full = sample(ds, cfg)
    names = ("samples", "pixel_source_ids", "pixel_source_pixels", "pixel_source_weights", "pixel_source_omitted",
             "pixel_entropy")
    for other in (sample(ds, cfg.replace(batch_size=1)), sample(ds, cfg.replace(batch_size=3))):
        for name in names:
            np.testing.assert_array_equal(getattr(other, name), getattr(full, name), err_msg=name)
    cpu = sample(ds, cfg.replace(device="cpu"))
    assert np.abs(full.samples - cpu.samples).max() < 1e-8
