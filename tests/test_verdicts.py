"""Words and counts that agree with the exact sources (the audit's "near-copy" case) and that
never count numerical dust as signal (analysis/metrics.py, analysis/dust.py)."""

import numpy as np
import pytest

from cdm_core import SamplerConfig, load, sample
from cdm_core.analysis import dust, metrics
from cdm_core.analysis.sweep import sweep


@pytest.fixture(scope="module")
def moons():
    return load("moons")


def test_a_copy_is_made_of_its_nearest_item(moons):
    """Moons, sigma 0.5 (the audit: 'near-copies' whose nearest item carried no weight): every
    sample called a copy carries >= 0.99 on one item, and that item is its nearest."""
    res = sample(moons, SamplerConfig(n_samples=128, sigma=0.5, draws=4, steps=100))
    copy = metrics.is_copy(res)
    assert (res.source_weights[copy, 0] >= metrics.COPY_WEIGHT).all()
    for i in np.flatnonzero(copy):
        main = res.source_ids[i, 0]
        assert np.linalg.norm(res.samples[i] - moons.points[main]) <= res.nn_dist[i, 0] * (1 + 1e-9) + 1e-12
    # a sample whose nearest item is not among its sources is never a copy
    assert not (copy & metrics.nearest_not_a_source(res)).any()
    # the distance criterion alone calls some of them memorised: the two verdicts differ here
    memorised = metrics.nn_ratio(res.nn_dist) < metrics.COPY_RATIO
    assert (memorised & ~copy).any()


def test_the_copy_curve_falls_with_sigma(moons):
    """The audit: the old distance-only 'near-copy' curve on moons never fell below 5-15% and was
    not monotone. Copies by exact sources fall from most samples at sigma = 0 (400 steps: the
    last step is close enough to t = 1 for the exact model to settle on one item) to none."""
    rows = sweep(moons, SamplerConfig(n_samples=64, draws=4, steps=400), [0.0, 0.05, 0.25, 1.0])
    frac = [r["copy_fraction"] for r in rows]
    assert frac[0] >= 0.8
    assert all(a >= b for a, b in zip(frac, frac[1:])), frac
    assert frac[-1] == 0.0


def test_sigma_zero_copies_are_copies_by_both_verdicts(moons):
    res = sample(moons, SamplerConfig(n_samples=32, sigma=0.0, steps=2000))
    assert metrics.is_copy(res).all()
    m = metrics.set_metrics(res, moons.points)
    assert m.copy_fraction == 1.0 and m.memorised_fraction == 1.0


def test_dust_is_not_a_source_and_small_numbers_print_in_scientific_notation():
    w = np.array([0.5, 1e-27, 1e-6, 9.99e-7])
    assert dust.is_source(w).tolist() == [True, False, True, False]
    assert dust.fmt(1e-27) == "1.00e-27" and dust.fmt(0.25) == "0.25" and dust.fmt(0) == "0"
    assert "0.0000" not in dust.fmt(3.2e-9)
    # the length threshold does not move with the data's placement
    pts = np.random.default_rng(0).standard_normal((50, 3))
    assert dust.length_dust(pts + 1e6) == pytest.approx(dust.length_dust(pts), rel=1e-9)


def test_users_of_an_item_ignore_dust_weights():
    from types import SimpleNamespace

    from ui.verdicts import users_of
    res = SimpleNamespace(source_ids=np.array([[3, 5], [5, 3], [3, -1]]),
                          source_weights=np.array([[1 - 1e-27, 1e-27], [0.6, 0.4], [1.0, 0.0]]))
    assert users_of(res, 5)["sample"].tolist() == [1]
    assert sorted(users_of(res, 3)["sample"].tolist()) == [0, 1, 2]


def test_the_sources_verdict_names_both_criteria(moons):
    from ui.verdicts import verdict
    res = sample(moons, SamplerConfig(n_samples=64, sigma=0.5, draws=4, steps=100))
    for i in range(len(res.samples)):
        text = verdict(res, i)
        assert "Distance criterion" in text and "d1/d2 < 1/3" in text
        assert ("**Copy**" in text) == bool(metrics.is_copy(res)[i])
        if metrics.nearest_not_a_source(res)[i]:
            assert "not made of" in text


def test_a_copy_of_an_item_stored_twice_is_a_copy():
    """The audit's counterexample: items 0-19 of 40 duplicated, sigma 0, 400 steps. Every sample
    lands on an item; those stored twice split their weight 0.5 / 0.5 between the rows and were
    called 'new blends' (copy fraction 0.34 where it is 1)."""
    from ui.verdicts import verdict
    rng = np.random.default_rng(4)
    base = rng.standard_normal((40, 2)) * 3
    pts = np.concatenate([base, base[:20]])
    res = sample(pts, SamplerConfig(n_samples=100, sigma=0.0, steps=400, device="cpu"))
    assert np.allclose(res.nn_dist[:, 0], 0, atol=1e-9)
    assert metrics.is_copy(res).all()
    dup = [i for i in range(100) if res.nn_ids[i, 0] % 40 < 20]
    assert dup and all("stored 2 times" in verdict(res, i) for i in dup)
