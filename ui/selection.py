"""Plotly selection events, parsed once for every page that draws clickable points."""

from __future__ import annotations


def selected_points(event) -> list[tuple[int, int]]:
    """(curve number, id) of each selected point whose customdata carries an id (the first
    customdata entry when it is a list). Streamlit hands the event as a dict or an attribute
    object, depending on its version; both are read."""
    if isinstance(event, dict):
        pts = event.get("selection", {}).get("points", []) or []
    else:
        pts = getattr(getattr(event, "selection", None), "points", None) or []
    out = []
    for p in pts:
        cd = p.get("customdata")
        idx = cd[0] if isinstance(cd, (list, tuple)) else cd
        if idx is not None:
            out.append((p.get("curve_number"), int(idx)))
    return out
