"""Data far from their centre, or far from the origin: the audit cases of docs/numerics.md
("Far from the centre") and RELIABILITY.md, and property tests over offsets and cluster
separations up to 1e6.

The reference needs no second implementation. Two clusters whose separation is at least 1e2 (in
units of their spread) never share weight after t = 0.6: the far cluster's weights underflow to
exactly 0 at every step. So a sample that starts in cluster A, and its derivatives with respect
to A's weights, are *identical in exact arithmetic* for every separation and every offset of the
whole set. The compact placement (separation 1e2, no offset) is computed to about 1e-14 of its
spread; any other placement must agree with it to float64 precision relative to its own spread.
"""

import numpy as np
import pytest
from conftest import source_matrix
from hypothesis import given, settings, strategies as st

from cdm_core import SamplerConfig, sample
from cdm_core.analysis.sensitivity import NUMERICAL_ZERO_REL, jacobian, numerical_zero
from cdm_core.data.files import load_bytes
from cdm_core.engine import refine, strategies

INDEXES = ["exact", "auto", "auto-screened", "flat"]


def clusters(seed: int, d: int, sep: float, offset: float, n: int = 60) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((n, d)), 2 * rng.standard_normal((n, d))
    shift = np.zeros(d)
    shift[0] = sep
    return np.concatenate([a, b + shift]) + offset


def run_jacobian(points, cfg, index, ids):
    with pytest.MonkeyPatch.context() as mp:
        if index == "auto-screened":  # the large-set path, on a small set
            mp.setattr(strategies, "SCREEN_MIN_VALUES", 0)
            index = "auto"
        return jacobian(points, cfg.replace(index=index), ids)


def spread_of(points) -> float:
    """max |x_i - c|: the scale every float64 error of the engine is relative to."""
    return float(np.abs(points - points.mean(0)).max())


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(2, 4), index=st.sampled_from(INDEXES),
       sep=st.sampled_from([1e4, 1e5, 1e6]), offset=st.sampled_from([0.0, -2.5e3, 1e4, 1e6]))
def test_samples_and_sensitivity_far_from_the_centre(seed, d, index, sep, offset):
    cfg = SamplerConfig(n_samples=10, sigma=0.4, draws=3, steps=20, start=0.6, seed=seed, device="cpu")
    ids = np.arange(60)  # cluster A
    j_ref, s_ref = jacobian(clusters(seed, d, 1e2, 0.0), cfg.replace(index="exact"), ids)
    in_a = np.abs(s_ref[:, 0]) < 30  # samples that started in cluster A
    pts = clusters(seed, d, sep, offset)
    jac, samples = run_jacobian(pts, cfg, index, ids)
    scale = spread_of(pts)
    assert np.abs(samples - offset - s_ref)[in_a].max() <= 1e-12 * scale
    # before the two-pass covariance and the refined logits: 1e-8 of the spread at 1e6 apart,
    # above the numerically-zero threshold, so the page drew rounding as influence
    assert np.abs(jac - j_ref)[in_a].max() <= 1e-3 * NUMERICAL_ZERO_REL * scale


def test_the_audit_case_two_clusters_a_million_apart():
    """The audit's case: 2-D clusters of 100 points 1e6 apart, sigma 0.5, M 4, 20 steps, T 0.6."""
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((100, 2)), rng.standard_normal((100, 2))
    cfg = SamplerConfig(n_samples=16, sigma=0.5, draws=4, steps=20, start=0.6, index="exact", device="cpu")
    compact = np.concatenate([a, b + [1e2, 0]])
    far = np.concatenate([a, b + [1e6, 0]])
    j_ref, s_ref = jacobian(compact, cfg, np.arange(100))
    jac, s = jacobian(far, cfg, np.arange(100))
    in_a = np.abs(s_ref[:, 0]) < 30
    assert in_a.sum() >= 4
    err = np.abs(jac - j_ref)[in_a].max()
    assert err < 1e-3 * numerical_zero(far)
    # where the exact derivative is numerically zero, so is ours: nothing is drawn from rounding
    zero = np.linalg.norm(j_ref, axis=-1) <= numerical_zero(compact)
    assert (np.linalg.norm(jac, axis=-1)[zero & in_a[:, None]] <= numerical_zero(far)).all()


def test_refinement_is_what_keeps_far_clusters_exact(monkeypatch):
    """Mutation check: without the refined logits the same case is wrong by far more."""
    pts = clusters(3, 2, 1e6, 0.0)
    cfg = SamplerConfig(n_samples=10, sigma=0.4, draws=3, steps=20, start=0.6, index="exact", device="cpu")
    ref = sample(clusters(3, 2, 1e2, 0.0), cfg).samples
    in_a = np.abs(ref[:, 0]) < 30
    good = np.abs(sample(pts, cfg).samples - ref)[in_a].max()
    monkeypatch.setattr(refine, "REFINE_NATS", np.inf)
    monkeypatch.setattr(strategies, "REFINE_NATS", np.inf)
    bad = np.abs(sample(pts, cfg.replace(seed=0)).samples - ref)[in_a].max()
    assert good <= 1e-12 * spread_of(pts) < bad


def test_compact_data_are_never_refined(monkeypatch):
    """The guard costs nothing where the expanded form is accurate (moons-like data, 20 steps)."""
    calls = []
    real = refine.refine_

    def counting(*args):
        calls.append(real(*args))
        return calls[-1]

    monkeypatch.setattr(strategies, "refine_", counting)
    rng = np.random.default_rng(0)
    sample(rng.standard_normal((300, 2)), SamplerConfig(n_samples=8, sigma=0.1, draws=2, steps=20, index="exact",
                                                        device="cpu"))
    assert sum(calls) == 0  # refine_ is not even reached: the host-side bound rules it out


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), offset=st.sampled_from([1e2, 1e4, 1e6]), index=st.sampled_from(["flat", "torch"]))
def test_truncated_sources_sum_to_one_far_from_the_origin(seed, offset, index):
    """Every row duplicated, offset up to 1e6, 256 dims (the audit's case at 1e4): the kept weights
    are renormalised, so they sum to one and sources times the points give the sample."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((40, 256))
    pts = np.concatenate([base, base]) + offset
    res = sample(pts, SamplerConfig(n_samples=6, sigma=0.3, draws=2, steps=10, index=index, neighbours=16,
                                    device="cpu", seed=seed))
    assert np.abs(res.source_weights.sum(1) - 1).max() <= 1e-14
    rebuilt = source_matrix(res, len(pts)) @ pts
    assert np.abs(rebuilt - res.samples).max() <= 1e-13 * offset


def test_float64_files_stay_float64():
    """A rank-3 set in 512 dims with 1e-6 noise, offset by -2500, read from a float64 .npy file:
    samples move with the offset exactly, and sources times the file's values give the samples."""
    import io
    rng = np.random.default_rng(11)
    base = rng.standard_normal((120, 3)) @ rng.standard_normal((3, 512)) + 1e-6 * rng.standard_normal((120, 512))

    def as_file(a):
        bio = io.BytesIO()
        np.save(bio, a)
        return load_bytes("set.npy", bio.getvalue())

    near, far = as_file(base), as_file(base - 2500.0)
    assert far.points.dtype == np.float64 and np.array_equal(far.points, base - 2500.0)
    cfg = SamplerConfig(n_samples=6, sigma=0.5, draws=2, steps=20, device="cpu")
    a, b = sample(near, cfg), sample(far, cfg)
    spread = spread_of(base)
    assert np.abs((b.samples + 2500.0) - a.samples).max() <= 1e-12 * 2500  # was 1.2e-4 of the spread
    assert np.abs(source_matrix(b, far.n) @ far.points - b.samples).max() <= 1e-12 * 2500
    assert spread > 1


def test_float32_files_stay_float32():
    import io
    bio = io.BytesIO()
    np.save(bio, np.ones((5, 3), np.float32))
    assert load_bytes("f.npy", bio.getvalue()).points.dtype == np.float32


def test_the_gpu_plan_bounds_each_batch_with_its_own_states():
    """On a GPU the refinement gate takes its bound on |y| once per batch. The audit found it kept
    0 for every batch when sigma = 0 (its key, the draws, was None like its initial value), so the
    a |y| R term was dropped. Checked on the CPU with the GPU plan's flag set."""
    import torch

    from cdm_core.engine.blend import normalise_log_weights
    from cdm_core.engine.strategies import FactorisedStrategy
    from cdm_core.pipeline.prepared import prepare
    pts = np.random.default_rng(0).standard_normal((50, 20)) * 5
    ts = prepare(pts, SamplerConfig(device="cpu"))
    strategy = FactorisedStrategy(ts, normalise_log_weights(None, ts.n))
    strategy.on_gpu = True
    a, c = 0.9 / 0.1 ** 2, 0.9 ** 2 / (2 * 0.1 ** 2)  # t = 0.9: the c R^2 term alone is below the gate
    zeros = torch.zeros(4, 1, 20, dtype=torch.float64)  # sigma = 0: draws of zeros, no projection
    small = torch.full((4, 20), 1e-3, dtype=torch.float64)
    big = torch.full((4, 20), 1e3, dtype=torch.float64)
    cpu = FactorisedStrategy(ts, normalise_log_weights(None, ts.n))
    assert not cpu.may_refine(a, c, small, None) and cpu.may_refine(a, c, big, None)  # the |y| term decides
    for x in (small, big):
        draws = zeros.clone()  # a new batch
        assert strategy.may_refine(a, c, x, None, batch=draws) == cpu.may_refine(a, c, x, None)
