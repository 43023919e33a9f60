"""'What if we add these items': the actual change from re-sampling with added training items."""

import numpy as np
import pytest

from cdm_core import SamplerConfig
from cdm_core.analysis.additions import add_items
from cdm_core.data.dataset import Dataset
from cdm_core.data.registry import load
from cdm_core.errors import CdmInputError
from cdm_core.pipeline.run import sample

CFG = SamplerConfig(n_samples=24, sigma=0.1, draws=4, steps=40)


@pytest.fixture(scope="module")
def moons():
    return load("moons:n=400")


def test_far_away_items_are_never_blended_but_still_shift_the_early_drift(moons):
    """At t = 0 every item has the same blend weight, so even an item far from the data pulls every
    sample in the first steps; it never becomes a source. The result is exactly a re-sample."""
    far = moons.points[:3] + 1000.0
    add = add_items(moons, CFG, far)
    assert np.all(add.added_share < 1e-12) and all(s == [] for s in add.added_sources)
    grown = Dataset("grown", np.concatenate([moons.points, far]))
    np.testing.assert_allclose(add.actual, sample(grown, CFG).samples, atol=1e-12)
    assert add.moved.size > 0  # the early-time pull of the far items' weight


def test_adding_a_copy_of_a_source_moves_the_samples_that_use_it(moons):
    base = sample(moons, CFG)
    i = 0
    j = int(base.source_ids[i, np.argmax(base.source_weights[i])])
    add = add_items(moons, CFG, moons.points[j:j + 1] + 0.02, weight=5.0)
    assert i in add.moved and add.added_share[i] > 0.05 and add.added_sources[i] == [0]
    # exactly what sampling the extended set gives
    grown = Dataset("grown", np.concatenate([moons.points, moons.points[j:j + 1] + 0.02]))
    w = np.r_[np.ones(moons.n), 5.0]
    np.testing.assert_allclose(add.actual, sample(grown, CFG, weights=w).samples, atol=1e-12)
    np.testing.assert_allclose(add.original, base.samples, atol=0)
    # the sample that now blends the added item moves more than the median sample
    assert add.displacement[i] > np.median(add.displacement)


def test_bad_additions_are_one_line_errors(moons):
    for items, weight, words in ((np.zeros((2, 3)), 1.0, "3 values each"), (np.full((1, 2), np.nan), 1.0, "finite"),
                                 (np.zeros((1, 2)), 0.0, "positive"), (np.zeros((1, 2)), float("inf"), "positive")):
        with pytest.raises(CdmInputError, match=words) as e:
            add_items(moons, CFG, items, weight=weight)
        assert "\n" not in str(e.value)


def test_additions_in_latent_space_keep_the_autoencoder():
    digits = load("digits")
    cfg = SamplerConfig(n_samples=6, sigma=0.5, draws=3, steps=12, space="latent", latent_dim=8)
    base = sample(digits, cfg)
    j = int(base.source_ids[0, 0])
    add = add_items(digits, cfg, digits.points[j:j + 1], weight=3.0)
    assert add.actual.shape == (6, 64)
    np.testing.assert_allclose(add.original, base.samples, atol=0)
    assert add.added_share[0] > 0 and 0 in add.moved


def test_additions_need_start_time_zero(moons):
    with pytest.raises(CdmInputError, match="T = 0"):
        add_items(moons, CFG.replace(start=0.5), moons.points[:1])
