"""Property tests of the model's formulas (docs/maths.md)."""

import math

import numpy as np
import torch
from hypothesis import given, settings, strategies as st

from cdm_core.config import SamplerConfig
from cdm_core.engine.blend import blend_weights, denoiser, normalise_log_weights, score, smoothed_denoiser, velocity
from cdm_core.engine.factory import make_strategy
from cdm_core.pipeline.prepared import prepare

F64 = torch.float64


def _data(seed, n=20, d=3):
    rng = np.random.default_rng(seed)
    x = torch.as_tensor(rng.standard_normal((n, d)), dtype=F64)
    y = torch.as_tensor(rng.standard_normal((5, d)), dtype=F64)
    pi = rng.random(n) + 0.01
    return x, y, pi


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), t=st.floats(0.0, 0.99), scale=st.floats(1e-3, 1e3))
def test_weights_sum_to_one_and_ignore_scaling_of_pi(seed, t, scale):
    x, y, pi = _data(seed)
    w1 = blend_weights(y, t, x, torch.as_tensor(normalise_log_weights(pi, len(pi))))
    w2 = blend_weights(y, t, x, torch.as_tensor(normalise_log_weights(pi * scale, len(pi))))
    assert torch.allclose(w1.sum(1), torch.ones(5, dtype=F64), atol=1e-12)
    assert torch.allclose(w1, w2, atol=1e-12)
    assert (w1 >= 0).all()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), t=st.floats(0.01, 0.95))
def test_denoiser_equals_brute_force(seed, t):
    x, y, pi = _data(seed)
    lp = normalise_log_weights(pi, len(pi))
    got = denoiser(y, t, x, torch.as_tensor(lp)).numpy()
    xs, ys = x.numpy(), y.numpy()
    for q in range(len(ys)):
        logits = [lp[i] - np.sum((ys[q] - t * xs[i]) ** 2) / (2 * (1 - t) ** 2) for i in range(len(xs))]
        m = max(logits)
        w = np.array([math.exp(v - m) for v in logits])
        w /= w.sum()
        np.testing.assert_allclose(got[q], (w[:, None] * xs).sum(0), rtol=1e-10, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), t=st.floats(0.05, 0.95))
def test_velocity_matches_score_form(seed, t):
    """v = (D - x)/(1 - t) equals (x + (1 - t) score)/t away from t = 0 (sigma = 0)."""
    x, y, pi = _data(seed)
    lp = torch.as_tensor(normalise_log_weights(pi, len(pi)))
    eps = torch.zeros(len(y), 1, x.shape[1], dtype=F64)
    v = velocity(y, t, x, lp, 0.0, eps)
    alt = (y + (1 - t) * score(y, t, x, lp)) / t
    assert torch.allclose(v, alt, rtol=1e-9, atol=1e-9)


def test_velocity_finite_at_t0_and_denoiser_is_mean():
    x, y, pi = _data(1)
    lp = torch.as_tensor(normalise_log_weights(pi, len(pi)))
    eps = torch.randn(len(y), 3, x.shape[1], dtype=F64)
    v = velocity(y, 0.0, x, lp, 0.5, eps)
    assert torch.isfinite(v).all()
    mean = torch.as_tensor(pi / pi.sum()) @ x
    assert torch.allclose(smoothed_denoiser(y, 0.0, x, lp, 0.5, eps), mean.expand(len(y), -1))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), t=st.floats(0.3, 0.98), k=st.integers(1, 40),
       index=st.sampled_from(["flat", "torch", "ivf"]), offset=st.sampled_from([0.0, 1e4]))
def test_truncation_bound_holds(seed, t, k, index, offset):
    """The reported bound covers the weight mass the kept points leave out, for every index and
    for data far from the origin; the truncated denoiser is within bound x diameter of the dense."""
    rng = np.random.default_rng(seed)
    pts = rng.standard_normal((60, 4)) + offset
    pi = rng.random(60) + 0.1
    lp = normalise_log_weights(pi, 60)
    ts = prepare(pts, SamplerConfig(index=index, device="cpu", nlist=6, nprobe=2))
    strat = make_strategy(ts, lp, neighbours=k, truncation_tol=1.0)
    y = torch.as_tensor(rng.standard_normal((8, 4)) * t, dtype=F64)  # centred queries
    ids, w, den, bound, dense = strat._blend(y, t)
    full = blend_weights(y, t, ts.points, torch.as_tensor(lp))
    for q in range(len(y)):
        kept = ids[q][ids[q] >= 0]
        omitted = 1.0 - float(full[q, kept].sum())
        assert omitted <= float(bound[q]) + 1e-12
    diam = float(torch.cdist(ts.points, ts.points).max())
    err = (den - full @ ts.points).norm(dim=1)
    assert (err <= 2 * bound * diam + 1e-9).all()


def test_zero_weight_points_never_blend():
    pts = np.array([[0.0], [1.0], [2.0], [3.0]])
    lp = normalise_log_weights(np.array([1.0, 0.0, 1.0, 1.0]), 4)
    for index in ("exact", "auto", "flat"):
        ts = prepare(pts, SamplerConfig(index=index, device="cpu"))
        strat = make_strategy(ts, lp, neighbours=2, truncation_tol=1.0)
        scaled = torch.zeros(1, 1, 1, dtype=F64)
        res = strat.step(strat.begin(scaled), ts.centred([[0.9]]), 0.9, sources=True)
        assert 1 not in res.sources.ids[0][res.sources.weights[0] > 0].tolist()


def test_bad_weights_are_one_line_errors():
    import pytest

    from cdm_core.errors import CdmInputError
    for bad, msg in [([1, -1, 1], "non-negative"), ([0, 0, 0], "sum to zero"), ([1, np.nan, 1], "NaN"),
                     ([1, 1], "expected 3"), (np.array(["a", "b", "c"]), "numeric")]:
        with pytest.raises(CdmInputError, match=msg):
            normalise_log_weights(np.array(bad) if not isinstance(bad, np.ndarray) else bad, 3)
