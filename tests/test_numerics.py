"""Numbers that do not depend on where the data sit, how they are scaled or rotated, on duplicate
points, or on the batch: property tests over every index (docs/numerics.md).

- every index agrees with the float64 dense reference (`exact`) to 1e-6 of the data's spread
  (truncated indexes by their certified bound or by falling back to the dense computation);
- translating the data translates the samples (the engine centres them);
- sample i is the same whatever the batch size or the number of samples asked for;
- the sources reproduce every sample, however wide its blend (one Euler step: the mean of all).
"""

import numpy as np
import pytest
from conftest import source_matrix
from hypothesis import given, settings, strategies as st

from cdm_core import SamplerConfig, sample
from cdm_core.engine import strategies

INDEXES = ["auto", "auto-screened", "flat", "torch", "ivf"]


def run(points, cfg, index):
    with pytest.MonkeyPatch.context() as mp:
        if index == "auto-screened":  # the large-set path, on a small set
            mp.setattr(strategies, "SCREEN_MIN_VALUES", 0)
            index = "auto"
        return sample(points, cfg.replace(index=index, nlist=8 if index == "ivf" else 0, nprobe=3))


def spread(points) -> float:
    return float(np.sqrt(((points - points.mean(0)) ** 2).sum(1).mean()))


def make_points(seed, n, d, offset, scale, rotate, dups):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, d)
    base[: n // 3] += 3.0  # two clusters
    if dups:
        base[n // 2:] = base[: n - n // 2]
    if rotate:
        q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        base = base @ q
    # datasets hold float32 values: use exactly those, so float64 references see the same data
    return (base * scale + offset * scale).astype(np.float32).astype(np.float64)


data = dict(seed=st.integers(0, 10_000), d=st.integers(2, 6), offset=st.sampled_from([0.0, 1.0, 1e2, 1e4]),
            scale=st.sampled_from([1e-3, 1.0, 1e3]), rotate=st.booleans(), dups=st.booleans())


@settings(max_examples=20, deadline=None)
@given(index=st.sampled_from(INDEXES), sigma=st.sampled_from([0.0, 0.1, 0.5]), start=st.sampled_from([0.0, 0.5]),
       **data)
def test_every_index_agrees_with_exact(index, sigma, start, seed, d, offset, scale, rotate, dups):
    pts = make_points(seed, 150, d, offset, scale, rotate, dups)
    s = spread(pts)
    cfg = SamplerConfig(n_samples=6, sigma=sigma * s, draws=3, steps=8, start=start, seed=seed, neighbours=16)
    exact = sample(pts, cfg.replace(index="exact"))
    got = run(pts, cfg, index)
    assert np.abs(got.samples - exact.samples).max() <= 1e-6 * s
    assert got.truncation_bound.max() <= cfg.truncation_tol
    # sources reproduce the samples, in the data's own units
    rebuilt = source_matrix(got, len(pts)) @ pts
    assert np.abs(rebuilt - got.samples).max() <= 1e-9 * s


@settings(max_examples=15, deadline=None)
@given(index=st.sampled_from(["exact"] + INDEXES), offset=st.sampled_from([1.0, 1e2, 1e4]),
       seed=st.integers(0, 10_000), d=st.integers(2, 5))
def test_translating_the_data_translates_the_samples(index, offset, seed, d):
    pts = make_points(seed, 120, d, 0.0, 1.0, False, False)
    pts = np.round(pts * 256) / 256  # shifted by a whole number, the points stay exact in float32
    cfg = SamplerConfig(n_samples=5, sigma=0.3, draws=3, steps=8, start=0.5, seed=seed, neighbours=16)
    shift = np.full(d, offset)
    here, there = run(pts, cfg, index), run(pts + shift, cfg, index)
    np.testing.assert_allclose(there.samples - shift, here.samples, rtol=0, atol=1e-9 * max(1.0, offset * 1e-3))
    np.testing.assert_array_equal(there.nn_ids, here.nn_ids)


@settings(max_examples=15, deadline=None)
@given(index=st.sampled_from(["exact"] + INDEXES), batch=st.integers(1, 7), n=st.integers(1, 9), **data)
def test_samples_do_not_depend_on_the_batch(index, batch, n, seed, d, offset, scale, rotate, dups):
    pts = make_points(seed, 150, d, offset, scale, rotate, dups)
    s = spread(pts)
    cfg = SamplerConfig(n_samples=9, sigma=0.2 * s, draws=3, steps=8, seed=seed, neighbours=16)
    full = run(pts, cfg, index)
    part = run(pts, cfg.replace(n_samples=n, batch_size=batch), index)
    np.testing.assert_allclose(part.samples, full.samples[:n], rtol=0, atol=1e-12 * max(s, np.abs(pts).max()))
    np.testing.assert_allclose(source_matrix(part, len(pts)), source_matrix(full, len(pts))[:n], rtol=0, atol=1e-12)


@pytest.mark.parametrize("index", ["exact"] + INDEXES)
def test_sources_reproduce_the_widest_blend(index):
    """One Euler step lands on D_sigma at t = 0: the mean of all N points. Every point is a source."""
    pts = make_points(3, 5000, 3, 1e3, 1.0, False, True)
    res = run(pts, SamplerConfig(n_samples=3, sigma=0.5, draws=2, steps=1), index)
    w = source_matrix(res, len(pts))
    assert (w > 0).sum(1).min() == len(pts)
    np.testing.assert_allclose(w @ pts, res.samples, rtol=0, atol=1e-9)
    np.testing.assert_allclose(res.samples, np.broadcast_to(pts.mean(0), res.samples.shape), rtol=0, atol=1e-9)


def finite_difference(points, cfg, j, h=1e-4):
    wp, wm = np.ones(len(points)), np.ones(len(points))
    wp[j], wm[j] = np.exp(h), np.exp(-h)
    return (sample(points, cfg, weights=wp).samples - sample(points, cfg, weights=wm).samples) / (2 * h)


@settings(max_examples=12, deadline=None)
@given(index=st.sampled_from(["exact", "auto", "flat", "torch"]), offset=st.sampled_from([0.0, 1e3]),
       scale=st.sampled_from([1e-2, 1.0, 1e2]), seed=st.integers(0, 1000))
def test_jacobian_equals_finite_differences(index, offset, scale, seed):
    """J = d sample / d log pi_j against central differences of the sampler itself, wherever the
    data sit; truncated indexes with the fallback off (the truncated sampler is what J differentiates)."""
    from cdm_core.analysis.sensitivity import jacobian
    pts = make_points(seed, 80, 2, offset, scale, False, False)
    s = spread(pts)
    cfg = SamplerConfig(n_samples=4, sigma=0.2 * s, draws=2, steps=6, seed=seed, index=index, neighbours=16,
                        truncation_tol=1.0 if index in ("flat", "torch") else 1e-6)
    base = sample(pts, cfg)
    j = int(base.source_ids[0, 0])
    jac, _ = jacobian(pts, cfg, [j])
    fd = finite_difference(pts, cfg, j)
    assert np.abs(fd - jac[:, 0]).max() <= 1e-4 * np.abs(fd).max() + 1e-7 * s


def test_jacobian_is_exact_beyond_four_thousand_points():
    """Sensitivity with index exact used to keep only the top 4096 weights: with 20,000 points,
    sigma 0 and 2 steps (the first step blends every point) it was entirely off."""
    from cdm_core import load
    from cdm_core.analysis.sensitivity import jacobian
    ds = load("moons:n=20000")
    cfg = SamplerConfig(n_samples=4, sigma=0.0, steps=2, index="exact", seed=3)
    base = sample(ds, cfg)
    ids = np.unique(np.r_[base.source_ids[:, 0], base.nn_ids[:, 1]])[:4]
    jac, _ = jacobian(ds, cfg, ids)
    auto, _ = jacobian(ds, cfg.replace(index="auto"), ids)
    np.testing.assert_allclose(jac, auto, rtol=0, atol=1e-12)
    for c, j in enumerate(ids):
        fd = finite_difference(ds.points, cfg, j)
        assert np.abs(fd - jac[:, c]).max() <= 1e-4 * max(np.abs(fd).max(), 1e-8) + 1e-9


@pytest.mark.parametrize("index", ["exact", "auto", "flat"])
def test_memorised_samples_are_at_distance_zero(index):
    """sigma = 0: every sample is a training point, and its reported nearest distance is 0 to float64
    rounding (not the ~1e-8 of a |q|^2 - 2 q.x + |x|^2 distance), on data far from the origin too."""
    pts = np.repeat(make_points(4, 75, 16, 1e3, 1.0, False, False), 40, axis=0)  # ties the search cannot settle
    res = run(pts, SamplerConfig(n_samples=8, sigma=0.0, steps=12), index)
    assert res.nn_dist[:, 0].max() <= 1e-12 * spread(pts)
    np.testing.assert_allclose(pts[res.nn_ids[:, 0]], res.samples, rtol=0, atol=1e-9)


@pytest.mark.parametrize("index", ["exact", "auto", "flat"])
def test_trajectories_translate_with_the_data(index):
    """The state at time t moves by t o when the data move by o (x_t = t x_1 + (1 - t) x_0): the whole
    trajectory, not only its end, is returned in the data's own coordinates."""
    pts = np.round(make_points(2, 200, 3, 0.0, 1.0, False, False) * 256) / 256
    cfg = SamplerConfig(n_samples=4, sigma=0.3, draws=2, steps=6, start=0.0, trajectory=True, neighbours=16)
    shift = np.array([100.0, -50.0, 25.0])
    here, there = run(pts, cfg, index), run(pts + shift, cfg, index)
    times = np.linspace(0.0, 1.0, cfg.steps + 1)
    expected = np.broadcast_to(times[:, None, None] * shift, here.trajectory.shape)
    np.testing.assert_allclose(there.trajectory - here.trajectory, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(here.trajectory[0], run(pts, cfg.replace(steps=1), index).trajectory[0], atol=0)


def test_preparing_float64_data_leaves_them_unchanged():
    from cdm_core.data.dataset import Dataset
    pts = make_points(1, 100, 3, 1e3, 1.0, False, False)
    ds = Dataset(name="f64", points=pts.copy())
    sample(ds, SamplerConfig(n_samples=2, steps=3, index="exact"))
    np.testing.assert_array_equal(ds.points, pts)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), index=st.sampled_from(["flat", "torch", "ivf"]), k=st.integers(1, 30),
       n_excluded=st.integers(0, 60), offset=st.sampled_from([0.0, 1e3]))
def test_certified_search_lower_bound_holds_with_exclusions(seed, index, k, n_excluded, offset):
    """Every eligible point a search did not return is at least `lower` away (squared), for every index,
    with excluded (zero-weight) points and data far from the origin."""
    from cdm_core.engine.neighbours import build_index
    rng = np.random.default_rng(seed)
    pts = (rng.standard_normal((300, 4)) + offset).astype(np.float32)
    pts64 = pts.astype(np.float64) - pts.astype(np.float64).mean(0)
    idx = build_index(pts64.astype(np.float32), index, nlist=12, nprobe=3)
    q = rng.standard_normal((10, 4)) * 2
    excluded = rng.choice(300, n_excluded, replace=False) if n_excluded else None
    ids, lower = idx.certified_search(q, k, exclude=excluded)
    true = ((q[:, None, :] - pts64[None]) ** 2).sum(-1)
    for r in range(len(q)):
        omitted = np.setdiff1d(np.arange(300), ids[r][ids[r] >= 0])
        if excluded is not None:
            omitted = np.setdiff1d(omitted, excluded)
        if len(omitted):
            assert true[r, omitted].min() >= lower[r] - 1e-9, (r, true[r, omitted].min(), lower[r])


def test_ivf_refuses_magnitudes_its_clustering_cannot_hold():
    from cdm_core.errors import CdmInputError
    pts = make_points(0, 300, 3, 0.0, 1e20, False, False)
    with pytest.raises(CdmInputError, match="too large"):
        sample(pts, SamplerConfig(n_samples=2, steps=3, index="ivf"))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                          st.sampled_from([1e-30, np.nextafter(1e-30, 0), np.nextafter(1e-30, 1), 0.0, -0.0, 5e-324])),
                min_size=1, max_size=64))
def test_the_in_place_flush_is_the_flush(values):
    """`flush_tiny_` (two in-place passes, used on every softmax block) zeroes exactly what
    `flush_tiny` zeroes: below 1e-30, negative and NaN; 1e-30 itself and everything above are kept."""
    import torch

    from cdm_core.engine.blend import flush_tiny, flush_tiny_
    w = torch.tensor(values, dtype=torch.float64)
    assert torch.equal(flush_tiny_(w.clone()), flush_tiny(w))
