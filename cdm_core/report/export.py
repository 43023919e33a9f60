"""Figures for papers: a manifest in, a bundle out (figures as PNG/SVG/PDF, the data behind them,
and the manifest itself), so any exported figure can be regenerated from its manifest alone.

    manifest = make_manifest("digits", SamplerConfig(...), ["samples", "sources"], options, style)
    export_bundle(manifest, "out/")            # or: python -m cdm_core figure --manifest ... --out ...

Plotly figures go through kaleido 1.x, which drives the system chromium (one server for the whole
batch); scatter points are drawn as SVG marks (WebGL traces are converted), so SVG and PDF are
vector. Image grids are embedded at native resolution and upscaled by nearest neighbour only.
Without chromium the data and manifest are still written and the reason is one line.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from PIL import Image

from cdm_core.config import SamplerConfig
from cdm_core.data.store import atomic_write_bytes, npy_bytes, npz_bytes
from cdm_core.errors import CdmInputError
from cdm_core.report import attribution_figures, figures
from cdm_core.report.figures import label_of

log = logging.getLogger(__name__)

FIGURES = ("samples", "sources", "sensitivity", "influence", "map", "memorisation", "mosaic", "compare",
           "memorisation_size") + attribution_figures.FIGURES
SIZE_PRESETS = {"single column": 3.25, "double column": 6.75}  # inches
FORMATS = ("png", "svg", "pdf")
MANIFEST_KIND = "cfdm-explorer figure manifest"
UPLOADED_DATA = "training.npy"  # the data spec of a bundle whose training set was uploaded (written into it)
AUTOENCODER_FILE = "autoencoder.safetensors"  # a latent-space bundle's autoencoder weights (written into it)


@dataclass(frozen=True)
class FigureStyle:
    width_in: float = 3.25  # figure width in inches (3.25 single column, 6.75 double column)
    height_in: float = 2.6  # figure height in inches (image grids keep their aspect ratio)
    dpi: int = 300  # PNG resolution, dots per inch
    font_family: str = "Helvetica, Arial, sans-serif"  # any CSS font-family list
    font_size: float = 8.0  # points
    background: str = "white"  # white | transparent
    formats: tuple = ("png", "svg", "pdf")  # which files to write per figure

    def __post_init__(self):
        if not (0.5 <= self.width_in <= 20 and 0.5 <= self.height_in <= 20):
            raise CdmInputError(f"figure size must be within 0.5-20 inches, got {self.width_in} x {self.height_in}")
        if not 50 <= self.dpi <= 1200:
            raise CdmInputError(f"dpi must be in [50, 1200], got {self.dpi}")
        if not 4 <= self.font_size <= 40:
            raise CdmInputError(f"font size must be in [4, 40] pt, got {self.font_size}")
        if self.background not in ("white", "transparent"):
            raise CdmInputError(f"background must be white or transparent, got {self.background!r}")
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise CdmInputError(f"formats must be among {', '.join(FORMATS)}, got {list(self.formats)}")

    @property
    def px(self) -> tuple[int, int]:
        """Layout size in CSS pixels (1/96 inch), so vector output has the physical size."""
        return round(self.width_in * 96), round(self.height_in * 96)


def package_versions() -> dict:
    import importlib.metadata as md
    out = {}
    for name in ("cfdm-explorer", "numpy", "torch", "faiss-cpu", "faiss-gpu", "plotly", "kaleido", "streamlit",
                 "umap-learn", "pillow", "scikit-learn"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    from cdm_core import __version__
    out["cdm_core"] = __version__
    return out


def verdict_definitions() -> dict:
    """The definitions behind every memorisation word and count in the figures (analysis/metrics.py,
    analysis/dust.py), recorded so a reader of the figure knows what was counted."""
    from cdm_core.analysis import dust, metrics
    return {"copy": f"exact sources: one item carries >= {metrics.COPY_WEIGHT} of the blend weight and is the "
                    "sample's nearest item",
            "memorised": metrics.CRITERION, "distance_ratio_threshold": metrics.COPY_RATIO,
            "copy_weight": metrics.COPY_WEIGHT, "dust": dust.DUST}


def make_manifest(data_spec: str, dataset, config: SamplerConfig, which, options: dict | None = None,
                  style: FigureStyle = FigureStyle()) -> dict:
    which = list(which)
    bad = [w for w in which if w not in FIGURES]
    if bad or not which:
        raise CdmInputError(f"figures must be among {', '.join(FIGURES)}, got {which}")
    return {"kind": MANIFEST_KIND, "version": 1,
            "dataset": {"spec": data_spec, "name": dataset.name, "content_hash": dataset.content_hash},
            "sampler": config.to_dict(), "figures": which, "options": dict(options or {}),
            "style": asdict(style), "packages": package_versions(), "verdicts": verdict_definitions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}


def read_manifest(path) -> dict:
    try:
        m = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise CdmInputError(f"{path}: cannot read manifest ({type(e).__name__})") from None
    if not isinstance(m, dict) or m.get("kind") != MANIFEST_KIND:
        raise CdmInputError(f"{path}: not a cfdm-explorer figure manifest")
    ds = m.get("dataset")
    if not (isinstance(ds, dict) and isinstance(ds.get("spec"), str) and isinstance(ds.get("content_hash"), str)):
        raise CdmInputError(f"{path}: manifest lacks dataset.spec and dataset.content_hash")
    if not isinstance(m.get("sampler"), dict):
        raise CdmInputError(f"{path}: manifest lacks the sampler configuration")
    figs = m.get("figures")
    if not (isinstance(figs, list) and figs and all(f in FIGURES for f in figs)):
        raise CdmInputError(f"{path}: manifest figures must be a non-empty list among {', '.join(FIGURES)}")
    if not isinstance(m.get("autoencoder", {}), dict):
        raise CdmInputError(f"{path}: manifest autoencoder must be an object")
    if not isinstance(m.get("options", {}), dict) or not isinstance(m.get("style", {}), dict):
        raise CdmInputError(f"{path}: manifest options and style must be objects")
    try:
        SamplerConfig.from_dict(m["sampler"])
        _style(m)
    except TypeError as e:
        raise CdmInputError(f"{path}: bad manifest field ({e})") from None
    return m


def _style(m: dict) -> FigureStyle:
    s = dict(m.get("style", {}))
    s["formats"] = tuple(s.get("formats", FORMATS))
    return FigureStyle(**s)


def resolve_dataset(m: dict, base_dir: Path | None = None):
    from cdm_core.data.registry import REGISTRY, load, parse_spec
    spec = m["dataset"]["spec"]
    if parse_spec(spec)[0] not in REGISTRY and base_dir is not None and not Path(spec).is_absolute():
        spec = str(base_dir / spec)
    ds = load(spec)
    if ds.content_hash != m["dataset"]["content_hash"]:
        raise CdmInputError(f"data set {m['dataset']['spec']!r} has content hash {ds.content_hash}, but the manifest "
                            f"was made from {m['dataset']['content_hash']}")
    return ds


# ----------------------------------------------------------------------------- building

def build(m: dict, ds, callback=None) -> tuple[dict, dict]:
    """(figures by name: plotly Figure or PIL Image, arrays behind them by name)."""
    from cdm_core.analysis.metrics import nn_ratio
    from cdm_core.pipeline.run import sample
    say = callback or (lambda msg: None)
    cfg = SamplerConfig.from_dict(m["sampler"])
    opts = m.get("options", {})
    i = int(opts.get("sample", 0))
    which = m["figures"]
    out, data = {}, {}
    if any(w in attribution_figures.FIGURES for w in which):  # the user's samples, not a run of ours
        out = attribution_figures.build(ds, cfg, opts, which, data, say)
        which = [w for w in which if w not in attribution_figures.FIGURES]
        if not which:
            return out, data
    say("sampling")
    res = sample(ds, cfg)
    if not 0 <= i < len(res.samples):
        raise CdmInputError(f"options.sample must be in [0, {len(res.samples)}), got {i}")
    data |= {"samples": res.samples, "source_ids": res.source_ids, "source_weights": res.source_weights,
             "nn_ids": res.nn_ids, "nn_dist": res.nn_dist}
    if "samples" in which:
        if ds.is_image:
            out["samples"] = figures.image_grid(res.samples, ds.image_shape, ncols=int(opts.get("ncols", 8)),
                                                scale=1, pad=1)
        else:
            out["samples"] = figures.samples_scatter(ds.points[:, :2], res.samples[:, :2], values=nn_ratio(res.nn_dist))
    space = None
    if cfg.space == "latent":
        from cdm_core.latent.space import latent_space
        space = latent_space(ds, cfg)
        expected = m.get("autoencoder", {}).get("autoencoder_hash")
        if expected and expected != space.weights_hash:
            raise CdmInputError(f"the autoencoder has weights {space.weights_hash}, but the manifest was made with "
                                f"{expected}: regenerate with the bundled {AUTOENCODER_FILE}")
        data |= {"latents": res.latents, "pixel_nn_ids": res.pixel_nn_ids, "pixel_nn_dist": res.pixel_nn_dist}
    if "sources" in which:
        ok = res.source_ids[i] >= 0
        ids, w = res.source_ids[i][ok], res.source_weights[i][ok]
        weight_word = "share" if res.ran.get("sources") == "item shares" else "w"  # a local model's item shares
        if ds.is_image:
            keep = (w >= 1e-3)
            ids, w = ids[keep][:6], w[keep][:6]
            # latent space: the sources as the decoder draws them, then the nearest training images
            srcs = ds.points[ids] if space is None else space.decode(res.train_latents[ids])
            near = (res.nn_ids[i] if space is None else res.pixel_nn_ids[i])[:6]
            dist = (res.nn_dist[i] if space is None else res.pixel_nn_dist[i])[:6]
            out["sources"] = figures.sources_images_figure(
                res.samples[i], f"sample<br>#{i}", srcs,
                [figures.tile_title(ds, j, f"{weight_word}={v:.2f}") for j, v in zip(ids, w)],
                ds.points[near], [figures.tile_title(ds, j, f"d={d:.3g}") for j, d in zip(near, dist)],
                ds.image_shape)
        else:
            out["sources"] = figures.sources_scatter(ds.points[:, :2], res.samples[i, :2], ids, w, res.nn_ids[i])
    if "sensitivity" in which or "influence" in which:
        from cdm_core.analysis.sensitivity import sensitivity
        say("sensitivity")
        sens = sensitivity(ds, cfg.replace(n_samples=min(cfg.n_samples, int(opts.get("sensitivity_samples", 16)))),
                           top=int(opts.get("top", 6)))
        data |= {"training_ids": sens.training_ids, "influence": sens.influence}
        if "sensitivity" in which:
            from cdm_core.analysis.sensitivity import numerical_zero
            k = min(i, len(sens.samples) - 1)
            floor = numerical_zero(ds.points)
            peak = sens.influence.max(1)
            if peak[k] <= floor and (peak > floor).any():  # a figure of blank maps says nothing
                say(f"sample #{k} has no influence above numerical dust: the sensitivity figure shows sample "
                    f"#{int(np.argmax(peak))}, the one with the most")
                k = int(np.argmax(peak))
            ok = sens.training_ids[k] >= 0
            data["jacobian"] = sens.jacobian[k]
            data["sensitivity_sample"] = np.int64(k)
            if ds.is_image:
                ids = sens.training_ids[k][ok]
                out["sensitivity"] = figures.sensitivity_maps_figure(
                    sens.jacobian[k][ok], ds.image_shape, [f"#{j}" for j in ids], zero_floor=floor,
                    images=ds.points[ids], colorbar_title=f"sample #{k}: ∂x/∂log π",
                    aspect=_style(m).height_in / _style(m).width_in,
                    zero_label=False)  # on paper the title's "‖J‖ ≈ 0" says it; a label would not fit the map
            else:
                from cdm_core.analysis.sensitivity import jacobian
                j = int(sens.training_ids[k][0])
                jac, _ = jacobian(ds, cfg, [j])
                out["sensitivity"] = figures.arrows_figure(ds.points[:, :2], res.samples[:, :2], jac[:, 0, :2], j)
        if "influence" in which:
            page = _style(m)  # labels spaced for the page's plot width at its font size
            out["influence"] = figures.influence_matrix_figure(
                sens.training_ids, sens.influence, plot_width_px=page.px[0] - 150, label_px=page.font_size * 96 / 72)
    if "map" in which:
        from cdm_core.analysis.embedding import (
            MapConfig,
            compute_map,
            place_by_sources,
            place_by_top_source,
            source_edges,
        )
        say("map")
        emb = compute_map(ds if space is None else space.dataset, MapConfig(**opts.get("map", {"method": "pca"})))
        place = place_by_top_source if opts.get("place") == "largest source" else place_by_sources
        pos = place(emb, res.source_ids, res.source_weights)
        edges = source_edges(emb, pos, res.source_ids, res.source_weights, [i])
        out["map"] = figures.map_figure(emb.positions, emb.ids, ds.labels, pos, edges, label_names=ds.label_names)
        figures.paper_map(out["map"])
        data |= {"map_ids": emb.ids, "map_positions": emb.positions, "sample_positions": pos}
    if "mosaic" in which:
        out["mosaic"] = _mosaic(res, ds, i, data, opts)
    if "compare" in which:
        out["compare"] = _compare(res, ds, opts, data, say)
    if "memorisation_size" in which:
        out["memorisation_size"] = _size_curves(ds, cfg, opts, data, say)
    if "memorisation" in which:
        from cdm_core.analysis.sweep import sweep
        say("memorisation sweep")
        from cdm_core.analysis.sweep import default_sigmas
        sigmas = [float(s) for s in opts.get("sigmas", default_sigmas(cfg.sigma))]
        n_sweep = int(opts.get("sweep_n", min(cfg.n_samples, 32)))
        rows = sweep(ds, cfg.replace(n_samples=n_sweep), sigmas, seeds=int(opts.get("seeds", 3)))
        out["memorisation"] = figures.sweep_figure(rows, current_sigma=cfg.sigma)
        data["sweep_rows"] = rows
    return out, data


def _mosaic(res, ds, i: int, data: dict, opts: dict):
    """The patch mosaic of sample i (ls / els): the sample, its main source per pixel, the entropy map."""
    from cdm_core.analysis import mosaic
    from cdm_core.report.mosaic_figures import mosaic_figure
    if not mosaic.has_pixel_sources(res):
        raise CdmInputError(f"figure mosaic needs a local model (ls or els), not {res.config.model}")
    rank, items = mosaic.rank_map(res, i, top=int(opts.get("mosaic_top", 7)))  # a legend of two rows of 4
    main = mosaic.main_sources(res, i)
    data |= {"mosaic_sample": np.int64(i), "mosaic_items": np.asarray(items, np.int64), "mosaic_rank": rank,
             "pixel_source_ids": res.pixel_source_ids[i], "pixel_source_pixels": res.pixel_source_pixels[i],
             "pixel_source_weights": res.pixel_source_weights[i], "pixel_entropy": main.entropy}
    return mosaic_figure(res.samples[i], ds.image_shape, rank, items, main.entropy,
                         [f"#{j}{label_of(ds, j)}" for j in items])


def _compare(res, ds, opts: dict, data: dict, say):
    """The reference run (options.compare: its sampler configuration) above this one, from the same
    seeds, with each sample's pixel Pearson r and r^2 = 1 - SS_res / SS_tot against the reference."""
    from cdm_core.analysis.metrics import agreement
    from cdm_core.pipeline.run import sample
    from cdm_core.report.mosaic_figures import comparison_figure
    if not ds.is_image:
        raise CdmInputError("figure compare draws images: it needs an image data set")
    if not isinstance(opts.get("compare"), dict):
        raise CdmInputError("figure compare needs options.compare, the sampler configuration of the reference run")
    ref_cfg = SamplerConfig.from_dict(opts["compare"])
    if (ref_cfg.seed, ref_cfg.start, ref_cfg.space) != (res.config.seed, res.config.start, res.config.space):
        raise CdmInputError("figure compare needs both runs from the same seeds (seed, start time and space)")
    say("sampling")
    ref = sample(ds, ref_cfg)
    n = min(len(ref.samples), len(res.samples))
    r, r2 = agreement(ref.samples[:n], res.samples[:n])
    data |= {"compare_samples": ref.samples, "agreement_r": r, "agreement_r2": r2}
    return comparison_figure(ref.samples, res.samples, ds.image_shape, (ref_cfg.model, res.config.model), r, r2,
                             count=int(opts.get("compare_count", 6)))


def _size_curves(ds, cfg: SamplerConfig, opts: dict, data: dict, say):
    """Memorised fraction against training-set size (options.sizes, models, size_sigmas, size_n,
    size_seeds, criterion_ratio), as the Memorisation page's second tab computes it."""
    from cdm_core.analysis.memorisation import emm, memorisation_curves
    from cdm_core.analysis.metrics import COPY_RATIO
    from cdm_core.report.memorisation_figures import criterion_label, size_curves_figure
    if not isinstance(opts.get("sizes"), list) or not opts["sizes"]:
        raise CdmInputError("figure memorisation_size needs options.sizes, a list of training-set sizes")
    ratio = float(opts.get("criterion_ratio", COPY_RATIO))
    say("memorisation against size")
    rows = memorisation_curves(ds, cfg.replace(n_samples=int(opts.get("size_n", cfg.n_samples)), subset=0),
                               [int(v) for v in opts["sizes"]], list(opts.get("models", [cfg.model])),
                               [float(v) for v in opts.get("size_sigmas", [cfg.sigma])],
                               seeds=int(opts.get("size_seeds", 1)), ratio=ratio)
    data["size_rows"] = rows
    return size_curves_figure(rows, emm(rows), criterion_label(ratio))


# ----------------------------------------------------------------------------- writing

def style_figure(fig: go.Figure, style: FigureStyle) -> go.Figure:
    """Publication style: physical size, font in points, background; WebGL traces become SVG
    scatter traces so points are vector marks."""
    traces = []
    for t in fig.data:
        if isinstance(t, go.Scattergl):
            spec = t.to_plotly_json()
            spec.pop("type", None)
            traces.append(go.Scatter(spec))
        else:
            traces.append(t)
    for k, t in enumerate(traces):
        t.uid = f"trace{k}"  # plotly.js otherwise names traces randomly, and SVGs would differ
    own = fig.layout.margin  # a figure that asked for more room (multi-line titles, row labels) keeps it
    fig = go.Figure(data=traces, layout=fig.layout, frames=fig.frames)
    w, h = style.px
    bg = "rgba(0,0,0,0)" if style.background == "transparent" else "white"
    px = style.font_size * 96 / 72
    fig.update_layout(template="plotly_white", width=w, height=h, font=dict(family=style.font_family, size=px),
                      paper_bgcolor=bg, plot_bgcolor=bg,
                      margin=dict(l=max(30, own.l or 0), r=max(10, own.r or 0), t=max(30, own.t or 0),
                                  b=max(30, own.b or 0)),
                      updatemenus=[], sliders=[])
    fig.update_annotations(font_size=px, font_family=style.font_family)  # panel titles in the chosen size
    # every other text at the chosen size too: plotly draws axis titles 1.2x the base font (9.75 pt
    # for 8 pt asked) and colour bars and legends at their own defaults
    fig.update_xaxes(title_font_size=px, tickfont_size=px)
    fig.update_yaxes(title_font_size=px, tickfont_size=px)
    fig.update_layout(legend_font_size=px, title_font_size=px)
    for t in fig.data:  # only colour bars that are drawn: touching another trace's would draw it
        marker = getattr(t, "marker", None)
        if isinstance(t, go.Heatmap) and t.showscale is not False:
            t.colorbar.update(tickfont_size=px, title_font_size=px)
        elif marker is not None and getattr(marker, "showscale", None):
            marker.colorbar.update(tickfont_size=px, title_font_size=px)
    return fig


def image_files(img: Image.Image, style: FigureStyle) -> dict:
    """PNG/SVG/PDF bytes of an image figure on a page of exactly style.width_in x style.height_in:
    the image is upscaled by a whole factor (nearest neighbour, never blurred; shrunk by Lanczos
    only when it is larger than the page) and centred; the PNG records its dpi."""
    page_w, page_h = round(style.width_in * style.dpi), round(style.height_in * style.dpi)
    fit = min(page_w / img.width, page_h / img.height)
    if fit >= 1:
        factor = int(fit)
        big = img.resize((img.width * factor, img.height * factor), Image.NEAREST)
    else:
        big = img.resize((max(1, int(img.width * fit)), max(1, int(img.height * fit))), Image.LANCZOS)
    transparent = style.background == "transparent"
    page = Image.new("RGBA" if transparent else "RGB", (page_w, page_h), (255, 255, 255, 0) if transparent else "white")
    offset = ((page_w - big.width) // 2, (page_h - big.height) // 2)
    page.paste(big.convert(page.mode), offset)
    out = {}
    if "png" in style.formats:
        b = io.BytesIO()
        page.save(b, format="PNG", dpi=(style.dpi, style.dpi))
        out["png"] = b.getvalue()
    if "pdf" in style.formats:
        b = io.BytesIO()
        page.convert("RGB").save(b, format="PDF", resolution=float(style.dpi))
        out["pdf"] = b.getvalue()
    if "svg" in style.formats:
        b = io.BytesIO()
        img.save(b, format="PNG")  # native resolution; the viewer upscales without smoothing
        href = base64.b64encode(b.getvalue()).decode()
        scale = big.width / img.width  # page pixels per image pixel
        out["svg"] = (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
                      f'width="{style.width_in}in" height="{style.height_in}in" viewBox="0 0 {page_w} {page_h}">'
                      f'<image x="{offset[0]}" y="{offset[1]}" width="{img.width * scale:.4f}" '
                      f'height="{img.height * scale:.4f}" image-rendering="pixelated" '
                      f'style="image-rendering:pixelated;image-rendering:crisp-edges" '
                      f'xlink:href="data:image/png;base64,{href}"/></svg>\n').encode()
    return out


def resolve_font(family: str) -> str:
    """The font the renderer will really use for a CSS font-family list, as fontconfig resolves
    its first entry (e.g. "Helvetica -> Liberation Sans, metric-compatible"); "unknown" without
    fontconfig."""
    first = family.split(",")[0].strip().strip("'\"")
    if first.lower() in ("sans-serif", "serif", "monospace", ""):
        first = first or "sans-serif"
    fc = shutil.which("fc-match")
    if fc is None:
        return "unknown (fontconfig is not installed)"
    import subprocess
    try:
        used = subprocess.run([fc, "-f", "%{family[0]}", first], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    used = used.strip() or "unknown"
    if used.lower() == first.lower():
        return used
    compatible = {"helvetica": "liberation sans", "arial": "liberation sans", "times new roman": "liberation serif",
                  "times": "liberation serif", "courier new": "liberation mono"}
    note = "metric-compatible" if compatible.get(first.lower()) == used.lower() else "substitute"
    return f"{first} -> {used} ({note})"


def chromium_path() -> str | None:
    path = os.environ.get("BROWSER_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
    return path if path and Path(path).exists() else None


def _arrays_and_tables(data: dict) -> tuple[dict, dict]:
    arrays, tables = {}, {}
    for k, v in data.items():
        if k == "sweep_rows":
            from cdm_core.analysis.sweep import rows_to_csv
            tables["memorisation.csv"] = rows_to_csv(v)
        else:
            arrays[k] = np.asarray(v)
    if "influence" in arrays:
        lines = ["sample,rank,training_id,influence"]
        for s, (ids, inf) in enumerate(zip(arrays["training_ids"], arrays["influence"])):
            lines += [f"{s},{r},{int(j)},{float(v)!r}" for r, (j, v) in enumerate(zip(ids, inf)) if j >= 0]
        tables["influence.csv"] = "\n".join(lines) + "\n"
    attributed = attribution_figures.csv_table(arrays)
    if attributed is not None:
        tables["attribution.csv"] = attributed
    return arrays, tables


def export_bundle(m: dict, out_dir, base_dir: Path | None = None, callback=None, ds=None) -> dict:
    """Write figures, data and manifest into `out_dir`. Returns {"files": [...], "message": str}."""
    style = _style(m)
    ds = ds or resolve_dataset(m, base_dir)
    figs, data = build(_with_paths_from(m, base_dir), ds, callback)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files, message = [], ""
    arrays, tables = _arrays_and_tables(data)
    atomic_write_bytes(out_dir / "data.npz", npz_bytes(arrays))
    files.append("data.npz")
    for name, text in tables.items():
        atomic_write_bytes(out_dir / name, text.encode())
        files.append(name)
    plotly_figs = {k: v for k, v in figs.items() if isinstance(v, go.Figure)}
    for name, img in figs.items():
        if isinstance(img, Image.Image):
            for fmt, blob in image_files(img, style).items():
                atomic_write_bytes(out_dir / f"{name}.{fmt}", blob)
                files.append(f"{name}.{fmt}")
    if plotly_figs:
        browser = chromium_path()
        if browser is None:
            message = ("chromium not found (install the Debian package chromium): plotly figures were not "
                       "rendered; data and manifest were written")
        else:
            files += _render_plotly(plotly_figs, style, out_dir, browser)
    if m["dataset"]["spec"] == UPLOADED_DATA:  # data that exist only in memory travel with the bundle
        pts = ds.points.reshape((ds.n,) + tuple(ds.image_shape)) if ds.is_image else ds.points
        atomic_write_bytes(out_dir / UPLOADED_DATA, npy_bytes(pts))
        files.append(UPLOADED_DATA)
    if m["sampler"].get("space") == "latent":  # the autoencoder travels with the bundle, so it regenerates identically
        from cdm_core.latent.space import latent_space, weights_bytes
        space = latent_space(ds, SamplerConfig.from_dict(_with_paths_from(m, base_dir)["sampler"]))
        atomic_write_bytes(out_dir / AUTOENCODER_FILE, weights_bytes(space.model, ds))
        files.append(AUTOENCODER_FILE)
        m = m | {"sampler": m["sampler"] | {"ae_weights": AUTOENCODER_FILE}, "autoencoder": space.describe()}
    files += attribution_figures.carry_files(m, base_dir, out_dir)  # the user's samples travel with the bundle
    m = attribution_figures.bundle_manifest(m)
    font = resolve_font(style.font_family)
    m = m | {"font_used": font}
    atomic_write_bytes(out_dir / "manifest.json", json.dumps(m, indent=2, sort_keys=True, default=str).encode())
    files.append("manifest.json")
    return {"files": files, "message": message, "font": font}


def _with_paths_from(m: dict, base_dir: Path | None) -> dict:
    """The manifest with relative paths (the autoencoder weights, the attributed samples) resolved
    against the bundle folder."""
    path = m["sampler"].get("ae_weights", "")
    if path and base_dir is not None and not Path(path).is_absolute():
        m = m | {"sampler": m["sampler"] | {"ae_weights": str(Path(base_dir) / path)}}
    return m | {"options": attribution_figures.with_paths_from(m.get("options", {}), base_dir)}


def _render_plotly(figs: dict, style: FigureStyle, out_dir: Path, browser: str) -> list[str]:
    """Render through one kaleido server (one chromium) for the whole batch, leaving the process as
    it was: the browser is handed to kaleido as `path` (passed on to choreographer's Chromium)
    instead of through $BROWSER_PATH, and figures go to `kaleido.calc_fig_sync` directly, which is
    what `Figure.to_image` calls, minus the per-call `kopts` that a running server ignores with a
    warning (so no warning filter is needed). MathJax is off: no figure uses LaTeX, and kaleido
    would otherwise point the page at a CDN copy."""
    import kaleido
    written = []
    kaleido.start_sync_server(path=browser, mathjax=False, silence_warnings=True)
    try:
        for name, fig in figs.items():
            styled = style_figure(fig, style).to_dict()
            w, h = style.px
            for fmt in style.formats:
                opts = dict(format=fmt, width=w, height=h, scale=style.dpi / 96 if fmt == "png" else 1)
                blob = kaleido.calc_fig_sync(styled, opts=opts)
                if fmt == "svg":
                    blob = svg_in_inches(deterministic_svg(blob), style)
                elif fmt == "png":
                    blob = png_with_dpi(blob, style.dpi)
                atomic_write_bytes(out_dir / f"{name}.{fmt}", blob)
                written.append(f"{name}.{fmt}")
    finally:
        kaleido.stop_sync_server(silence_warnings=True)
    return written


def png_with_dpi(blob: bytes, dpi: int) -> bytes:
    """The PNG with its resolution recorded (pHYs), so a layout program sizes it as exported."""
    b = io.BytesIO()
    Image.open(io.BytesIO(blob)).save(b, format="PNG", dpi=(dpi, dpi))
    return b.getvalue()


def svg_in_inches(blob: bytes, style: FigureStyle) -> bytes:
    """The SVG's root size in inches (plotly writes unitless CSS pixels): a layout program then
    places it at the requested physical size; the viewBox keeps the drawing unchanged."""
    import re
    text = blob.decode()
    head_end = text.index(">")
    head = text[:head_end]
    if "viewBox" not in head:
        w, h = style.px
        head += f' viewBox="0 0 {w} {h}"'
    head = re.sub(r'\swidth="[^"]*"', f' width="{style.width_in}in"', head, count=1)
    head = re.sub(r'\sheight="[^"]*"', f' height="{style.height_in}in"', head, count=1)
    return (head + text[head_end:]).encode()


def deterministic_svg(blob: bytes) -> bytes:
    """plotly.js names clip paths and gradients with random ids; renumber them in order of first
    appearance so the same figure always gives the same SVG bytes."""
    import re
    text = blob.decode()
    ids = {}
    for match in re.finditer(r'id="([^"]+)"', text):
        ids.setdefault(match.group(1), f"cdm{len(ids)}")
    if not ids:
        return blob
    pattern = re.compile("|".join(re.escape(k) for k in sorted(ids, key=len, reverse=True)))
    return pattern.sub(lambda mt: ids[mt.group(0)], text).encode()


def zip_bundle(out_dir) -> bytes:
    import zipfile
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(Path(out_dir).iterdir()):
            info = zipfile.ZipInfo(p.name, date_time=(2000, 1, 1, 0, 0, 0))
            zf.writestr(info, p.read_bytes())
    return b.getvalue()
