"""Sources page: one sample's exact blend sources next to its nearest training items."""

import numpy as np
import pandas as pd
import streamlit as st

from cdm_core.analysis import dust
from cdm_core.report import figures
from cdm_core.report.figures import label_of
from ui import state
from ui.click_select import click_select
from ui.mosaic_view import mosaic_section
from ui.verdicts import users_of, verdict


def image_row(ds, rows, captions, scale) -> None:
    """Images in a row (wrapping after 8): `rows` are flattened images in data units."""
    cols = st.columns(8)  # always 8 slots, so one source is drawn at the same size as eight
    for k, (row, cap) in enumerate(zip(rows, captions)):
        cols[k % len(cols)].image(figures.to_image(row, ds.image_shape, scale), caption=cap, width="stretch")


def latent_rows(ds, res, i: int, ids, w, scale) -> None:
    """Latent space: the decoded sources (what the sample blends), then the nearest training images
    by latent and by pixel distance, each with both distances."""
    from cdm_core.latent.space import latent_space
    space = latent_space(ds, res.config)
    st.markdown(f"**Blend sources, decoded** ({len(ids)} with weight ≥ 0.001; the sample is the decoder's image "
                "of Σ w·z over their latents)")
    image_row(ds, space.decode(res.train_latents[ids[:16]]),
              [f"#{j}{label_of(ds, j)} · w={wt:.3f}" for j, wt in zip(ids, w)], scale)
    z, x = res.latents[i], res.samples[i]

    def captions(near):
        return [f"#{j}{label_of(ds, j)}: latent {np.linalg.norm(res.train_latents[j] - z):.3g}, pixel "
                f"{np.linalg.norm(ds.points[j] - x):.3g}" for j in near]

    st.markdown("**Nearest training images in latent space** (Euclidean distance to the sample: latent units, "
                "then data units)")
    image_row(ds, ds.points[res.nn_ids[i][:8]], captions(res.nn_ids[i][:8]), scale)
    st.markdown("**Nearest training images in pixel space** (to the decoded sample)")
    image_row(ds, ds.points[res.pixel_nn_ids[i][:8]], captions(res.pixel_nn_ids[i][:8]), scale)


def body() -> None:
    st.title("Sources")
    ds = state.current_dataset()
    run = state.require_run(ds)
    if run is None:
        return
    res = run.result
    n = len(res.samples)
    sel = state.selected_sample(n)
    i = int(st.number_input("Sample", 0, n - 1, sel, help="Pick a sample by index (or click one on the Generate page).",
                            key=f"w_sample_{sel}"))
    state.select_sample(i)
    st.markdown(verdict(res, i))
    ok = res.source_ids[i] >= 0
    ids, w = res.source_ids[i][ok], res.source_weights[i][ok]
    shown = w >= 1e-3
    scale = 4 if ds.is_image and ds.image_shape[0] <= 16 else 3
    if getattr(res, "pixel_source_ids", None) is not None:  # ls / els: sources per pixel
        mosaic_section(ds, res, i, scale)
        st.markdown("**Nearest training items** (Euclidean distance, data units)")
        image_row(ds, ds.points[res.nn_ids[i][:8]],
                  [f"#{j}{label_of(ds, j)} · d={d:.3g}" for j, d in zip(res.nn_ids[i], res.nn_dist[i])], scale)
        return
    signed = res.ran.get("sources") == "affine"
    if signed:
        shown = abs(w) >= 1e-3
    if ds.is_image:
        left, right = st.columns([1, 4])
        kind = "decoded blend" if res.config.space == "latent" else "blend"
        left.image(figures.to_image(res.samples[i], ds.image_shape, scale + 1), caption=f"sample #{i} ({kind})")
        with right:
            if res.config.space == "latent":
                latent_rows(ds, res, i, ids[shown], w[shown], scale)
            else:
                st.markdown(f"**Signed sources** ({int(shown.sum())} with |weight| ≥ 0.001 of {len(w)}; the Gaussian "
                            "model's affine weights, summing to one)" if signed else
                            f"**Blend sources** ({int(shown.sum())} with weight ≥ 0.001, exact weights)")
                image_row(ds, ds.points[ids[shown][:16]],
                          [f"#{j}{label_of(ds, j)} · w={wt:.3f}" for j, wt in zip(ids[shown], w[shown])], scale)
                st.markdown("**Nearest training items** (Euclidean distance, data units)")
                image_row(ds, ds.points[res.nn_ids[i][:8]],
                          [f"#{j}{label_of(ds, j)} · d={d:.3g}" for j, d in zip(res.nn_ids[i], res.nn_dist[i])], scale)
    else:
        left, right = st.columns([3, 2])
        fig = figures.sources_scatter(ds.points[:, :2], res.samples[i, :2], ids, w, res.nn_ids[i],
                                      marked=st.session_state.get(f"w_item_{i}"))
        left.plotly_chart(fig, width="stretch", key="src_scatter")
        items = [k for k, t in enumerate(fig.data) if t.name in ("nearest points", "blend sources")]

        def pick_item(curve, j, i=i):  # a click on a source or a neighbour picks it for the table below
            st.session_state[f"w_item_{i}"] = int(j)

        click_select("src_scatter", items, pick_item)
        with right:
            st.plotly_chart(figures.weights_bar(ids[shown][:20], w[shown][:20], title="Blend weights"),
                            width="stretch", key="src_bar")
            st.dataframe(pd.DataFrame({"nearest": res.nn_ids[i], "distance (data units)": res.nn_dist[i]}),
                         hide_index=True, width="stretch", height=200)
    blended = "its latent equals Σ w·z over these sources' latents" if res.config.space == "latent" else \
        "the sample equals Σ w·x over these sources"
    st.caption(f"Exact: {blended} (max truncation bound {res.truncation_bound[i]:.1e}).")

    st.subheader("Which samples use a training item?")
    options = list(dict.fromkeys([int(j) for j in ids[shown]] + [int(j) for j in res.nn_ids[i]]))
    if st.session_state.get(f"w_item_{i}") not in options:
        st.session_state.pop(f"w_item_{i}", None)
    j = st.selectbox("Training item", options, format_func=lambda j: f"#{j}{label_of(ds, j)}", key=f"w_item_{i}",
                     help="This sample's sources, then its nearest items (or click one in the plot); the table lists "
                          "every sample that blends it.")
    df = users_of(res, j)
    if df.empty:
        st.write(f"No sample uses training item #{j} (with weight ≥ {dust.DUST:.0e}).")
    else:
        st.write(f"Training item #{j} is a source of **{len(df)}** of {n} samples (weight ≥ {dust.DUST:.0e}; "
                 "smaller weights are numerical dust).")
        st.dataframe(df, hide_index=True, width="stretch", height=min(300, 40 + 35 * len(df)))
        if ds.is_image:
            grid = figures.image_grid(res.samples[df["sample"].to_numpy()[:16]], ds.image_shape, ncols=16, scale=2)
            st.image(grid, width=grid.width, caption="Samples that use it (most weight first)")


state.guard(body)
