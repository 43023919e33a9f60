"""Pure figure builders: arrays and config in, a plotly figure or a PIL image out.

Used by the dashboard pages and by export alike, so what is exported is what is shown.
Palettes are colour-blind-safe (Okabe-Ito for categories, cividis for sequential values,
RdBu for signed values centred at zero); images are upscaled by nearest neighbour, never blurred.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from PIL import Image, ImageDraw

OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")
# Paul Tol's "muted" scheme: ten colour-blind-safe categories, none black (samples are drawn black)
CATEGORICAL = ("#CC6677", "#332288", "#DDCC77", "#117733", "#88CCEE", "#882255", "#44AA99", "#999933",
               "#AA4499", "#BBBBBB")
SEQUENTIAL = "cividis"
DIVERGING = "RdBu_r"
TRAIN_COLOUR = "#9AA5B1"
SAMPLE_COLOUR = "#D55E00"
SOURCE_COLOUR = "#0072B2"
FONT = dict(family="Inter, Helvetica, Arial, sans-serif", size=13)


def base_layout(fig: go.Figure, title: str | None = None, height: int = 480, square: bool = False) -> go.Figure:
    # no template here: the dashboard themes charts to its light or dark mode, export adds a white one
    fig.update_layout(font=FONT, height=height, title=title,
                      margin=dict(l=10, r=10, t=40 if title else 10, b=10),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))
    fig.update_xaxes(exponentformat="e")  # "2e-15", not plotly's SI "2f"
    fig.update_yaxes(exponentformat="e")
    if square:
        fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig


# ---------------------------------------------------------------------------- images

def to_image(vec: np.ndarray, image_shape: tuple, scale: int = 1) -> Image.Image:
    """One flattened image in [0, 1] -> PIL image, upscaled `scale` times by nearest neighbour."""
    arr = np.clip(np.asarray(vec, np.float64).reshape(image_shape), 0, 1)
    img = Image.fromarray((arr * 255 + 0.5).astype(np.uint8), mode="L" if arr.ndim == 2 else "RGB")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return img


def patch_mask(image_shape: tuple, row: int, col: int, radius: int) -> np.ndarray:
    """A square patch of ones (side 2 radius + 1, clipped to the image) centred at (row, col),
    over every channel: the direction "brighter here" for an image, flattened."""
    mask = np.zeros(image_shape)
    mask[max(0, row - radius):row + radius + 1, max(0, col - radius):col + radius + 1] = 1.0
    return mask.reshape(-1)


def outlined_patch(vec: np.ndarray, image_shape: tuple, row: int, col: int, radius: int, scale: int = 4) -> Image.Image:
    """The image with the patch of `patch_mask` outlined (for showing which pixels move)."""
    h, w = image_shape[:2]
    img = to_image(vec, image_shape, scale).convert("RGB")
    ImageDraw.Draw(img).rectangle([scale * max(0, col - radius), scale * max(0, row - radius),
                                   scale * min(w, col + radius + 1) - 1, scale * min(h, row + radius + 1) - 1],
                                  outline=OKABE_ITO[0], width=2)
    return img


def image_grid(vectors: np.ndarray, image_shape: tuple, ncols: int = 8, scale: int = 3, pad: int = 2,
               borders: np.ndarray | None = None, transparent: bool = False) -> Image.Image:
    """Tile images into a grid, padded in white (or transparent: RGBA, for a page in light or dark
    mode). `borders`: optional per-image RGB hex colour."""
    n = len(vectors)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    h, w = image_shape[0] * scale, image_shape[1] * scale
    size = (ncols * (w + pad) + pad, nrows * (h + pad) + pad)
    grid = Image.new("RGBA", size, (255, 255, 255, 0)) if transparent else Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(grid)
    for i, v in enumerate(vectors):
        r, c = divmod(i, ncols)
        x0, y0 = pad + c * (w + pad), pad + r * (h + pad)
        grid.paste(to_image(v, image_shape, scale).convert(grid.mode), (x0, y0))
        if borders is not None and borders[i]:
            draw.rectangle([x0 - 1, y0 - 1, x0 + w, y0 + h], outline=borders[i], width=max(1, pad))
    return grid


def fixed_scale_colours(values, lo: float = 0.0, hi: float = 1.0, colorscale: str = SEQUENTIAL) -> list[str]:
    """Colours of `values` on a fixed [lo, hi] scale (not stretched to the data), as hex strings."""
    from plotly.colors import sample_colorscale, unlabel_rgb
    t = np.clip((np.asarray(values, np.float64) - lo) / (hi - lo), 0, 1)
    rgb = sample_colorscale(colorscale, list(t))
    return ["#%02x%02x%02x" % tuple(int(round(c)) for c in unlabel_rgb(col)) for col in rgb]


def grid_scale(image_shape: tuple, target_px: int = 72) -> int:
    """Upscaling factor that draws an image about `target_px` tall (at least 2x)."""
    return max(2, int(round(target_px / image_shape[0])))


def png_data_uri(img: Image.Image) -> str:
    """A PIL image as a PNG data URI (for plotly Image traces' `source`)."""
    import base64
    import io
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def image_grid_figure(vectors: np.ndarray, image_shape: tuple, ncols: int = 8, values=None,
                      value_name: str = "", scale: int = 3, title: str | None = None,
                      labels=None, selected: int | None = None, value_range=(0.0, 1.0)) -> go.Figure:
    """A clickable grid: the tiled image plus one (nearly invisible) marker per tile, so that
    clicking or box-selecting a tile selects that item (`customdata` holds its position).
    `values` colour each tile's border on the fixed scale `value_range` (a colour bar says
    which); `selected` is outlined in the sample colour."""
    pad = max(3, scale)  # room for a border that reads at a glance
    borders = None if values is None else fixed_scale_colours(values, *value_range)
    grid = image_grid(vectors, image_shape, ncols, scale, pad, borders=borders, transparent=True)
    n = len(vectors)
    ncols = max(1, min(ncols, n))
    h, w = image_shape[0] * scale, image_shape[1] * scale
    idx = np.arange(n)
    cx = pad + (idx % ncols) * (w + pad) + w / 2
    cy = pad + (idx // ncols) * (h + pad) + h / 2
    # the picture travels as one PNG (the browser decodes it natively), not as a nested list of
    # every pixel's numbers, which took most of a slider move on digits to send and draw
    fig = go.Figure(go.Image(source=png_data_uri(grid), hoverinfo="skip"))
    hover = [f"#{i}" + (f"<br>{value_name} {values[i]:.3g}" if values is not None else "")
             + (f"<br>label {labels[i]}" if labels is not None else "") for i in idx]
    marker = dict(size=max(8, min(w, 40)), opacity=0.01, color="black", symbol="square")
    if values is not None:  # the colour bar of the borders (one invisible point carries it)
        lo, hi = value_range
        fig.add_trace(go.Scatter(x=[cx[0]], y=[cy[0]], mode="markers", hoverinfo="skip", showlegend=False,
                                 marker=dict(size=0.1, opacity=0, color=[lo], cmin=lo, cmax=hi, colorscale=SEQUENTIAL,
                                             showscale=True, colorbar=dict(title=dict(text=value_name, side="right"),
                                                                           thickness=12, len=0.9))))
    if selected is not None and 0 <= selected < n:
        x0, y0 = cx[selected] - w / 2 - pad, cy[selected] - h / 2 - pad
        fig.add_shape(type="rect", x0=x0, y0=y0, x1=x0 + w + 2 * pad, y1=y0 + h + 2 * pad,
                      line=dict(color=SAMPLE_COLOUR, width=3))
    fig.add_trace(go.Scatter(x=cx, y=cy, mode="markers", marker=marker, customdata=idx, text=hover,
                             hovertemplate="%{text}<extra></extra>", showlegend=False, name="items"))
    fig.update_xaxes(visible=False, range=[0, grid.width])
    fig.update_yaxes(visible=False, range=[grid.height, 0])
    base_layout(fig, title, height=max(220, int(grid.height * 1.05) + (40 if title else 10)))
    fig.update_layout(dragmode="select", clickmode="event+select")
    return fig


# ---------------------------------------------------------------------------- point clouds

# Point clouds up to this many points (training data and samples together) are drawn as SVG. A
# browser without a GPU (headless, remote desktops, most laptops' default for a VM) rasterises WebGL
# in software, and Streamlit remounts a chart whose figure changed, so every redraw created a new
# WebGL context: 0.23 s of each σ move on moons went to `getContext` alone (BENCHMARKS.md). A few
# thousand SVG markers redraw in milliseconds; larger clouds need WebGL.
SVG_POINTS = 5000


def scatter_class(n_points: int):
    """go.Scatter (SVG) for small clouds, go.Scattergl (WebGL) for large ones."""
    return go.Scatter if n_points <= SVG_POINTS else go.Scattergl


def train_trace(points: np.ndarray, labels=None, max_points: int = 20000, name: str = "training data",
                extra_points: int = 0):
    """The training cloud; `extra_points` drawn beside it count towards the SVG / WebGL choice."""
    pts = points[:max_points]
    colour = TRAIN_COLOUR
    return scatter_class(len(pts) + extra_points)(
        x=pts[:, 0], y=pts[:, 1], mode="markers", name=name, marker=dict(size=4, color=colour, opacity=0.55),
        customdata=np.arange(len(pts)), hovertemplate="training #%{customdata}<extra></extra>")


def samples_scatter(train: np.ndarray, samples: np.ndarray, values=None, value_name: str = "nn ratio",
                    title: str | None = None, highlight: int | None = None) -> go.Figure:
    """2-D samples over the training data, coloured by a memorisation measure."""
    fig = go.Figure(train_trace(train, extra_points=len(samples)))
    marker = dict(size=8, line=dict(width=0.5, color="white"))
    if values is not None:
        marker |= dict(color=values, colorscale=SEQUENTIAL, cmin=0, cmax=1, showscale=True,
                       colorbar=dict(title=dict(text=value_name, side="right"), thickness=12))
    else:
        marker |= dict(color=SAMPLE_COLOUR)
    points = type(fig.data[0])  # the training cloud's kind, chosen for both clouds together
    fig.add_trace(points(x=samples[:, 0], y=samples[:, 1], mode="markers", name="samples", marker=marker,
                         customdata=np.arange(len(samples)),
                         hovertemplate="sample #%{customdata}<br>(%{x:.3f}, %{y:.3f})<extra></extra>"))
    if highlight is not None:
        fig.add_trace(go.Scatter(x=samples[[highlight], 0], y=samples[[highlight], 1], mode="markers",
                                 name=f"sample #{highlight}", hoverinfo="skip",
                                 marker=dict(size=16, symbol="circle-open", color=SAMPLE_COLOUR, line=dict(width=3))))
    base_layout(fig, title, square=True)
    fig.update_layout(dragmode="select", clickmode="event+select")
    return fig


def steady_ranges(fig: go.Figure, train: np.ndarray, samples: np.ndarray, cells: int = 8,
                  pad: float = 0.05) -> go.Figure:
    """Explicit axis ranges that cover the training points and the samples, padded by `pad` of
    the training span and rounded outward to 1/`cells` of it: a σ move that keeps every sample
    inside leaves the layout as it was, so the dashboard moves the samples instead of redrawing
    the chart (ui/live_chart.py). Plotly's autorange would shift with every sample."""
    pts = np.concatenate([np.asarray(train, np.float64)[:, :2], np.asarray(samples, np.float64)[:, :2]])
    pts = pts[np.isfinite(pts).all(1)]
    if not len(pts):
        return fig
    lo_t, hi_t = np.asarray(train, np.float64)[:, :2].min(0), np.asarray(train, np.float64)[:, :2].max(0)
    span = hi_t - lo_t
    span = np.where(span > 0, span, np.maximum(1.0, np.abs(hi_t)))  # a flat cloud still gets a range
    cell = span / cells
    lo = np.floor((pts.min(0) - pad * span) / cell) * cell
    hi = np.ceil((pts.max(0) + pad * span) / cell) * cell
    # constrain="domain": an equal-aspect chart (scaleanchor) keeps exactly these ranges and
    # narrows its plot area instead. With plotly's default ("range") the browser widens the range
    # to the aspect and writes the widened one back, so the next figure's range differs from it
    # and plotly's uirevision drops the user's zoom on every redraw.
    fig.update_xaxes(range=[float(lo[0]), float(hi[0])], autorange=False, constrain="domain")
    fig.update_yaxes(range=[float(lo[1]), float(hi[1])], autorange=False, constrain="domain")
    return fig


def trajectories_figure(train: np.ndarray, trajectory: np.ndarray, times: np.ndarray,
                        title: str | None = None, max_paths: int = 64) -> go.Figure:
    """Animated 2-D trajectories from noise to data: faint full paths, a frame per step."""
    traj = trajectory[:, :max_paths]
    fig = go.Figure([train_trace(train)])
    xs = np.concatenate([np.append(traj[:, i, 0], np.nan) for i in range(traj.shape[1])])
    ys = np.concatenate([np.append(traj[:, i, 1], np.nan) for i in range(traj.shape[1])])
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="paths", hoverinfo="skip",
                             line=dict(width=1, color=SOURCE_COLOUR), opacity=0.35))
    last = len(traj) - 1
    fig.add_trace(go.Scatter(x=traj[last, :, 0], y=traj[last, :, 1], mode="markers", name="samples",
                             marker=dict(size=8, color=SAMPLE_COLOUR, line=dict(width=0.5, color="white"))))
    fig.frames = [go.Frame(data=[go.Scatter(x=traj[k, :, 0], y=traj[k, :, 1])], traces=[2], name=str(k))
                  for k in range(len(traj))]
    steps = [dict(method="animate", label=f"{times[k]:.2f}",
                  args=[[str(k)], dict(mode="immediate", frame=dict(duration=0, redraw=False),
                                       transition=dict(duration=0))])
             for k in range(len(traj))]
    lo = np.nanmin(traj[..., :2].reshape(-1, 2), 0)
    hi = np.nanmax(traj[..., :2].reshape(-1, 2), 0)
    fig.update_xaxes(range=[min(lo[0], train[:, 0].min()) - 0.2, max(hi[0], train[:, 0].max()) + 0.2])
    fig.update_yaxes(range=[min(lo[1], train[:, 1].min()) - 0.2, max(hi[1], train[:, 1].max()) + 0.2])
    base_layout(fig, title, height=520, square=True)
    fig.update_layout(
        sliders=[dict(active=last, currentvalue=dict(prefix="t = "), steps=steps, pad=dict(t=30))],
        updatemenus=[dict(type="buttons", showactive=False, x=0, y=-0.08, xanchor="left",
                          buttons=[dict(label="Play", method="animate",
                                        args=[None, dict(frame=dict(duration=120, redraw=False), fromcurrent=False,
                                                         transition=dict(duration=0))])])])
    return fig


def sources_images_figure(sample: np.ndarray, sample_title: str, sources: np.ndarray, source_titles: list[str],
                          nearest: np.ndarray, nearest_titles: list[str], image_shape: tuple,
                          title: str | None = None,
                          row_labels: tuple = ("sample, sources", "nearest (L2)")) -> go.Figure:
    """A labelled sources figure for images, on a grid with a label column: row 1 the sample, then
    its blend sources (titles give ids and exact weights); row 2 a row label, then the nearest
    training items under them (titles give ids and distances). Titles are short lines, so that
    neighbouring titles never run together in a column-wide figure."""
    from plotly.subplots import make_subplots
    ncols = max(1 + len(sources), len(nearest), 2)
    tiles = [[sample, *sources], list(nearest)]
    titles = [[sample_title, *source_titles], list(nearest_titles)]
    fig = make_subplots(rows=2, cols=ncols, horizontal_spacing=0.03, vertical_spacing=0.22,
                        subplot_titles=[t for row in titles for t in row + [""] * (ncols - len(row))])
    for r, row in enumerate(tiles):
        for c, vec in enumerate(row):
            if vec is not None:
                fig.add_trace(go.Image(z=np.asarray(to_image(vec, image_shape).convert("RGB")), hoverinfo="skip"),
                              r + 1, c + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    for k in range(1, 2 * ncols + 1):  # square panels, so tiles keep the images' aspect
        fig.update_yaxes(scaleanchor=f"x{'' if k == 1 else k}", row=(k - 1) // ncols + 1, col=(k - 1) % ncols + 1)
    # row labels in the left margin, turned along the rows
    for text, axis in zip(row_labels, ("", str(ncols + 1))):
        fig.add_annotation(text=text, textangle=-90, showarrow=False, xref="paper", yref=f"y{axis} domain",
                           x=0, xanchor="right", xshift=-4, y=0.5)
    fig.update_annotations(font_size=10)
    base_layout(fig, title, height=360)
    fig.update_layout(margin=dict(l=24, r=5, t=88 if title else 52, b=5))
    if title:  # at the very top, above the three-line tile titles
        fig.update_layout(title=dict(y=1.0, yref="container", yanchor="top", pad=dict(t=6)))
    return fig


def sources_scatter(train: np.ndarray, sample: np.ndarray, source_ids: np.ndarray, source_weights: np.ndarray,
                    nn_ids: np.ndarray, title: str | None = None, marked: int | None = None) -> go.Figure:
    """One 2-D sample, lines to its blend sources (width by weight) and its nearest points."""
    fig = go.Figure(train_trace(train))
    ok = source_ids >= 0
    ids, w = source_ids[ok], source_weights[ok]
    for j, wt in zip(ids, w):
        if wt < 1e-3:
            continue
        fig.add_trace(go.Scatter(x=[sample[0], train[j, 0]], y=[sample[1], train[j, 1]], mode="lines",
                                 line=dict(width=1 + 8 * float(wt), color=SOURCE_COLOUR), opacity=0.7,
                                 hoverinfo="skip", showlegend=False))
    fig.add_trace(go.Scatter(x=train[nn_ids, 0], y=train[nn_ids, 1], mode="markers", name="nearest points",
                             marker=dict(size=12, symbol="circle-open", color=OKABE_ITO[2], line=dict(width=2)),
                             customdata=nn_ids, hovertemplate="nearest #%{customdata}<extra></extra>"))
    keep = w >= 1e-3
    fig.add_trace(go.Scatter(x=train[ids[keep], 0], y=train[ids[keep], 1], mode="markers", name="blend sources",
                             marker=dict(size=6 + 14 * w[keep], color=SOURCE_COLOUR),
                             customdata=np.stack([ids[keep], w[keep]], 1),
                             hovertemplate="source #%{customdata[0]:.0f}<br>weight %{customdata[1]:.3f}"
                                           "<extra></extra>"))
    fig.add_trace(go.Scatter(x=[sample[0]], y=[sample[1]], mode="markers", name="sample",
                             marker=dict(size=16, symbol="star", color=SAMPLE_COLOUR,
                                         line=dict(width=1, color="black"))))
    if marked is not None and 0 <= marked < len(train):  # the training item picked for the table
        fig.add_trace(go.Scatter(x=[train[marked, 0]], y=[train[marked, 1]], mode="markers", name=f"#{marked}",
                                 hoverinfo="skip", marker=dict(size=20, symbol="diamond-open", color=SAMPLE_COLOUR,
                                                               line=dict(width=2))))
    base_layout(fig, title, square=True)
    return fig


def weights_bar(ids: np.ndarray, weights: np.ndarray, title: str | None = None) -> go.Figure:
    ok = ids >= 0
    fig = go.Figure(go.Bar(x=[f"#{i}" for i in ids[ok]], y=weights[ok], marker_color=SOURCE_COLOUR,
                           hovertemplate="training %{x}<br>weight %{y:.4f}<extra></extra>"))
    fig.update_yaxes(title="blend weight", range=[0, 1])
    fig.update_xaxes(type="category", title="training item")  # "#123" must not be read as a number
    return base_layout(fig, title, height=260)


def data_scatter(points: np.ndarray, labels=None, title: str | None = None, max_points: int = 20000) -> go.Figure:
    pts = points[:max_points]
    if labels is None:
        fig = go.Figure(train_trace(pts))
    else:
        fig = go.Figure()
        lab = labels[:max_points]
        for k, val in enumerate(np.unique(lab)):
            m = lab == val
            fig.add_trace(go.Scattergl(x=pts[m, 0], y=pts[m, 1], mode="markers", name=f"label {val}",
                                       marker=dict(size=4, color=CATEGORICAL[k % len(CATEGORICAL)], opacity=0.7)))
    return base_layout(fig, title, square=True)


# ---------------------------------------------------------------------------- sensitivity

def _signed(vec: np.ndarray, image_shape: tuple) -> np.ndarray:
    arr = np.asarray(vec, np.float64).reshape(image_shape)
    return arr.mean(2) if arr.ndim == 3 else arr  # colour: mean over channels


def label_of(ds, j: int) -> str:
    """ " (label)" for training item j when the data set names its labels, else ""."""
    if ds.labels is None or ds.label_names is None or not 0 <= int(ds.labels[j]) < len(ds.label_names):
        return ""
    return f" ({ds.label_names[int(ds.labels[j])]})"


def tile_title(ds, j: int, line: str) -> str:
    """A tile's title for item j: id, class label (when the set names labels), a value; one short
    line each, so neighbouring titles never run together in a column-wide figure."""
    label = label_of(ds, j).strip(" ()")
    return f"#{j}<br>{'class ' + label + '<br>' if label else ''}{line}"


def compact_number(v: float) -> str:
    """2 significant digits, short exponent: 6.5e-5, 0.12, 3.4."""
    text = f"{v:.2g}"
    if "e" in text:
        mant, exp = text.split("e")
        text = f"{mant}e{int(exp)}"
    return text


def best_columns(n: int, aspect: float, rows_per_item: int) -> int:
    """Columns that make n items (each `rows_per_item` square panels tall) as large as possible on
    a page of height/width `aspect`."""
    def size(c):
        return min(1.0 / c, aspect / (rows_per_item * -(-n // c) + 0.3 * -(-n // c)))
    return max(range(1, max(n, 1) + 1), key=lambda c: (size(c), -c))


def sensitivity_maps_figure(jac_rows: np.ndarray, image_shape: tuple, titles: list[str],
                            title: str | None = None, zero_floor: float = 0.0, per_map_scale: bool = False,
                            images: np.ndarray | None = None, colorbar_title: str = "∂x/∂log π",
                            aspect: float | None = None, zero_label: bool = True) -> go.Figure:
    """Signed per-pixel maps of J rows, centred at zero: one colour scale shared by the figure, or
    one per map (`per_map_scale`; each title then gives its own maximum). Maps whose largest
    |value| is at or below `zero_floor` are left blank and labelled numerically zero, never
    stretched into colour. `images` (optional, one per map) are drawn above their maps, so each
    map sits under the item it belongs to. `aspect` (height / width of a page) wraps the items
    into the columns that fill it best; without it, one row."""
    from plotly.subplots import make_subplots
    n = len(jac_rows)
    maps = [_signed(r, image_shape) for r in jac_rows]
    peaks = [float(np.abs(m).max()) for m in maps]
    live = [p > zero_floor for p in peaks]
    shared = max([p for p, ok in zip(peaks, live) if ok], default=1.0)
    per_item = 2 if images is not None else 1
    ncols = n if aspect is None else best_columns(n, aspect, per_item)
    blocks = -(-n // ncols)
    stride = per_item + 1  # a block of items, then a thin spacer row that holds the next titles
    rows = blocks * stride - 1
    labels = [""] * (rows * ncols)
    for k, (t, p, ok) in enumerate(zip(titles, peaks, live)):
        labels[(k // ncols) * stride * ncols + k % ncols] = f"{t}<br>‖J‖ {compact_number(p) if ok else '≈ 0'}"
    # the spacer row between blocks holds the next block's two-line titles: tall enough for them
    heights = ([1.0] * per_item + [0.8]) * blocks
    fig = make_subplots(rows=rows, cols=ncols, subplot_titles=labels, horizontal_spacing=0.02,
                        vertical_spacing=0.02 / max(rows, 1), row_heights=heights[:rows])
    for k, m in enumerate(maps):
        top, col = (k // ncols) * stride + 1, k % ncols + 1
        if images is not None:
            fig.add_trace(go.Image(z=np.asarray(to_image(images[k], image_shape).convert("RGB")), hoverinfo="skip"),
                          top, col)
        # per-map scale: each map divided by its own maximum (given under its title), so one colour
        # bar (-1..1, "of each map's maximum") still reads for every map
        zmax = 1.0 if per_map_scale or not live[k] else shared
        z = (m / peaks[k] if per_map_scale else m) if live[k] else np.zeros_like(m)
        bar_title = f"{colorbar_title}<br>÷ each map's max" if per_map_scale else colorbar_title
        fig.add_trace(go.Heatmap(z=z, zmin=-zmax, zmax=zmax, zmid=0, colorscale=DIVERGING, customdata=m,
                                 showscale=k == max(i for i, ok in enumerate(live) if ok) if any(live) else False,
                                 colorbar=dict(title=dict(text=bar_title, side="right"), thickness=10,
                                               exponentformat="e"),
                                 hovertemplate="pixel (%{y}, %{x})<br>%{customdata:.3g}<extra></extra>"),
                      top + per_item - 1, col)
        if not live[k] and zero_label:
            axis = (top + per_item - 2) * ncols + col  # make_subplots numbers axes row by row
            suffix = "" if axis == 1 else str(axis)
            fig.add_annotation(text="numerically<br>zero", showarrow=False, font=dict(size=10, color="#555"),
                               xref=f"x{suffix} domain", yref=f"y{suffix} domain", x=0.5, y=0.5)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed")
    for k in range(1, rows * ncols + 1):  # every panel square: images and maps share a size
        fig.update_yaxes(scaleanchor=f"x{'' if k == 1 else k}", row=(k - 1) // ncols + 1, col=(k - 1) % ncols + 1)
    fig.update_annotations(font_size=11)
    panel = max(80, min(170, 760 // max(ncols, 1)))  # about square panels in a page-wide chart
    base_layout(fig, title, height=int(panel * sum(heights[:rows])) + 45)
    fig.update_layout(margin=dict(l=10, r=10, t=60 if title else 45, b=10))
    return fig


def addition_figure(displacement: np.ndarray, added_share: np.ndarray, tol: float, title: str | None = None):
    """Per sample: how far it moved when items were added (log scale; numerically zero moves on
    the floor) against the blend weight it now puts on the added items."""
    d = np.maximum(np.asarray(displacement, np.float64), tol)
    fig = go.Figure(go.Scatter(x=np.asarray(added_share), y=d, mode="markers", customdata=np.arange(len(d)),
                               marker=dict(size=8, color=SAMPLE_COLOUR, line=dict(width=0.5, color="white")),
                               hovertemplate="sample #%{customdata}<br>moved %{y:.3g}<br>share of added items "
                                             "%{x:.3f}<extra></extra>"))
    fig.add_hline(y=tol, line=dict(dash="dot", color="#555", width=1))
    # on a log axis an annotation's y is the exponent (plotly's convention for log axes)
    fig.add_annotation(x=1.0, xref="paper", y=float(np.log10(tol)), yref="y", text="numerically no move",
                       showarrow=False, xanchor="right", yanchor="bottom", font=dict(size=10, color="#555"))
    fig.update_xaxes(title_text="blend weight on added items", range=[-0.03, 1.03])
    fig.update_yaxes(title_text="move (data units)", type="log")
    return base_layout(fig, title, height=320)


def influence_matrix_figure(training_ids: np.ndarray, influence: np.ndarray, title: str | None = None,
                            plot_width_px: float = 600.0, label_px: float = 9.0) -> go.Figure:
    """Samples x training items |J|, columns ordered by the sample they matter most to. Cells not
    computed (the item is not among that sample's candidates) are left empty (NaN: the background
    shows, distinct from small values) and said so on hover."""
    cols = np.unique(training_ids[training_ids >= 0])
    mat = np.full((len(training_ids), len(cols)), np.nan)
    pos = {c: k for k, c in enumerate(cols)}
    for i, (ids, inf) in enumerate(zip(training_ids, influence)):
        for j, v in zip(ids, inf):
            if j >= 0:
                mat[i, pos[j]] = v
    filled = np.nan_to_num(mat, nan=-1.0)
    order = np.lexsort((-filled.max(0), filled.argmax(0)))  # block-diagonal-ish
    mat, cols = mat[:, order], cols[order]
    # log scale: |J| spans many decades (a sample near a tie between two sources has a huge J)
    positive = mat[mat > 0]
    floor = max(float(positive.max()) * 1e-8, float(positive.min())) if positive.size else 1.0
    logm = np.where(np.isnan(mat), np.nan, np.log10(np.maximum(np.nan_to_num(mat, nan=floor), floor)))
    text = np.where(np.isnan(mat), "not computed (not among this sample's candidates)",
                    np.vectorize(lambda v: f"|J| = {v:.3g}")(np.nan_to_num(mat)))
    fig = go.Figure(go.Heatmap(z=logm, x=[f"#{c}" for c in cols], y=[f"sample {i}" for i in range(len(mat))],
                               text=text, colorscale=SEQUENTIAL, hoverongaps=True,
                               colorbar=dict(title="log10 ‖∂x/∂log π‖", thickness=12),
                               hovertemplate="%{y}, training %{x}<br>%{text}<extra></extra>"))
    # vertical column labels, every k-th, so that labels of `label_px` text never overlap across
    # `plot_width_px` of plot (a label is about 1.7 font sizes wide, gap included); every column
    # keeps its id on hover
    names = [f"#{c}" for c in cols]
    every = max(1, int(np.ceil(len(cols) * 1.7 * label_px / max(plot_width_px, 50))))
    axis_title = "training item" + (f" (every {every}th labelled)" if every > 1 else "")
    fig.update_xaxes(type="category", title_text=axis_title,
                     tickangle=-90, tickfont=dict(size=label_px), showgrid=False, tickmode="array",
                     tickvals=names[::every], ticktext=names[::every])
    fig.update_yaxes(autorange="reversed", title_text="sample")
    return base_layout(fig, title, height=max(260, 14 * len(mat) + 80))


def total_influence_figure(training_ids: np.ndarray, influence: np.ndarray, top: int = 20,
                           title: str | None = None) -> go.Figure:
    ok = training_ids >= 0
    ids, vals = training_ids[ok], influence[ok]
    tot = {}
    for j, v in zip(ids, vals):
        tot[int(j)] = tot.get(int(j), 0.0) + float(v)
    best = sorted(tot.items(), key=lambda kv: -kv[1])[:top]
    fig = go.Figure(go.Bar(x=[f"#{j}" for j, _ in best], y=[v for _, v in best], marker_color=SOURCE_COLOUR,
                           hovertemplate="training %{x}<br>total |J| %{y:.3g}<extra></extra>"))
    fig.update_yaxes(title="total influence Σ|J|")
    fig.update_xaxes(type="category")  # ids as labels, in ranked order
    return base_layout(fig, title, height=280)


def arrows_figure(train: np.ndarray, samples: np.ndarray, jac: np.ndarray, j: int, title: str | None = None,
                  length: float | None = None, selected: int | None = None) -> go.Figure:
    """2-D: how each sample moves when training point j is up-weighted (arrows along J)."""
    fig = go.Figure(train_trace(train))
    norms = np.linalg.norm(jac, axis=1)
    scale = length if length is not None else (0.3 / norms.max() if norms.max() > 0 else 1.0)
    for s, v in zip(samples, jac):
        if np.linalg.norm(v) * scale < 1e-4:
            continue
        fig.add_annotation(x=s[0] + scale * v[0], y=s[1] + scale * v[1], ax=s[0], ay=s[1], xref="x", yref="y",
                           axref="x", ayref="y", showarrow=True, arrowhead=2, arrowwidth=1.5, arrowcolor=SAMPLE_COLOUR)
    fig.add_trace(go.Scatter(x=samples[:, 0], y=samples[:, 1], mode="markers", name="samples",
                             marker=dict(size=7, color=SAMPLE_COLOUR), customdata=np.arange(len(samples)),
                             hovertemplate="sample #%{customdata}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[train[j, 0]], y=[train[j, 1]], mode="markers", name=f"up-weighted #{j}",
                             marker=dict(size=16, symbol="diamond", color=SOURCE_COLOUR,
                                         line=dict(width=1, color="black"))))
    if selected is not None and 0 <= selected < len(samples):
        fig.add_trace(go.Scatter(x=samples[[selected], 0], y=samples[[selected], 1], mode="markers",
                                 name=f"sample #{selected}", hoverinfo="skip",
                                 marker=dict(size=16, symbol="circle-open", color=SAMPLE_COLOUR, line=dict(width=3))))
    return base_layout(fig, title, square=True)


def predicted_vs_actual_figure(predicted: np.ndarray, actual: np.ndarray, correlation: float,
                               title: str | None = None) -> go.Figure:
    """Per-sample displacement: first-order prediction against the re-sampled truth."""
    p, a = np.linalg.norm(predicted, axis=1), np.linalg.norm(actual, axis=1)
    hi = max(float(p.max(initial=0)), float(a.max(initial=0)), 1e-12) * 1.05
    fig = go.Figure([go.Scatter(x=[0, hi], y=[0, hi], mode="lines", line=dict(dash="dot", color=TRAIN_COLOUR),
                                name="predicted = actual", hoverinfo="skip"),
                     go.Scatter(x=p, y=a, mode="markers", name="samples", customdata=np.arange(len(p)),
                                marker=dict(size=8, color=SOURCE_COLOUR),
                                hovertemplate="sample %{customdata}<br>predicted %{x:.3g}<br>actual %{y:.3g}"
                                              "<extra></extra>")])
    fig.update_xaxes(title="predicted displacement |Δx|")
    fig.update_yaxes(title="actual displacement |Δx|")
    return base_layout(fig, title or f"Predicted vs actual (r = {correlation:.3f} over all coordinates)", height=360)


# ---------------------------------------------------------------------------- map and sweep

def map_figure(train_pos: np.ndarray, train_ids: np.ndarray, labels, sample_pos: np.ndarray,
               edges: list | None = None, max_points: int = 30000, label_names=None,
               title: str | None = None, sample_values=None, value_name: str = "",
               value_range: tuple | None = None, selected: int | None = None) -> go.Figure:
    """Training points on the 2-D map coloured by label, samples on top (distinct marker), and
    thin edges from chosen samples to their blend sources (width by weight).

    `edges`: list of (sample position (2,), source positions (k, 2), weights (k,)). Trace order:
    training traces first, then 'samples' (customdata = sample index); training traces carry the
    training id as customdata."""
    fig = go.Figure()
    keep = np.arange(len(train_pos))[:max_points]
    if labels is None:
        groups = [(None, keep)]
    else:
        groups = [(v, keep[labels[train_ids[keep]] == v]) for v in np.unique(labels[train_ids[keep]])]
    for k, (val, rows) in enumerate(groups):
        if val is None:
            name = "training data"
        else:
            name = f"{label_names[val] if label_names is not None and val < len(label_names) else val}"
        colour = TRAIN_COLOUR if val is None else CATEGORICAL[k % len(CATEGORICAL)]
        fig.add_trace(go.Scattergl(x=train_pos[rows, 0], y=train_pos[rows, 1], mode="markers", name=name,
                                   marker=dict(size=5, opacity=0.9, color=colour),
                                   customdata=train_ids[rows],
                                   hovertemplate="training #%{customdata}<extra>" + name + "</extra>"))
    for s_pos, src_pos, w in edges or []:
        for p, wt in zip(src_pos, w):
            if wt < 1e-3 or np.isnan(p).any():
                continue
            fig.add_trace(go.Scatter(x=[s_pos[0], p[0]], y=[s_pos[1], p[1]], mode="lines", hoverinfo="skip",
                                     showlegend=False, line=dict(width=0.5 + 5 * float(wt), color=OKABE_ITO[0]),
                                     opacity=0.85))
    ok = ~np.isnan(sample_pos[:, 0])
    if selected is not None and 0 <= selected < len(sample_pos) and ok[selected]:  # a ring, under the samples
        fig.add_trace(go.Scatter(x=sample_pos[[selected], 0], y=sample_pos[[selected], 1], mode="markers",
                                 name=f"sample #{selected}", hoverinfo="skip",
                                 marker=dict(size=22, symbol="circle-open", color=SAMPLE_COLOUR, line=dict(width=3))))
    marker = dict(size=11, symbol="x", color="#000000", line=dict(width=1, color="white"))
    hover = "sample #%{customdata}<extra></extra>"
    if sample_values is not None:  # colour the samples by a metric (a fixed range when one is given)
        lo, hi = value_range or (float(np.nanmin(sample_values)), float(np.nanmax(sample_values)))
        marker |= dict(color=np.asarray(sample_values)[ok], colorscale=SEQUENTIAL, cmin=lo, cmax=hi, showscale=True,
                       colorbar=dict(title=dict(text=value_name, side="right"), thickness=12, x=1.0, xanchor="left",
                                     len=0.6, y=0.0, yanchor="bottom"), line=dict(width=1, color="#000000"))
        hover = "sample #%{customdata}<br>" + value_name + " %{marker.color:.3g}<extra></extra>"
    fig.add_trace(go.Scattergl(x=sample_pos[ok, 0], y=sample_pos[ok, 1], mode="markers", name="samples",
                               marker=marker, customdata=np.flatnonzero(ok), hovertemplate=hover))
    base_layout(fig, title, height=620)
    # the legend to the right of the plot, where the toolbar (top right, over the plot) cannot cover it
    fig.update_layout(legend=dict(orientation="v", yanchor="top", y=1.0, xanchor="left", x=1.0),
                      margin=dict(l=10, r=10, t=40 if title else 30, b=10))
    fig.update_xaxes(showticklabels=False, title=None)
    fig.update_yaxes(showticklabels=False, title=None)
    fig.update_layout(dragmode="lasso", clickmode="event+select")
    return fig


def paper_map(fig) -> None:
    """A map for a column figure: each class named at its median position instead of a legend
    (which took a third of the height), markers sized so the samples do not hide their clusters."""
    training = [t for t in fig.data if t.mode == "markers" and t.name != "samples" and t.customdata is not None
                and not str(t.name).startswith("sample #")]
    labelled = len(training) > 1
    for t in training if labelled else []:
        x, y = np.asarray(t.x, float), np.asarray(t.y, float)
        if len(x):
            fig.add_annotation(x=float(np.median(x)), y=float(np.median(y)), text=str(t.name), showarrow=False,
                               bgcolor="rgba(255,255,255,0.7)", borderpad=0)
    fig.update_layout(showlegend=False, margin=dict(l=5, r=5, t=5, b=5))
    fig.update_traces(selector=dict(name="samples"), marker_size=7, marker_line_width=0.5, marker_opacity=0.9)
    fig.update_traces(selector=lambda t: str(t.name).startswith("sample #"), marker_size=12,
                      marker_line_width=1.5)
    fig.update_traces(selector=lambda t: t in training, marker_size=3)


SWEEP_METRICS = (("copy_fraction", "copies (exact sources)"), ("memorised_fraction", "memorised (d1/d2 < 1/3)"),
                 ("mean_effective_sources", "effective sources"), ("diversity", "diversity"))


def sweep_figure(rows: list[dict], current_sigma: float | None = None, title: str | None = None) -> go.Figure:
    """Memorisation metrics against sigma in a 2 x 2 grid, the current sigma marked; error bars
    (one standard deviation over seeds) when the rows carry them; the legend below, and only when
    several (M, T) settings are drawn."""
    from plotly.subplots import make_subplots
    fig = make_subplots(rows=2, cols=2, subplot_titles=[lab for _, lab in SWEEP_METRICS], horizontal_spacing=0.12,
                        vertical_spacing=0.2)
    groups = sorted({(r["draws"], r["start"]) for r in rows})
    seeds = max(int(r.get("seeds", 1)) for r in rows) if rows else 1  # error bars only when there are several
    for g, (m, t) in enumerate(groups):
        sel = sorted((r for r in rows if (r["draws"], r["start"]) == (m, t)), key=lambda r: r["sigma"])
        xs = [r["sigma"] for r in sel]
        for k, (key, lab) in enumerate(SWEEP_METRICS):
            sd = [r.get(f"{key}_sd", 0.0) for r in sel]
            fig.add_trace(go.Scatter(x=xs, y=[r[key] for r in sel], mode="lines+markers", name=f"M={m}, T={t:g}",
                                     error_y=dict(type="data", array=sd, visible=seeds > 1, thickness=1, width=3),
                                     legendgroup=str(g), showlegend=k == 0 and len(groups) > 1,
                                     line=dict(color=OKABE_ITO[(4 + g) % 8], width=1.5), marker=dict(size=5),
                                     hovertemplate=f"σ=%{{x:.3g}}<br>{lab} %{{y:.3g}}<extra></extra>"),
                          k // 2 + 1, k % 2 + 1)
    for k in range(4):
        if k >= 2:  # σ under the bottom row only: a title under the top row would meet the panel titles
            fig.update_xaxes(title=dict(text="σ", standoff=2), row=k // 2 + 1, col=k % 2 + 1)
        if current_sigma is not None:
            # mid grey reads on the light and the dark theme (black vanished on dark)
            fig.add_vline(x=current_sigma, line=dict(dash="dot", color="#888888", width=1.2), row=k // 2 + 1,
                          col=k % 2 + 1)
    fig.update_yaxes(range=[-0.03, 1.05], row=1, col=1)
    fig.update_yaxes(range=[-0.03, 1.05], row=1, col=2)
    fig.update_annotations(font_size=12)
    base_layout(fig, title, height=460)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.14, xanchor="center", x=0.5))
    if not title:  # room for the top row's panel titles
        fig.update_layout(margin=dict(t=30))
    return fig  # what the error bars are (±1 s.d. over `seeds` seeds) belongs in the caption


def strip_scatter(train: np.ndarray, sample_sets: list[np.ndarray], sigmas: list[float], ncols: int = 3) -> go.Figure:
    """2-D: the same seeds' samples at several sigmas, one panel each, `ncols` panels a row."""
    from plotly.subplots import make_subplots
    ncols = max(1, min(ncols, len(sample_sets)))
    nrows = -(-len(sample_sets) // ncols)
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=[f"σ = {s:g}" for s in sigmas],
                        horizontal_spacing=0.03, vertical_spacing=0.08)
    for k, s in enumerate(sample_sets):
        r, c = k // ncols + 1, k % ncols + 1
        fig.add_trace(go.Scattergl(x=train[:, 0], y=train[:, 1], mode="markers", showlegend=False, hoverinfo="skip",
                                   marker=dict(size=3, color=TRAIN_COLOUR, opacity=0.6)), r, c)
        fig.add_trace(go.Scattergl(x=s[:, 0], y=s[:, 1], mode="markers", showlegend=False,
                                   marker=dict(size=6, color=SAMPLE_COLOUR)), r, c)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    base_layout(fig, None, height=300 * nrows)
    fig.update_layout(margin=dict(t=34))  # room for the first row's panel titles (10 px cut them in half)
    return fig


def thumbnail_sprite(vectors: np.ndarray, image_shape: tuple, cols: int = 64) -> tuple[Image.Image, int]:
    """All thumbnails in one sprite sheet at native resolution (row-major slots), for hover
    previews: returns (sheet, columns)."""
    n = len(vectors)
    cols = max(1, min(cols, n))
    h, w = image_shape[0], image_shape[1]
    sheet = Image.new("RGB", (cols * w, int(np.ceil(n / cols)) * h), "white")
    for k, v in enumerate(vectors):
        r, c = divmod(k, cols)
        sheet.paste(to_image(v, image_shape).convert("RGB"), (c * w, r * h))
    return sheet, cols
