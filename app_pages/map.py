"""Map page: a 2-D map of the training set with samples placed by their blend sources."""

import numpy as np
import pandas as pd
import streamlit as st

from cdm_core.analysis.embedding import MapConfig, compute_map, place_by_sources, place_by_transform, source_edges
from cdm_core.report import figures
from ui import state
from ui.click_select import click_select
from ui.hover_thumbnails import hover_thumbnails
from ui.selection import selected_points

MAX_DRAWN = 30000


@st.cache_resource(show_spinner=False, max_entries=8)
def cached_map(content_hash: str, cfg: MapConfig, _ds):
    bar = st.progress(0.0, text="Computing the map…")
    emb = compute_map(_ds, cfg, callback=lambda stage, frac: bar.progress(frac, text=f"Map: {stage}…"))
    bar.empty()
    return emb


def selection(event, sample_curve: int) -> tuple[list[int], list[int]]:
    """(selected samples, selected training ids) from a plotly selection event."""
    pts = selected_points(event)
    samples = {i for curve, i in pts if curve == sample_curve}
    train = {i for curve, i in pts if curve != sample_curve}
    return sorted(samples), sorted(train)


def body() -> None:
    st.title("Map")
    ds = state.current_dataset()
    with st.expander("Map settings", expanded=False):
        c1, c2, c3 = st.columns(3)
        methods = ["umap", "pca"]
        method = c1.selectbox("Method", methods, index=methods.index(state.map_method()), key="w_map_method",
                              help="UMAP keeps neighbourhoods; PCA is instant and linear.")
        nn, md = 15, 0.1
        if method == "umap":  # PCA has no such settings
            nn = c2.slider("UMAP neighbours", 5, 50, 15, key="w_map_nn",
                           help="Larger values keep more global structure.")
            md = c3.slider("UMAP min. distance", 0.0, 0.99, 0.1, key="w_map_md",
                           help="Smaller values pack clusters tighter.")
    cfg = MapConfig(method=method, n_neighbors=nn, min_dist=md)
    state.set_map_method(method)
    run = state.ensure_run(ds)
    space = None if run is None else state.latent_space_of(ds, run.result.config)
    mapped = ds if space is None else space.dataset  # latent space: a map of the training latents
    emb = cached_map(mapped.content_hash, cfg, mapped)
    note = f"{len(emb.ids):,} of {ds.n:,} training items mapped" + (
        " (fixed random subset)" if len(emb.ids) < ds.n else "")
    if len(emb.ids) > MAX_DRAWN:
        note += f"; the first {MAX_DRAWN:,} are drawn"
    st.caption(f"{method.upper()} map{' of the autoencoder latents' if space is not None else ''}, cached on disk "
               "by content hash and settings "
               f"({'from cache' if emb.from_cache else 'computed now'}). {note}.")

    if run is None:
        sample_pos = np.zeros((0, 2), np.float32)
        res = None
    else:
        res = run.result
        options = ["blend sources"] + (["UMAP transform"] if emb.model is not None else [])
        how = st.radio("Place samples at", options, horizontal=True, key="w_map_place",
                       help="Blend sources: the weight-averaged map position of each sample's exact sources. "
                            "UMAP transform: embed the sample itself (small sets only).")
        sample_pos = place_by_transform(emb, res.blend_space_points) if how == "UMAP transform" else \
            place_by_sources(emb, res.source_ids, res.source_weights)
        placed_at = ('UMAP transform of the samples' if how == 'UMAP transform'
                     else 'the weighted position of their blend sources')
        st.caption(f"Samples (×) are placed at {placed_at}.")
    # Edges follow the current sample only: a figure that changed with the selection would make
    # Streamlit drop that selection on the next run.
    show = [state.selected_sample()] if res is not None else []
    edges = [] if res is None else source_edges(emb, sample_pos, res.source_ids, res.source_weights, show)
    fig = figures.map_figure(emb.positions, emb.ids, ds.labels, sample_pos, edges, MAX_DRAWN, ds.label_names)
    event = st.plotly_chart(fig, width="stretch", on_select="rerun", selection_mode=("points", "box", "lasso"),
                            key="map_chart")
    if res is not None:  # a plain click on a sample selects it (its source edges follow)
        click_select("map_chart", [len(fig.data) - 1], lambda curve, i: state.select_sample(i))
    if ds.is_image:
        shown = emb.ids[:MAX_DRAWN]
        n_thumbs = hover_thumbnails("map_chart", shown, ds.points[shown],
                                    res.samples if res is not None else np.zeros((0, ds.dim), np.float32),
                                    ds.image_shape, sample_curve=len(fig.data) - 1)
        st.caption(f"Hover a point to see its image ({n_thumbs:,} items have a thumbnail).")
    samples, train = selection(event, sample_curve=len(fig.data) - 1)
    st.caption(f"Edges join sample #{show[0] if show else '-'} to its blend sources (width by weight). "
               "Click a sample to select it; lasso or box-select points to list them below.")
    linked(ds, res, samples, train)


def linked(ds, res, samples, train) -> None:
    if not samples and not train:
        return
    rows = [("sample", i) for i in samples] + [("training", j) for j in train]
    df = pd.DataFrame(rows, columns=["kind", "id"])
    if ds.labels is not None:
        df["label"] = [int(ds.labels[j]) if k == "training" else None for k, j in rows]
    c1, c2 = st.columns([3, 1])
    c1.dataframe(df, hide_index=True, width="stretch", height=min(320, 40 + 35 * len(df)))
    c2.download_button("Export selection (CSV)", df.to_csv(index=False), file_name="selection.csv",
                       mime="text/csv", key="map_export", on_click="ignore")
    if samples and c2.button(f"Sources of sample #{samples[0]} →", key="map_to_sources"):
        state.select_sample(samples[0])
        st.switch_page("app_pages/sources.py")
    if ds.is_image:
        vecs = [res.samples[i] for i in samples[:16]] + [ds.points[j] for j in train[:32]]
        if vecs:
            st.image(figures.image_grid(np.stack(vecs), ds.image_shape, ncols=16, scale=2),
                     caption="Selected samples first, then selected training items")


state.guard(body)
