"""Compare runs: pin one run and show it beside the current one (samples, settings, metrics).

The pinned run is kept whole in the session (results are deterministic, so nothing is
recomputed); both sides are drawn with the same figure builders and the same colour scales."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import streamlit as st

from cdm_core.analysis import metrics
from cdm_core.report import figures
from ui import state

SETTINGS = (("model", "model"), ("patch_schedule", "patch sizes"), ("sigma", "σ"), ("draws", "M"), ("steps", "S"),
            ("start", "T"), ("n_samples", "n"), ("seed", "seed"),
            ("index", "index"), ("space", "space"))
METRICS = (("copy_fraction", "copies (exact sources)"), ("memorised_fraction", "memorised (d1/d2 < 1/3)"),
           ("mean_nn_ratio", "mean NN ratio"),
           ("mean_nn_distance", "mean NN distance"), ("mean_effective_sources", "effective sources"),
           ("diversity", "diversity"))


def pinned():
    return st.session_state.get("pinned_run")


def pin(run) -> None:
    st.session_state.pinned_run = run


def unpin() -> None:
    st.session_state.pinned_run = None


def in_pixel_space(res):
    """A latent run's result with its nearest neighbours measured in data units (to the decoded
    samples), so it compares with a run in the data space."""
    if res.config.space != "latent":
        return res
    out = copy.copy(res)
    out.nn_ids, out.nn_dist = res.pixel_nn_ids, res.pixel_nn_dist
    return out


def table(a, b, ds) -> pd.DataFrame:
    """Settings and memorisation metrics of two runs, side by side, with the change. Runs in
    different spaces are both measured in data units (latent distances are not comparable)."""
    rows = []
    for key, label in SETTINGS:
        va, vb = getattr(a.result.config, key), getattr(b.result.config, key)
        if key in ("sigma", "draws"):  # smoothing settings belong to cfdm: "—" for a model without them
            va = va if a.result.config.model == "cfdm" else "—"
            vb = vb if b.result.config.model == "cfdm" else "—"
        if key == "patch_schedule":
            va = ",".join(map(str, a.result.ran.get("patch_sizes", []))) or "—"
            vb = ",".join(map(str, b.result.ran.get("patch_sizes", []))) or "—"
        rows.append((label, str(va), str(vb), "" if va == vb else "changed"))
    ra, rb = a.result, b.result
    if ra.config.space != rb.config.space:
        ra, rb = in_pixel_space(ra), in_pixel_space(rb)
    ma = metrics.set_metrics(ra, train_spread=state.train_spread(ds)).as_dict()
    mb = metrics.set_metrics(rb, train_spread=state.train_spread(ds)).as_dict()
    for key, label in METRICS:
        rows.append((label, f"{ma[key]:.3g}", f"{mb[key]:.3g}", f"{mb[key] - ma[key]:+.3g}"))
    return pd.DataFrame(rows, columns=["", "pinned", "current", "current − pinned"])


def samples_figure(res, ds, key: str):
    ratio = metrics.nn_ratio(res.nn_dist)
    if ds.is_image:
        fig = figures.image_grid_figure(res.samples, ds.image_shape, ncols=8, values=ratio, value_name="NN ratio",
                                        scale=figures.grid_scale(ds.image_shape, 56))
    else:
        fig = figures.samples_scatter(ds.points[:, :2], res.samples[:, :2], values=ratio, value_name="NN ratio")
    st.plotly_chart(fig, width="stretch", key=key, config={"displayModeBar": False})


def same_seeds(a, b) -> bool:
    """Sample i of both runs started from the same noise (seed, start time, data space)."""
    ca, cb = a.config, b.config
    return ca.seed == cb.seed and ca.start == cb.start and ca.space == cb.space == "data" \
        and a.samples.shape[1] == b.samples.shape[1]


def agreement_table(a, b) -> pd.DataFrame:
    """Per sample of both runs (same seeds): pixel Pearson r and r^2 = 1 - SS_res / SS_tot (pinned as reference)."""
    n = min(len(a.samples), len(b.samples))
    r, r2 = metrics.agreement(a.samples[:n], b.samples[:n])
    return pd.DataFrame({"sample": np.arange(n), "Pearson r": r, "r² = 1 − SS_res/SS_tot": r2})


def agreement_panel(a, b) -> None:
    """How closely the current run reproduces the pinned one, sample by sample, when both start
    from the same noise: the comparison of Kamb & Ganguli between models."""
    if not same_seeds(a, b):
        st.caption("The runs differ in seed, start time or space, so sample i does not start from the same noise in "
                   "both: no per-sample agreement.")
        return
    df = agreement_table(a, b)
    r, r2 = df["Pearson r"].to_numpy(), df["r² = 1 − SS_res/SS_tot"].to_numpy()
    c1, c2, c3 = st.columns(3)
    c1.metric("Median pixel Pearson r", f"{np.nanmedian(r):.3f}",
              help="Per-sample Pearson correlation of the two runs' pixels (same seeds). Kamb & Ganguli's published "
                   "\"r²\" of ELS against trained networks is this r.")
    c2.metric("Median r² = 1 − SS_res/SS_tot", f"{np.nanmedian(r2):.3f}",
              help="Coefficient of determination of the current sample against the pinned one (the reference).")
    c3.metric("Samples compared", f"{len(df)}")
    with st.expander("Agreement per sample"):
        st.dataframe(df, hide_index=True, width="stretch", height=min(400, 38 + 35 * len(df)),
                     column_config={k: st.column_config.NumberColumn(format="%.4f") for k in df.columns[1:]})


def compare_panel(run, ds) -> None:
    """The Pin button, and the comparison when a pinned run of this data set differs from `run`."""
    other = pinned()
    c1, c2 = st.columns([1, 4])
    if c1.button("Pin this run", icon=":material/push_pin:", key="w_pin",
                 help="Keep these samples to compare with the next settings you try."):
        pin(run)
        other = run
    if other is None:
        c2.caption("Pin a run, change the settings, and the two are shown side by side.")
        return
    if other.key[0] != ds.content_hash:
        c2.caption("The pinned run belongs to another data set.")
        return
    if other.key == run.key:
        c2.caption("This run is pinned: change a setting to compare.")
        return
    st.subheader("Pinned run and current run")
    if c2.button("Unpin", key="w_unpin"):
        unpin()
        st.rerun()
    left, right = st.columns(2)
    for col, r, name in ((left, other, "pinned"), (right, run, "current")):
        cfg = r.result.config
        with col:
            smooth = f"σ = {cfg.sigma:g}, M = {cfg.draws}, " if cfg.model == "cfdm" else ""
            st.markdown(f"**{name.capitalize()}**: {cfg.model}, {smooth}S = {cfg.steps}, "
                        f"T = {cfg.start:g}, seed {cfg.seed}" + (" · latent" if cfg.space == "latent" else ""))
            samples_figure(r.result, ds, key=f"cmp_{name}")
    df = table(other, run, ds)
    st.dataframe(df, hide_index=True, width="stretch", height=38 + 35 * len(df))  # every row, no inner scroll
    if other.result.config.space != run.result.config.space:
        st.caption("The runs are in different spaces: nearest-neighbour metrics of both are measured in data units "
                   "(to the decoded samples).")
    agreement_panel(other.result, run.result)
    same = other.result.config.replace(sigma=run.result.config.sigma) == run.result.config
    if same and len(other.result.samples) == len(run.result.samples):
        moved = np.linalg.norm(run.result.samples - other.result.samples, axis=1)
        st.caption(f"Same seeds, only σ changed: samples moved by {np.median(moved):.3g} (median) and up to "
                   f"{moved.max():.3g} (data units); sample #{int(np.argmax(moved))} moved most.")
