"""Map page: a 2-D map of the training set with samples placed by their blend sources."""

import numpy as np
import pandas as pd
import streamlit as st

from cdm_core.analysis import metrics
from cdm_core.analysis.embedding import (
    MapConfig,
    place_by_sources,
    place_by_top_source,
    place_by_transform,
    source_edges,
    source_spread,
)
from cdm_core.report import figures
from ui import state
from ui.click_select import click_select
from ui.hover_thumbnails import hover_thumbnails
from ui.maps import FRESH, cached_map
from ui.selection import selected_points

MAX_DRAWN = 30000
BETWEEN_CLUSTERS = 0.1  # a sample whose sources spread over more than this fraction of the map is flagged
SAMPLE_COLOURS = ("NN ratio", "effective sources", "NN distance", "source spread on the map", "none")


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
    fresh = (mapped.content_hash, cfg) in FRESH
    FRESH.discard((mapped.content_hash, cfg))
    origin = "computed now" if fresh else "read from the disk cache" if emb.from_cache else "kept from earlier"
    st.caption(f"{method.upper()} map{' of the autoencoder latents' if space is not None else ''}, cached on disk "
               f"by content hash and settings ({origin}). {note}.")

    if run is None:  # a link to a set that does not generate by itself: the map of the data alone
        sample_pos = np.zeros((0, 2), np.float32)
        res, colour_by = None, None
    else:
        res = run.result
        options = ["mean of blend sources", "largest source"] + (["UMAP transform"] if emb.model is not None else [])
        c1, c2 = st.columns([3, 2])
        how = c1.radio("Place samples at", options, horizontal=True, key="w_map_place",
                       index=options.index(state.view("place")) if state.view("place") in options else 0,
                       help="Mean of blend sources: the weight-averaged map position of a sample's exact sources "
                            "(between clusters when its sources lie in different ones). Largest source: the map "
                            "position of its heaviest source, always a real item's place. UMAP transform: embed the "
                            "sample itself (small sets only).")
        state.set_view("place", how)
        colour_by = c2.selectbox("Colour samples by", SAMPLE_COLOURS, key="w_map_colour",
                                 index=SAMPLE_COLOURS.index(state.view("colour"))
                                 if state.view("colour") in SAMPLE_COLOURS else 0,
                                 help="NN ratio: nearest / second-nearest training distance (0 = copy), fixed 0–1 "
                                      "scale. Source spread: how far apart a sample's sources lie on the map.")
        state.set_view("colour", colour_by)
        if how == "UMAP transform":
            sample_pos = place_by_transform(emb, res.blend_space_points)
        elif how == "largest source":
            sample_pos = place_by_top_source(emb, res.source_ids, res.source_weights)
        else:
            sample_pos = place_by_sources(emb, res.source_ids, res.source_weights)
        placed_at = {"UMAP transform": "the UMAP transform of the samples themselves",
                     "largest source": "the map position of their largest blend source",
                     "mean of blend sources": "the weighted mean position of their blend sources"}[how]
        st.caption(f"Samples (×) are placed at {placed_at}.")
        mean_pos = sample_pos if how == "mean of blend sources" else \
            place_by_sources(emb, res.source_ids, res.source_weights)  # spread is measured about the mean
        spread = source_spread(emb, mean_pos, res.source_ids, res.source_weights)
        between = np.flatnonzero(spread > BETWEEN_CLUSTERS)
        if len(between):
            st.warning(f"{len(between)} of {len(spread)} samples blend sources that lie far apart on this map (their "
                       f"sources spread over more than {BETWEEN_CLUSTERS:.0%} of its extent): samples "
                       f"{', '.join(f'#{i}' for i in between[:12])}{'…' if len(between) > 12 else ''}. "
                       + ("Their mean position falls between clusters, which is not where any training item is."
                          if how == "mean of blend sources" else "Their placement shows one source only.")
                       + " Follow their edges or open their sources.", icon=":material/call_split:")
    # Edges follow the current sample only: a figure that changed with the selection would make
    # Streamlit drop that selection on the next run.
    show = [state.selected_sample()] if res is not None else []
    edges = [] if res is None else source_edges(emb, sample_pos, res.source_ids, res.source_weights, show)
    values, vrange = (None, None) if res is None else sample_colours(res, colour_by, spread)
    fig = figures.map_figure(emb.positions, emb.ids, ds.labels, sample_pos, edges, MAX_DRAWN, ds.label_names,
                             sample_values=values, value_name=colour_by, value_range=vrange,
                             selected=show[0] if show else None)
    event = st.plotly_chart(fig, width="stretch", on_select="rerun", selection_mode=("points", "box", "lasso"),
                            key="map_chart")
    sample_curve = len(fig.data) - 1
    points = [k for k, t in enumerate(fig.data) if t.mode == "markers"]

    def clicked(curve, i):  # a sample becomes the selected sample; a training item joins the table below
        if curve == sample_curve:
            state.select_sample(i)
        else:
            st.session_state.map_clicked_item = (ds.content_hash, int(i))

    click_select("map_chart", points, clicked)
    if ds.is_image:
        shown = emb.ids[:MAX_DRAWN]
        n_thumbs = hover_thumbnails("map_chart", shown, ds.points[shown],
                                    res.samples if res is not None else np.zeros((0, ds.dim), np.float32),
                                    ds.image_shape, sample_curve=len(fig.data) - 1)
        st.caption(f"Hover a point to see its image ({n_thumbs:,} items have a thumbnail).")
    samples, train = selection(event, sample_curve=len(fig.data) - 1)
    clicked_item = st.session_state.get("map_clicked_item")
    if samples or train or (clicked_item and clicked_item[0] != ds.content_hash):
        st.session_state.map_clicked_item = clicked_item = None  # a new selection (or data set) replaces it
    if clicked_item:
        train = [clicked_item[1]]
    st.caption(f"Edges join sample #{show[0] if show else '-'} to its blend sources (width by weight). "
               "Click a sample to select it, or a training item to list it; lasso or box-select points to list "
               "them below.")
    linked(ds, res, samples, train)


def sample_colours(res, name: str, spread: np.ndarray):
    """(values, fixed range or None) of the metric the samples are coloured by; (None, None) for none."""
    if name == "NN ratio":
        return metrics.nn_ratio(res.nn_dist), (0.0, 1.0)
    if name == "effective sources":
        return metrics.effective_sources(res.source_weights), None
    if name == "NN distance":
        return res.nn_dist[:, 0], None
    if name == "source spread on the map":
        return spread, (0.0, max(0.3, float(np.nanmax(spread)) if np.isfinite(spread).any() else 0.3))
    return None, None


def linked(ds, res, samples, train) -> None:
    if not samples and not train:
        return
    rows = [("sample", i) for i in samples] + [("training", j) for j in train]
    df = pd.DataFrame(rows, columns=["kind", "id"])
    if ds.labels is not None:  # a sample's label is its main source's
        names = ds.label_names

        def name_of(v: int) -> str:
            return names[v] if names and 0 <= v < len(names) else str(v)
        df["label"] = [name_of(int(ds.labels[j])) if k == "training" else
                       f"{name_of(int(ds.labels[res.source_ids[j, 0]]))} (main source)" for k, j in rows]
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
            grid = figures.image_grid(np.stack(vecs), ds.image_shape, ncols=16, scale=2)
            st.image(grid, width=grid.width,  # its own size: one item is not stretched to the caption's width
                     caption="Selected samples first, then selected training items")


state.guard(body)
