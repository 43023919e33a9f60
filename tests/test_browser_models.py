"""Real-browser journeys for the model choice (#23): Debian chromium driven by playwright against
`streamlit run app.py`. The Model control and patch sizes on Generate, a click on the Sources
page's patch mosaic, pinning a cfdm run and comparing it with ELS, and exporting the mosaic and
the comparison. Screenshots go to test-artifacts/ (model-*.png) for a person to look at.

Built to pass on a loaded 2-core machine: every wait is for an explicit page condition (the link
updated at the end of a run, text shown, chart drawn, script idle) with a generous limit, never a
fixed sleep. An ELS run of a few digits takes seconds to half a minute here, so every journey gets
the per-test limit of the heavy browser journeys."""

import io
import re
import time
import zipfile

import pytest

from tests.browser_util import (
    HEAVY_TIMEOUT,
    STEP_TIMEOUT,
    browser,
    have_chromium,
    new_context,
    open_page,
    stable_box,
    streamlit_server,
    wait_idle,
    wait_rendered,
)

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not have_chromium(),
                                 reason="Debian chromium is not installed (make setup installs it as root)")]

HEAVY_TEST_S = 600  # per-test limit: each journey runs ELS at least once (the export three times)


@pytest.fixture(scope="module")
def server():
    with streamlit_server() as url:
        yield url


@pytest.fixture(scope="module")
def chromium():
    with browser() as b:
        yield b


@pytest.fixture
def page(chromium):
    ctx = new_context(chromium)
    pg = ctx.new_page()
    yield pg
    ctx.close()


def no_exception(page):
    assert page.locator("[data-testid='stException']").count() == 0
    errors = page.locator("[data-testid='stAlertContentError']").all_inner_texts()
    assert not errors, errors


def screenshot(page, path) -> None:
    """The whole page. Streamlit scrolls its main column inside the window, so a full-page shot
    shows one window's worth: grow the window to the column's height for the shot (the width, and
    so the layout, stays), then restore it."""
    size = page.viewport_size
    height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": min(max(size["height"], height), 8000)})
    stable_box(page.locator("[data-testid='stMain'] [data-testid='stMainBlockContainer']"))
    wait_rendered(page)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)
    stable_box(page.locator("[data-testid='stMain'] [data-testid='stMainBlockContainer']"))


def wait_for_link(page, *parts, timeout=HEAVY_TIMEOUT):
    """Wait until the page's link carries every `key=value` of `parts`: the app writes the link at
    the end of a script run (state.sync_url, after the page and its sampling), so this is the
    condition that the run with these settings has finished."""
    page.wait_for_function("(parts) => parts.every(p => new URLSearchParams(location.search).get(p[0]) === p[1])",
                           arg=[p.split("=", 1) for p in parts], polling=200, timeout=timeout)
    wait_idle(page, timeout=timeout)


def pick_model(page, label):
    choice = page.locator(".st-key-w_model").get_by_role("radio", name=label, exact=True)
    choice.click()
    page.wait_for_function("(e) => e.getAttribute('aria-checked') === 'true'", arg=choice.element_handle(),
                           polling=100, timeout=STEP_TIMEOUT)


def pin_cfdm_then_els(page, server, n):
    """Generate cfdm samples of digits at σ = 0, pin them, switch the model to ELS (default
    patch sizes): the comparison of the two runs from the same seeds follows."""
    open_page(page, f"{server}/generate?data=digits&n={n}&steps=10&sigma=0")
    no_exception(page)
    page.locator(".st-key-w_pin").get_by_role("button", name="Pin this run").click()
    page.get_by_text("This run is pinned").wait_for()
    wait_idle(page)
    pick_model(page, "Equivariant local (ELS)")
    wait_for_link(page, "model=els")
    no_exception(page)


MODEL_OPTIONS = """() => {
    const g = document.querySelector('.st-key-w_model [role=radiogroup]'), b = g.getBoundingClientRect();
    return [...g.querySelectorAll('[role=radio]')].map(r => {
        const o = r.getBoundingClientRect();
        return {label: r.innerText, shown: o.left >= b.left - 1 && o.right <= b.right + 1};
    });
}"""


def test_every_model_option_is_in_view(server, page, artifacts):
    """The four models are all readable at once in the Model control (the 1280-px window of every
    browser test), before and after picking the last one: none cut at the column's edge or
    scrolled out of the control (two samples keep the ELS run short)."""
    open_page(page, f"{server}/generate?data=digits&n=2&steps=10")
    for picked in (None, "Equivariant local (ELS)"):
        if picked:
            pick_model(page, picked)
            wait_for_link(page, "model=els")
        options = page.evaluate(MODEL_OPTIONS)
        assert [o["label"] for o in options] == ["σ-CFDM", "Gaussian", "Local (LS)", "Equivariant local (ELS)"]
        hidden = [o["label"] for o in options if not o["shown"]]
        if hidden:
            page.locator(".st-key-w_model").screenshot(path=str(artifacts / "model-control-cut.png"))
        assert not hidden, f"Model options cut or scrolled out of view (selected: {picked or 'σ-CFDM'}): {hidden}"
    no_exception(page)


GRID_DRAWN = """() => {
    const g = document.querySelector('.st-key-gen_grid .js-plotly-plot');
    // the tiles travel as one PNG, drawn as an <image> in plotly's svg
    return !!(g && g._fullLayout && g._fullData && g._fullData.length && g.querySelector('.main-svg image'));
}"""


@pytest.mark.timeout(HEAVY_TEST_S)
def test_els_with_one_patch_size_on_generate(server, page, artifacts):
    """Pick ELS in the Model control, then one patch size for every step: the caption says the
    sizes per step, the link carries both, and the grid shows this run's samples."""
    open_page(page, f"{server}/generate?data=digits&n=8&steps=10")
    no_exception(page)
    pick_model(page, "Equivariant local (ELS)")
    # the patch-size choice appears with the model's controls; the default preset runs at once
    kind = page.locator(".st-key-w_patch_kind")
    kind.wait_for()
    wait_for_link(page, "model=els")
    assert page.get_by_role("slider", name="σ (smoothing)").count() == 0  # σ smooths cfdm only
    kind.click()
    page.get_by_role("option", name="one size", exact=True).click()
    page.locator(".st-key-w_patch_size").get_by_text("Window k (pixels)").wait_for()
    wait_for_link(page, "model=els", "patch_schedule=5")
    no_exception(page)
    caption = page.get_by_text(re.compile(r"^Patch sizes per step \(first step first\)"))
    caption.wait_for()
    assert "5, 5, 5, 5, 5, 5, 5, 5, 5, 5." in caption.inner_text()  # one size, ten steps
    assert page.get_by_text("Settings changed: press").count() == 0  # the grid shows this run
    page.wait_for_function(GRID_DRAWN, polling=100, timeout=STEP_TIMEOUT)
    assert page.evaluate("document.querySelector('.st-key-gen_grid .js-plotly-plot')"
                         "._fullData.at(-1).x.length") == 8  # one marker per sample tile
    sidebar = " ".join(page.locator("[data-testid='stSidebar'] [data-testid='stCaptionContainer']").all_inner_texts())
    assert "els · patches 5" in sidebar and "Last run: 8 samples" in sidebar
    wait_rendered(page)
    screenshot(page, artifacts / "model-els-generate.png")


MOSAIC_DRAWN = """() => {
    const g = document.querySelector('.st-key-mosaic_map .js-plotly-plot');
    return !!(g && g._fullLayout && g._fullData && g.querySelectorAll('.nsewdrag').length >= 3
              && g._fullData.filter(t => t.type === 'heatmap' && t.customdata).length === 2);
}"""

# page coordinates of pixel (r, c) in panel `k` (2 = main source, 3 = entropy: the heatmaps that
# carry the pixel index as customdata), from the axes plotly laid out (a heatmap's x is the
# column and its y the row, y reversed)
PIXEL_POSITION = """([k, r, c]) => {
    const g = document.querySelector('.st-key-mosaic_map .js-plotly-plot');
    const tr = g._fullData.filter(t => t.type === 'heatmap' && t.customdata)[k - 2];
    const xa = g._fullLayout[tr.xaxis.replace('x', 'xaxis')], ya = g._fullLayout[tr.yaxis.replace('y', 'yaxis')];
    const b = g.getBoundingClientRect();
    return {x: b.left + xa._offset + xa.l2p(c), y: b.top + ya._offset + ya.l2p(r)};
}"""

PIXEL_SHOWN = re.compile(r"^Pixel \((\d+), (\d+)\)$")


def shown_pixel(page) -> tuple[int, int]:
    text = page.locator("strong", has_text=PIXEL_SHOWN).first.inner_text()
    return tuple(map(int, PIXEL_SHOWN.match(text).groups()))


def click_pixel(page, artifacts, panel: int, r: int, c: int) -> None:
    """Click pixel (r, c) of a mosaic panel until the page shows it. The click component hooks into
    the chart on a 300 ms timer (and the chart can be drawn once more after a run), so a click just
    after a rerun may go unheard: click again, each time at a position read afresh from plotly."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    target = page.locator("strong", has_text=f"Pixel ({r}, {c})")
    deadline = time.time() + STEP_TIMEOUT / 1000
    attempts = 0
    while True:
        attempts += 1
        page.locator(".st-key-mosaic_map").scroll_into_view_if_needed()
        stable_box(page.locator(".st-key-mosaic_map .js-plotly-plot"))
        pos = page.evaluate(PIXEL_POSITION, [panel, r, c])
        page.mouse.click(pos["x"], pos["y"])
        try:
            target.wait_for(timeout=10_000)
            break
        except PlaywrightTimeout:
            if time.time() > deadline:
                screenshot(page, artifacts / "model-mosaic-click-failed.png")
                raise AssertionError(f"pixel ({r}, {c}) of panel {panel} not shown after {attempts} clicks; "
                                     f"the page shows pixel {shown_pixel(page)}")
    wait_idle(page)


@pytest.mark.timeout(HEAVY_TEST_S)
def test_click_a_pixel_of_the_patch_mosaic(server, page, artifacts):
    """An ELS link opens the Sources page with the patch mosaic; a click on a pixel of the
    main-source map (then of the entropy map) selects that pixel for the sources below."""
    open_page(page, f"{server}/sources?data=digits&model=els&patch_schedule=5&n=8&steps=10")
    no_exception(page)
    page.get_by_text("Patch mosaic", exact=True).wait_for()
    page.wait_for_function(MOSAIC_DRAWN, polling=100, timeout=STEP_TIMEOUT)
    page.get_by_text("Items that gave the largest regions").wait_for()
    assert page.locator("[data-testid='stImage']").count() >= 2  # tinted regions, the picked pixel's source
    first = shown_pixel(page)  # before any click: the pixel with the lowest entropy
    # the main-source panel: a pixel away from the first one (a digit is 8 x 8 here)
    target = (2, 5) if first != (2, 5) else (5, 2)
    click_pixel(page, artifacts, 2, *target)
    assert shown_pixel(page) == target
    assert page.get_by_text(re.compile(r"source position \(\d+, \d+\)")).count() == 1
    no_exception(page)
    wait_rendered(page)
    screenshot(page, artifacts / "model-mosaic-click.png")
    # the entropy panel selects as well
    click_pixel(page, artifacts, 3, 6, 1)
    assert shown_pixel(page) == (6, 1)
    no_exception(page)


@pytest.mark.timeout(HEAVY_TEST_S)
def test_pin_cfdm_and_compare_with_els(server, page, artifacts):
    """Pin a cfdm run (σ = 0), switch to ELS: the two runs side by side with their per-sample
    agreement (same seeds)."""
    pin_cfdm_then_els(page, server, n=8)
    page.get_by_text("Pinned run and current run").wait_for()
    r = page.locator("[data-testid='stMetric']", has_text="Median pixel Pearson r")
    r.wait_for()
    value = float(r.locator("[data-testid='stMetricValue']").inner_text())
    assert -1.0 <= value <= 1.0
    assert page.locator("[data-testid='stMetric']", has_text="Median r² = 1 − SS_res/SS_tot").count() == 1
    assert page.get_by_text(re.compile(r"^Pinned: cfdm, σ = 0")).count() == 1
    assert page.get_by_text(re.compile(r"^Current: els")).count() == 1
    no_exception(page)
    screenshot(page, artifacts / "model-compare-els.png")


@pytest.mark.timeout(HEAVY_TEST_S)
def test_export_the_mosaic_and_the_comparison(server, page, artifacts):
    """With an ELS run and a pinned cfdm run, the Export page previews and bundles the patch mosaic
    and the comparison (png, svg and pdf of each)."""
    pin_cfdm_then_els(page, server, n=4)
    page.locator("[data-testid='stSidebarNav'] a", has_text="Export").click()
    page.locator("h1", has_text="Export").wait_for(timeout=HEAVY_TIMEOUT)
    wait_idle(page)
    no_exception(page)
    figs = page.locator(".st-key-w_exp_figs")
    for label in ("Patch mosaic (ls, els)", "Pinned vs current run"):
        option = page.get_by_role("option", name=label, exact=True)
        if not option.is_visible():
            figs.locator("input").click()
        option.click()
    page.keyboard.press("Escape")
    tabs = page.get_by_role("tab")
    page.get_by_role("tab", name="Pinned vs current run").wait_for(timeout=HEAVY_TIMEOUT)
    wait_idle(page)
    assert [t.inner_text() for t in tabs.all()][-2:] == ["Patch mosaic (ls, els)", "Pinned vs current run"]
    assert page.get_by_text("The patch mosaic needs a run of a local model").count() == 0
    assert page.get_by_text("The comparison needs a pinned run").count() == 0
    no_exception(page)
    for name, shot in (("Sources of a sample", "sources"), ("Patch mosaic (ls, els)", "mosaic"),
                       ("Pinned vs current run", "compare")):
        page.get_by_role("tab", name=name).click()
        wait_idle(page)
        wait_rendered(page)
        screenshot(page, artifacts / f"model-export-preview-{shot}.png")
    page.get_by_role("button", name="Build bundle").click()
    download = page.get_by_text("Download bundle (.zip)")
    download.wait_for(timeout=HEAVY_TIMEOUT)
    wait_idle(page)
    no_exception(page)
    with page.expect_download() as dl:
        download.click()
    bundle = zipfile.ZipFile(io.BytesIO(open(dl.value.path(), "rb").read()))
    names = set(bundle.namelist())
    assert {"manifest.json", "mosaic.png", "mosaic.svg", "mosaic.pdf", "compare.png", "compare.svg",
            "compare.pdf"} <= names, sorted(names)
    for name in ("mosaic", "compare"):  # the exported figures themselves, for a person to look at
        (artifacts / f"model-export-bundle-{name}.png").write_bytes(bundle.read(f"{name}.png"))
    screenshot(page, artifacts / "model-export.png")
