"""Embedding cache, sample placement, and the memorisation sweep."""

import numpy as np
import pytest

from cdm_core import SamplerConfig, load
from cdm_core.analysis.embedding import MapConfig, compute_map, knn_graph, place_by_sources
from cdm_core.analysis.sweep import sweep
from cdm_core.cli.main import main
from cdm_core.data.dataset import Dataset
from cdm_core.errors import CdmInputError


def test_map_is_cached_on_disk_and_keyed(tmp_path, monkeypatch):
    ds = load("moons:n=300")
    first = compute_map(ds, MapConfig(method="pca"), cache_dir=tmp_path)
    second = compute_map(ds, MapConfig(method="pca"), cache_dir=tmp_path)
    assert not first.from_cache and second.from_cache
    np.testing.assert_array_equal(first.positions, second.positions)
    assert not compute_map(load("moons:n=301"), MapConfig(method="pca"), cache_dir=tmp_path).from_cache
    assert not compute_map(ds, MapConfig(method="pca", seed=1), cache_dir=tmp_path).from_cache


def test_umap_separates_digit_classes(tmp_path):
    ds = load("digits")
    emb = compute_map(ds, MapConfig(method="umap"), cache_dir=tmp_path)
    assert emb.positions.shape == (ds.n, 2) and np.isfinite(emb.positions).all()
    # quality threshold, not a golden number: most points' nearest map neighbour shares the label
    from cdm_core.engine.neighbours import FlatIndex
    _, nn = FlatIndex(emb.positions).search(emb.positions, 2)
    agree = np.mean(ds.labels[nn[:, 1]] == ds.labels)
    assert agree > 0.85


def test_large_sets_use_a_fixed_subset_and_knn_graph(tmp_path):
    ds = load("mnist")
    emb = compute_map(ds, MapConfig(method="umap", max_points=4500, pca_dims=30), cache_dir=tmp_path)
    assert len(emb.ids) == 4500 and len(np.unique(emb.ids)) == 4500 and emb.ids.max() < ds.n


def test_knn_graph_puts_self_first_even_with_duplicates():
    x = np.repeat(np.arange(5, dtype=np.float32)[:, None], 3, axis=0)
    ids, dist = knn_graph(x, 4)
    assert np.all(ids[:, 0] == np.arange(len(x))) and np.all(dist[:, 0] == 0)


def test_samples_placed_at_weighted_source_positions(tmp_path):
    ds = load("moons:n=200")
    emb = compute_map(ds, MapConfig(method="pca"), cache_dir=tmp_path)
    pos = place_by_sources(emb, np.array([[0, 1, -1]]), np.array([[0.25, 0.75, 0.0]]))
    table = emb.position_of()
    np.testing.assert_allclose(pos[0], 0.25 * table[0] + 0.75 * table[1], rtol=1e-6)


def test_map_corner_cases(tmp_path):
    for pts in (np.zeros((5, 3), np.float32), np.random.default_rng(0).random((3, 2)).astype(np.float32)):
        emb = compute_map(Dataset(name="tiny", points=pts), MapConfig(method="umap"), cache_dir=tmp_path)
        assert np.isfinite(emb.positions).all()
    with pytest.raises(CdmInputError):
        MapConfig(method="tsne")


def test_sweep_near_copies_fall_with_sigma():
    ds = load("moons:n=200")
    rows = sweep(ds, SamplerConfig(n_samples=32, draws=4, steps=300, index="exact"), [0.0, 0.1, 0.3])
    frac = [r["copy_fraction"] for r in rows]
    assert frac[0] > 0.9
    assert frac[2] < frac[0] and frac[2] <= frac[1] + 0.1
    assert rows[2]["mean_effective_sources"] > rows[0]["mean_effective_sources"]


def test_sweep_cli(tmp_path, capsys):
    out = tmp_path / "s.csv"
    assert main(["sweep", "--data", "moons:n=200", "--n", "8", "--steps", "20", "--sigmas", "0,0.2",
                 "--draws-list", "1,2", "--out", str(out)]) == 0
    lines = out.read_text().strip().splitlines()
    assert lines[0].startswith("sigma,draws,start,copy_fraction") and len(lines) == 5
    assert main(["sweep", "--data", "moons", "--sigmas", "0,abc", "--out", str(out)]) == 2
    assert main(["sweep", "--data", "moons", "--sigmas", "0,-1", "--out", str(out)]) == 2
    assert "sigma" in capsys.readouterr().err


def test_sweep_over_seeds_gives_means_and_standard_deviations():
    ds = load("moons:n=300")
    base = SamplerConfig(n_samples=16, draws=4, steps=30, seed=5)
    rows = sweep(ds, base, [0.05, 0.2], seeds=3)
    singles = [sweep(ds, base.replace(seed=5 + r), [0.05, 0.2]) for r in range(3)]
    for k, row in enumerate(rows):
        vals = [s[k]["mean_effective_sources"] for s in singles]
        assert row["seeds"] == 3
        assert row["mean_effective_sources"] == pytest.approx(np.mean(vals), rel=1e-12)
        assert row["mean_effective_sources_sd"] == pytest.approx(np.std(vals, ddof=1), rel=1e-9)
    assert rows[1]["diversity_sd"] > 0
    assert sweep(ds, base, [0.1])[0]["diversity_sd"] == 0.0
    with pytest.raises(CdmInputError, match="seeds"):
        sweep(ds, base, [0.1], seeds=0)


def test_placement_by_top_source_and_source_spread():
    from cdm_core.analysis.embedding import Embedding, place_by_top_source, source_spread
    pos = np.array([[0, 0], [10, 0], [0.1, 0]], np.float32)
    emb = Embedding(ids=np.arange(3), positions=pos, config=MapConfig(method="pca"), content_hash="x", from_cache=False)
    ids = np.array([[0, 1], [0, 2]])
    w = np.array([[0.4, 0.6], [0.5, 0.5]])
    top = place_by_top_source(emb, ids, w)
    np.testing.assert_allclose(top, [[10, 0], [0, 0]])  # the heavier source's place (ties: the first)
    mean = place_by_sources(emb, ids, w)
    spread = source_spread(emb, mean, ids, w)
    assert spread[0] > 0.4 and spread[1] < 0.01  # far-apart sources vs neighbours


@pytest.mark.parametrize("maker", ["strip", "sweep"])
def test_the_first_row_of_panel_titles_fits_in_the_top_margin(maker):
    """A panel title of the top row sits above the plot area, in the figure's top margin: the
    margin must hold a line of it (the strip of samples at each σ had 10 px and cut its first row
    of titles in half)."""
    from cdm_core.report import figures
    rng = np.random.default_rng(0)
    if maker == "strip":
        fig = figures.strip_scatter(rng.normal(size=(50, 2)), [rng.normal(size=(8, 2))] * 4, [0.0, 0.1, 0.2, 0.3])
    else:
        rows = [{"sigma": s, "draws": 4, "start": 0.0, "copy_fraction": 0.5, "memorised_fraction": 0.5,
                 "mean_effective_sources": 2.0, "diversity": 1.0} for s in (0.0, 0.5)]
        fig = figures.sweep_figure(rows)
    top_titles = [a for a in fig.layout.annotations if a.yref == "paper" and a.y >= 0.99]
    assert top_titles
    size = max(a.font.size or fig.layout.font.size for a in top_titles)
    assert fig.layout.margin.t >= 1.4 * size, (fig.layout.margin.t, size)
