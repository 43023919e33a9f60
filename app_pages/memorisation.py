"""Memorisation page: how copying turns into blending as sigma grows (same seeds throughout)."""

import numpy as np
import streamlit as st

from cdm_core.analysis.sweep import default_sigmas as sweep_defaults, parse_floats, sweep
from cdm_core.errors import CdmInputError
from cdm_core.report import figures
from ui import state
from ui.size_curves import size_tab
from ui.split_half_view import split_half_tab

EXPLANATION = (
    "**How to read this.** Each point is one smoothing level σ, with the same seeds everywhere. "
    "Two verdicts, named apart. *Copies (exact sources)*: samples made of one training item (it carries "
    "at least 99% of the exact blend weight and is the nearest item). *Memorised (d1/d2 < 1/3)*: the "
    "distance criterion of Gu et al. (2025, after Carlini et al. 2023): the nearest training item is less "
    "than a third as far as the second-nearest; it sees distances only, so a blend of two nearby items "
    "can pass it. *Effective sources* is exp(entropy) of each "
    "sample's exact blend weights: 1 for a copy, about M when each of its M smoothing draws has settled "
    "on its own item, and more when the last step comes before the draws have settled (few steps S). "
    "*Diversity* is the mean distance between samples divided by that between training items. With "
    "σ = 0 the model reproduces training items; as σ grows, samples become blends of items that lie "
    "farther apart. The last Euler step is taken at t = 1 − (1 − T)/S, so with few steps even σ = 0 "
    "still blends the closest neighbours: raise S on the Generate page to see the copies sharpen."
)


def default_sigmas(sigma: float) -> str:
    return ",".join(f"{v:g}" for v in sweep_defaults(sigma))


def body() -> None:
    st.title("Memorisation")
    ds = state.current_dataset()
    p = state.params()
    against_sigma, against_size, halves = st.tabs(["Against σ", "Against training-set size", "Split-half"])
    with against_size:
        size_tab(ds, p)
    with halves:
        split_half_tab(ds, p)
    with against_sigma:
        if p.get("model", "cfdm") != "cfdm":
            st.info(f"σ smooths σ-CFDM only; the current model is {p['model']}. Pick σ-CFDM on the Generate page "
                    "for this sweep, or compare models against training-set size in the next tab.")
            return
        sigma_tab(ds, p)


def sigma_tab(ds, p) -> None:
    c1, c2, c3 = st.columns([3, 1, 1])
    text = c1.text_input("σ values", state.view("sweep") or default_sigmas(p["sigma"]),
                         key=f"w_sweep_sigmas_{ds.content_hash}",
                         help="Comma-separated smoothing scales; the other settings come from the Generate page.")
    state.set_view("sweep", text)
    n = int(c2.number_input("Samples per σ", 4, 256, state.view_number("sweep_n", 4, 256, integer=True),
                            key="w_sweep_n"))
    seeds = int(c3.number_input("Seeds", 1, 8, state.view_number("seeds", 1, 8, integer=True), key="w_sweep_seeds",
                                help="Independent sample sets per σ (seed, seed + 1, …): error bars show ±1 s.d."))
    state.set_view("sweep_n", n)
    state.set_view("seeds", seeds)
    try:
        sigmas = sorted(set(parse_floats(text, "σ values")))
        base = state.config_from(p).replace(n_samples=n)
        for s in sigmas:
            base.replace(sigma=s)
    except CdmInputError as e:
        st.error(str(e))
        return
    key = (ds.content_hash, base.to_json(), tuple(sigmas), seeds)

    def run_sweep():
        bar = st.progress(0.0, text="Sweeping σ…")
        rows, results = sweep(ds, base, sigmas, callback=state.progress_callback(bar, "Sweep"), keep_samples=True,
                              seeds=seeds)
        bar.empty()
        return rows, [r.samples for r in results]

    done = state.session_cache("sweep", key)
    cheap = state.is_interactive(ds, base.replace(n_samples=min(n * len(sigmas) * seeds, 100_000)))
    if done is None and (cheap or st.button("Run the sweep", type="primary", key="w_sweep_go")):
        done = state.session_cache("sweep", key, run_sweep)
    if done is None:
        st.info("Press **Run the sweep** (this data set is large enough that it does not run on every change).")
        st.markdown(EXPLANATION)
        return
    rows, sample_sets = done
    if base.space == "latent":
        st.caption("Latent space: nearest-neighbour ratios and distances are measured between latents "
                   "(the space the sampler blends in); the strips show the decoded samples.")
    st.plotly_chart(figures.sweep_figure(rows, current_sigma=p["sigma"]), width="stretch", key="sweep_fig")
    st.caption(f"Dotted line: the current σ = {p['sigma']:g} (Generate page). {n} samples per σ, M = {base.draws}, "
               f"S = {base.steps}, T = {base.start:g}, seeds {base.seed}–{base.seed + seeds - 1}"
               + (" (error bars: ±1 standard deviation over seeds)." if seeds > 1 else "."))
    st.subheader("The same seeds at each σ")
    shown = np.unique(np.linspace(0, len(sigmas) - 1, min(6, len(sigmas))).round().astype(int))
    if ds.is_image:
        k = min(12, n)
        for j in shown:
            st.image(figures.image_grid(sample_sets[j][:k], ds.image_shape, ncols=k,
                                        scale=figures.grid_scale(ds.image_shape, 56)), caption=f"σ = {sigmas[j]:g}")
    else:
        st.plotly_chart(figures.strip_scatter(ds.points[:, :2], [sample_sets[j][:, :2] for j in shown],
                                              [sigmas[j] for j in shown]), width="stretch", key="sweep_strip")
    st.markdown(EXPLANATION)


state.guard(body)
