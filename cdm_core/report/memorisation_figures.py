"""The memorisation-against-size figure (pure: rows in, a plotly figure out)."""

from __future__ import annotations

import plotly.graph_objects as go

from cdm_core.report.figures import CATEGORICAL, FONT


def curve_name(model: str, sigma: float) -> str:
    return f"cfdm σ={sigma:g}" if model == "cfdm" else model


def criterion_label(ratio: float) -> str:
    """The y axis: the criterion, short enough for a column figure (Gu et al. 2025 is cited in
    the page, the CLI and every manifest's verdict definitions)."""
    return f"memorised (d1/d2 < {'1/3' if abs(ratio - 1 / 3) < 1e-12 else f'{ratio:.3g}'})"


def size_curves_figure(rows: list[dict], levels: list[dict], criterion: str, height: int = 380) -> go.Figure:
    """Memorised fraction against training-set size (log axis), one curve per (model, sigma),
    Wilson 95% intervals as error bars, each curve's EMM marked by an open diamond at 90%."""
    fig = go.Figure()
    keys = list(dict.fromkeys((r["model"], r["sigma"]) for r in rows))
    for k, key in enumerate(keys):
        colour = CATEGORICAL[k % len(CATEGORICAL)]
        curve = sorted((r for r in rows if (r["model"], r["sigma"]) == key), key=lambda r: r["size"])
        fig.add_trace(go.Scatter(
            x=[r["size"] for r in curve], y=[r["memorised"] for r in curve], mode="lines+markers",
            name=curve_name(*key), line=dict(color=colour, width=1.5), marker=dict(size=6, color=colour),
            error_y=dict(type="data", symmetric=False, array=[r["hi"] - r["memorised"] for r in curve],
                         arrayminus=[r["memorised"] - r["lo"] for r in curve], thickness=1, width=3),
            hovertemplate="size %{x}<br>memorised %{y:.2f}<extra>" + curve_name(*key) + "</extra>"))
        level = next((e for e in levels if (e["model"], e["sigma"]) == key), None)
        if level and level["emm"] is not None:
            fig.add_trace(go.Scatter(x=[level["emm"]], y=[0.9], mode="markers", showlegend=False,
                                     marker=dict(symbol="diamond-open", size=11, color=colour, line=dict(width=2)),
                                     hovertemplate=("EMM ≥ " if level["every_size"] else "EMM ") + "%{x}"
                                     "<extra>" + curve_name(*key) + "</extra>"))
    fig.add_hline(y=0.9, line=dict(color="#888888", width=1, dash="dot"))
    sizes = sorted({r["size"] for r in rows})
    fig.update_xaxes(type="log", title="training-set size", tickvals=sizes, ticktext=[f"{s:,}" for s in sizes])
    fig.update_yaxes(range=[-0.03, 1.03], title=criterion)
    fig.update_layout(font=FONT, height=height, margin=dict(l=10, r=10, t=10, b=10),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="left", x=0))
    return fig
