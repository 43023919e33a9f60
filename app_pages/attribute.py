"""Attribute your samples: what did a model (your own trained network, say) copy from the training set?"""

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from cdm_core.analysis.attribution import attribute
from cdm_core.analysis.embedding import MapConfig, place_by_sources
from cdm_core.analysis.metrics import COPY_RATIO
from cdm_core.data.files import load_bytes
from cdm_core.errors import CdmInputError
from cdm_core.report import attribution_figures, figures
from cdm_core.report.export import export_bundle, make_manifest, zip_bundle
from cdm_core.report.figures import label_of
from ui import state
from ui.maps import cached_map

ABOUT = (
    "Upload samples of any model with this data set's shape (`.npy`/`.npz` arrays (n, D) or images (n, H, W[, 3]), "
    "or a `.zip` of PNGs in [0, 1] pixel units). Each sample gets its exact nearest training items, the standard "
    "criterion (*memorised*: d1/d2 < 1/3, Gu et al. 2025) and its **closest blend**: non-negative weights summing "
    "to one over its K nearest items, fitted by least squares, with the distance left over. With each sample's "
    "start noise (its state at t = 0, same shape), the model chosen on the Generate page is run from that very "
    "noise and compared sample by sample (pixel Pearson r, and r² = 1 − SS_res/SS_tot): Kamb & Ganguli's "
    "comparison, for your own network."
)


def read_upload(up, dim: int, what: str):
    """(array (n, D), None) or (None, the one-line reason); never raises."""
    try:
        arr = load_bytes(up.name, up.getvalue()).points
    except CdmInputError as e:
        return None, f"Could not read {what} ({up.name}): {str(e).removeprefix(f'{up.name}: ')}."
    if arr.shape[1] != dim:
        return None, f"{what.capitalize()} ({up.name}) have {arr.shape[1]} values each; this data set has {dim}."
    return arr, None


def body() -> None:
    st.title("Attribute your samples")
    ds = state.current_dataset()
    st.caption(f"Against **{ds.name}** ({ds.n:,} items, {ds.dim} values each).")
    c1, c2 = st.columns(2)
    up = c1.file_uploader("Samples", type=["npy", "npz", "zip"], key="w_att_samples")
    up_noise = c2.file_uploader("Start noise (optional)", type=["npy", "npz"], key="w_att_noise")
    c3, c4 = st.columns(2)
    k = int(c3.number_input("K: nearest items the blend is fitted over", 2, min(1024, ds.n), min(64, ds.n),
                            key="w_att_k"))
    ratio = float(c4.number_input("Criterion: memorised when d1/d2 is below", 0.01, 0.99, COPY_RATIO,
                                  format="%.3f", key="w_att_ratio"))
    if up is None:
        st.markdown(ABOUT)
        return
    samples, problem = read_upload(up, ds.dim, "the samples")
    noise = None
    if problem is None and up_noise is not None:
        noise, problem = read_upload(up_noise, ds.dim, "the noise")
        if problem is None and len(noise) != len(samples):
            problem = f"The noise has {len(noise)} start states for {len(samples)} samples."
    if problem:
        st.error(problem + " Nothing else changed.")
        return
    p = state.params()
    try:
        cfg = state.config_from(p).replace(subset=0, start=0.0, space="data")
    except CdmInputError as e:
        st.error(f"Invalid settings: {e}")
        return
    key = (ds.content_hash, up.file_id, getattr(up_noise, "file_id", None), cfg.to_json(), k, ratio)

    att = state.computed("attribution", key, f"{cfg.model} from your noise" if noise is not None else "Attributing",
                         lambda callback: attribute(ds, samples, cfg, noise=noise, k=k, ratio=ratio, callback=callback))
    if att is None:
        return
    n = len(samples)
    table = pd.DataFrame({"sample": np.arange(n), "nearest": att.nn_ids[:, 0], "d1": att.nn_dist[:, 0],
                          "d1/d2": att.nn_ratio, f"memorised (d1/d2 < {ratio:.3g})": att.memorised,
                          "blend: main item": att.blend_ids[:, 0], "main weight": att.blend_weights[:, 0],
                          "blend residual": att.blend_residual})
    if att.agreement_r is not None:
        table["Pearson r"], table["r² = 1 − SS_res/SS_tot"] = att.agreement_r, att.agreement_r2
    c = st.columns(3)
    c[0].metric(f"Memorised (d1/d2 < {ratio:.3g})", f"{int(att.memorised.sum())} of {n}",
                help="The standard criterion of Gu et al. (2025), from exact float64 distances.")
    c[1].metric("Median blend residual", f"{np.median(att.blend_residual):.3g}",
                help="Distance from each sample to its closest blend of its K nearest items (data units).")
    if att.agreement_r is not None:
        c[2].metric(f"Median Pearson r vs {cfg.model}", f"{np.nanmedian(att.agreement_r):.3f}",
                    help="Each sample against the analytic model run from the same start noise.")
    st.dataframe(table, hide_index=True, width="stretch", height=min(400, 38 + 35 * n),
                 column_config={c: st.column_config.NumberColumn(format="%.3g") for c in
                                ("d1", "d1/d2", "main weight", "blend residual", "Pearson r", "r² = 1 − SS_res/SS_tot")
                                if c in table})
    i = int(st.number_input("Show sample", 0, n - 1, 0, key="w_att_i"))
    st.markdown(f"**Sample #{i}**: " + ("**memorised**" if att.memorised[i] else "not memorised")
                + f" by the criterion (d1/d2 = {att.nn_ratio[i]:.3g}); closest blend "
                + ", ".join(f"#{j}{label_of(ds, j)} × {w:.3f}" for j, w in
                            zip(att.blend_ids[i], att.blend_weights[i]) if w >= 1e-3)
                + f", residual {att.blend_residual[i]:.3g}.")
    if ds.is_image:
        scale = figures.grid_scale(ds.image_shape, 56)
        used = att.blend_weights[i] >= 1e-3
        blend = att.blend_weights[i][used] @ np.asarray(ds.points, np.float64)[att.blend_ids[i][used]]
        rows = [samples[i], blend] + ([att.model_samples[i]] if att.model_samples is not None else [])
        st.image(figures.image_grid(np.stack(rows), ds.image_shape, ncols=len(rows), scale=scale),
                 caption="the sample, its closest blend" + (f", {cfg.model} from its noise"
                                                            if att.model_samples is not None else ""))
        st.image(figures.image_grid(np.asarray(ds.points)[att.nn_ids[i, :8]], ds.image_shape, ncols=8, scale=scale),
                 caption="its nearest training items: " + ", ".join(f"#{j} (d={d:.3g})" for j, d in
                                                                    zip(att.nn_ids[i, :8], att.nn_dist[i, :8])))
    map_position(ds, att, i)
    c1, c2 = st.columns(2)
    c1.download_button("Attribution as CSV", table.to_csv(index=False).encode(), file_name="attribution.csv",
                       mime="text/csv", key="w_att_csv", on_click="ignore")
    export_bundle_button(c2, ds, cfg, samples, noise, k, ratio, i, key)
    st.markdown(ABOUT)


def map_position(ds, att, i: int) -> None:
    """The samples on the training map, each at the weighted position of its closest blend's items."""
    st.subheader("Map position")
    method = state.map_method()
    emb = cached_map(ds.content_hash, MapConfig(method=method), ds)
    pos = place_by_sources(emb, att.blend_ids, att.blend_weights)
    st.plotly_chart(attribution_figures.map_figure(ds, att, emb, pos, i), width="stretch", key="att_map")
    st.caption(f"{method.upper()} map of the training set (the Map page's settings). Each uploaded sample (×) sits at "
               f"the weighted map position of its closest blend's items, coloured by d1/d2 on a fixed 0–1 scale; "
               f"edges join sample #{i} to its blend (width by weight).")


def export_bundle_button(where, ds, cfg, samples, noise, k: int, ratio: float, i: int, key) -> None:
    """Paper figures (the shown sample, the map), data and a manifest that regenerates them, as one zip."""
    bundle = st.session_state.get("att_zip")
    if bundle is None or bundle[1] != (key, i, state.map_method()):
        if not where.button("Build figures and data (.zip)", key="w_att_build"):
            return
        with st.spinner("Rendering the attribution figures…"):
            out = Path(tempfile.mkdtemp(prefix="cfdm-attribution-"))
            np.save(out / attribution_figures.SAMPLES_FILE, samples)
            if noise is not None:
                np.save(out / attribution_figures.NOISE_FILE, noise)
            opts = attribution_figures.options(k, ratio, i, noise is not None, state.map_method())
            try:
                manifest = make_manifest(state.data_spec(), ds, cfg, list(attribution_figures.FIGURES), opts)
                res = export_bundle(manifest, out, base_dir=out, ds=ds)
            except CdmInputError as e:
                where.error(f"Export failed: {e}. Nothing was lost.")
                return
            if res["message"]:
                st.warning(res["message"])
            bundle = st.session_state.att_zip = (zip_bundle(out), (key, i, state.map_method()))
    where.download_button("Download figures and data (.zip)", bundle[0], file_name="cfdm-attribution.zip",
                          mime="application/zip", key="w_att_zip", on_click="ignore", type="primary")


state.guard(body)
