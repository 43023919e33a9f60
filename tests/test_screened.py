"""The large-set path of `index auto` (cdm_core/engine/screen.py): the float32 screen is certified,
and every route it takes (gathered survivors, float64 over all N) equals the dense reference.
These sets are small, so the tests lower the size from which the screen is used."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import source_matrix
from hypothesis import given, settings, strategies as st

from cdm_core import SamplerConfig, load, sample
from cdm_core.engine import factory, screen, strategies
from cdm_core.engine.blend import blend_weights, logit_scales, normalise_log_weights
from cdm_core.pipeline.prepared import prepare

F64 = torch.float64


@pytest.fixture
def fast_path(monkeypatch):
    """Use the screen on every set (it normally starts at N x D = 1e7)."""
    monkeypatch.setattr(strategies, "SCREEN_MIN_VALUES", 0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), t=st.floats(0.05, 0.995), sigma=st.sampled_from([0.0, 0.3, 2.0]),
       scale=st.sampled_from([1e-20, 1e-2, 1.0, 30.0]), offset=st.sampled_from([0.0, 1e3]),
       dups=st.booleans(), zero_pi=st.booleans())
def test_screen_keeps_every_point_with_weight_above_flush(seed, t, sigma, scale, offset, dups, zero_pi):
    """No (sample, point) whose exact weight in some draw is >= 1e-30 is screened out, whatever the
    scale and placement of the data, with duplicate rows and zero weights; and the screened float32
    logits lie within the stated slack of the float64 ones."""
    rng = np.random.default_rng(seed)
    n, d, b, m = 300, 24, 5, 4
    pts = (rng.random((n, d)) * scale + offset * scale).astype(np.float32)
    if dups:
        pts[n // 2:] = pts[: n - n // 2]
    pi = rng.random(n) + 0.01
    if zero_pi:
        pi[::3] = 0.0
    log_pi = normalise_log_weights(pi, n)
    ts = prepare(pts, SamplerConfig(index="auto", device="cpu"))
    strat = screen.ScreenedStrategy(ts, log_pi)
    x = torch.as_tensor(rng.standard_normal((b, d)) * scale, dtype=F64)  # centred coordinates
    eps = torch.as_tensor(rng.standard_normal((b, m, d)), dtype=F64)
    batch = strat.begin(sigma * eps)
    a, c, _ = logit_scales(t)
    static = strat.log_pi - c * ts.sq_norms
    x_norm = torch.linalg.vector_norm(x, dim=1)
    magnitude = float(static[torch.isfinite(static)].abs().max()) + a * (x_norm * ts.norm_max + batch.fast_abs)
    keep = strat._screen(x, batch, a, static, x_norm, magnitude)
    slack = strat.slack(a, x_norm, magnitude, batch)
    rows = torch.add(static.to(torch.float32), x.to(torch.float32) @ ts.points32_t.T, alpha=a)
    p = sigma * eps @ ts.points.T  # (B, M, N) float64
    fast = torch.zeros(b, m, n) if batch.fast is None else batch.fast
    exact = static + a * ((x @ ts.points.T)[:, None, :] + p)
    approx = torch.add(rows[:, None, :], fast, alpha=a).to(F64)
    finite = torch.isfinite(exact)
    err = torch.where(finite, (approx - exact).abs(), 0.0).amax((1, 2))
    assert bool((err <= slack).all()), f"float32 logit error {err.max():.3g} above the bound"
    y = x[:, None, :] + sigma * eps
    w = torch.stack([blend_weights(y[i], t, ts.points, strat.log_pi) for i in range(b)])  # (B, M, N)
    needed = (w >= 1e-30).any(1)
    assert bool((keep | ~needed).all()), "a point with weight >= 1e-30 was screened out"
    assert not bool((keep & ~torch.isfinite(strat.log_pi)).any()), "a zero-weight point was kept"


@pytest.mark.parametrize("route", ["default", "one-sample groups", "all over N"])
@pytest.mark.parametrize("name,sigma,draws,start", [("digits", 0.5, 8, 0.0), ("digits", 0.0, 1, 0.0),
                                                    ("mnist", 1.0, 4, 0.5), ("moons:n=400", 0.1, 4, 0.0)])
def test_screened_steps_equal_dense_reference(fast_path, monkeypatch, name, sigma, draws, start, route):
    """Screened steps drop only weights below 1e-30: samples and sources equal the dense path to
    float64 rounding, on every route."""
    if route == "one-sample groups":
        monkeypatch.setattr(screen, "GATHER_VALUES", 16)
    if route == "all over N":
        monkeypatch.setattr(screen.ScreenedStrategy, "gather_fraction", 0.0)
    ds = load(name)
    cfg = SamplerConfig(n_samples=6, sigma=sigma, draws=draws, steps=12, start=start, seed=5)
    fast, exact = sample(ds, cfg.replace(index="auto")), sample(ds, cfg.replace(index="exact"))
    np.testing.assert_allclose(fast.samples, exact.samples, rtol=0, atol=1e-10)
    np.testing.assert_allclose(source_matrix(fast, ds.n), source_matrix(exact, ds.n), rtol=0, atol=1e-10)
    assert fast.truncation_bound.max() <= 2 * ds.n * 1e-30  # the dropped mass, reported


def test_late_steps_gather_few_survivors(fast_path, monkeypatch):
    """On MNIST the last steps keep far fewer survivors than N (what makes the path fast)."""
    seen = []
    orig = screen.ScreenedStrategy._gathered

    def spy(self, x, batch, keep, counts, rows, *rest):
        seen.append(int(counts[rows].max()))
        return orig(self, x, batch, keep, counts, rows, *rest)

    monkeypatch.setattr(screen.ScreenedStrategy, "_gathered", spy)
    ds = load("mnist")
    sample(ds, SamplerConfig(n_samples=4, sigma=1.0, draws=4, steps=20, seed=1))
    assert seen and seen[-1] < ds.n / 20


def test_zero_weight_points_never_blend_on_fast_path(fast_path):
    ds = load("digits")
    w = np.ones(ds.n)
    w[: ds.n // 2] = 0.0
    res = sample(ds, SamplerConfig(n_samples=6, sigma=0.5, draws=4, steps=15, seed=0), weights=w)
    assert (res.source_ids[res.source_ids >= 0] >= ds.n // 2).all()
    assert math.isfinite(float(res.samples.sum()))


def test_screen_off_when_float32_products_are_reduced_precision(fast_path):
    """With TF32-like matmul precision the screen's bound would not hold: the float64 path is used."""
    ts = prepare(np.random.default_rng(0).random((50, 4)), SamplerConfig(index="auto", device="cpu"))
    lp = normalise_log_weights(None, 50)
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        assert type(factory.make_strategy(ts, lp)) is strategies.FactorisedStrategy
    finally:
        torch.set_float32_matmul_precision(before)
    assert type(factory.make_strategy(ts, lp)) is screen.ScreenedStrategy


PROBE = """
import ctypes
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
def mmapped(nbytes):  # is a fresh block of this size served by its own mmap?
    before = libc.mallinfo2().hblks
    block = libc.malloc(nbytes)
    after = libc.mallinfo2().hblks
    libc.free(block)
    return after > before
from cdm_core import runtime
print(mmapped(4 << 20), runtime.adapt_allocator(), mmapped(4 << 20), mmapped(64 << 20))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc is what this adapts")
def test_adapt_allocator_serves_megabyte_blocks_from_the_heap_in_a_fresh_process():
    """A fresh process maps each 4 MiB block afresh (a page fault per 4 KiB on every step); after
    adapt_allocator such blocks come from the heap, as glibc's own adaptation would place them, and
    blocks above 32 MiB are still mapped (nothing configured)."""
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True", "False", "True"]


def test_adapt_allocator_is_harmless_without_glibc(monkeypatch):
    import ctypes

    from cdm_core import runtime
    monkeypatch.setattr(runtime, "_adapted", None)

    def missing(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", missing)
    assert runtime.adapt_allocator() is False
    monkeypatch.setattr(runtime, "_adapted", None)
    monkeypatch.setattr(runtime.sys, "platform", "darwin")
    assert runtime.adapt_allocator() is False


@pytest.mark.parametrize("scale,sigma,steps", [(1e-12, 0.1, 15), (1e-22, 0.1, 15), (1e20, 0.0, 5),
                                               (1e20, 0.0, 15), (1e16, 0.05, 15)])
def test_extreme_scales_on_fast_path(fast_path, scale, sigma, steps):
    """Values whose products overflow (or nearly underflow) float32 still sample correctly: such
    samples take the float64 route."""
    pts = load("moons:n=300").points.astype(np.float64) * scale
    cfg = SamplerConfig(n_samples=6, sigma=sigma * scale, draws=4, steps=steps, seed=1)
    fast, exact = sample(pts, cfg), sample(pts, cfg.replace(index="exact"))
    assert np.isfinite(fast.samples).all()
    np.testing.assert_allclose(fast.samples, exact.samples, rtol=0, atol=1e-9 * scale)


def test_projection_beyond_float32_range_takes_the_float64_route(fast_path):
    """Points of scale 1e24 with sigma 1e15: sigma eps . x_i overflows float32 although the screened
    logits (a tiny) would not. Such a sample must leave the screen, not lose its weights (an
    earlier version collapsed every sample onto one point here, reporting a bound of 1e-27)."""
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((400, 24)) * 1e24).astype(np.float32)
    cfg = SamplerConfig(n_samples=4, sigma=1e15, draws=4, steps=10, start=1e-9, seed=1)
    auto, exact = sample(data, cfg.replace(index="auto")), sample(data, cfg.replace(index="exact"))
    assert np.abs(auto.samples - exact.samples).max() <= 1e-9 * 1e24
    np.testing.assert_array_equal(auto.source_ids[:, 0], exact.source_ids[:, 0])
    ts = prepare(data, cfg)
    batch = screen.ScreenedStrategy(ts, normalise_log_weights(None, 400)).begin(
        torch.full((2, 4, 24), 1e15, dtype=torch.float64))
    assert bool(torch.isinf(batch.fast).any()) and bool(torch.isinf(batch.fast_abs).all())


def test_a_screen_that_keeps_nothing_is_not_trusted(fast_path, monkeypatch):
    """The screen always keeps each draw's maximum; if it ever returned no survivor for a sample,
    that sample takes the float64 route over all N points instead of a softmax over nothing."""
    ds = load("digits")
    cfg = SamplerConfig(n_samples=6, sigma=0.5, draws=4, steps=12, seed=2)
    exact = sample(ds, cfg.replace(index="exact"))
    monkeypatch.setattr(screen.ScreenedStrategy, "_screen",
                        lambda self, x, draws, a, static, x_norm, magnitude, which=None:
                        torch.zeros(len(which), self.n, dtype=torch.bool))
    auto = sample(ds, cfg)
    assert np.abs(auto.samples - exact.samples).max() < 1e-12
    assert auto.dense_fraction == 1.0
