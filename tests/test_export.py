"""Figure export: builders for toy and image data, vector SVG/PDF, PNG pixel size, manifest
round trip to identical figures, and a missing chromium."""

import io
import json
import zipfile

import numpy as np
import plotly.graph_objects as go
import pytest
from PIL import Image

from cdm_core import SamplerConfig, load
from cdm_core.cli.main import main
from cdm_core.errors import CdmInputError
from cdm_core.report import export
from cdm_core.report.export import FIGURES, FigureStyle, build, export_bundle, make_manifest
from tests.browser_util import have_chromium

CFG = SamplerConfig(n_samples=8, sigma=0.5, draws=2, steps=10)
needs_chromium = pytest.mark.skipif(not have_chromium(), reason="Debian chromium is not installed")


@pytest.mark.parametrize("name,sigma", [("moons:n=200", 0.1), ("digits", 0.5)])
def test_every_builder_returns_a_valid_figure(name, sigma, tmp_path):
    from cdm_core.report import attribution_figures
    ds = load(name)
    cfg = CFG.replace(sigma=sigma)
    which = [f for f in FIGURES if f not in ("mosaic", "compare")]  # those two: a local model's run, below
    np.save(tmp_path / "mine.npy", np.asarray(ds.points[:3], np.float64) + 0.01)  # attributed samples
    opts = attribution_figures.options(8, 1 / 3, 2, noise=False)
    opts["attribution"]["samples"] = str(tmp_path / "mine.npy")
    m = make_manifest(name, ds, cfg, which, {"sample": 1, "sigmas": [0.0, sigma], "map": {"method": "pca"},
                                             "sizes": [40, 120], "models": ["cfdm", "gaussian"], "size_n": 8} | opts)
    figs, data = build(m, ds)
    assert set(figs) == set(which)
    for k, f in figs.items():
        assert isinstance(f, (go.Figure, Image.Image)), k
        if isinstance(f, go.Figure):
            f.to_dict()  # validates
    assert data["samples"].shape == (8, ds.dim)


def test_mosaic_and_comparison_need_a_local_model_and_the_same_seeds():
    ds = load("digits")
    els = CFG.replace(sigma=0.0, model="els", patch_schedule="5")
    ref = CFG.replace(sigma=0.0).to_dict()
    figs, data = build(make_manifest("digits", ds, els, ["mosaic", "compare"], {"sample": 1, "compare": ref}), ds)
    assert set(figs) == {"mosaic", "compare"} and data["agreement_r"].shape == (8,)
    assert data["pixel_source_ids"].shape[0] == 64  # the exported sample's per-pixel sources
    with pytest.raises(CdmInputError, match="needs a local model"):
        build(make_manifest("digits", ds, CFG, ["mosaic"], {"sample": 1}), ds)
    with pytest.raises(CdmInputError, match="same seeds"):
        build(make_manifest("digits", ds, els, ["compare"], {"compare": CFG.replace(seed=9).to_dict()}), ds)


def test_style_and_manifest_validation():
    with pytest.raises(CdmInputError):
        FigureStyle(dpi=5)
    with pytest.raises(CdmInputError):
        FigureStyle(formats=("gif",))
    with pytest.raises(CdmInputError):
        make_manifest("moons", load("moons"), CFG, ["pie"])


def test_image_grid_exports_are_nearest_neighbour_and_sized():
    """An image figure fills a page of exactly the requested width and height (centred, whole-factor
    nearest-neighbour upscaling), and the PNG records its dpi."""
    import re
    img = Image.fromarray((np.arange(16).reshape(4, 4) * 16).astype(np.uint8)).convert("RGB")
    files = export.image_files(img, FigureStyle(width_in=2.0, height_in=2.6, dpi=100))
    png = Image.open(io.BytesIO(files["png"]))
    assert png.size == (200, 260) and png.info["dpi"][0] == pytest.approx(100, abs=1)
    arr = np.asarray(png)[..., 0]
    inner = arr[30:230, :]  # 4 px x 50 = 200 px square, centred vertically in 260
    assert len(np.unique(inner)) == 16  # no interpolated (blurred) values
    assert (arr[:30] == 255).all() and (arr[230:] == 255).all()
    box = [float(v) for v in re.search(rb"/MediaBox\s*\[([^\]]*)\]", files["pdf"]).group(1).split()]
    assert box[2:] == pytest.approx([144.0, 187.2], abs=0.5)  # 2 x 2.6 in, in points
    assert b'width="2.0in" height="2.6in"' in files["svg"] and b"image-rendering" in files["svg"]


@needs_chromium
def test_plotly_exports_honour_size_dpi_and_font(tmp_path):
    import re
    ds = load("digits")
    style = FigureStyle(width_in=3.25, height_in=2.6, dpi=200, font_family="Helvetica, Arial, sans-serif")
    m = make_manifest("digits", ds, CFG.replace(n_samples=8, sigma=0.5, draws=4), ["sources", "memorisation"],
                      {"sample": 1, "sigmas": [0.0, 0.5], "seeds": 2}, style)
    res = export_bundle(m, tmp_path)
    assert res["font"].startswith("Helvetica -> Liberation Sans") or res["font"] == "Helvetica"
    saved = json.loads((tmp_path / "manifest.json").read_text())
    assert saved["font_used"] == res["font"]
    for name in ("sources", "memorisation"):
        png = Image.open(tmp_path / f"{name}.png")
        assert png.size == (650, 520) and png.info["dpi"][0] == pytest.approx(200, abs=1)
        pdf = (tmp_path / f"{name}.pdf").read_bytes()
        box = [float(v) for v in re.search(rb"/MediaBox\s*\[([^\]]*)\]", pdf).group(1).split()]
        assert box[2:] == pytest.approx([234.0, 187.2], abs=1.0)
        if "Liberation" in res["font"]:
            assert b"LiberationSans" in pdf  # the metric-compatible font is embedded, not a fallback
    svg = (tmp_path / "sources.svg").read_text()
    assert "w=" in svg and "d=" in svg and "sample" in svg and "nearest" in svg  # a labelled sources figure
    root = svg[:svg.index(">")]
    assert 'width="3.25in"' in root and 'height="2.6in"' in root and "viewBox" in root
    csv = (tmp_path / "memorisation.csv").read_text().splitlines()
    assert "copy_fraction_sd" in csv[0] and len(csv) == 3


@needs_chromium
def test_bundle_vector_marks_png_size_and_round_trip(tmp_path, capsys):
    ds = load("moons:n=200")
    style = FigureStyle(width_in=3.25, height_in=2.5, dpi=200)
    m = make_manifest("moons:n=200", ds, CFG.replace(sigma=0.1), ["samples", "sources"], {"sample": 2}, style)
    first = export_bundle(m, tmp_path / "a")
    assert first["message"] == ""
    names = set(first["files"])
    assert {"samples.png", "samples.svg", "samples.pdf", "sources.svg", "data.npz", "manifest.json"} <= names
    svg = (tmp_path / "a" / "samples.svg").read_bytes()
    assert svg.count(b'class="point') >= 200  # every scatter point is a vector mark
    pdf = (tmp_path / "a" / "samples.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and b"/Subtype /Image" not in pdf and b"/Subtype/Image" not in pdf
    png = Image.open(tmp_path / "a" / "samples.png")
    assert png.size == (round(3.25 * 200), round(2.5 * 200))
    # regenerate from the manifest alone: identical SVG and samples
    assert main(["figure", "--manifest", str(tmp_path / "a" / "manifest.json"), "--out", str(tmp_path / "b")]) == 0
    for f in ("samples.svg", "sources.svg"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    a, b = np.load(tmp_path / "a" / "data.npz"), np.load(tmp_path / "b" / "data.npz")
    np.testing.assert_array_equal(a["samples"], b["samples"])
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["sampler"]["sigma"] == 0.1


def test_missing_chromium_still_writes_data_and_manifest(tmp_path, monkeypatch):
    monkeypatch.setattr(export, "chromium_path", lambda: None)
    ds = load("moons:n=200")
    res = export_bundle(make_manifest("moons:n=200", ds, CFG, ["samples"]), tmp_path)
    assert "chromium" in res["message"] and "\n" not in res["message"]
    assert (tmp_path / "manifest.json").exists() and (tmp_path / "data.npz").exists()
    assert not (tmp_path / "samples.svg").exists()


def test_figure_cli_errors(tmp_path, capsys):
    bad = tmp_path / "m.json"
    bad.write_text("{not json")
    assert main(["figure", "--manifest", str(bad), "--out", str(tmp_path / "o")]) == 2
    ds = load("moons:n=200")
    m = make_manifest("moons:n=201", ds, CFG, ["samples"])  # hash of another data set
    bad.write_text(json.dumps(m))
    assert main(["figure", "--manifest", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "content hash" in capsys.readouterr().err


def test_zip_bundle_is_deterministic(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    assert zipfile.ZipFile(io.BytesIO(export.zip_bundle(tmp_path))).namelist() == ["a.txt"]
    assert export.zip_bundle(tmp_path) == export.zip_bundle(tmp_path)


def test_uploaded_data_travel_with_the_bundle_and_regenerate(tmp_path):
    """A bundle made from uploaded data (spec training.npy) carries the data, so the manifest alone
    regenerates it; the file is never a pickle."""
    ds = load("digits")
    m = make_manifest(export.UPLOADED_DATA, ds, CFG, ["samples"], {"sample": 0})
    res = export_bundle(m, tmp_path / "b", ds=ds)
    assert export.UPLOADED_DATA in res["files"]
    saved = np.load(tmp_path / "b" / export.UPLOADED_DATA, allow_pickle=False)
    assert saved.shape == (ds.n, 8, 8)
    np.testing.assert_array_equal(saved.reshape(ds.n, -1), ds.points)
    again = export_bundle(export.read_manifest(tmp_path / "b" / "manifest.json"), tmp_path / "c",
                          base_dir=tmp_path / "b")
    assert "samples.png" in again["files"]


def test_every_text_of_a_styled_figure_is_at_the_requested_size():
    """Axis titles were 9.75 pt when 8 pt was asked (plotly draws them 1.2x the base font)."""
    from cdm_core.analysis.sweep import default_sigmas
    from cdm_core.report import figures
    from cdm_core.report.export import style_figure
    rows = [{"sigma": s, "draws": 4, "start": 0.0, "copy_fraction": 1 - s / 2, "memorised_fraction": 0.5,
             "mean_nn_ratio": 0.3, "mean_effective_sources": 1 + s, "diversity": 0.5, "seeds": 1}
            for s in default_sigmas(0.4)]
    px = 8 * 96 / 72
    fig = style_figure(figures.sweep_figure(rows, current_sigma=0.4), FigureStyle(font_size=8))
    for ax in (fig.layout.xaxis, fig.layout.xaxis3, fig.layout.yaxis2):
        assert ax.tickfont.size == pytest.approx(px)
        assert ax.title.font.size is None or ax.title.font.size == pytest.approx(px)
    assert fig.layout.xaxis3.title.font.size == pytest.approx(px)
    heat = style_figure(figures.influence_matrix_figure(np.array([[1, 2], [2, -1]]), np.array([[0.5, 0.1], [0.2, 0]])),
                        FigureStyle(font_size=8))
    assert heat.data[0].colorbar.tickfont.size == pytest.approx(px)


def test_the_exported_sweep_is_the_pages_default_sweep():
    """The export drew 0..2 sigma in 9 points while the page showed 0..2.5 sigma in 11."""
    from cdm_core.analysis.sweep import default_sigmas
    from cdm_core.report.export import build
    ds = load("moons:n=200")
    cfg = CFG.replace(sigma=0.2, n_samples=8)
    m = make_manifest("moons:n=200", ds, cfg, ["memorisation"], {"seeds": 1}, FigureStyle())
    _, data = build(m, ds)
    assert [r["sigma"] for r in data["sweep_rows"]] == default_sigmas(0.2)
    assert len(default_sigmas(0.2)) == 11 and default_sigmas(0.2)[-1] == pytest.approx(0.5)
