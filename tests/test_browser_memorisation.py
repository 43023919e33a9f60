"""Real-browser journeys for memorisation science (#24): Debian chromium driven by playwright
against `streamlit run app.py`. The Memorisation page's curves against training-set size and its
split-half test, and "Attribute your samples" from an upload to the downloaded bundle.
Screenshots go to test-artifacts/ (memorisation-*.png, attribute-*.png) for a person to look at.

Every wait is for an explicit page condition (text shown, chart drawn, script idle) with a
generous limit, never a fixed sleep, so the journeys pass on a loaded 2-core machine."""

import io
import zipfile

import numpy as np
import pytest

from tests import test_browser_models as models_journeys
from tests.browser_util import HEAVY_TIMEOUT, have_chromium, open_page, wait_idle, wait_rendered
from tests.test_browser_models import no_exception, screenshot

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not have_chromium(),
                                 reason="Debian chromium is not installed (make setup installs it as root)")]

# the server, browser and page fixtures of the model journeys (module-scoped: one server here)
server, chromium, page = models_journeys.server, models_journeys.chromium, models_journeys.page


def chart_drawn(page, key: str) -> None:
    page.wait_for_function(f"() => {{ const g = document.querySelector('.st-key-{key} .js-plotly-plot');"
                           " return !!(g && g._fullLayout && g._fullData && g._fullData.length); }",
                           polling=200, timeout=HEAVY_TIMEOUT)


def test_memorisation_against_size_tab_draws_the_curves_with_their_emm(server, page, artifacts):
    """Two models on nested subsets of digits from the same seeds: the exact model (σ = 0) is
    memorised at every size, the curves are drawn with their EMM and a table."""
    open_page(page, f"{server}/memorisation?data=digits&steps=10&mem_sizes=40,160&mem_n=16&mem_models=cfdm,gaussian"
                    "&mem_sigmas=0,0.6")
    no_exception(page)
    page.get_by_role("tab", name="Against training-set size").click()
    go = page.locator(".st-key-w_mem_go").get_by_role("button")
    go.wait_for()
    assert "6 runs of 16 samples" in go.inner_text()  # 2 sizes x (2 sigmas + the Gaussian model)
    go.click()
    chart_drawn(page, "mem_size_fig")
    wait_idle(page)
    no_exception(page)
    emm = page.get_by_text("EMM (largest size with ≥ 90% memorised").inner_text()
    assert "cfdm σ=0: ≥ 160 (memorised at every size)" in emm, emm
    names = page.evaluate("document.querySelector('.st-key-mem_size_fig .js-plotly-plot')._fullData"
                          ".filter(t => t.showlegend !== false).map(t => t.name)")
    assert {"cfdm σ=0", "cfdm σ=0.6", "gaussian"} <= set(names), names
    wait_rendered(page)
    screenshot(page, artifacts / "memorisation-size.png")


def test_split_half_tab_shows_the_curve_and_pairs(server, page, artifacts):
    """The Gaussian model on two disjoint halves of digits: the curve, its table and the pairs of
    samples from the same seeds."""
    open_page(page, f"{server}/memorisation?data=digits&model=gaussian&steps=10")
    no_exception(page)
    page.get_by_role("tab", name="Split-half").click()
    sizes = page.locator(".st-key-w_sh_sizes input")
    sizes.fill("50,400")
    sizes.press("Enter")
    wait_idle(page)
    go = page.locator(".st-key-w_sh_go").get_by_role("button")
    go.wait_for()
    go.click()
    chart_drawn(page, "sh_fig")
    wait_idle(page)
    no_exception(page)
    sim = page.evaluate("document.querySelector('.st-key-sh_fig .js-plotly-plot')._fullData[0].y")
    assert len(sim) == 2 and all(-1 <= s <= 1 for s in sim) and sim[1] > sim[0], sim  # halves converge with size
    page.get_by_text("400 per half: half A (top) and half B (bottom)").wait_for()
    wait_rendered(page)
    screenshot(page, artifacts / "memorisation-split-half.png")


def npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_attribute_an_upload_then_download_its_bundle(server, page, artifacts):
    """Upload a midpoint of two training items and a copy: the table names the copy memorised, the
    blend of the midpoint is the two items at one half each, the map shows where the samples sit,
    and the bundle downloads with its figures, data and manifest. A bad file then gets one line."""
    from cdm_core import load
    x = load("digits").points.astype(np.float64)
    open_page(page, f"{server}/attribute?data=digits&map=pca")
    no_exception(page)
    page.locator(".st-key-w_att_samples input[type=file]").set_input_files(
        files=[{"name": "mine.npy", "mimeType": "application/octet-stream",
                "buffer": npy(np.stack([(x[7] + x[8]) / 2, x[5]]))}])
    page.get_by_text("Map position", exact=True).wait_for(timeout=HEAVY_TIMEOUT)
    chart_drawn(page, "att_map")
    wait_idle(page)
    no_exception(page)
    said = page.get_by_text("Sample #0").first.locator("..").inner_text()
    assert "#7" in said and "#8" in said and "× 0.500" in said, said
    placed = page.evaluate("document.querySelector('.st-key-att_map .js-plotly-plot')._fullData"
                           ".find(t => t.name === 'samples').x.length")
    assert placed == 2
    wait_rendered(page)
    screenshot(page, artifacts / "attribute-page.png")
    page.locator(".st-key-w_att_build").get_by_role("button").click()
    download = page.locator(".st-key-w_att_zip").get_by_role("button")
    download.wait_for(timeout=HEAVY_TIMEOUT)
    with page.expect_download(timeout=HEAVY_TIMEOUT) as got:
        download.click()
    path = got.value.path()
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        (artifacts / "attribute-figure.png").write_bytes(z.read("attribution.png"))
        (artifacts / "attribute-map.png").write_bytes(z.read("attribution_map.png"))
    assert {"attribution.pdf", "attribution_map.svg", "attribution.csv", "data.npz", "attribution_samples.npy",
            "manifest.json"} <= names
    page.locator(".st-key-w_att_samples input[type=file]").set_input_files(
        files=[{"name": "wrong.npy", "mimeType": "application/octet-stream", "buffer": npy(np.zeros((3, 10)))}])
    page.get_by_text("have 10 values each; this data set has 64").wait_for(timeout=HEAVY_TIMEOUT)
    assert page.locator("[data-testid='stException']").count() == 0


INSIDE = """(key) => {
    const g = document.querySelector(`.st-key-${key} .js-plotly-plot`), b = g.getBoundingClientRect();
    return [...g.querySelectorAll('.annotation-text, .g-gtitle text, .xtitle, .ytitle')].map(t => {
        const r = t.getBoundingClientRect();
        return {text: t.textContent, inside: r.top >= b.top - 0.5 && r.bottom <= b.bottom + 0.5
                && r.left >= b.left - 0.5 && r.right <= b.right + 0.5};
    });
}"""


def test_memorisation_panel_titles_are_whole(server, page, artifacts):
    """Against σ on moons: every panel title of the sweep and of the strip of samples at each σ
    lies inside its chart (the strip's first row of titles was cut in half)."""
    open_page(page, f"{server}/memorisation?data=moons")
    no_exception(page)
    for key in ("sweep_fig", "sweep_strip"):
        chart_drawn(page, key)
    wait_rendered(page)
    for key in ("sweep_fig", "sweep_strip"):
        texts = page.evaluate(INSIDE, key)
        assert texts, key
        cut = [t["text"] for t in texts if not t["inside"]]
        assert not cut, f"{key}: titles cut at the chart's edge: {cut}"
    screenshot(page, artifacts / "memorisation-sigma.png")
