"""The training map, computed once per data set and settings and shared by the pages that draw it."""

import streamlit as st

from cdm_core.analysis.embedding import MapConfig, compute_map

FRESH: set = set()  # maps computed (not read back) since a page's caption last said so


@st.cache_resource(show_spinner=False, max_entries=8)
def cached_map(content_hash: str, cfg: MapConfig, _ds):
    bar = st.progress(0.0, text="Computing the map…")
    emb = compute_map(_ds, cfg, callback=lambda stage, frac: bar.progress(frac, text=f"Map: {stage}…"))
    bar.empty()
    if not emb.from_cache:
        FRESH.add((content_hash, cfg))
    return emb
