"""The slider loop in a real browser: how long one σ move on the Generate page takes until the
page has settled (new samples drawn, sidebar updated, nothing running), against the library's own
time for the same samples in the same run.

    python benchmarks/slider_loop.py [--moves 7] [--data moons,digits]

Starts `streamlit run app.py` on a free localhost port and drives Debian chromium with playwright
(tests/browser_util.py). Each move presses the right arrow on the focused σ slider; the clock runs
from the key press (performance.now() in the page) to the first 10-ms poll at which the
sidebar shows the new σ, the samples chart holds new data and no element is running or stale.
Prints one line per data set: median and spread of the settle times, and the library time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser_util import BUSY, browser, new_context, streamlit_server, wait_idle  # noqa: E402

# what the chart holds (a scatter's points or an image grid's picture), compared before and after
SIGNATURE = """const signature = (g) => {
        const s = JSON.stringify(g.data);
        const h = Math.floor(s.length / 2);
        return s.length + ':' + s.slice(h, h + 400) + s.slice(-400);
    };"""

SETTLED = """([sigma, before]) => {
    """ + SIGNATURE + """
    if (%s) return false;
    const side = document.querySelector('[data-testid="stSidebar"]');
    if (!side || !side.innerText.includes('σ = ' + sigma + ' ')) return false;
    const g = document.querySelector('[data-testid="stMain"] .js-plotly-plot');
    if (!g || !g._fullData) return false;
    return signature(g) !== before ? performance.now() : false;
}""" % BUSY

CHART_SIGNATURE = """() => {
    """ + SIGNATURE + """
    const g = document.querySelector('[data-testid="stMain"] .js-plotly-plot');
    return signature(g);
}"""


def sigma_text(page) -> str:
    return page.get_by_role("slider").first.get_attribute("aria-valuetext")


def library_seconds(data: str, sigma: float) -> float:
    """The sampler alone for the page's settings (defaults of the data set), warm."""
    from cdm_core import SamplerConfig, load, sample
    from ui.state import defaults_for
    p = defaults_for(data) | {"sigma": sigma}
    cfg = SamplerConfig.from_options(p, trajectory=data == "moons")
    ds = load(data)
    sample(ds, cfg)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        sample(ds, cfg)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# The last DOM change the move caused: a MutationObserver stamps every change (a cheap callback),
# so the page is not disturbed while it works. Polling the settled condition every 10 ms (the
# clock this benchmark used first) runs `innerText` and a JSON dump of the chart's data on the
# browser's main thread 100 times a second, on the two cores the page and the server share.
OBSERVE = """() => {
    window.__cdmLastChange = performance.now();
    if (window.__cdmObserver) return;
    window.__cdmObserver = new MutationObserver(() => { window.__cdmLastChange = performance.now(); });
    window.__cdmObserver.observe(document.body, {subtree: true, childList: true, attributes: true,
                                                 characterData: true});
}"""


def measure(url: str, data: str, moves: int) -> tuple[list[float], list[float], list[float]]:
    """Settle times of `moves` σ moves on each clock (alternating moves: the mutation clock, then
    the 10-ms poll), after one warm-up move; and the server's sampling time for each move."""
    with browser() as chromium:
        ctx = new_context(chromium)
        page = ctx.new_page()
        page.goto(f"{url}/generate?data={data}")
        page.get_by_role("slider").first.wait_for()
        wait_idle(page)
        page.wait_for_function("() => { const g = document.querySelector('[data-testid=\"stMain\"] .js-plotly-plot');"
                               " return !!(g && g._fullData); }", timeout=120_000)  # the first run drawn
        page.evaluate(OBSERVE)
        slider = page.get_by_role("slider").first
        observed, polled, runs = [], [], []
        for k in range(2 * moves + 1):  # the first move warms the figure path and is not counted
            by_poll = k % 2 == 0
            before = page.evaluate(CHART_SIGNATURE)
            old = float(sigma_text(page))
            slider.focus()
            t0 = page.evaluate("() => performance.now()")
            page.keyboard.press("ArrowRight")
            # the new value read with one attribute lookup: a role query (get_by_role) here computed
            # the accessibility tree and every element's style while the page was working
            moved = page.wait_for_function("(o) => { const s = document.querySelector('input[type=range]'); "
                                           "const v = s && s.getAttribute('aria-valuetext'); "
                                           "return v !== null && Number(v) !== o ? v : false; }", arg=old,
                                           polling=10 if by_poll else 100)
            new = float(moved.json_value())
            try:
                done = page.wait_for_function(SETTLED, arg=[f"{new:g}", before], polling=10 if by_poll else 100,
                                              timeout=60_000)
            except Exception:
                side = page.evaluate("() => document.querySelector('[data-testid=\"stSidebar\"]').innerText")
                raise RuntimeError(f"did not settle: sigma {new:g}, sidebar {side!r}, chart before {before[:80]}, "
                                   f"now {page.evaluate(CHART_SIGNATURE)[:80]}") from None
            wait_idle(page, quiet_ms=300)
            if k:
                if by_poll:
                    polled.append((done.json_value() - t0) / 1000)
                else:
                    observed.append((page.evaluate("() => window.__cdmLastChange") - t0) / 1000)
            side = page.evaluate("() => document.querySelector('[data-testid=\"stSidebar\"]').innerText")
            runs.append(float(side.split("samples in ")[1].split(" s")[0]) if "samples in " in side else float("nan"))
        ctx.close()
    return observed, polled, runs[1:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--moves", type=int, default=7)
    ap.add_argument("--data", default="moons,digits")
    a = ap.parse_args()
    with streamlit_server() as url:
        for data in a.data.split(","):
            observed, polled, runs = measure(url, data, a.moves)
            lib = library_seconds(data, 0.1)
            settle = statistics.median(observed)
            print(f"{data}: sigma move settles in {settle:.3f} s by the last DOM change (median of {len(observed)}; "
                  f"min {min(observed):.3f}, max {max(observed):.3f}); {statistics.median(polled):.3f} s by the "
                  f"10-ms poll (min {min(polled):.3f}, max {max(polled):.3f}); sampling in the server "
                  f"{statistics.median(runs):.3f} s; the sampler alone {lib:.3f} s (settle / sampler "
                  f"{settle / lib:.1f}x)", flush=True)


if __name__ == "__main__":
    main()
