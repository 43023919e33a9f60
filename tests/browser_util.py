"""Real-browser helpers: start `streamlit run app.py` on a free localhost port and drive Debian
chromium with playwright (never `playwright install`: the system browser is used)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def have_chromium() -> bool:
    return Path(CHROMIUM).exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Generous limits: a first run can compile (UMAP's numba JIT), import torch or render figures
# with kaleido on a busy 2-core machine. They only cost time when something is really wrong;
# every wait is for an explicit page condition, never a fixed sleep.
HEAVY_TIMEOUT = 240_000  # ms: a page's first heavy run (map, sensitivities, export bundle)
STEP_TIMEOUT = 120_000  # ms: default for any other wait, click or navigation
SERVER_START_S = 180  # s: until /_stcore/health answers


@contextmanager
def streamlit_server(extra_env: dict | None = None):
    port = free_port()
    env = os.environ | {"STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"} | (extra_env or {})
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    log = open(ROOT / "test-artifacts" / f"server-{port}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + SERVER_START_S
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit server exited with code {proc.returncode}; see {log.name}")
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=5).status == 200:
                    break
            except OSError:
                time.sleep(0.3)
        else:
            raise RuntimeError(f"streamlit server did not answer within {SERVER_START_S} s; see {log.name}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@contextmanager
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=STEP_TIMEOUT)
        try:
            yield b
        finally:
            b.close()


def new_context(chromium):
    """A browser context (one Streamlit session) with generous default timeouts."""
    ctx = chromium.new_context(viewport={"width": 1280, "height": 800})
    ctx.set_default_timeout(STEP_TIMEOUT)
    ctx.set_default_navigation_timeout(STEP_TIMEOUT)
    return ctx


BUSY = ("document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " || document.querySelector('[data-testid=\"stProgress\"]')"
        " || document.querySelector('[data-stale=\"true\"]')")


def wait_idle(page, timeout: float = HEAVY_TIMEOUT, quiet_ms: int = 750) -> None:
    """Wait until Streamlit has finished running the script: no 'Running...' status widget, no
    progress bar and no stale element, continuously for `quiet_ms` (a rerun can start right after
    the first one ends). Polled every 100 ms, up to `timeout` ms."""
    page.evaluate("() => { window.__cdmIdleSince = null; }")
    page.wait_for_function(
        """(quiet) => {
            const now = performance.now();
            if (%s) { window.__cdmIdleSince = null; return false; }
            if (window.__cdmIdleSince === null || window.__cdmIdleSince === undefined) window.__cdmIdleSince = now;
            return now - window.__cdmIdleSince >= quiet;
        }""" % BUSY, arg=quiet_ms, polling=100, timeout=timeout)


def wait_rendered(page, timeout: float = STEP_TIMEOUT) -> None:
    """Every plotly chart drawn and every image loaded (before a screenshot or a pixel position)."""
    page.wait_for_function(
        "() => [...document.querySelectorAll('.js-plotly-plot')]"
        ".every(g => g._fullLayout && g.querySelector('.main-svg'))"
        " && [...document.images].every(i => i.complete)", polling=100, timeout=timeout)


def wait_chart(page, chart_key: str, timeout: float = STEP_TIMEOUT) -> None:
    """The plotly chart with key `chart_key` is in the page and drawn."""
    page.wait_for_function(f"() => !!(document.querySelector('.st-key-{chart_key} .js-plotly-plot') || {{}})._fullData",
                           timeout=timeout)


def stable_box(locator, timeout: float = STEP_TIMEOUT) -> dict:
    """The element's bounding box once layout has settled (the same on three reads in a row)."""
    deadline = time.time() + timeout / 1000
    boxes = []
    while time.time() < deadline:
        box = locator.bounding_box()
        boxes = (boxes + [box])[-3:]
        if box is not None and len(boxes) == 3 and boxes[0] == boxes[1] == boxes[2]:
            return box
        time.sleep(0.1)
    raise AssertionError(f"the layout of {locator} did not settle in {timeout / 1000:.0f} s (last boxes {boxes})")


def point_position(page, chart_key: str, index: int) -> dict:
    """Page coordinates of point `index` of the samples (the trace named "samples", else the first
    trace with per-point ids other than the training data) in the chart with key `chart_key`."""
    page.locator(f".st-key-{chart_key} .js-plotly-plot").first.scroll_into_view_if_needed()
    wait_rendered(page)
    return page.evaluate("""([key, i]) => {
        const g = document.querySelector(`.st-key-${key} .js-plotly-plot`);
        const tr = g._fullData.find(t => t.name === 'samples')
            || g._fullData.find(t => t.customdata && t.name !== 'training data');
        const xa = g._fullLayout.xaxis, ya = g._fullLayout.yaxis, r = g.getBoundingClientRect();
        return {x: r.left + xa._offset + xa.l2p(tr.x[i]), y: r.top + ya._offset + ya.l2p(tr.y[i])};
    }""", [chart_key, index])


def open_page(page, url):
    """Open a page and wait until its first run (however heavy) has finished."""
    page.goto(url)
    page.wait_for_selector("h1", timeout=HEAVY_TIMEOUT)
    wait_idle(page, timeout=HEAVY_TIMEOUT)
    assert page.get_by_text("Page not found").count() == 0, url


def click_point(page, pos: dict) -> None:
    """Click a plotted point as a person does: the pointer comes to rest on it and plotly's hover
    label shows before the button goes down (plotly takes a click's point from its hover, which it
    computes on a mouse move; a move and a click in the same instant could race it)."""
    page.mouse.move(pos["x"] - 6, pos["y"] - 6)
    page.mouse.move(pos["x"], pos["y"], steps=3)
    try:
        page.wait_for_function("() => !!document.querySelector('.hoverlayer .hovertext')", polling=50, timeout=3000)
    except Exception:  # a point without a hover label (hoverinfo skip) is still clicked
        pass
    page.mouse.down()
    page.mouse.up()
