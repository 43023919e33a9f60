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


def test_cuda_fast_path_matches_cpu_exact(monkeypatch):
    """The large-set fast path of auto (float32 screen, float64 survivors) on CUDA."""
    monkeypatch.setattr(model, "FLOAT32_PRODUCT_MIN", 0)
    ds = load("mnist")
    cfg = SamplerConfig(n_samples=8, sigma=1.0, draws=4, steps=20, seed=4)
    gpu = sample(ds, cfg.replace(device="cuda"))
    cpu = sample(ds, cfg.replace(device="cpu", index="exact"))
    assert np.abs(gpu.samples - cpu.samples).max() < 1e-4
    np.testing.assert_array_equal(gpu.source_ids[:, 0], cpu.source_ids[:, 0])


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
