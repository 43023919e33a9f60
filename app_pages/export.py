"""Export page: publication figures as a bundle (figures, data, manifest) with a live preview."""

import tempfile
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from cdm_core.analysis.sweep import default_sigmas, parse_floats
from cdm_core.errors import CdmInputError
from cdm_core.report.export import (
    FIGURES,
    SIZE_PRESETS,
    FigureStyle,
    build,
    export_bundle,
    image_files,
    make_manifest,
    style_figure,
    zip_bundle,
)
from ui import state

LABELS = {"samples": "Sample grid", "sources": "Sources of a sample", "sensitivity": "Sensitivity maps",
          "influence": "Influence matrix", "map": "Map", "memorisation": "Memorisation curves",
          "mosaic": "Patch mosaic (ls, els)", "compare": "Pinned vs current run",
          "memorisation_size": "Memorisation against size"}


FONTS = ["Helvetica, Arial, sans-serif", "Times New Roman, serif", "DejaVu Sans, sans-serif"]


def style_controls() -> FigureStyle:
    """Figure size, formats, dpi, font and background; every choice is kept in the link."""
    c1, c2, c3 = st.columns(3)
    presets = list(SIZE_PRESETS) + ["custom"]
    wanted_w = state.view_number("fig_w", 0.5, 20.0)
    preset_now = next((k for k, v in SIZE_PRESETS.items() if v == wanted_w), "custom")
    preset = c1.radio("Size", presets, index=presets.index(preset_now), key="w_exp_size")
    width = SIZE_PRESETS.get(preset) or c1.number_input("Width (in)", 0.5, 20.0, wanted_w, key="w_exp_w")
    height = c1.number_input("Height (in)", 0.5, 20.0, state.view_number("fig_h", 0.5, 20.0), key=f"w_exp_h_{preset}")
    fmt_default = [f for f in state.view("fmt").split(",") if f in ("png", "svg", "pdf")] or ["png", "svg", "pdf"]
    formats = c2.multiselect("Formats", ["png", "svg", "pdf"], default=fmt_default, key="w_exp_fmt")
    dpi = c2.number_input("PNG dpi", 50, 1200, state.view_number("dpi", 50, 1200, integer=True), step=50,
                          key="w_exp_dpi")
    font_now = state.view("font") if state.view("font") in FONTS else FONTS[0]
    font = c3.selectbox("Font", FONTS, index=FONTS.index(font_now), key="w_exp_font",
                        help="Helvetica/Arial and Times are drawn with the metric-compatible Liberation fonts when the "
                             "originals are not installed; the bundle's manifest says which font was used.")
    size = c3.number_input("Font size (pt)", 4.0, 40.0, state.view_number("fs", 4.0, 40.0), step=0.5, key="w_exp_fs")
    bg = c3.radio("Background", ["white", "transparent"], index=1 if state.view("bg") == "transparent" else 0,
                  horizontal=True, key="w_exp_bg")
    for key, value in (("fig_w", width), ("fig_h", height), ("fmt", formats), ("dpi", dpi), ("font", font),
                       ("fs", size), ("bg", bg)):
        state.set_view(key, value)
    return FigureStyle(width_in=float(width), height_in=float(height), dpi=int(dpi), font_family=font,
                       font_size=float(size), background=bg, formats=tuple(formats))


def bundle_key(manifest: dict) -> str:
    """What a bundle was built from (everything in its manifest but the creation time)."""
    import json
    return json.dumps({k: v for k, v in manifest.items() if k != "created"}, sort_keys=True, default=str)


def body() -> None:
    st.title("Export")
    ds = state.current_dataset()
    run = state.require_run(ds)
    if run is None:
        return
    cfg = run.result.config.replace(trajectory=False)
    offered = [f for f in FIGURES if f in LABELS]  # the attribution figures are exported from their own page
    wanted = [f for f in state.view("figs").split(",") if f in offered]
    which = st.multiselect("Figures", offered, default=wanted, format_func=LABELS.get, key="w_exp_figs")
    state.set_view("figs", which)
    try:
        style = style_controls()
    except CdmInputError as e:
        st.error(str(e))
        return
    if not which:
        st.info("Choose at least one figure.")
        return
    options = {"sample": state.selected_sample(), "top": 6, "map": {"method": state.map_method()},
               "place": "largest source" if state.view("place") == "largest source" else "mean of blend sources"}
    if "memorisation" in which:  # exactly the sweep the Memorisation page shows (its σ values, n, seeds)
        try:
            sigmas = sorted(set(parse_floats(state.view("sweep"), "σ values"))) if state.view("sweep") else \
                default_sigmas(float(state.params()["sigma"]))
        except CdmInputError:
            sigmas = default_sigmas(float(state.params()["sigma"]))
        options |= {"sigmas": sigmas, "sweep_n": state.view_number("sweep_n", 4, 256, integer=True),
                    "seeds": state.view_number("seeds", 1, 8, integer=True)}
    if "memorisation_size" in which:  # the curves the Memorisation page's second tab shows
        from ui.size_curves import default_sizes
        try:
            sizes = sorted({int(v) for v in parse_floats(state.view("mem_sizes"), "sizes")}) \
                if state.view("mem_sizes") else default_sizes(ds.n)
            size_sigmas = sorted(set(parse_floats(state.view("mem_sigmas"), "σ values"))) \
                if state.view("mem_sigmas") else [0.0, float(state.params()["sigma"])]
        except CdmInputError as e:
            st.error(f"Memorisation against size: {e}")
            return
        models = [m for m in state.view("mem_models").split(",") if m] or list(dict.fromkeys(["cfdm", cfg.model]))
        options |= {"sizes": sizes, "models": models, "size_sigmas": size_sigmas,
                    "size_n": state.view_number("mem_n", 8, 1024, integer=True),
                    "size_seeds": state.view_number("mem_seeds", 1, 8, integer=True)}
    if "mosaic" in which and cfg.model not in ("ls", "els"):
        st.info("The patch mosaic needs a run of a local model (ls or els): pick one on the Generate page.")
        which = [w for w in which if w != "mosaic"]
    if "compare" in which:
        from ui.compare import pinned, same_seeds
        other = pinned()
        if other is None or other.key[0] != ds.content_hash or not same_seeds(other.result, run.result) \
                or not ds.is_image:
            st.info("The comparison needs a pinned run of this image data set from the same seeds (Pin a run on the "
                    "Generate page, then change the model or a setting).")
            which = [w for w in which if w != "compare"]
        else:
            options["compare"] = other.result.config.replace(trajectory=False).to_dict()
    if not which:
        return
    try:
        manifest = make_manifest(state.data_spec(), ds, cfg, which, options, style)
    except CdmInputError as e:
        st.error(str(e))
        return
    preview(ds, manifest, style, which)
    if st.button("Build bundle", type="primary", key="w_exp_go"):
        bar = st.progress(0.0, text="Export: starting…")
        stages = ["sampling", "sensitivity", "map", "memorisation sweep", "memorisation against size"]

        def progress(msg):
            done = (stages.index(msg) + 1) / (len(stages) + 1) if msg in stages else 0.5
            bar.progress(done, text=f"Export: {msg}…")

        with st.spinner("Rendering figures…"):
            out = Path(tempfile.mkdtemp(prefix="cfdm-export-"))
            try:
                res = export_bundle(manifest, out, ds=ds, callback=progress)
                st.session_state.export_zip = (zip_bundle(out), sorted(p.name for p in out.iterdir()), res["message"],
                                               bundle_key(manifest))
            except CdmInputError as e:
                st.error(f"Export failed: {e}. Nothing was lost.")
            bar.empty()
    bundle = st.session_state.get("export_zip")
    if bundle and bundle[3] == bundle_key(manifest):  # a bundle of other data or settings is not offered
        blob, names, message, _ = bundle
        if message:
            st.warning(message)
        st.download_button("Download bundle (.zip)", blob, file_name="cfdm-figures.zip", mime="application/zip",
                           key="w_exp_dl", on_click="ignore", type="primary")
        st.caption("Bundle: " + ", ".join(names))
    st.caption("Every bundle holds manifest.json; `python -m cdm_core figure --manifest manifest.json --out DIR` "
               "regenerates the same figures from it.")


def preview(ds, manifest, style, which: list[str]) -> None:
    """Every chosen figure as it will be exported, at the chosen size (PNG previews at 96 dpi)."""
    st.subheader(f"Preview at {style.width_in:g} × {style.height_in:g} in")
    key = (manifest["dataset"]["content_hash"], str(manifest["sampler"]), tuple(which), str(manifest["options"]))

    def make():
        with st.spinner("Building the previews…"):
            return build(manifest, ds)[0]

    figs = state.session_cache("export_preview", key, make)
    tabs = st.tabs([LABELS[w] for w in which])
    for tab, name in zip(tabs, which):
        fig = figs[name]
        with tab:
            if isinstance(fig, go.Figure):
                st.plotly_chart(style_figure(fig, style), width="content", key=f"exp_preview_{name}")
            else:
                png = image_files(fig, FigureStyle(width_in=style.width_in, height_in=style.height_in, dpi=96,
                                                   formats=("png",)))["png"]
                st.image(png, width=int(style.width_in * 96))


state.guard(body)
