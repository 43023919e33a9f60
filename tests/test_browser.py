"""Real-browser journeys: Debian chromium driven by playwright against `streamlit run app.py`.
Screenshots of each page go to test-artifacts/ for a person to look at.

Built to pass on a loaded machine: every wait is for an explicit page condition (script idle,
text shown, chart drawn, layout settled, tooltip visible) with a generous limit, never a fixed
sleep; a page's first heavy run (UMAP's numba JIT, sensitivities, the export bundle) gets
HEAVY_TIMEOUT, and the tests that contain one get a per-test limit above pytest.ini's 300 s."""

import re
import time

import pytest

from tests.browser_util import (
    HEAVY_TIMEOUT,
    STEP_TIMEOUT,
    browser,
    click_point,
    have_chromium,
    new_context,
    open_page,
    point_position,
    stable_box,
    streamlit_server,
    wait_chart,
    wait_idle,
    wait_rendered,
)

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not have_chromium(),
                                 reason="Debian chromium is not installed (make setup installs it as root)")]


@pytest.fixture(scope="module")
def server():
    with streamlit_server() as url:
        yield url


@pytest.fixture(scope="module")
def chromium():
    with browser() as b:
        yield b


HEAVY_TEST_S = 600  # per-test limit for journeys that include a first heavy run


@pytest.fixture
def page(chromium):
    ctx = new_context(chromium)
    pg = ctx.new_page()
    yield pg
    ctx.close()


def rgb_of(colour: str) -> list[int]:
    """Red, green and blue of a CSS colour written "#rrggbb" or "rgb(r, g, b)"."""
    if colour.startswith("#") and len(colour) == 7:
        return [int(colour[k:k + 2], 16) for k in (1, 3, 5)]
    return [int(v) for v in re.findall(r"\d+", colour)[:3]]


def no_exception(page):
    assert page.locator("[data-testid='stException']").count() == 0


@pytest.mark.parametrize("path,title", [("", "Data"), ("generate", "Generate"), ("sources", "Sources"),
                                        ("sensitivity", "Sensitivity"), ("map", "Map"),
                                        ("memorisation", "Memorisation"), ("export", "Export")])
@pytest.mark.timeout(HEAVY_TEST_S)  # the map page may be the server's first UMAP run
def test_each_page_opens(server, page, artifacts, path, title):
    open_page(page, f"{server}/{path}")
    assert page.locator("h1").first.inner_text().strip() == title
    no_exception(page)
    wait_rendered(page)
    page.screenshot(path=str(artifacts / f"page-{path or 'data'}.png"), full_page=True)


def test_sigma_generate_click_sample_sources(server, page, artifacts):
    open_page(page, f"{server}/generate?data=digits&n=32&sigma=0.5&draws=4&steps=20")
    no_exception(page)
    # move the sigma slider with the keyboard; the small data set regenerates at once
    slider = page.get_by_role("slider").first
    before = slider.get_attribute("aria-valuetext")
    slider.focus()
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    wait_idle(page)
    assert slider.get_attribute("aria-valuetext") != before
    assert re.search(r"sigma=0\.[5-9]", page.url)
    page.get_by_role("button", name="Generate").click()
    wait_idle(page)
    no_exception(page)
    page.locator(".js-plotly-plot").first.wait_for(timeout=STEP_TIMEOUT)
    wait_rendered(page)
    page.screenshot(path=str(artifacts / "journey-generate.png"), full_page=True)
    # select the 6th sample tile in the grid (an invisible marker sits on each tile)
    points = page.locator(".js-plotly-plot .scatterlayer .trace").last.locator("path.point")
    box = stable_box(points.nth(5))
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    # a small box selection around the tile's centre (plotly picks points on its drag layer)
    page.mouse.move(x - 9, y - 9)
    page.mouse.down()
    page.mouse.move(x, y, steps=5)
    page.mouse.move(x + 9, y + 9, steps=5)
    page.mouse.up()
    wait_idle(page)
    page.get_by_text("Sources of sample #5").click()
    wait_idle(page)
    assert page.locator("h1").first.inner_text().strip() == "Sources"
    page.get_by_text("Blend sources").first.wait_for(timeout=STEP_TIMEOUT)
    assert page.get_by_text(re.compile(r"sample #5")).count() >= 1
    no_exception(page)
    page.screenshot(path=str(artifacts / "journey-sources.png"), full_page=True)


def test_bad_upload_in_browser_keeps_dataset(server, page, artifacts, tmp_path):
    open_page(page, f"{server}/")
    bad = tmp_path / "broken.csv"
    bad.write_text("a,b\nx,y\n")
    page.locator("input[type=file]").set_input_files(str(bad))
    page.get_by_text("Could not load broken.csv").wait_for(timeout=STEP_TIMEOUT)
    wait_idle(page)
    page.get_by_role("heading", name="moons").first.wait_for()  # previous data set kept
    no_exception(page)
    page.screenshot(path=str(artifacts / "journey-bad-upload.png"), full_page=True)


@pytest.mark.timeout(HEAVY_TEST_S)
def test_sensitivity_page_and_counterfactual(server, page, artifacts):
    open_page(page, f"{server}/sensitivity?data=digits&n=16&sigma=0.5&draws=4&steps=20")
    no_exception(page)
    page.get_by_text("Most influential training items").first.wait_for(timeout=HEAVY_TIMEOUT)
    assert page.locator(".js-plotly-plot").count() >= 3  # maps, matrix, totals
    page.get_by_role("button", name="Re-sample", exact=True).click()
    wait_idle(page)
    page.get_by_text("actual re-sampled").first.wait_for(timeout=HEAVY_TIMEOUT)
    no_exception(page)
    wait_rendered(page)
    page.screenshot(path=str(artifacts / "page-sensitivity.png"), full_page=True)


MAP_DRAWN = """() => {
    const gd = document.querySelector('.st-key-map_chart .js-plotly-plot');
    return !!(gd && gd._fullLayout && gd._fullLayout.xaxis && gd._fullData && gd._fullData.length
              && gd._fullData[0].x && gd._fullData[0].x.length > 0 && gd.querySelector('.nsewdrag'));
}"""


def open_map(page, url):
    """Open the Map page and wait for the map itself: the first UMAP run in the server process
    compiles numba code, minutes on a busy machine, so this wait is HEAVY_TIMEOUT."""
    open_page(page, url)
    page.get_by_text(re.compile(r"UMAP map, cached on disk")).first.wait_for(timeout=HEAVY_TIMEOUT)
    page.wait_for_function(MAP_DRAWN, polling=100, timeout=HEAVY_TIMEOUT)
    wait_idle(page)
    no_exception(page)


@pytest.mark.timeout(HEAVY_TEST_S)
def test_map_lasso_selection_links_table_and_export(server, page, artifacts):
    open_map(page, f"{server}/map?data=moons&n=32")
    plot = page.locator(".st-key-map_chart .js-plotly-plot .nsewdrag").first
    plot.scroll_into_view_if_needed()
    box = stable_box(plot)
    visible = page.viewport_size["height"] - box["y"]
    box["height"] = min(box["height"], visible - 10)
    # lasso a large polygon over the middle of the map
    cx, cy, rx, ry = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, box["width"] * 0.4, box["height"] * 0.4
    page.mouse.move(cx - rx, cy - ry)
    page.mouse.down()
    for x, y in [(cx + rx, cy - ry), (cx + rx, cy + ry), (cx - rx, cy + ry), (cx - rx, cy - ry)]:
        page.mouse.move(x, y, steps=8)
    page.mouse.up()
    wait_idle(page)
    page.get_by_text("Export selection (CSV)").wait_for(timeout=STEP_TIMEOUT)
    with page.expect_download() as dl:
        page.get_by_text("Export selection (CSV)").click()
    text = open(dl.value.path()).read()
    assert text.startswith("kind,id") and len(text.splitlines()) > 3
    no_exception(page)
    page.screenshot(path=str(artifacts / "journey-map-selection.png"), full_page=True)


@pytest.mark.timeout(HEAVY_TEST_S)
def test_export_page_downloads_a_bundle(server, page, artifacts):
    import io
    import json
    import zipfile
    open_page(page, f"{server}/export?data=digits&n=16&sigma=0.5&draws=4&steps=20")
    no_exception(page)
    page.get_by_role("button", name="Build bundle").click()
    page.get_by_text("Download bundle (.zip)").wait_for(timeout=HEAVY_TIMEOUT)
    with page.expect_download() as dl:
        page.get_by_text("Download bundle (.zip)").click()
    zf = zipfile.ZipFile(io.BytesIO(open(dl.value.path(), "rb").read()))
    names = set(zf.namelist())
    assert {"manifest.json", "data.npz", "samples.png", "samples.svg", "samples.pdf"} <= names
    manifest = json.loads(zf.read("manifest.json"))
    assert manifest["dataset"]["name"] == "digits" and manifest["sampler"]["n_samples"] == 16
    page.screenshot(path=str(artifacts / "journey-export.png"), full_page=True)


@pytest.mark.timeout(HEAVY_TEST_S)
def test_four_concurrent_sessions_get_their_own_results(server, chromium, artifacts):
    """Four sessions at once (one long), different data and settings: each page shows the
    near-copy fraction that its own settings give when computed directly."""
    from cdm_core import SamplerConfig, load, sample
    from cdm_core.analysis.metrics import set_metrics
    from ui.state import defaults_for
    jobs = [("digits", dict(n=64, sigma=0.4, steps=100)), ("moons", dict(n=8, sigma=0.0, steps=150)),
            ("circles", dict(n=12, sigma=0.3, steps=60)), ("8gaussians", dict(n=20, sigma=0.05, steps=80))]
    pages = []
    for data, p in jobs:
        ctx = new_context(chromium)
        pg = ctx.new_page()
        query = "&".join(f"{k}={v}" for k, v in p.items())
        pg.goto(f"{server}/generate?data={data}&{query}", wait_until="commit")
        pages.append((ctx, pg, data, p))
    try:
        for k, (ctx, pg, data, p) in enumerate(pages):
            pg.wait_for_selector("h1", timeout=HEAVY_TIMEOUT)
            wait_idle(pg, timeout=HEAVY_TIMEOUT)
            pg.get_by_text("Copies (exact sources)").first.wait_for(timeout=HEAVY_TIMEOUT)
            shown = pg.locator("[data-testid='stMetricValue']").first.inner_text().strip()
            d = defaults_for(data) | p
            cfg = SamplerConfig(n_samples=d["n"], sigma=d["sigma"], draws=d["draws"], steps=d["steps"],
                                start=d["start"], seed=d["seed"], neighbours=d["neighbours"], index=d["index"],
                                trajectory=data != "digits")
            ds = load(data)
            expected = f"{100 * set_metrics(sample(ds, cfg), ds.points).copy_fraction:.0f}%"
            assert shown == expected, (data, shown, expected)
            assert pg.get_by_text(f"n = {d['n']} · seed").count() == 1  # this session's own settings
            assert pg.locator("[data-testid='stException']").count() == 0
            pg.screenshot(path=str(artifacts / f"concurrent-{k}-{data}.png"))
    finally:
        for ctx, *_ in pages:
            ctx.close()


FIRST_POINT = """() => {
    const gd = document.querySelector('.st-key-map_chart .js-plotly-plot');
    const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
    const r = gd.querySelector('.nsewdrag').getBoundingClientRect();
    const tr = gd._fullData[0];  // decoded arrays (plotly sends them base64-encoded)
    return [r.left + xa.l2p(tr.x[0]), r.top + ya.l2p(tr.y[0])];
}"""


@pytest.mark.timeout(HEAVY_TEST_S)
def test_map_hover_shows_thumbnail_for_images(server, page, artifacts):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    open_map(page, f"{server}/map?data=digits&n=16&sigma=0.5&draws=4&steps=20")
    page.get_by_text(re.compile(r"Hover a point to see its image")).first.wait_for(timeout=STEP_TIMEOUT)
    page.locator(".st-key-map_chart .js-plotly-plot").scroll_into_view_if_needed()
    stable_box(page.locator(".st-key-map_chart .js-plotly-plot .nsewdrag").first)
    tip = page.locator(".cdm-hover-thumb")
    tip.wait_for(state="attached", timeout=STEP_TIMEOUT)  # the hover component has mounted
    # The component hooks into the chart on a 300 ms timer, and the chart can be redrawn once
    # more after the run: hover the first training point (its pixel position read afresh from
    # plotly's own axes each time) until the thumbnail shows, within a generous limit.
    deadline = time.time() + STEP_TIMEOUT / 1000
    attempts = 0
    while True:
        attempts += 1
        x, y = page.evaluate(FIRST_POINT)
        page.mouse.move(x - 30, y - 30)
        page.mouse.move(x, y, steps=6)
        try:
            tip.wait_for(state="visible", timeout=2_000)
            break
        except PlaywrightTimeout:
            if time.time() > deadline:
                page.screenshot(path=str(artifacts / "journey-map-hover-failed.png"))
                raise AssertionError(f"no thumbnail after {attempts} hovers over the first training point")
    assert "data:image/png;base64" in tip.evaluate("e => e.style.backgroundImage")
    assert tip.evaluate("e => e.dataset.slot").isdigit()  # a sprite tile was picked for the hovered item
    no_exception(page)
    page.screenshot(path=str(artifacts / "journey-map-hover.png"))


@pytest.mark.timeout(HEAVY_TEST_S)  # the first latent run may train the digits autoencoder
def test_pixel_latent_toggle(server, page, artifacts):
    """The Space toggle on Generate: pixel samples, then latent samples decoded into images, with the
    autoencoder's hash and error shown; the Sources page then shows decoded sources."""
    open_page(page, f"{server}/generate?data=digits&n=16&sigma=0.5&draws=4&steps=20")
    no_exception(page)
    page.get_by_text("Latent space", exact=True).click()
    untrained = page.get_by_text("trained on the first run")
    ready = page.get_by_text(re.compile(r"Autoencoder .* reconstruction RMSE"))
    untrained.or_(ready).first.wait_for()
    wait_idle(page)
    if untrained.count():  # no cached autoencoder yet: train it now
        page.get_by_role("button", name="Generate").click()
        wait_idle(page, timeout=HEAVY_TIMEOUT)
    page.get_by_text(re.compile(r"Autoencoder .* reconstruction RMSE")).first.wait_for()
    no_exception(page)
    assert "space=latent" in page.url
    wait_rendered(page)
    page.screenshot(path=str(artifacts / "latent-generate.png"), full_page=True)
    page.get_by_role("link", name=re.compile("Sources of sample")).click()
    wait_idle(page)
    page.get_by_text("Blend sources, decoded").wait_for()
    page.get_by_text("Nearest training images in pixel space").wait_for()
    no_exception(page)
    wait_rendered(page)
    page.screenshot(path=str(artifacts / "latent-sources.png"), full_page=True)
    page.locator("[data-testid='stSidebarNav'] a", has_text="Generate").click()
    wait_idle(page)
    page.get_by_text("Pixel space", exact=True).click()
    wait_idle(page)
    assert "space=data" in page.url
    no_exception(page)


@pytest.mark.parametrize("query,chart", [("data=moons&n=32&sigma=0.1&draws=4", "gen_scatter"),
                                         ("data=digits&n=32&sigma=0.5&draws=4", "gen_grid")])
def test_plain_click_selects_a_sample(server, page, artifacts, query, chart):
    """A plain click on a sample (2-D scatter or image tile) selects it at once: the caption, the
    outline and the link to its sources follow in the same rerun. On moons sample #5 is drawn over
    training item 513's marker, so the click lands on overlapping markers (SVG gives it to the
    training trace unless click_select looks for the sample under the pointer)."""
    open_page(page, f"{server}/generate?{query}")
    page.get_by_text("Selected sample: #0").wait_for()
    pos = point_position(page, chart, 5)
    click_point(page, pos)
    page.get_by_text("Selected sample: #5").wait_for()
    wait_idle(page)
    assert page.get_by_role("link", name=re.compile("Sources of sample #5")).count() == 1
    assert "sample=5" in page.url
    no_exception(page)
    wait_rendered(page)
    page.screenshot(path=str(artifacts / f"click-select-{chart}.png"), full_page=True)


@pytest.mark.parametrize("moved", [False, True])
def test_box_selection_on_the_svg_scatter_selects_a_sample(server, page, artifacts, moved):
    """Moons draws SVG traces (small clouds): a box around a sample that has no other sample
    nearby selects that sample, not the training points the box also holds; also after a σ move,
    which moves the samples without drawing the chart again (plotly's selection styling threw
    on the training cloud then, until live_chart restored its links)."""
    open_page(page, f"{server}/generate?data=moons&n=32&sigma=0.1&draws=4")
    page.get_by_text("Selected sample: #0").wait_for()
    if moved:
        page.get_by_role("slider").first.focus()
        page.keyboard.press("ArrowRight")
        page.locator("[data-testid='stSidebar']").get_by_text("σ = 0.105 ·").wait_for()
        wait_idle(page)
    kinds = page.evaluate("() => document.querySelector('.st-key-gen_scatter .js-plotly-plot')._fullData"
                          ".map(t => t.type)")
    assert set(kinds) == {"scatter"}, kinds  # SVG, not WebGL (figures.SVG_POINTS)
    pos = [point_position(page, "gen_scatter", i) for i in range(32)]
    # the sample farthest from every other (a 40-px box must hold it alone), not the selected #0
    far = max(range(1, 32), key=lambda i: min(abs(pos[i]["x"] - q["x"]) + abs(pos[i]["y"] - q["y"])
                                              for j, q in enumerate(pos) if j != i))
    x, y = pos[far]["x"], pos[far]["y"]
    assert min(max(abs(x - q["x"]), abs(y - q["y"])) for j, q in enumerate(pos) if j != far) > 22
    page.mouse.move(x - 20, y - 20)
    page.mouse.down()
    page.mouse.move(x, y, steps=5)
    page.mouse.move(x + 20, y + 20, steps=5)
    page.mouse.up()
    page.get_by_text(f"Selected sample: #{far}").wait_for()
    wait_idle(page)
    assert f"sample={far}" in page.url
    no_exception(page)


def test_slider_updates_sidebar_in_the_same_run(server, page, artifacts):
    """Moving σ on a toy set regenerates at once and the sidebar shows the new σ and this run's
    time (not the previous interaction's)."""
    open_page(page, f"{server}/generate?data=moons&sigma=0.1")
    slider = page.get_by_role("slider").first
    slider.focus()
    page.keyboard.press("ArrowRight")
    page.get_by_text("σ = 0.105 ·").first.wait_for()
    wait_idle(page)
    sidebar = " ".join(page.locator("[data-testid='stSidebar'] [data-testid='stCaptionContainer']").all_inner_texts())
    assert "σ = 0.105" in sidebar and "Last run: 64 samples" in sidebar
    assert "sigma=0.105" in page.url
    no_exception(page)


# Streamlit marks every element a rerun will redraw as stale (data-stale="true") when the run starts
WATCH_STALE = """() => {
    const box = (el) => el.closest('[data-testid="stElementContainer"]');
    const watched = [box(document.querySelector('[data-testid="stHeading"]')),
                     box(document.querySelectorAll('[data-testid="stSlider"]')[1]),
                     box(document.querySelector('[data-testid="stSidebar"] [data-testid="stSelectbox"]'))];
    window.__cfdmStale = [];
    new MutationObserver((ms) => { for (const m of ms) if (m.target.getAttribute('data-stale') === 'true')
        window.__cfdmStale.push(m.target.innerText.slice(0, 40)); })
        .observe(document.body, {subtree: true, attributes: true, attributeFilter: ['data-stale']});
    window.__cfdmWatched = watched;
    return watched.every((el) => el);
}"""
STALE_WATCHED = """() => window.__cfdmStale.filter((t) =>
    window.__cfdmWatched.some((el) => el.innerText.slice(0, 40) === t))"""


def test_a_sigma_move_reruns_only_the_results_and_keeps_the_frame_in_step(server, page, artifacts):
    """σ, the run and its results are one fragment: a σ move reruns it alone, so the title, the
    other settings and the sidebar's data set are never redrawn (never marked stale), while the
    samples, the sidebar's summary and the URL follow every move, small or to either end. A
    change of another setting is a full run that keeps σ."""
    open_page(page, f"{server}/generate?data=moons&sigma=0.1")
    wait_chart(page, "gen_scatter")
    assert page.evaluate(WATCH_STALE)
    selector = ".st-key-gen_scatter .js-plotly-plot"
    for key in ["ArrowRight", "PageUp", "End", "Home", "ArrowRight"]:
        before = page.evaluate(f"() => JSON.stringify(document.querySelector('{selector}').data)")
        old = page.get_by_role("slider").first.get_attribute("aria-valuetext")
        page.get_by_role("slider").first.focus()
        page.keyboard.press(key)
        page.wait_for_function("(o) => document.querySelector('input[type=range]').getAttribute('aria-valuetext')"
                               " !== o", arg=old)
        new = float(page.get_by_role("slider").first.get_attribute("aria-valuetext"))
        page.locator("[data-testid='stSidebar']").get_by_text(f"σ = {new:g} ·").wait_for()
        wait_idle(page)
        page.wait_for_function(f"(b) => JSON.stringify(document.querySelector('{selector}').data) !== b",
                               arg=before)
        assert f"sigma={new:g}" in page.url
        assert "Last run: 64 samples" in page.locator("[data-testid='stSidebar']").inner_text()
    assert page.evaluate(STALE_WATCHED) == []  # the fragment's reruns left them alone
    assert page.locator("[data-testid='stSidebar']").get_by_text("σ = ").count() == 1  # one summary
    draws = page.get_by_role("slider").nth(1)
    draws.focus()
    page.keyboard.press("ArrowRight")  # M is outside the fragment: a full run
    page.locator("[data-testid='stSidebar']").get_by_text(f"σ = {new:g} · M = 5 ·").wait_for()
    wait_idle(page)
    assert page.evaluate(STALE_WATCHED)  # the full run redrew them
    assert "draws=5" in page.url and f"sigma={new:g}" in page.url
    assert page.get_by_role("slider").first.get_attribute("aria-valuetext") == f"{new:g}"
    no_exception(page)


@pytest.mark.parametrize("query,chart", [("data=moons&sigma=0.1", "gen_scatter"),
                                         ("data=digits&n=32&sigma=0.5&draws=4", "gen_grid")])
def test_a_sigma_move_updates_the_samples_chart_in_place(server, page, artifacts, query, chart):
    """The samples chart is drawn once and updated on each σ move (ui/live_chart.py), not torn
    down and drawn again: the same chart element shows the new samples, and a click on it still
    selects."""
    open_page(page, f"{server}/generate?{query}")
    selector = f".st-key-{chart} .js-plotly-plot"
    wait_chart(page, chart)
    before = page.evaluate(f"""() => {{ const g = document.querySelector('{selector}'); g.__cfdmTag = 'first';
                                      return JSON.stringify(g.data); }}""")
    old = page.get_by_role("slider").first.get_attribute("aria-valuetext")
    page.get_by_role("slider").first.focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function("(o) => document.querySelector('input[type=range]').getAttribute('aria-valuetext') !== o",
                           arg=old)
    new = page.get_by_role("slider").first.get_attribute("aria-valuetext")
    page.get_by_text(f"σ = {float(new):g} ·").first.wait_for()
    wait_idle(page)
    page.wait_for_function(f"""(b) => {{ const g = document.querySelector('{selector}');
        return g && JSON.stringify(g.data) !== b; }}""", arg=before)
    assert page.evaluate(f"() => document.querySelector('{selector}').__cfdmTag") == "first"  # not remounted
    assert page.locator(selector).count() == 1
    click_point(page, point_position(page, chart, 3))
    page.get_by_text("Selected sample: #3").wait_for()
    no_exception(page)


# every sample marker's position and colour as drawn (the second trace of the scatter)
DRAWN_SAMPLES = """() => {
    const g = document.querySelector('.st-key-gen_scatter .js-plotly-plot');
    const pts = [...g.querySelectorAll('.scatterlayer .trace')[1].querySelectorAll('path.point')];
    return pts.map((p) => [p.getAttribute('transform'), p.style.fill]);
}"""


def test_a_sigma_move_that_only_moves_samples_draws_what_a_full_redraw_draws(server, page, artifacts):
    """A σ move that keeps the layout moves the sample markers (Plotly.animate, without redrawing
    the training cloud) instead of drawing the chart again: every marker's position and colour
    must then be what a full Plotly.react of the same figure draws, and the data the chart holds
    must be the new samples."""
    open_page(page, f"{server}/generate?data=moons&sigma=0.1")
    wait_chart(page, "gen_scatter")
    for _ in range(3):
        before = page.evaluate(DRAWN_SAMPLES)
        old = page.get_by_role("slider").first.get_attribute("aria-valuetext")
        page.evaluate("() => { window.__cfdmReacts = 0; const P = window.__cfdmPlotlyLib; if (!P.__cfdmCounted) {"
                      " const r = P.react; P.react = (...a) => { window.__cfdmReacts += 1; return r(...a); };"
                      " P.__cfdmCounted = true; } }")
        page.get_by_role("slider").first.focus()
        page.keyboard.press("ArrowRight")
        page.wait_for_function("(o) => document.querySelector('input[type=range]').getAttribute('aria-valuetext')"
                               " !== o", arg=old)
        new = float(page.get_by_role("slider").first.get_attribute("aria-valuetext"))
        page.locator("[data-testid='stSidebar']").get_by_text(f"σ = {new:g} ·").wait_for()
        wait_idle(page)
        page.wait_for_function(f"(b) => JSON.stringify(({DRAWN_SAMPLES})()) !== JSON.stringify(b)", arg=before)
        moved = page.evaluate(DRAWN_SAMPLES)
        assert page.evaluate("() => window.__cfdmReacts") == 0  # moved, not drawn again
        assert len(moved) == 64
        redrawn = page.evaluate("""async () => {
            const g = document.querySelector('.st-key-gen_scatter .js-plotly-plot');
            await window.__cfdmPlotlyLib.react(g, g.data, g.layout);
            return (""" + DRAWN_SAMPLES + """)();
        }""")
        assert moved == redrawn
    click_point(page, point_position(page, "gen_scatter", 5))
    page.get_by_text("Selected sample: #5").wait_for()
    no_exception(page)


def test_a_zoom_on_the_samples_chart_is_kept_through_sigma_moves_and_clicks(server, page, artifacts):
    """A zoom survives a σ move (the samples are moved) and a click on a sample (the chart is
    drawn again, a new highlight): both paths keep what the user set (uirevision)."""
    open_page(page, f"{server}/generate?data=moons&sigma=0.1")
    wait_chart(page, "gen_scatter")
    ranges = """() => { const l = document.querySelector('.st-key-gen_scatter .js-plotly-plot')._fullLayout;
                        return [l.xaxis.range.map((v) => +v.toFixed(3)), l.yaxis.range.map((v) => +v.toFixed(3))]; }"""
    # a zoom by mouse (a GUI edit, which uirevision keeps; a plain relayout would be the figure's)
    page.locator(".st-key-gen_scatter").scroll_into_view_if_needed()
    box = page.locator(".st-key-gen_scatter .nsewdrag").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.locator(".st-key-gen_scatter .modebar-btn[data-title='Zoom']").click()
    page.mouse.move(box["x"] + 0.3 * box["width"], box["y"] + 0.3 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.7 * box["width"], box["y"] + 0.7 * box["height"], steps=6)
    page.mouse.up()
    page.wait_for_timeout(300)
    wait_idle(page)
    zoomed = page.evaluate(ranges)
    page.get_by_role("slider").first.focus()
    page.keyboard.press("ArrowRight")
    page.locator("[data-testid='stSidebar']").get_by_text("σ = 0.105 ·").wait_for()
    wait_idle(page)
    assert page.evaluate(ranges) == zoomed
    # the slider's focus scrolled the page: the plot area is measured where it is now
    page.locator(".st-key-gen_scatter").scroll_into_view_if_needed()
    box = stable_box(page.locator(".st-key-gen_scatter .nsewdrag").first)
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.locator(".st-key-gen_scatter .modebar-btn[data-title='Box Select']").click()  # back to selecting
    inside = next(i for i in range(1, 64) if box["x"] + 10 < (q := point_position(page, "gen_scatter", i))["x"]
                  < box["x"] + box["width"] - 10 and box["y"] + 10 < q["y"] < box["y"] + box["height"] - 10)
    click_point(page, point_position(page, "gen_scatter", inside))
    page.get_by_text(f"Selected sample: #{inside}").wait_for()
    wait_idle(page)
    assert page.evaluate(ranges) == zoomed
    no_exception(page)


def test_the_samples_chart_comes_back_after_the_trajectories_view_and_another_page(server, page, artifacts):
    """The chart kept in the page (ui/live_chart.py) is mounted again, drawn and clickable after it
    left the page: the Trajectories view replaces it, and so does another page."""
    open_page(page, f"{server}/generate?data=moons&n=32&sigma=0.1&draws=4")
    page.get_by_text("Selected sample: #0").wait_for()
    page.get_by_text("Trajectories", exact=True).click()
    page.get_by_text("Press Play or drag the time slider").wait_for()
    wait_idle(page)
    assert page.locator(".st-key-gen_scatter .js-plotly-plot").count() == 0
    page.get_by_text("Samples", exact=True).click()
    wait_idle(page)
    wait_chart(page, "gen_scatter")
    click_point(page, point_position(page, "gen_scatter", 4))
    page.get_by_text("Selected sample: #4").wait_for()
    page.locator("[data-testid='stSidebarNav'] a", has_text="Data").click()
    wait_idle(page)
    page.locator("[data-testid='stSidebarNav'] a", has_text="Generate").click()
    wait_idle(page)
    wait_chart(page, "gen_scatter")
    assert page.locator(".st-key-gen_scatter .js-plotly-plot").count() == 1
    click_point(page, point_position(page, "gen_scatter", 6))
    page.get_by_text("Selected sample: #6").wait_for()
    no_exception(page)


def test_the_samples_chart_says_so_when_plotly_js_cannot_load_and_tries_again(server, page, artifacts):
    """If the browser cannot fetch plotly.js (a proxy in the way, a dropped connection), the chart's
    place says so in one line, the rest of the page works, and the next draw tries again."""
    page.route("**/app/static/plotly-*.min.js", lambda route: route.abort())
    open_page(page, f"{server}/generate?data=moons&sigma=0.1")
    page.get_by_text(re.compile(r"The chart could not be drawn \(could not load .*\): reload the page")).wait_for()
    assert page.locator(".st-key-gen_scatter .js-plotly-plot").count() == 0
    no_exception(page)
    page.unroute("**/app/static/plotly-*.min.js")
    page.get_by_role("slider").first.focus()
    page.keyboard.press("ArrowRight")
    page.get_by_text("σ = 0.105 ·").first.wait_for()
    wait_chart(page, "gen_scatter")
    assert page.get_by_text("The chart could not be drawn").count() == 0
    no_exception(page)


@pytest.mark.timeout(HEAVY_TEST_S)  # the map page may be the server's first UMAP run
def test_plain_click_selects_a_sample_on_the_map(server, page, artifacts):
    open_page(page, f"{server}/map?data=digits&n=16&sigma=0.5&draws=4")
    page.get_by_text("Edges join sample #0").wait_for()
    pos = point_position(page, "map_chart", 7)
    click_point(page, pos)
    page.get_by_text("Edges join sample #7").wait_for()
    wait_idle(page)
    assert "sample=7" in page.url
    no_exception(page)
    wait_rendered(page)
    page.screenshot(path=str(artifacts / "click-select-map.png"), full_page=True)


@pytest.mark.timeout(HEAVY_TEST_S)  # the map page may be the server's first UMAP run
def test_one_history_entry_per_page_and_back_returns(server, page, artifacts):
    open_page(page, f"{server}/generate?data=moons&map=pca")
    start = page.evaluate("history.length")
    for k, name in enumerate(("Sources", "Map"), start=1):
        page.locator("[data-testid='stSidebarNav'] a", has_text=name).click()
        page.locator("h1", has_text=name).wait_for(timeout=HEAVY_TIMEOUT)
        wait_idle(page)
        assert page.evaluate("history.length") == start + k
        assert "data=moons" in page.url and "map=pca" in page.url  # settings stay in the link
    page.go_back()
    page.locator("h1", has_text="Sources").wait_for()
    wait_idle(page)
    no_exception(page)


def test_a_bad_link_opens_with_notices(server, page, artifacts):
    open_page(page, f"{server}/generate?data=moons&sigma=99&n=100000&draws=banana")
    notice = page.get_by_text("This link needed changes")
    notice.wait_for()
    assert page.get_by_text("clamped to 1024").count() == 1
    assert page.get_by_role("slider").count() >= 3  # the controls are there
    no_exception(page)
    wait_rendered(page)
    page.screenshot(path=str(artifacts / "link-notices.png"), full_page=True)
    page.get_by_role("button", name="Dismiss").click()
    wait_idle(page)
    assert notice.count() == 0


def test_dark_theme_follows_the_system(server, chromium, artifacts):
    ctx = chromium.new_context(viewport={"width": 1280, "height": 800}, color_scheme="dark")
    ctx.set_default_timeout(STEP_TIMEOUT)
    page = ctx.new_page()
    try:
        open_page(page, f"{server}/generate?data=moons")
        wait_rendered(page)
        bg = page.evaluate("getComputedStyle(document.querySelector('.stApp')).backgroundColor")
        assert sum(rgb_of(bg)) < 150, bg  # a dark background
        # the samples chart (ui/live_chart.py) is themed like the app: dark paper, light text
        wait_chart(page, "gen_scatter")
        paper, text = page.evaluate("() => { const l = document.querySelector('.st-key-gen_scatter .js-plotly-plot')"
                                    "._fullLayout; return [l.paper_bgcolor, l.font.color]; }")
        assert sum(rgb_of(paper)) < 150, paper
        assert sum(rgb_of(text)) > 450, text
        no_exception(page)
        page.screenshot(path=str(artifacts / "dark-generate.png"), full_page=True)
    finally:
        ctx.close()


def test_pin_and_compare_two_settings(server, page, artifacts):
    open_page(page, f"{server}/generate?data=moons&sigma=0.1")
    page.get_by_role("button", name="Pin this run").click()
    page.get_by_text("This run is pinned").wait_for()
    slider = page.get_by_role("slider").first
    slider.focus()
    for _ in range(10):
        page.keyboard.press("ArrowRight")
    page.get_by_text("Pinned run and current run").wait_for()
    wait_idle(page)
    page.get_by_text("only σ changed").wait_for()
    no_exception(page)
    wait_rendered(page)
    page.get_by_text("Pinned run and current run").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "compare-runs.png"), full_page=True)


@pytest.mark.timeout(HEAVY_TEST_S)
def test_what_if_we_add_items(server, page, artifacts):
    open_page(page, f"{server}/sensitivity?data=moons&n=8")
    page.get_by_role("button", name="Re-sample with them").click()
    page.get_by_text("now blend an added item").wait_for(timeout=HEAVY_TIMEOUT)
    wait_idle(page)
    no_exception(page)
    wait_rendered(page)
    page.get_by_text("What if we add these items?").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "what-if-add.png"), full_page=True)


@pytest.mark.timeout(HEAVY_TEST_S)
def test_export_previews_every_chosen_figure(server, page, artifacts):
    open_page(page, f"{server}/export?data=digits&n=16&sigma=0.5&draws=4&figs=samples,sources,sensitivity")
    tabs = page.get_by_role("tab")
    assert [t.inner_text() for t in tabs.all()][-3:] == ["Sample grid", "Sources of a sample", "Sensitivity maps"]
    for name in ("Sources of a sample", "Sensitivity maps"):
        page.get_by_role("tab", name=name).click()
        wait_idle(page)
        wait_rendered(page)
        page.screenshot(path=str(artifacts / f"export-preview-{name.split()[0].lower()}.png"), full_page=True)
    no_exception(page)


@pytest.mark.timeout(HEAVY_TEST_S)  # the map page may be the server's first UMAP run
def test_map_colours_samples_and_warns_about_spread_sources(server, page, artifacts):
    open_page(page, f"{server}/map?data=digits&n=32&sigma=0.5&draws=4&map=pca")
    page.get_by_text("blend sources that lie far apart").wait_for()
    assert page.get_by_text("Colour samples by").count() == 1
    page.get_by_text("largest source").click()
    wait_idle(page)
    page.get_by_text("placed at the map position of their largest blend source").wait_for()
    no_exception(page)
    wait_rendered(page)
    page.screenshot(path=str(artifacts / "map-colour-warning.png"), full_page=True)


def test_sensitivity_says_numerically_zero_instead_of_drawing_noise(server, page, artifacts):
    open_page(page, f"{server}/sensitivity?data=digits&n=8&sigma=1.5&draws=8")
    page.get_by_text("numerically zero").first.wait_for()
    no_exception(page)
    wait_rendered(page)
    page.screenshot(path=str(artifacts / "sensitivity-honest.png"), full_page=True)


def test_click_a_source_on_the_sources_scatter(server, page, artifacts):
    """Moons: a click on one of the sample's plotted neighbours picks it for the 'which samples use
    it' table and marks it in the plot."""
    open_page(page, f"{server}/sources?data=moons&sigma=0.1&draws=4")
    page.get_by_text("Which samples use a training item?").wait_for()
    page.locator(".st-key-src_scatter .js-plotly-plot").first.scroll_into_view_if_needed()
    wait_rendered(page)
    pos = page.evaluate("""() => {
        const g = document.querySelector('.st-key-src_scatter .js-plotly-plot');
        const k = g._fullData.findIndex(t => t.name === 'nearest points');
        const tr = g._fullData[k], i = tr.x.length - 1;  // the farthest of the nearest items
        const xa = g._fullLayout.xaxis, ya = g._fullLayout.yaxis, r = g.getBoundingClientRect();
        return {x: r.left + xa._offset + xa.l2p(tr.x[i]), y: r.top + ya._offset + ya.l2p(tr.y[i]),
                id: tr.customdata[i]};
    }""")
    click_point(page, pos)
    # the picked item (the clicked neighbour, or a source drawn over it) is marked by a trace named
    # after it, and the table's selector shows the same item
    marked = page.wait_for_function("""() => {
        const g = document.querySelector('.st-key-src_scatter .js-plotly-plot');
        const t = g && g._fullData && g._fullData.find(t => /^#\\d+$/.test(t.name || ''));
        return t ? t.name : null;
    }""", polling=100).json_value()
    wait_idle(page)
    # a neighbour with only dust of a sample's weight is nobody's source (analysis/dust.py)
    page.get_by_text(re.compile(rf"(Training item {marked} is a source of|No sample uses training item {marked})"))\
        .first.wait_for()
    no_exception(page)
    page.screenshot(path=str(artifacts / "click-source.png"), full_page=True)


@pytest.mark.timeout(HEAVY_TEST_S)
def test_pages_open_from_links_without_a_run_and_say_what_they_changed(server, page, artifacts):
    """#26's journeys: the Map of a set that does not generate by itself opens without a run (it
    raised 'colour_by'), and page-level link values that were clamped are said in the notice."""
    open_page(page, f"{server}/map?data=fashion-mnist&map=pca")
    no_exception(page)
    assert page.get_by_text("Something went wrong").count() == 0
    page.screenshot(path=str(artifacts / "link-map-fashion.png"), full_page=True)
    open_page(page, f"{server}/export?data=digits&fig_w=-1")
    no_exception(page)
    page.get_by_text("This link needed changes").wait_for()
    assert page.get_by_text("fig_w=-1").count() >= 1
    page.screenshot(path=str(artifacts / "link-export-notice.png"), full_page=True)


@pytest.mark.timeout(HEAVY_TEST_S)
def test_sensitivity_matrix_says_what_empty_cells_are(server, page, artifacts):
    open_page(page, f"{server}/sensitivity?data=digits&n=16&sigma=0.5&draws=4&steps=20")
    no_exception(page)
    wait_rendered(page)
    page.get_by_text("Influence matrix").first.wait_for()
    assert page.get_by_text("were not computed").count() >= 1  # the matrix says what empty cells are
    page.screenshot(path=str(artifacts / "sensitivity-opening.png"), full_page=True)
