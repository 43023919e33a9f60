"""Export page: publication figures as a bundle (figures, data, manifest) with a live preview."""

import tempfile
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from cdm_core.errors import CdmInputError
from cdm_core.report.export import (
    FIGURES,
    SIZE_PRESETS,
    UPLOADED_DATA,
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
          "influence": "Influence matrix", "map": "Map", "memorisation": "Memorisation curves"}


def style_controls() -> FigureStyle:
    c1, c2, c3 = st.columns(3)
    preset = c1.radio("Size", list(SIZE_PRESETS) + ["custom"], key="w_exp_size")
    width = SIZE_PRESETS.get(preset) or c1.number_input("Width (in)", 0.5, 20.0, 5.0, key="w_exp_w")
    height = c1.number_input("Height (in)", 0.5, 20.0, round(width * 0.8, 2), key=f"w_exp_h_{preset}")
    formats = c2.multiselect("Formats", ["png", "svg", "pdf"], default=["png", "svg", "pdf"], key="w_exp_fmt")
    dpi = c2.number_input("PNG dpi", 50, 1200, 300, step=50, key="w_exp_dpi")
    font = c3.selectbox("Font", ["Helvetica, Arial, sans-serif", "Times New Roman, serif", "DejaVu Sans, sans-serif"],
                        key="w_exp_font")
    size = c3.number_input("Font size (pt)", 4.0, 40.0, 8.0, step=0.5, key="w_exp_fs")
    bg = c3.radio("Background", ["white", "transparent"], horizontal=True, key="w_exp_bg")
    return FigureStyle(width_in=float(width), height_in=float(height), dpi=int(dpi), font_family=font,
                       font_size=float(size), background=bg, formats=tuple(formats))


def data_spec() -> str:
    """How the manifest names the data: the registry name, or the bundled file for an upload."""
    return UPLOADED_DATA if state.is_upload() else state.dataset_name()


def body() -> None:
    st.title("Export")
    ds = state.current_dataset()
    run = state.require_run(ds)
    if run is None:
        return
    cfg = run.result.config.replace(trajectory=False)
    which = st.multiselect("Figures", list(FIGURES), default=["samples", "sources"], format_func=LABELS.get,
                           key="w_exp_figs")
    try:
        style = style_controls()
    except CdmInputError as e:
        st.error(str(e))
        return
    if not which:
        st.info("Choose at least one figure.")
        return
    options = {"sample": state.selected_sample(), "top": 6, "map": {"method": state.map_method()}}
    try:
        manifest = make_manifest(data_spec(), ds, cfg, which, options, style)
    except CdmInputError as e:
        st.error(str(e))
        return
    preview(ds, manifest, style, which[0])
    if st.button("Build bundle", type="primary", key="w_exp_go"):
        bar = st.progress(0.0, text="Export: starting…")
        stages = ["sampling", "sensitivity", "map", "memorisation sweep"]

        def progress(msg):
            done = (stages.index(msg) + 1) / (len(stages) + 1) if msg in stages else 0.5
            bar.progress(done, text=f"Export: {msg}…")

        with st.spinner("Rendering figures…"):
            out = Path(tempfile.mkdtemp(prefix="cfdm-export-"))
            try:
                res = export_bundle(manifest, out, ds=ds, callback=progress)
                st.session_state.export_zip = (zip_bundle(out), sorted(p.name for p in out.iterdir()), res["message"])
            except CdmInputError as e:
                st.error(f"Export failed: {e}. Nothing was lost.")
            bar.empty()
    bundle = st.session_state.get("export_zip")
    if bundle:
        blob, names, message = bundle
        if message:
            st.warning(message)
        st.download_button("Download bundle (.zip)", blob, file_name="cfdm-figures.zip", mime="application/zip",
                           key="w_exp_dl", on_click="ignore", type="primary")
        st.caption("Bundle: " + ", ".join(names))
    st.caption("Every bundle holds manifest.json; `python -m cdm_core figure --manifest manifest.json --out DIR` "
               "regenerates the same figures from it.")


def preview(ds, manifest, style, first: str) -> None:
    st.subheader(f"Preview: {LABELS[first]} at {style.width_in:g} × {style.height_in:g} in")
    key = (manifest["dataset"]["content_hash"], str(manifest["sampler"]), first, str(manifest["options"]))

    def make():
        with st.spinner("Building the preview…"):
            return build(dict(manifest, figures=[first]), ds)[0][first]

    fig = state.session_cache("export_preview", key, make)
    if isinstance(fig, go.Figure):
        st.plotly_chart(style_figure(fig, style), width="content", key="exp_preview")
    else:
        png = image_files(fig, FigureStyle(width_in=style.width_in, dpi=96, formats=("png",)))["png"]
        st.image(png, width=int(style.width_in * 96))


state.guard(body)
