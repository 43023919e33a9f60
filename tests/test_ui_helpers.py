"""Logic moved out of the pages: selection parsing, patch masks, map edges, upload bundling."""

from types import SimpleNamespace

import numpy as np

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
