"""Camera-ready exports: every figure rendered at 3.25 x 2.5 in with 8 pt text, then measured in
the real browser from its SVG: every text at the requested size, inside the page, and no two
texts overlapping (the boxes the browser lays out, rotation included)."""

import json

import numpy as np
import pytest

from cdm_core import SamplerConfig, load
from cdm_core.report import attribution_figures
from cdm_core.report.export import FIGURES, FigureStyle, export_bundle, make_manifest
from tests.browser_util import browser, have_chromium

pytestmark = [pytest.mark.browser, pytest.mark.skipif(not have_chromium(), reason="Debian chromium is not installed")]

STYLE = FigureStyle(width_in=3.25, height_in=2.5, dpi=150, font_size=8)
PX = 8 * 96 / 72  # 8 pt in the SVG's CSS pixels

MEASURE = """() => {
    const svg = document.querySelector('svg');
    const page = svg.getBoundingClientRect();
    const out = [];
    for (const t of svg.querySelectorAll('text')) {
        const text = t.textContent.trim();
        if (!text) continue;
        const r = t.getBoundingClientRect();
        if (r.width === 0 || r.height === 0) continue;
        const size = parseFloat(getComputedStyle(t).fontSize);
        out.push({text, size, x0: r.left - page.left, y0: r.top - page.top, x1: r.right - page.left,
                  y1: r.bottom - page.top});
    }
    const images = [...svg.querySelectorAll('image')].map(im => {
        const r = im.getBoundingClientRect();
        return {x0: r.left - page.left, y0: r.top - page.top, x1: r.right - page.left, y1: r.bottom - page.top};
    }).filter(b => b.x1 > b.x0 && b.y1 > b.y0);
    return {texts: out, images, width: page.width, height: page.height};
}"""


def boxes_of(svg_path, chromium):
    page = chromium.new_page(viewport={"width": 1200, "height": 1000})
    # the SVG at its CSS pixel size (its root is sized in inches: 96 px per inch)
    page.goto(svg_path.as_uri())
    got = page.evaluate(MEASURE)
    page.close()
    return got


def overlap(a, b, slack=0.5):
    """Area in px^2 where two boxes overlap by more than `slack` px on both axes."""
    w = min(a["x1"], b["x1"]) - max(a["x0"], b["x0"]) - slack
    h = min(a["y1"], b["y1"]) - max(a["y0"], b["y0"]) - slack
    return w * h if w > 0 and h > 0 else 0.0


@pytest.fixture(scope="module")
def chromium():
    with browser() as b:
        yield b


LOCAL_FIGURES = ("mosaic", "compare")  # a local model's run, compared with cfdm from the same seeds


@pytest.fixture(scope="module", params=["digits", "moons:n=400", "digits:els"])
def bundle(request, tmp_path_factory):
    name, _, model = request.param.partition(":els")[0], None, "els" if request.param.endswith(":els") else "cfdm"
    ds = load(name)
    opts = {"sample": 1, "seeds": 1, "sweep_n": 8, "sizes": [40, 160], "models": ["cfdm", "gaussian"],
            "size_sigmas": [0.0, 0.3], "size_n": 16}
    if model == "els":
        cfg = SamplerConfig(n_samples=8, model="els", patch_schedule="5", steps=10)
        which = list(LOCAL_FIGURES)
        opts["compare"] = SamplerConfig(n_samples=8, steps=10).to_dict()
    else:
        cfg = SamplerConfig(n_samples=16, sigma=0.5 if name == "digits" else 0.15, draws=4, steps=20)
        which = [f for f in FIGURES if f not in LOCAL_FIGURES]
    out = tmp_path_factory.mktemp(request.param.replace(":", "-").replace("=", ""))
    if model == "cfdm":  # attributed samples: a copy, a midpoint of two items and a point off the data
        x = np.asarray(ds.points, np.float64)
        np.save(out / attribution_figures.SAMPLES_FILE, np.stack([x[3], (x[1] + x[2]) / 2, x[4] + 0.3 * x.std()]))
        opts |= attribution_figures.options(16, 1 / 3, 1, noise=False)
    m = make_manifest(name, ds, cfg, which, opts, STYLE)
    export_bundle(m, out, base_dir=out)
    return request.param, out, which


@pytest.mark.parametrize("figure", FIGURES)
def test_exported_text_is_camera_ready(bundle, figure, chromium):
    name, out, which = bundle
    if figure not in which:
        pytest.skip(f"{figure} is not a figure of the {name} bundle")
    svg = out / f"{figure}.svg"
    got = boxes_of(svg, chromium)
    texts = got["texts"]
    if not texts and "<image" in svg.read_text():  # an image grid (digits' samples) has no text
        pytest.skip(f"{figure} of {name} is a picture without text")
    assert texts, f"{figure}: no text found"
    wrong = [t["text"] for t in texts if abs(t["size"] - PX) > 0.05]
    assert not wrong, f"{figure} ({name}): texts not at 8 pt: {wrong[:5]}"
    outside = [t["text"] for t in texts if t["x0"] < -1 or t["y0"] < -1 or t["x1"] > got["width"] + 1
               or t["y1"] > got["height"] + 1]
    assert not outside, f"{figure} ({name}): texts outside the page: {outside[:5]}"
    clashes = [(a["text"], b["text"]) for k, a in enumerate(texts) for b in texts[k + 1:] if overlap(a, b) > 0]
    (out / f"{figure}-texts.json").write_text(json.dumps(got, indent=1))
    assert not clashes, f"{figure} ({name}): overlapping texts: {clashes[:6]}"
    # no text over a picture (image tiles, heatmaps), unless it is the picture's own label inside it
    # (the "numerically zero" label of a blank map)
    covered = [t["text"] for t in texts for im in got["images"] if overlap(t, im, slack=1.0) > 0
               and not (t["x0"] >= im["x0"] and t["x1"] <= im["x1"] and t["y0"] >= im["y0"] and t["y1"] <= im["y1"])]
    assert not covered, f"{figure} ({name}): texts over images: {covered[:6]}"
