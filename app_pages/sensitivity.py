"""Sensitivity page: exact influence of training items on samples, and counterfactuals."""

import numpy as np
import streamlit as st

from cdm_core.analysis import dust
from cdm_core.analysis.additions import add_items
from cdm_core.analysis.sensitivity import (
    counterfactual,
    jacobian,
    numerical_zero,
    position_derivative,
    sensitivity,
)
from cdm_core.data.files import load_bytes
from cdm_core.errors import CdmInputError
from cdm_core.report import figures
from cdm_core.report.figures import label_of
from ui import state
from ui.click_select import click_select

MAX_SAMPLES = 32  # influence is computed for the run's first samples (identical by per-sample seeding)


def prepared(ds, cfg):
    """The cached local training set; None on Ray (each run opens its actors)."""
    if cfg.backend != "local" or cfg.space != "data":  # latent space: the sampler opens the latent set itself
        return None
    return state.cached_prepared(ds.content_hash, cfg.index, ds)


def compute(ds, run, top: int):
    cfg = run.result.config.replace(n_samples=min(MAX_SAMPLES, run.result.config.n_samples), trajectory=False)

    def make():
        bar = st.progress(0.0, text="Computing exact sensitivities…")
        sens = sensitivity(ds, cfg, top=top, callback=state.progress_callback(bar, "Sensitivity"),
                           prepared=prepared(ds, cfg))
        bar.empty()
        return sens

    return state.session_cache("sensitivity", (run.key, top, cfg.n_samples), make), cfg


def sample_view(ds, sens, i: int) -> None:
    ids, infl, jac = sens.training_ids[i], sens.influence[i], sens.jacobian[i]
    ok = ids >= 0
    st.markdown(f"**Most influential training items for sample #{i}** (ranked by ‖J‖ = ‖∂x/∂log π‖, in data "
                "units per unit of log-weight)")
    if ds.is_image:
        floor = numerical_zero(ds.points)
        c1, c2 = st.columns([1, 5])
        c1.image(figures.to_image(sens.samples[i], ds.image_shape, 4), caption=f"sample #{i}", width="stretch")
        per_map = c2.toggle("One colour scale per map", key="w_sens_per_map",
                            help="Off: one scale for the row, so maps compare. On: each map uses its own range.")
        titles = [f"#{j}{label_of(ds, j)}" for j in ids[ok]]
        c2.plotly_chart(figures.sensitivity_maps_figure(jac[ok], ds.image_shape, titles, zero_floor=floor,
                                                        per_map_scale=per_map, images=ds.points[ids[ok]],
                                                        colorbar_title="∂x/∂log π (data units)"),
                        width="stretch", key="sens_maps")
        quiet = int((infl[ok] <= floor).sum())
        st.caption("Each training item above its map of ∂ sample / ∂ log-weight (data units per unit of log-weight). "
                   "Red: the pixel brightens when that item is up-weighted; blue: it darkens; centred at zero. "
                   + (f"{quiet} map(s) are numerically zero (‖J‖ ≤ {dust.fmt(floor, 2)}, a millionth of the data "
                      "scale max‖x − mean‖: numerical dust, not influence): left blank. " if quiet else "")
                   + (" Latent space: maps are in pixel space, through the decoder (Dec′(z) · dz/dlog π, a "
                      "Jacobian-vector product per latent direction)." if sens.latents is not None else ""))
    else:
        j = st.selectbox("Up-weight training item", [int(v) for v in ids[ok]], format_func=lambda v: f"#{v}",
                         key=f"w_arrow_{i}")
        cfg = sens.config
        jac_all = state.session_cache("arrows", (cfg.to_json(), ds.content_hash, j),
                                      lambda: jacobian(ds, cfg, [j], prepared=prepared(ds, cfg))[0])
        st.plotly_chart(figures.arrows_figure(ds.points[:, :2], sens.samples[:, :2], jac_all[:, 0, :2], j,
                                              selected=i), width="stretch", key="sens_arrows")
        click_select("sens_arrows", [1], lambda curve, k: state.select_sample(k))  # curve 1: the samples
        st.caption(f"Arrows: how each sample moves when training item #{j} is up-weighted (direction of dx/dlog π).")


def brighter_panel(ds, sens, i: int) -> None:
    """Images: how sample i changes if a training image were brighter in a patch."""
    st.subheader("What if a training image were brighter here?")
    ids = [int(v) for v in sens.training_ids[i] if v >= 0]
    h, w = ds.image_shape[:2]
    c1, c2, c3, c4 = st.columns(4)
    j = c1.selectbox("Training item", ids, format_func=lambda v: f"#{v}", key=f"w_bright_item_{i}")
    r = c2.slider("Patch row", 0, h - 1, h // 2, key="w_bright_r")
    c = c3.slider("Patch column", 0, w - 1, w // 2, key="w_bright_c")
    rad = c4.slider("Patch radius", 0, max(1, h // 4), max(1, h // 8), key="w_bright_rad")
    mask = figures.patch_mask(ds.image_shape, r, c, rad)

    def make():
        with st.spinner("Differentiating the sampler with respect to the image…"):
            direction = mask / np.linalg.norm(mask)  # unit norm
            local = sens.config.replace(backend="local", shards=0, ray_address="")  # runs in this process
            return position_derivative(ds, local, j, direction, prepared=prepared(ds, local))

    deriv = state.session_cache("brighter", (sens.config.to_json(), ds.content_hash, j, r, c, rad), make)[i]
    left, right = st.columns([1, 3])
    left.image(figures.outlined_patch(ds.points[j], ds.image_shape, r, c, rad), caption=f"#{j}, brightened patch",
               width=96)
    right.plotly_chart(figures.sensitivity_maps_figure(deriv[None], ds.image_shape, [f"sample #{i}"],
                                                       zero_floor=numerical_zero(ds.points),
                                                       colorbar_title="∂x/∂brightness"),
                       width="content", key="bright_map")
    st.caption("Exact derivative of the sample with respect to the patch's brightness in that training image "
               "(unit-norm direction), all random numbers held fixed.")


def counterfactual_panel(ds, sens, i: int) -> None:
    st.subheader("Counterfactual: remove or re-weight training items")
    ids = [int(v) for v in sens.training_ids[i] if v >= 0]
    c1, c2, c3 = st.columns([3, 1, 1])
    chosen = c1.multiselect("Training items", ids, default=ids[:1], format_func=lambda v: f"#{v}", key=f"w_cf_{i}")
    factor = c2.number_input("New weight × ", 0.0, 100.0, 0.0, step=0.5, key="w_cf_factor",
                             help="0 removes the items; 2 doubles their weight.")
    go = c3.button("Re-sample", type="primary", key="w_cf_go")
    if go and chosen:
        try:
            with st.spinner("Re-sampling with the same seeds…"):
                st.session_state.cf = ((ds.content_hash, sens.config), tuple(chosen), factor,
                                       counterfactual(ds, sens.config, {j: factor for j in chosen}))
        except CdmInputError as e:
            st.error(str(e))
    cf_state = st.session_state.get("cf")
    if not cf_state or cf_state[0] != (ds.content_hash, sens.config):  # results of this data set and run only
        st.caption("Pick items and press Re-sample: the sampler re-runs with identical random numbers.")
        return
    _, chosen, factor, cf = cf_state
    left, right = st.columns([1, 1])
    with left:
        if ds.is_image:
            ims = [cf.original[i], cf.predicted[i], cf.actual[i]]
            cols = st.columns(3)
            for col, im, cap in zip(cols, ims, ["original", "predicted (1st order)", "actual re-sampled"]):
                col.image(figures.to_image(im, ds.image_shape, 4), caption=cap, width=96)
        st.markdown(f"Sample #{i}: actual move **{cf.displacement[i]:.3g}**, prediction error **{cf.error[i]:.3g}**.")
        st.caption("The linear prediction cannot hold when a memorised sample loses its only source: the sample "
                   "jumps to another training item, while the derivative only sees an infinitesimal change.")
    with right:
        st.plotly_chart(figures.predicted_vs_actual_figure(cf.predicted - cf.original, cf.actual - cf.original,
                                                           cf.correlation), width="stretch", key="cf_scatter")


def addition_panel(ds, sens, i: int) -> None:
    """What if we add these items: re-sample with added training items (the actual change)."""
    st.subheader("What if we add these items?")
    c1, c2, c3 = st.columns([3, 1, 1])
    how = c1.radio("Items to add", ["copies of training items", "a file"], horizontal=True, key="w_add_how",
                   help="Copies: duplicates of chosen training items (each counts once more). A file: new items in "
                        "the data's own units and shape (.npy, .npz, .csv, or a .zip of images).")
    items, label = None, ""
    if how == "a file":
        up = c1.file_uploader("Items to add", key="w_add_file", label_visibility="collapsed",
                              type=["npy", "npz", "csv", "zip"])
        if up is not None:
            try:
                items = load_bytes(up.name, up.getvalue(), resize=ds.image_shape[:2] if ds.is_image else None)
                label = f"{items.n} items from {up.name}"
            except CdmInputError as e:
                st.error(str(e))
                return
    else:
        ids = [int(v) for v in sens.training_ids[i] if v >= 0]
        chosen = c1.multiselect("Training items to copy", ids, default=ids[:1], format_func=lambda v: f"#{v}",
                                key=f"w_add_ids_{i}")
        if chosen:
            items, label = ds.points[chosen], f"copies of {', '.join(f'#{j}' for j in chosen)}"
    weight = c2.number_input("Weight of each", 0.01, 1000.0, 1.0, step=0.5, key="w_add_weight",
                             help="Relative to a typical training item (1 = as likely as one of them).")
    later_start = sens.config.start > 0
    go = c3.button("Re-sample with them", type="primary", key="w_add_go", disabled=items is None or later_start)
    if later_start:
        st.caption(f"Needs start time T = 0 (now T = {sens.config.start:g}): with T > 0 the start item of each sample "
                   "is drawn from the training weights, which an addition changes, so samples would not be compared "
                   "with themselves.")
    if go and items is not None:
        try:
            with st.spinner("Re-sampling with the same seeds…"):
                st.session_state.addition = ((ds.content_hash, sens.config), label,
                                             add_items(ds, sens.config, items, weight=weight))
        except CdmInputError as e:
            st.error(str(e))
    done = st.session_state.get("addition")
    if not done or done[0] != (ds.content_hash, sens.config):
        st.caption("Nothing added yet. The sampler re-runs with identical random numbers on the extended training "
                   "set, so each sample is compared with itself.")
        return
    _, label, add = done
    moved = add.moved
    st.markdown(f"Added {label} (weight {add.weight:g} each): **{len(moved)}** of the first {len(add.displacement)} "
                f"samples moved (by more than {dust.fmt(add.moved_tol, 2)}, a millionth of the data scale); "
                f"**{int(dust.is_source(add.added_share).sum())}** now blend an added item (weight ≥ {dust.DUST:.0e}).")
    left, right = st.columns([2, 3])
    with left:
        st.plotly_chart(figures.addition_figure(add.displacement, add.added_share, add.moved_tol), width="stretch",
                        key="add_fig")
    with right:
        if ds.is_image and len(moved):
            top = moved[:6]
            st.image(figures.image_grid(np.concatenate([add.original[top], add.actual[top]]), ds.image_shape,
                                        ncols=len(top), scale=figures.grid_scale(ds.image_shape, 56)),
                     caption="Most moved samples: before (top row), after adding (bottom row): samples "
                             + ", ".join(f"#{k}" for k in top))
        st.caption("A sample can move without blending an added item: at t = 0 every training item pulls on every "
                   "sample, so an addition changes the early drift. The share of blend weight on added items tells "
                   "the two apart. No derivative is used: at zero weight, an item closer than a sample's sources "
                   "takes over its blend abruptly.")


def body() -> None:
    st.title("Sensitivity")
    ds = state.current_dataset()
    run = state.require_run(ds)
    if run is None:
        return
    st.caption("Exact derivatives of each sample with respect to each training item's log-weight, with every "
               "random number held fixed; only items that carry weight along a sample's path have non-zero influence.")
    top = st.slider("Influential items per sample", 1, 16, state.view_number("top", 1, 16, integer=True), key="w_top")
    state.set_view("top", top)
    sens, cfg = compute(ds, run, top)
    n = len(sens.samples)
    total = len(run.result.samples)
    if total > n:
        st.info(f"Sensitivities are computed for the first {n} of the {total} samples (each sample depends only on "
                f"its own seed, so they are the same samples as on Generate).", icon=":material/info:")
        if state.selected_sample() >= n:
            st.caption(f"Sample #{state.selected_sample()} is beyond them: showing #{n - 1}.")
    sel = state.selected_sample(n)
    i = int(st.number_input("Sample", 0, n - 1, sel, key=f"w_sens_sample_{sel}",
                            help=f"Sensitivities are computed for the first {n} samples."))
    state.select_sample(i)
    sample_view(ds, sens, i)
    c1, c2 = st.columns([3, 2])
    c1.plotly_chart(figures.influence_matrix_figure(sens.training_ids, sens.influence, title="Influence matrix"),
                    width="stretch", key="sens_matrix")
    c1.caption(f"Each sample's {sens.training_ids.shape[1]} most influential items are computed; empty cells were "
               "not computed (the item is not among that sample's candidates), not small.")
    c2.plotly_chart(figures.total_influence_figure(sens.training_ids, sens.influence,
                                                   title="Training items that matter most"),
                    width="stretch", key="sens_total")
    if ds.is_image:
        brighter_panel(ds, sens, i)
    counterfactual_panel(ds, sens, i)
    addition_panel(ds, sens, i)


state.guard(body)
