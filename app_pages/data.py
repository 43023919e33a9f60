"""Data page: the current training set, uploads, and what is unavailable here."""

import numpy as np
import streamlit as st

from cdm_core.data.registry import REGISTRY, availability
from cdm_core.errors import CdmInputError
from cdm_core.report import figures
from ui import state


def upload_box() -> None:
    up = st.file_uploader("Load your own data", type=["npy", "npz", "csv", "zip"],
                          help=".npy/.npz arrays (N, D) or images (N, H, W[, 3]); .csv with numeric columns "
                               "(optional 'label'); .zip of same-size PNG/JPEG images. Used in its own units.")
    if up is None:
        return
    done = st.session_state.setdefault("uploads_seen", {})
    if up.file_id in done:
        msg = done[up.file_id]
        (st.success if msg.startswith("Loaded") else st.error)(msg)
        return
    try:
        state.add_upload(up.name, up.getvalue())
        ds = state.current_dataset()
        done[up.file_id] = f"Loaded {up.name}: {ds.n:,} items of dimension {ds.dim}."
        st.rerun()
    except CdmInputError as e:
        problem = str(e).removeprefix(f"{up.name}: ")  # the readers' messages name the file already
        done[up.file_id] = f"Could not load {up.name}: {problem}. The previous data set is still selected."
        st.error(done[up.file_id])


def overview(ds) -> None:
    c = st.columns(4)
    c[0].metric("Training items", f"{ds.n:,}")
    c[1].metric("Dimension", f"{ds.dim:,}")
    c[2].metric("Kind", "images " + "×".join(map(str, ds.image_shape)) if ds.is_image else "point cloud")
    c[3].metric("Labels", "none" if ds.labels is None else f"{len(np.unique(ds.labels))} classes")
    st.markdown(f"**Scaling:** {ds.scaling}  \n**Source:** {ds.source}  \n**Licence:** {ds.licence}  \n"
                f"**Content hash:** `{ds.content_hash}`")


def preview(ds) -> None:
    if ds.is_image:
        k = min(64, ds.n)
        st.image(figures.image_grid(ds.points[:k], ds.image_shape, ncols=16, scale=3 if ds.image_shape[0] < 20 else 2),
                 caption=f"The first {k} training items" + (
                     ": labels " + " ".join(str(ds.label_names[v] if ds.label_names and v < len(ds.label_names) else v)
                                            for v in ds.labels[:16]) + " …"
                     if ds.labels is not None and ds.n > 0 else ""))
    elif ds.dim >= 2:
        fig = figures.data_scatter(ds.points[:, :2], ds.labels, title=None)
        st.plotly_chart(fig, width="stretch", key="data_scatter")
        if ds.dim > 2:
            st.caption("Showing the first two coordinates.")
    else:
        st.bar_chart(np.histogram(ds.points[:, 0], bins=40)[0])


def unavailable() -> None:
    rows = [(n, e.summary, availability(n)[1]) for n, e in REGISTRY.items() if not availability(n)[0]]
    if rows:
        st.subheader("Not available on this machine")
        for name, summary, how in rows:
            st.markdown(f"- **{name}** ({summary}): {how}")


def body() -> None:
    st.title("Data")
    st.caption("Pick a training set in the sidebar or load your own. Samples are built from these items.")
    upload_box()
    ds = state.current_dataset()
    st.subheader(ds.name)
    overview(ds)
    preview(ds)
    unavailable()


state.guard(body)
