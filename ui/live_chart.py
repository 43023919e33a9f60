"""A plotly chart that stays in the page between reruns, for the slider loop.

`st.plotly_chart` hashes the figure into its element id, so every changed figure is a new
element: the browser tears the old chart down and draws the new one from scratch (`newPlot`),
which on a σ move took longer than the sampler. This `st.components.v2` component keeps one
chart under a fixed key and hands each new figure to `Plotly.react`, which updates the chart in
place. Its plotly.js is the copy plotly.py ships (Streamlit does not expose its own), served from
the app's static folder. A click on a point, or the first point of a box or lasso, of a
selectable trace is sent back as (curve, id); the chart is themed from Streamlit's `--st-*`
colours as `st.plotly_chart` themes it. Where plotly.js cannot be served, `live_chart` draws with
`st.plotly_chart` and the same selection callbacks instead.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

import plotly
import plotly.graph_objects as go
import plotly.io as pio
import streamlit as st

from ui.click_select import POINT_JS, click_select, clicked_point_of, trigger_value
from ui.selection import selected_points

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parents[1] / "static"  # served at app/static/ (server.enableStaticServing)
PLOTLY_SOURCE = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"  # the copy plotly.py ships
PLOTLY_JS = f"plotly-{plotly.__version__}.min.js"  # versioned: a stale copy is never served for a newer plotly.py

JS = POINT_JS + r"""
// Always the copy this app serves, kept apart from window.Plotly: st.plotly_chart sets that
// global to Streamlit's own plotly.js when it draws a chart, and the in-place move below relies on
// the version it was tested with. A global that was there before ours is put back.
const loadPlotly = (url) => {
  if (!window.__cfdmPlotly) {
    window.__cfdmPlotly = new Promise((resolve, reject) => {
      const before = window.Plotly;
      const s = document.createElement('script');
      s.src = url;
      // a failed load is tried again on the next draw, not remembered for the tab's lifetime
      const fail = (why) => { window.__cfdmPlotly = null; s.remove(); reject(new Error(why)); };
      s.onload = () => {
        const ours = window.Plotly;
        if (before !== undefined) window.Plotly = before;
        if (!ours || ours === before) return fail('no Plotly in ' + url);
        window.__cfdmPlotlyLib = ours;  // for the cleanup below (and for tests)
        return resolve(ours);
      };
      s.onerror = () => fail('could not load ' + url);
      document.head.appendChild(s);
    });
  }
  return window.__cfdmPlotly;
};

// Streamlit's plotly theme, from the theme's CSS variables (so dark mode follows the app)
const themed = (layout, el) => {
  const css = getComputedStyle(el);
  const v = (name, d) => (css.getPropertyValue(name) || '').trim() || d;
  const text = v('--st-text-color', '#31333F'), bg = v('--st-background-color', '#FFFFFF');
  const grid = v('--st-border-color-light', 'rgba(49, 51, 63, 0.1)'), border = v('--st-border-color', grid);
  // axis labels in the text colour faded, as Streamlit's own theme draws them
  const hex = text.match(/^#([0-9a-f]{6})$/i), n = hex ? parseInt(hex[1], 16) : 0;
  const faded = hex ? `rgba(${n >> 16}, ${(n >> 8) & 255}, ${n & 255}, 0.6)` : text;
  const axis = {gridcolor: grid, zerolinecolor: grid, tickcolor: grid, minor: {gridcolor: grid}, automargin: true,
                tickfont: {color: faded, size: 12}, title: {font: {color: faded, size: 14}}};
  const template = {layout: {
    font: {color: text, family: v('--st-font', 'sans-serif'), size: 12},
    paper_bgcolor: bg, plot_bgcolor: bg,
    colorway: v('--st-chart-categorical-colors', '').match(/#[0-9a-f]{3,8}|rgba?\([^)]*\)|hsla?\([^)]*\)/gi) || [],
    xaxis: Object.assign({showgrid: false, zeroline: false}, axis), yaxis: axis,
    legend: {font: {color: text, size: 12}, bgcolor: 'rgba(0,0,0,0)'},
    hoverlabel: {bgcolor: bg, bordercolor: border, font: {color: text, size: 12}},
    coloraxis: {colorbar: {tickfont: {color: faded}, title: {font: {color: faded}}}},
  }, data: {scatter: [{marker: {colorbar: {tickfont: {color: text}, title: {font: {color: faded}}}}}]}};
  if (!template.layout.colorway.length) delete template.layout.colorway;
  return Object.assign({}, layout, {template: template});
};

const instances = new WeakMap();  // one chart per mounted component (its parentElement)

// A σ move changes where the samples are and their colours, nothing else: the training cloud,
// the layout (explicit axis ranges) and every style stay. Plotly.react redraws every trace, and
// the training cloud's points took most of its time; Plotly.animate without a redraw moves only
// the traces named, as a frame of an animation. It is used only when nothing but the points
// (x, y, marker colour) of some traces changed; anything else is drawn by Plotly.react.
const MOVING = ['x', 'y'];
const fixedPart = (trace) => {
  const t = Object.assign({}, trace);
  for (const k of MOVING) delete t[k];
  if (t.marker) { t.marker = Object.assign({}, t.marker); delete t.marker.color; }
  return JSON.stringify(t);
};
const movingPart = (trace) => JSON.stringify([trace.x, trace.y, trace.marker && trace.marker.color]);
const movingData = (trace) => {
  const d = {x: trace.x, y: trace.y};
  if (trace.marker && trace.marker.color !== undefined) d.marker = {color: trace.marker.color};
  return d;
};
// The animation recomputes every trace's calcdata but re-links to its SVG group (node3) only the
// traces it moved; plotly's click selection styles every trace through that link and threw on
// the others, so their links (to groups the animation left in place) are restored.
const moveTraces = (Plotly, gd, traces, data) => {
  const groups = (gd.calcdata || []).map((cd) => cd && cd[0] && cd[0].node3);
  return Plotly.animate(gd, {data: traces.map((i) => movingData(data[i])), traces: traces},
                        {frame: {duration: 0, redraw: false}, transition: {duration: 0}, mode: 'immediate'})
    .then(() => (gd.calcdata || []).forEach((cd, i) => {
      if (cd && cd[0] && !cd[0].node3 && groups[i]) cd[0].node3 = groups[i];
    }));
};
// the traces to move ([] when nothing changed), or null where the chart must be drawn again
const movedTraces = (before, now) => {
  if (!before || before.layout !== now.layout || before.config !== now.config) return null;
  if (before.fixed.length !== now.fixed.length || now.fixed.some((f, i) => f !== before.fixed[i])) return null;
  const moved = now.moving.map((m, i) => (m !== before.moving[i] ? i : -1)).filter((i) => i >= 0);
  return moved.every((i) => now.kinds[i] === 'scatter') ? moved : null;  // only SVG scatter moves
};

export default function(component) {
  const { data, parentElement, setTriggerValue } = component;
  let inst = instances.get(parentElement);
  if (!inst) {
    const div = document.createElement('div');
    div.style.width = '100%';
    const note = document.createElement('div');  // errors go here, never into plotly's own element
    note.style.color = 'var(--st-red-text-color, #bd4043)';
    parentElement.append(div, note);
    inst = {div: div, note: note, curves: [], next: null, busy: false, hooked: false};
    instances.set(parentElement, inst);
  }
  inst.next = data;

  const hook = (gd) => {
    if (inst.hooked) return;
    inst.hooked = true;
    gd.on('plotly_click', (ev) => {
      let p = ev && ev.points && ev.points[0];
      // SVG markers that overlap: plotly's hover prefers the smaller one (a training point under a
      // sample), so a click that names a trace that is not selectable goes to the nearest
      // selectable marker under the pointer
      if (p && !inst.curves.includes(p.curveNumber)) p = nearestSelectable(gd, ev.event, inst.curves);
      const id = pointId(p);
      if (id !== null) setTriggerValue('clicked', {curve: p.curveNumber, id: id, t: Date.now()});
    });
    gd.on('plotly_selected', (ev) => {
      if (!ev || !(ev.range || ev.lassoPoints)) return;  // a click also selects: plotly_click has it
      const points = (ev.points || []).filter(p => inst.curves.includes(p.curveNumber))
        .map(p => [p.curveNumber, pointId(p)]).filter(p => p[1] !== null);
      if (points.length) setTriggerValue('selected', {points: points, t: Date.now()});
    });
  };

  // draw the newest figure only: moves that arrive while a draw runs are superseded, not queued.
  // The selectable curves change with the figure drawn, not with the figure received.
  const drain = (Plotly) => {
    if (inst.busy || !inst.next) return;
    const d = inst.next;
    inst.next = null;
    inst.busy = true;
    Promise.resolve()
      .then(() => {
        const fig = JSON.parse(d.figure);
        const layout = themed(fig.layout || {}, parentElement);
        const drawn = {layout: JSON.stringify(layout), config: JSON.stringify(d.config || {}),
                       fixed: fig.data.map(fixedPart), moving: fig.data.map(movingPart),
                       kinds: fig.data.map((t) => t.type || 'scatter')};
        const plan = movedTraces(inst.drawn, drawn);
        inst.drawn = null;  // until this draw has succeeded
        const draw = plan && !plan.length ? Promise.resolve()  // the same figure again
          : plan ? moveTraces(Plotly, inst.div, plan, fig.data)
          : Plotly.react(inst.div, fig.data, layout, d.config);
        return draw.then(() => { inst.drawn = drawn; });
      })
      .then(() => { inst.curves = d.curves || []; inst.note.textContent = ''; hook(inst.div); })
      .catch((err) => {
        inst.note.textContent = 'The chart could not be drawn: ' + err.message;
        Plotly.purge(inst.div);  // the next figure starts from an empty chart, with its listeners again
        inst.hooked = false;
        inst.drawn = null;
      })
      .finally(() => { inst.busy = false; drain(Plotly); });
  };
  loadPlotly(data.plotly_url).then(drain).catch((err) => {
    inst.note.textContent = 'The chart could not be drawn (' + err.message + '): reload the page.';
  });
  // Streamlit calls the cleanup of a run that a newer run superseded as well as at unmount: only
  // a chart that has left the page is released (plotly's resize listener holds it otherwise)
  return () => {
    if (parentElement.isConnected) return;
    if (window.__cfdmPlotlyLib) window.__cfdmPlotlyLib.purge(inst.div);
    instances.delete(parentElement);
  };
}
"""

# light DOM (not a shadow root): plotly.js puts its styles (hover labels, modebar) in the page's head
_component = st.components.v2.component("cfdm_live_chart", js=JS, isolate_styles=False)


def plotly_js_url() -> str | None:
    """The URL of plotly.py's own plotly.js in the app's static folder (copied there once), or
    None where it cannot be served: static serving off, or the folder not writable (then tried
    again on the next call, as a failure is not cached)."""
    if not st.get_option("server.enableStaticServing"):
        return None
    try:
        return served_copy()
    except OSError as e:
        log.warning("plotly.js cannot be served from %s (%s): charts are redrawn in full", STATIC, e)
        return None


_copy_lock = threading.Lock()


@functools.cache
def served_copy() -> str:
    """Copy plotly.js into STATIC unless a whole copy is there, and return its URL. A copy is
    written to a file of its own and renamed into place, so sessions and server processes that
    copy at once never see (or serve) half a file."""
    source, target = PLOTLY_SOURCE, STATIC / PLOTLY_JS
    with _copy_lock:
        if not (target.is_file() and target.stat().st_size == source.stat().st_size):
            STATIC.mkdir(exist_ok=True)
            fd, partial = tempfile.mkstemp(dir=STATIC, prefix=".plotly-", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
                    shutil.copyfileobj(src, out)
                os.chmod(partial, 0o644)  # mkstemp makes it private; a served file is readable like its source
                os.replace(partial, target)
            finally:
                Path(partial).unlink(missing_ok=True)
    return f"app/static/{PLOTLY_JS}"


def figure_json(fig: go.Figure) -> str:
    """The figure as plotly.js reads it, without plotly.py's default template: the component
    themes the chart from the app's colours, as `st.plotly_chart` does."""
    spec = fig.to_plotly_json()
    spec.get("layout", {}).pop("template", None)
    return pio.json.to_json_plotly(spec)


def picked_point(value, curves: list[int]) -> tuple[int, int] | None:
    """(curve, id) of what the component's trigger in this run names: the clicked point, else the
    first point of a box or lasso that lies on one of `curves` (the value is a dict or an
    attribute object, depending on Streamlit's version)."""
    hit = clicked_point_of(value)
    if hit is not None:
        return hit if hit[0] in curves else None
    selected = trigger_value(value, "selected")
    try:
        return next(((int(c), int(i)) for c, i in (selected or {}).get("points") or [] if int(c) in curves), None)
    except (TypeError, ValueError):  # a malformed selection selects nothing
        return None


def live_chart(fig: go.Figure, key: str, curves: list[int], on_pick, config: dict | None = None) -> None:
    """Draw `fig` under `key`, updated in place on later reruns. `on_pick(curve, id)` runs before
    the rerun that a click on a point of one of `curves` causes, or a box or lasso around some
    (its first point); points carry their id as (first) customdata."""
    config = {"displaylogo": False, "responsive": True} | (config or {})
    url = plotly_js_url()
    if url is None:
        event = st.plotly_chart(fig, width="stretch", on_select="rerun", selection_mode=("points", "box", "lasso"),
                                key=key, config=config)
        hit = next(((c, i) for c, i in selected_points(event) if c in curves), None)
        if hit is not None:
            on_pick(*hit)
        click_select(key, curves, on_pick)
        return

    def picked():
        hit = picked_point(st.session_state.get(key), curves)
        if hit is not None:
            on_pick(*hit)

    _component(data={"figure": figure_json(fig), "curves": [int(c) for c in curves], "config": config,
                     "plotly_url": url}, key=key, on_clicked_change=picked, on_selected_change=picked)
