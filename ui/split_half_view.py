"""The Memorisation page's tab "Split-half": two disjoint halves, the same seeds, the same samples?"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from cdm_core.analysis.split_half import halves, split_half
from cdm_core.analysis.sweep import parse_floats
from cdm_core.errors import CdmInputError
from cdm_core.report import figures
from ui import state

ABOUT = (
    "**How to read this** (Kadkhodaie et al., ICLR 2024). The training set is split once into two disjoint, "
    "class-balanced halves; the model is built on the first *size* items of each and both are sampled from the "
    "same seeds. *Similarity* is the mean cosine similarity of the paired samples, each centred on the whole "
    "data set's mean (1: the same sample from both halves). A model that generalises converges to 1 as the size "
    "grows; a memorising one returns two unrelated training items. *Distance* is the mean paired distance "
    "divided by the mean distance between training items."
)


def default_sizes(half: int) -> str:
    out, s = [], max(10, half // 64)
    while s < half:
        out.append(s)
        s *= 4
    return ",".join(map(str, out + [half]))


def split_half_tab(ds, p: dict) -> None:
    half = min(len(h) for h in halves(ds.n, ds.labels))
    c1, c2 = st.columns([3, 1])
    text = c1.text_input("Items per half", default_sizes(half), key="w_sh_sizes",
                         help=f"Comma-separated sizes up to {half:,} (nested within each half).")
    n = int(c2.number_input("Sample pairs", 4, 512, 32, key="w_sh_n"))
    if p.get("space") == "latent":
        st.info("The split-half test runs in pixel space (it samples the data themselves): pick it on the "
                "Generate page.")
        return
    try:
        sizes = sorted({int(v) for v in parse_floats(text, "sizes")})
        base = state.config_from(p).replace(n_samples=n, subset=0, start=0.0)

        if sizes[0] < 2 or sizes[-1] > half:
            raise CdmInputError(f"items per half must lie in [2, {half:,}]")
    except (CdmInputError, ValueError) as e:
        st.error(str(e))
        return
    st.caption(f"Model: **{base.model}**" + (f", σ = {base.sigma:g}, M = {base.draws}" if base.model == "cfdm" else "")
               + f", S = {base.steps}, start T = 0 (the same noise for both halves); the model comes from the "
               "Generate page.")
    key = (ds.content_hash, base.to_json(), tuple(sizes))
    done = state.session_cache("split_half", key)
    if done is None and st.button(f"Run the split-half test ({2 * len(sizes)} runs of {n} samples)", type="primary",
                                  key="w_sh_go"):
        done = state.computed("split_half", key, "Split-half", lambda callback: split_half(
            ds, base, sizes, callback=callback, keep_samples=True))
    if done is None:
        st.markdown(ABOUT)
        return
    rows, pairs = done
    fig = go.Figure(go.Scatter(x=[r["size"] for r in rows], y=[r["similarity"] for r in rows], mode="lines+markers",
                               error_y=dict(type="data", array=[r["similarity_sd"] for r in rows], thickness=1),
                               name="similarity", hovertemplate="%{x} per half<br>similarity %{y:.3f}<extra></extra>"))
    fig.update_xaxes(type="log", title="items per half", tickvals=sizes, ticktext=[f"{s:,}" for s in sizes])
    fig.update_yaxes(title="paired cosine similarity", range=[-0.05, 1.05])
    figures.base_layout(fig, height=340)
    st.plotly_chart(fig, width="stretch", key="sh_fig")
    st.caption("Error bars: ±1 standard deviation over the sample pairs.")
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="%.3f")
                                for c in ("similarity", "similarity_sd", "distance")})
    if ds.is_image:
        k = min(8, n)
        for r, (a, b) in zip(rows, pairs):
            if r is rows[0] or r is rows[-1]:
                st.image(figures.image_grid(np.concatenate([a[:k], b[:k]]), ds.image_shape, ncols=k,
                                            scale=figures.grid_scale(ds.image_shape, 48)),
                         caption=f"{r['size']:,} per half: half A (top) and half B (bottom), the same seeds")
    st.markdown(ABOUT)
