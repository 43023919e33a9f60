"""Figures of the local models' patch mosaics and of model comparisons (pure: arrays in, figures out).

Used by the Sources page, the Generate page's comparison and the export alike."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from PIL import Image
from plotly.subplots import make_subplots

from cdm_core.report.figures import CATEGORICAL, FONT, SEQUENTIAL, to_image

OTHER_COLOUR = "#D4D4D4"  # pixels whose main source is outside the top regions


def _grey(vec: np.ndarray, image_shape: tuple) -> np.ndarray:
    arr = np.clip(np.asarray(vec, np.float64).reshape(image_shape), 0, 1)
    return arr if arr.ndim == 2 else arr.mean(-1)


def region_colours(count: int) -> list[str]:
    return [CATEGORICAL[k % len(CATEGORICAL)] for k in range(count)]


def mosaic_figure(sample: np.ndarray, image_shape: tuple, rank: np.ndarray, items: list[int], entropy: np.ndarray,
                  item_labels: list[str] | None = None, height: int = 300) -> go.Figure:
    """Three panels: the sample, each pixel coloured by its main source item (the `items` ranked
    0..k-1, any other item light grey; hover and click give the pixel), and the entropy of each
    pixel's weights (nats). `rank` (P,) from analysis.mosaic.rank_map."""
    h, w = image_shape[:2]
    k = len(items)
    fig = make_subplots(1, 3, horizontal_spacing=0.06,
                        subplot_titles=("sample", "main source", "entropy"))
    img = np.clip(np.asarray(sample, np.float64).reshape(image_shape), 0, 1)
    if img.ndim == 3:
        fig.add_trace(go.Image(z=(img * 255).astype(np.uint8), hoverinfo="skip"), 1, 1)
    else:
        fig.add_trace(go.Heatmap(z=img, colorscale="gray", zmin=0, zmax=1, showscale=False, hoverinfo="skip"), 1, 1)
    colours = region_colours(k) + [OTHER_COLOUR]
    # a discrete colour scale: value v in 0..k maps to colours[v]
    steps = []
    for v, c in enumerate(colours):
        steps += [[v / (k + 1), c], [(v + 1) / (k + 1), c]]
    labels = item_labels or [f"#{j}" for j in items]
    names = np.array(labels + ["another item"], dtype=object)
    grid = rank.reshape(h, w)
    pixel = np.arange(h * w).reshape(h, w)
    fig.add_trace(go.Heatmap(z=grid + 0.5, zmin=0, zmax=k + 1, colorscale=steps, showscale=False,
                             customdata=pixel, text=names[grid], xgap=0.5, ygap=0.5,
                             hovertemplate="pixel (%{y}, %{x})<br>main source: %{text}<extra></extra>"), 1, 2)
    fig.add_trace(go.Heatmap(z=entropy.reshape(h, w), colorscale=SEQUENTIAL, zmin=0,
                             colorbar=dict(title=dict(text="nats", side="right"), thickness=10, len=0.9, x=1.0),
                             customdata=pixel, hovertemplate="pixel (%{y}, %{x})<br>entropy %{z:.2f} nats"
                             "<extra></extra>"), 1, 3)
    # the key to the colours: one square per item, in a compact legend under the panels
    for label, colour in zip([f"#{j}" for j in items] + ["other"], colours):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=label, hoverinfo="skip",
                                 marker=dict(symbol="square", size=8, color=colour)), 1, 2)
    for c in (1, 2, 3):
        fig.update_xaxes(visible=False, row=1, col=c, constrain="domain")
        fig.update_yaxes(visible=False, autorange="reversed", scaleanchor=f"x{'' if c == 1 else c}", row=1, col=c,
                         constrain="domain")
    fig.update_layout(font=FONT, height=height, margin=dict(l=5, r=5, t=30, b=5), showlegend=True,
                      legend=dict(orientation="h", yanchor="top", y=-0.02, xanchor="center", x=0.5,
                                  itemsizing="constant", itemwidth=30, tracegroupgap=0))
    return fig


def region_overlay(item: np.ndarray, image_shape: tuple, taken: np.ndarray, colour: str, scale: int = 4) -> Image.Image:
    """The training item in grey with the pixels the sample took from it tinted `colour`
    (`taken`: (P,) bool over the item's pixels)."""
    base = np.asarray(to_image(item, image_shape, 1).convert("RGB"), np.float64)
    rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)], np.float64)
    mask = np.asarray(taken, bool).reshape(image_shape[:2])
    base[mask] = 0.45 * base[mask] + 0.55 * rgb
    img = Image.fromarray(base.round().astype(np.uint8), "RGB")
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST) if scale > 1 else img


def comparison_figure(reference: np.ndarray, other: np.ndarray, image_shape: tuple, names: tuple[str, str],
                      r: np.ndarray, r2: np.ndarray, count: int = 8, height: int = 260) -> go.Figure:
    """Two rows of images from the same seeds (reference above, the other below), each column
    titled with the sample number and its pixel Pearson r and r^2 = 1 - SS_res / SS_tot."""
    n = min(count, len(reference), len(other))
    titles = [f"#{k}<br>r {r[k]:.2f}<br>r² {r2[k]:.2f}" for k in range(n)] + [""] * n
    fig = make_subplots(2, n, horizontal_spacing=0.01, vertical_spacing=0.04, subplot_titles=titles,
                        row_titles=list(names))
    for row, data in ((1, reference), (2, other)):
        for k in range(n):
            fig.add_trace(go.Heatmap(z=_grey(data[k], image_shape), colorscale="gray", zmin=0, zmax=1,
                                     showscale=False, hoverinfo="skip"), row, k + 1)
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed", constrain="domain")
    for k in range(2 * n):
        fig.layout[f"yaxis{'' if k == 0 else k + 1}"].scaleanchor = f"x{'' if k == 0 else k + 1}"
    fig.update_layout(font=FONT, height=height, margin=dict(l=5, r=30, t=60, b=5), showlegend=False)
    return fig
