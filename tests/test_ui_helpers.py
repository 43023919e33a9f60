"""Logic moved out of the pages: selection parsing, patch masks, map edges, upload bundling."""

from types import SimpleNamespace

import numpy as np
import pytest

from cdm_core.analysis.embedding import Embedding, MapConfig, source_edges
from cdm_core.report import figures
from ui.selection import selected_points


def test_selected_points_reads_dict_and_attribute_events():
    pts = [{"curve_number": 1, "customdata": [4, "x"]}, {"curve_number": 0, "customdata": 7},
           {"curve_number": 1, "customdata": None}, {"curve_number": 2}]
    assert selected_points({"selection": {"points": pts}}) == [(1, 4), (0, 7)]
    assert selected_points(SimpleNamespace(selection=SimpleNamespace(points=pts))) == [(1, 4), (0, 7)]
    assert selected_points(None) == [] and selected_points({"selection": {}}) == []


def test_patch_mask_is_clipped_and_covers_channels():
    m = figures.patch_mask((5, 6, 3), 0, 5, 1).reshape(5, 6, 3)
    assert m.sum() == 2 * 2 * 3  # rows 0-1, columns 4-5, three channels
    assert m[0, 5].tolist() == [1, 1, 1] and m[2, 5].sum() == 0
    img = figures.outlined_patch(np.zeros(30), (5, 6), 2, 2, 1, scale=4)
    assert img.size == (24, 20) and img.getpixel((4, 4)) != img.getpixel((0, 0))


def test_source_edges_skip_unmapped_sources():
    emb = Embedding(ids=np.array([0, 2]), positions=np.array([[0.0, 0.0], [1.0, 1.0]], np.float32),
                    config=MapConfig(method="pca"), content_hash="x", from_cache=False)
    ids = np.array([[2, 0, 5, -1]])
    w = np.array([[0.5, 0.3, 0.2, 0.0]])
    (pos, src, weights), = source_edges(emb, np.array([[0.5, 0.5]]), ids, w, [0, 3])
    assert pos.tolist() == [0.5, 0.5] and weights.tolist() == [0.5, 0.3]
    assert src.tolist() == [[1.0, 1.0], [0.0, 0.0]]


# ---------------------------------------------------------------- steady axis ranges (Generate)
def _ranges(train, samples):
    import plotly.graph_objects as go
    fig = figures.steady_ranges(go.Figure(), train, samples)
    return tuple(fig.layout.xaxis.range), tuple(fig.layout.yaxis.range)


@pytest.mark.parametrize("offset,scale", [(0.0, 1.0), (1e4, 1.0), (0.0, 1e-3), (-50.0, 200.0)])
def test_steady_ranges_cover_every_point_and_hold_under_small_moves(offset, scale):
    rng = np.random.default_rng(0)
    train = offset + scale * rng.normal(size=(300, 2))
    samples = offset + scale * rng.normal(size=(64, 2)) * 0.5
    (x0, x1), (y0, y1) = _ranges(train, samples)
    both = np.concatenate([train, samples])
    assert x0 < both[:, 0].min() and x1 > both[:, 0].max() and y0 < both[:, 1].min() and y1 > both[:, 1].max()
    assert x1 - x0 < 3 * np.ptp(both[:, 0])  # padded, not blown up
    nudged = samples + 1e-4 * scale * rng.normal(size=samples.shape)  # a σ step moves samples a little
    assert _ranges(train, nudged) == ((x0, x1), (y0, y1))
    far = samples.copy()
    far[0] = [x1 + scale, y1 + scale]  # a sample that leaves the range widens it
    (fx0, fx1), (fy0, fy1) = _ranges(train, far)
    assert fx1 > far[0, 0] and fy1 > far[0, 1]


def test_steady_ranges_of_flat_duplicated_or_non_finite_points():
    train = np.ones((50, 2))  # every training point the same
    samples = np.array([[1.0, 1.0], [np.nan, 2.0], [1.5, np.inf]])
    (x0, x1), (y0, y1) = _ranges(train, samples)
    assert x0 < 1.0 < x1 and y0 < 1.0 < y1 and np.isfinite([x0, x1, y0, y1]).all()
