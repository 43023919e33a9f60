"""Samples from any model: nearest items and the criterion, the closest blend (non-negative,
summing to one), reproducing an analytic model's samples from their noise, the CLI and the page."""

import io

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from cdm_core import SamplerConfig, load, sample
from cdm_core.analysis.attribution import attribute, closest_blend
from cdm_core.cli.main import main
from cdm_core.errors import CdmInputError
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def digits():
    return load("digits")


def test_a_midpoint_of_two_items_is_explained_as_those_two_halves(digits):
    x = digits.points.astype(np.float64)
    pairs = np.random.default_rng(1).choice(digits.n, (20, 2), replace=False)
    mid = (x[pairs[:, 0]] + x[pairs[:, 1]]) / 2 + 1000.0  # offset data: the fit is done on differences
    shifted = digits.__class__(name="offset", points=x + 1000.0, image_shape=digits.image_shape)
    att = attribute(shifted, mid, k=256)
    for i, (a, b) in enumerate(pairs):
        assert set(att.blend_ids[i, :2]) == {a, b}
        np.testing.assert_allclose(att.blend_weights[i, :2], 0.5, atol=1e-6)
        assert att.blend_residual[i] < 1e-6
    assert (att.blend_weights >= 0).all() and np.allclose(att.blend_weights.sum(1), 1, atol=1e-12)
    assert not att.memorised.any()  # a midpoint is far from both items by the criterion


def test_an_item_itself_is_memorised_and_its_own_blend(digits):
    x = digits.points.astype(np.float64)
    att = attribute(digits, x[[5, 77]], k=16)
    assert att.memorised.all() and list(att.nn_ids[:, 0]) == [5, 77] and np.all(att.nn_dist[:, 0] == 0)
    assert np.allclose(att.blend_weights[:, 0], 1) and np.all(att.blend_residual < 1e-12)


def test_closest_blend_is_the_constrained_least_squares_optimum():
    rng = np.random.default_rng(3)
    items, x = rng.standard_normal((6, 10)), rng.standard_normal(10)
    w, res = closest_blend(x, items)
    assert (w >= 0).all() and np.isclose(w.sum(), 1)
    for _ in range(200):  # no feasible point on the simplex does better
        v = rng.dirichlet(np.ones(6))
        assert np.linalg.norm(x - v @ items) >= res - 1e-9


@pytest.mark.parametrize("model, extra", [("cfdm", {"sigma": 0.3, "draws": 4}), ("els", {"patch_schedule": "5"}),
                                          ("gaussian", {})])
def test_samples_of_an_analytic_model_are_reproduced_from_their_noise(digits, model, extra):
    cfg = SamplerConfig(n_samples=5, steps=10, model=model, trajectory=True, **extra)
    res = sample(digits, cfg)
    att = attribute(digits, res.samples, cfg.replace(trajectory=False), noise=res.trajectory[0])
    np.testing.assert_allclose(att.model_samples, res.samples, atol=1e-9)
    assert np.all(att.agreement_r > 1 - 1e-9) and np.all(att.agreement_r2 > 1 - 1e-9)
    other = attribute(digits, res.samples, SamplerConfig(steps=10), noise=np.random.default_rng(9).standard_normal(
        res.samples.shape))
    assert np.nanmedian(other.agreement_r) < 0.99  # unrelated noise does not reproduce them


def test_bad_samples_and_noise_are_one_line_errors(digits):
    x = digits.points[:3].astype(np.float64)
    with pytest.raises(CdmInputError, match="expected 64 values per sample"):
        attribute(digits, np.zeros((3, 10)))
    with pytest.raises(CdmInputError, match="NaN"):
        attribute(digits, np.where(np.arange(64) == 3, np.nan, x))
    with pytest.raises(CdmInputError, match="2 start states for 3 samples"):
        attribute(digits, x, noise=np.zeros((2, 64)))


def test_cli_attribute_with_and_without_noise(tmp_path, capsys, digits):
    cfg = SamplerConfig(n_samples=4, steps=10, model="ls", patch_schedule="3", trajectory=True)
    res = sample(digits, cfg)
    np.save(tmp_path / "s.npy", res.samples.reshape(4, 8, 8))  # images (n, H, W) are accepted too
    np.save(tmp_path / "z.npy", res.trajectory[0])
    out = tmp_path / "att.npz"
    code = main(["attribute", "--data", "digits", "--samples", str(tmp_path / "s.npy"), "--noise",
                 str(tmp_path / "z.npy"), "--model", "ls", "--patch-schedule", "3", "--steps", "10",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    z = np.load(out, allow_pickle=False)
    assert {"nn_ids", "nn_dist", "memorised", "blend_ids", "blend_weights", "blend_residual", "agreement_r",
            "agreement_r2"} <= set(z.files)
    assert np.all(z["agreement_r"] > 1 - 1e-9) and "median Pearson r 1.000" in err
    np.save(tmp_path / "bad.npy", np.zeros((4, 7)))
    code = main(["attribute", "--data", "digits", "--samples", str(tmp_path / "bad.npy"), "--out", str(out)])
    assert code == 2 and "expected 64 values per sample" in capsys.readouterr().err


def npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_attribute_page_takes_uploads_and_refuses_bad_ones(digits):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.query_params["data"] = "digits"
    at.switch_page("app_pages/attribute.py").run()
    assert not at.exception
    x = digits.points.astype(np.float64)
    at.file_uploader(key="w_att_samples").upload("mine.npy", npy(np.stack([(x[7] + x[8]) / 2, x[5]])),
                                                 "application/octet-stream").run()
    assert not at.exception and not [e.value for e in at.error]
    table = at.dataframe[0].value
    assert list(table["memorised (d1/d2 < 0.333)"]) == [False, True]
    assert table["blend residual"].max() < 1e-6
    assert any("#7" in m.value and "× 0.500" in m.value for m in at.markdown)
    at.file_uploader(key="w_att_samples").upload("wrong.npy", npy(np.zeros((3, 10))), "application/octet-stream").run()
    assert not at.exception
    assert any("have 10 values each; this data set has 64" in e.value for e in at.error)


def test_attribute_page_shows_the_map_position_and_exports_a_bundle_that_regenerates(digits, tmp_path, capsys):
    import zipfile
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.query_params["data"] = "digits"
    at.query_params["map"] = "pca"
    at.switch_page("app_pages/attribute.py").run()
    x = digits.points.astype(np.float64)
    at.file_uploader(key="w_att_samples").upload("mine.npy", npy(np.stack([(x[7] + x[8]) / 2, x[5], x[9]])),
                                                 "application/octet-stream").run()
    assert not at.exception and not [e.value for e in at.error]
    assert any("Map position" in h.value for h in at.subheader)
    assert any("closest blend's items" in c.value for c in at.caption)
    at.number_input(key="w_att_i").set_value(1).run()
    at.button(key="w_att_build").click().run()
    assert not at.exception and not [e.value for e in at.error]
    blob = at.session_state["att_zip"][0]
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        names = set(z.namelist())
        z.extractall(tmp_path / "bundle")
    assert {"attribution.csv", "attribution.svg", "attribution_map.pdf", "attribution_samples.npy", "data.npz",
            "manifest.json"} <= names
    first = np.load(tmp_path / "bundle" / "data.npz")
    assert int(first["attribution_sample"]) == 1 and first["attribution_memorised"].tolist() == [False, True, True]
    # the bundle regenerates on its own, the samples travelling with it
    code = main(["figure", "--manifest", str(tmp_path / "bundle" / "manifest.json"), "--out", str(tmp_path / "again")])
    assert code == 0, capsys.readouterr().err
    again = np.load(tmp_path / "again" / "data.npz")
    for k in ("attribution_blend_ids", "attribution_blend_weights", "attribution_positions"):
        np.testing.assert_array_equal(again[k], first[k])
    assert (tmp_path / "again" / "attribution_samples.npy").exists()
    rows = (tmp_path / "again" / "attribution.csv").read_text().splitlines()
    assert rows[0].startswith("sample,nearest,d1,d1_d2,memorised") and len(rows) == 4


def test_an_attribution_manifest_without_its_samples_is_a_one_line_error(digits, tmp_path):
    from cdm_core.report import attribution_figures
    from cdm_core.report.export import export_bundle, make_manifest
    m = make_manifest("digits", digits, SamplerConfig(), ["attribution"], {})
    with pytest.raises(CdmInputError, match="need options.attribution.samples"):
        export_bundle(m, tmp_path / "out", ds=digits)
    m = make_manifest("digits", digits, SamplerConfig(), ["attribution"], attribution_figures.options(8, 0.3, 0, False))
    with pytest.raises(CdmInputError, match="attribution_samples.npy"):
        export_bundle(m, tmp_path / "out", base_dir=tmp_path, ds=digits)
