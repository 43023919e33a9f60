"""Sources of a local-model sample (ls, els): the patch mosaic, its regions, one pixel's sources."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from cdm_core.analysis import mosaic
from cdm_core.report import mosaic_figures
from cdm_core.report.figures import label_of
from ui.click_select import click_select

TOP_REGIONS = 8


def mosaic_section(ds, res, i: int, scale: int) -> None:
    """The sample beside its main-source map and entropy map; the items that gave the largest
    regions, each drawn with the pixels taken from it; a clicked pixel's sources."""
    h, w = ds.image_shape[:2]
    rank, items = mosaic.rank_map(res, i, TOP_REGIONS)
    main = mosaic.main_sources(res, i)
    labels = [f"#{j}{label_of(ds, j)}" for j in items]
    fig = mosaic_figures.mosaic_figure(res.samples[i], ds.image_shape, rank, items, main.entropy, labels, height=400)
    st.markdown(f"**Patch mosaic** ({res.config.model}: every pixel is an exact blend of training pixels; the "
                f"{res.pixel_source_ids.shape[2]} largest weights of each are kept). Click a pixel of the map to see "
                "where it came from.")
    st.plotly_chart(fig, width="stretch", key="mosaic_map", config={"displayModeBar": False})
    key = f"w_mosaic_pixel_{i}"

    def pick(curve, pixel):
        st.session_state[key] = int(pixel)

    click_select("mosaic_map", [1, 2], pick)
    st.caption(f"Colours: the {len(items)} items that are the main source of most pixels; light grey: another item. "
               f"Entropy of a pixel's weights over (item, position) pairs in nats: 0 = one source pixel. "
               f"Kept sources per pixel: {res.pixel_source_ids.shape[2]}; the weight left out is at most "
               f"{main.omitted.max():.1e}.")
    regs = mosaic.regions(res, i, TOP_REGIONS, width=w)
    colours = mosaic_figures.region_colours(len(regs))
    st.markdown("**Items that gave the largest regions** (tinted: the pixels taken from each; share of the "
                "sample's weight; mean distance a pixel moved)")
    cols = st.columns(min(8, max(1, len(regs))))
    for k, (reg, colour) in enumerate(zip(regs, colours)):
        taken = pd.Series(reg.sources[reg.sources >= 0]).unique()
        mask = pd.Series(range(h * w)).isin(taken).to_numpy()
        img = mosaic_figures.region_overlay(ds.points[reg.item], ds.image_shape, mask, colour, scale)
        cols[k % len(cols)].image(img, width="stretch",
                                  caption=f"#{reg.item}{label_of(ds, reg.item)} · {int(reg.pixels.sum())} px · "
                                          f"{100 * reg.share:.0f}% · moved {reg.moved:.1f} px")
    pixel = int(st.session_state.get(key, int(main.entropy.argmin())))
    pixel = min(max(pixel, 0), h * w - 1)
    rows = mosaic.pixel_sources(res, i, pixel, w)
    st.markdown(f"**Pixel ({pixel // w}, {pixel % w})**: its kept sources (item, the position inside that item it "
                f"came from, weight); weight left out {main.omitted[pixel]:.1e}, entropy "
                f"{main.entropy[pixel]:.2f} nats.")
    left, right = st.columns([1, 3])
    if rows:
        top = rows[0]
        where = [top["row"] * w + top["col"]]
        left.image(mosaic_figures.region_overlay(ds.points[top["item"]], ds.image_shape,
                                                 pd.Series(range(h * w)).isin(where).to_numpy(), "#D55E00", scale),
                   caption=f"#{top['item']}{label_of(ds, top['item'])}: source position ({top['row']}, {top['col']})",
                   width="stretch")
    right.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", height=min(300, 40 + 35 * len(rows)),
                    column_config={"weight": st.column_config.NumberColumn(format="%.4g")})
