"""Click-to-select for plotly charts.

Streamlit's `on_select` turns plotly's click mode into "event" and reports box and lasso
selections only: a plain click on a point fires an empty selection. A small
`st.components.v2` component (its JavaScript runs in the app page) finds the chart by its key,
listens to plotly's click events and sends the clicked point's id back as a trigger value. The
Python callback runs before the next script run, so the page draws the new selection at once.
Small clouds are SVG traces (figures.SVG_POINTS). Where their markers overlap, plotly's hover
prefers the smaller marker (a training point under a sample), so the click then goes to the
nearest visible marker of a selectable trace under the pointer (its own size as the reach).
"""

from __future__ import annotations

import streamlit as st

# shared with ui/live_chart.py: which point a click or a selection names, and its id
POINT_JS = """
// customdata is a number, or a row whose first entry is the id (an array, or an array-like object
// when plotly decoded a 2-D typed array); null when it holds no usable id
const pointId = (p) => {
  const raw = p ? p.customdata : undefined;
  const cd = (raw !== null && typeof raw === 'object') ? (raw[0] !== undefined ? raw[0] : raw['0']) : raw;
  const id = Number(cd);
  return raw === undefined || raw === null || !Number.isFinite(id) ? null : id;
};

const nearestSelectable = (gd, e, curves) => {
  const lay = gd._fullLayout;
  if (!e || !lay || !gd._fullData) return null;
  const box = gd.getBoundingClientRect();
  let best = null, bestDist = Infinity;
  for (const c of curves) {
    const tr = gd._fullData[c];
    if (!tr || tr.visible !== true || !tr.x || !tr.y || !tr.customdata) continue;  // not hidden from the legend
    const xa = lay['xaxis' + (tr.xaxis || 'x').slice(1)], ya = lay['yaxis' + (tr.yaxis || 'y').slice(1)];
    if (!xa || !ya || xa.type !== 'linear' || ya.type !== 'linear') continue;
    const sizes = tr.marker ? tr.marker.size : undefined;  // a number, or one per marker
    for (let i = 0; i < tr.x.length; i++) {
      const size = typeof sizes === 'number' ? sizes : (sizes && Number.isFinite(+sizes[i]) ? +sizes[i] : 6);
      const dx = box.left + xa._offset + xa.l2p(tr.x[i]) - e.clientX;
      const dy = box.top + ya._offset + ya.l2p(tr.y[i]) - e.clientY;
      const dist = Math.hypot(dx, dy);
      if (dist <= size / 2 + 2 && dist < bestDist) {
        bestDist = dist;
        best = {curveNumber: c, customdata: tr.customdata[i]};
      }
    }
  }
  return best;
};
"""

JS = POINT_JS + """
export default function(component) {
  const { data, setTriggerValue } = component;
  let attached = null;
  const attach = () => {
    const gd = document.querySelector(`.st-key-${data.chart_key} .js-plotly-plot`);
    if (!gd || gd === attached || typeof gd.on !== 'function') return;
    attached = gd;
    gd.on('plotly_click', (ev) => {
      let p = ev && ev.points && ev.points[0];
      // where SVG markers overlap (a sample over a training point), plotly's hover prefers the
      // smaller marker, so the click may name a trace that is not selectable: then the nearest
      // marker of a selectable trace under the pointer gets it
      if (p && !data.curves.includes(p.curveNumber)) p = nearestSelectable(gd, ev.event, data.curves);
      const id = pointId(p);
      if (id === null) return;
      setTriggerValue('clicked', {curve: p.curveNumber, id: id, t: Date.now()});
    });
  };
  attach();
  // a chart redrawn by a rerun is a new element (Streamlit remounts a changed figure): hook into
  // it as soon as it is in the page, or a click just after a redraw went unheard until the timer
  const observer = new MutationObserver(attach);
  observer.observe(document.body, {childList: true, subtree: true});
  const timer = setInterval(attach, 300);
  return () => { clearInterval(timer); observer.disconnect(); };
}
"""

_component = st.components.v2.component("cfdm_click_select", js=JS)


def trigger_value(value, name: str):
    """A component value's trigger `name` (Streamlit hands the value as a dict or an attribute
    object, depending on its version); None when not set."""
    return value.get(name) if isinstance(value, dict) else getattr(value, name, None)


def clicked_point_of(value) -> tuple[int, int] | None:
    """(curve, id) of the click a component's value holds."""
    clicked = trigger_value(value, "clicked")
    if not clicked:
        return None
    try:
        return int(clicked["curve"]), int(clicked["id"])
    except (KeyError, TypeError, ValueError):  # a click without a usable id selects nothing
        return None


def clicked_point(state_key: str) -> tuple[int, int] | None:
    """(curve, id) of the click that triggered this run, read from the component's session state."""
    return clicked_point_of(st.session_state.get(state_key))


def click_select(chart_key: str, curves: list[int], on_click) -> None:
    """Call `on_click(curve, id)` when a point of one of `curves` in the chart `chart_key` is
    clicked (before the rerun the click causes). Points carry their id as (first) customdata."""
    state_key = f"{chart_key}_click"

    def handle():
        hit = clicked_point(state_key)
        if hit is not None:
            on_click(*hit)

    _component(data={"chart_key": chart_key, "curves": [int(c) for c in curves]}, key=state_key,
               on_clicked_change=handle)
