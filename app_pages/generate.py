"""Generate page: sampler settings, a progress bar, samples coloured by memorisation."""

import streamlit as st

from cdm_core import patches
from cdm_core.analysis import metrics
from cdm_core.config import INDEX_KINDS, PATCH_MODELS
from cdm_core.engine.sampler import time_grid
from cdm_core.errors import CdmInputError
from cdm_core.report import figures
from ui import frame, state
from ui.compare import compare_panel
from ui.live_chart import live_chart

HELP = {
    "sigma": "Smoothing scale σ: 0 copies training points; larger values blend points that are farther apart.",
    "draws": "Smoothing draws M per sample: each draw snaps to one training point, the sample blends up to M.",
    "steps": "Euler steps S from the start time to 1; the last step is taken at t = 1 − (1 − T)/S, "
             "so more steps snap samples closer to training items.",
    "start": "Start time T: 0 starts from pure noise; larger T starts near a training point and saves steps.",
    "n": "How many samples to draw; sample i depends only on (seed, i).",
    "seed": "Base seed: the same seed gives the same samples.",
    "neighbours": "Neighbours K kept per query by truncated indexes (the omitted weight is bounded and reported).",
    "index": "auto: all N points, fast (on large sets a certified float32 screen first); "
             "exact: all N points per smoothing draw, float64 (the reference); flat/ivf: top-K neighbours.",
    "space": "Pixel space samples the images themselves (blends look like overlays). Latent space samples the "
             "training latents of a small autoencoder trained on this data set, then decodes: blends of latents "
             "decode to plausible images. Sources, weights and sensitivity stay exact in both.",
    "latent_dim": "Latent coordinates K of the autoencoder (each K has its own, cached model).",
    "backend": "local: this process. ray: the training set split into shards held by Ray actors (a local Ray "
               "instance is started for the run and stopped after it); the same samples as local.",
}


MODEL_LABELS = {"cfdm": "σ-CFDM", "gaussian": "Gaussian", "ls": "Local (LS)", "els": "Equivariant local (ELS)"}
MODEL_HELP = {
    "cfdm": "The closed-form model of the training set, smoothed by σ: each sample is an exact blend of a few whole "
            "training items (σ = 0 copies them).",
    "gaussian": "The linear denoiser of the data's mean and covariance (Wang & Vastola 2024): its sources are signed "
                "weights over every training item, summing to one.",
    "ls": "The local score (Kamb & Ganguli 2025): each pixel is denoised from the same window of every training "
          "image; every pixel is an exact blend of training pixels at the same place.",
    "els": "The equivariant local score (Kamb & Ganguli 2025): each pixel from matching windows at any position of "
           "any training image; samples are patch mosaics, every pixel an exact blend of training pixels.",
}
SCHEDULE_ONE, SCHEDULE_LIST = "one size", "one per step"
# measured floating-point rates here (SamplerConfig.work per second; benchmarks/models.py, 2026-12-03:
# ls 1.4e9 on digits and MNIST-5k, els 3.9e9 on digits), to say what a run will cost
RATE = {"cfdm": 2e10, "gaussian": 2e10, "ls": 1.4e9, "els": 4e9}


def model_controls(ds, p: dict) -> None:
    """The model, its one-line explanation and its own settings (patch sizes for ls / els)."""
    models = list(MODEL_LABELS) if ds.is_image else ["cfdm", "gaussian"]
    if p.get("model") not in models:
        p["model"] = "cfdm"
    c1, c2 = st.columns([3, 2])  # the four options need about 420 px: their column never cuts them
    p["model"] = c1.segmented_control("Model", models, format_func=MODEL_LABELS.get, default=p["model"],
                                      key="w_model", help="The denoiser the sampler runs: the same seeds under "
                                      "every model, so runs of different models compare sample by sample.") \
        or p["model"]
    c2.caption(MODEL_HELP[p["model"]])
    if p["model"] not in PATCH_MODELS:
        p["subset"] = 0
        return
    h, w = ds.image_shape[:2]
    cover = 2 * max(h, w) - 1
    current = p.get("patch_schedule", "") or patches.DEFAULT_PRESET
    kinds = list(patches.PRESETS) + [SCHEDULE_ONE, SCHEDULE_LIST]
    kind = current if current in patches.PRESETS else SCHEDULE_ONE if "," not in current else SCHEDULE_LIST
    c1, c2, c3 = st.columns([2, 2, 3])
    kind = c1.selectbox("Patch sizes", kinds, index=kinds.index(kind), key="w_patch_kind",
                        help="Window size k(t) per step: a published schedule (Kamb & Ganguli 2025, mapped to "
                             "this time grid by signal-to-noise ratio), one size for every step, or one per step. "
                             f"k ≥ {cover} covers the whole image: the exact empirical model.")
    if kind == SCHEDULE_ONE:
        size = int(current) if current.isdigit() else 5
        p["patch_schedule"] = str(c2.slider("Window k (pixels)", 1, cover, min(size, cover) | 1, step=2,
                                            key="w_patch_size"))
    elif kind == SCHEDULE_LIST:
        p["patch_schedule"] = c2.text_input("Sizes, first step first", current if "," in current else
                                            ",".join(map(str, patches.sizes_per_step(current, p["start"],
                                                                                     int(p["steps"])))),
                                            key="w_patch_list", help="Odd sizes, one per step, comma-separated.")
    else:
        p["patch_schedule"] = kind
    size = int(p.get("subset") or 0)
    p["subset"] = int(c3.number_input("Training items used (0 = all)", 0, ds.n, min(size, ds.n), step=100,
                                      key="w_subset", help="A seeded, class-balanced subset of the training set "
                                      "(nested: the first 500 lie inside the first 1,000), so a local model runs on a "
                                      "CPU; ids and pictures still refer to the whole set."))


def cost_caption(ds, cfg) -> None:
    """What a patch-model run costs, said before it runs (ELS on a large set is a GPU workload)."""
    if cfg.model not in PATCH_MODELS:
        return
    work = cfg.work(state.items_used(ds, cfg), ds.dim, ds.image_shape)
    seconds = work / RATE[cfg.model]
    when = "runs as you move a slider" if state.is_interactive(ds, cfg) else "press Generate to run it"
    sizes = cfg.patch_sizes
    st.caption(f"Patch sizes per step (first step first): {', '.join(map(str, sizes))}. This run is about "
               f"{work:.1e} floating-point operations, roughly {seconds:.0f} s on this machine's CPU; {when}."
               + (" On a large set use a training subset (Data page) or a GPU." if seconds > 60 else ""))


def space_controls(ds, p: dict) -> None:
    """Pixel or latent space (image sets only): the same sampler on the data or on an autoencoder's latents."""
    if not ds.is_image:
        p["space"] = "data"
        return
    c1, c2, c3 = st.columns([2, 1, 3])
    labels = {"data": "Pixel space", "latent": "Latent space"}
    picked = c1.segmented_control("Space", list(labels), format_func=labels.get, default=p.get("space", "data"),
                                  key="w_space", help=HELP["space"]) or p.get("space", "data")
    if picked != p.get("space", "data"):  # each space has its own sensible smoothing scale
        p["sigma"] = state.defaults_for(state.dataset_name(), picked)["sigma"]
        st.session_state["w_sigma"] = float(p["sigma"])
        st.toast(f"σ set to {p['sigma']:g}, the default for {'latent' if picked == 'latent' else 'pixel'} space "
                 f"({'latent units' if picked == 'latent' else 'data units'}).", icon=":material/tune:")
    p["space"] = picked
    if picked == "latent":
        p["latent_dim"] = int(c2.number_input("Latent dims K", 2, 64, int(p.get("latent_dim", 16)),
                                              key="w_latent_dim", help=HELP["latent_dim"]))
        cfg = state.config_from(p)
        from cdm_core.latent.space import is_ready
        st.session_state["_latent_caption_ready"] = is_ready(ds, cfg)
        if st.session_state["_latent_caption_ready"]:
            sp = state.latent_space_of(ds, cfg)
            c3.caption(f"Autoencoder `{sp.weights_hash}` ({sp.origin}): reconstruction RMSE {sp.recon_rmse:.3g} "
                       f"data units, {100 * sp.relative_error:.1f}% of the pixel variance. σ is in latent units.")
        else:
            c3.caption("The autoencoder for this data set is trained on the first run (seconds on digits, up to "
                       "about 3 minutes on Fashion-MNIST) and cached on disk.")


def controls(ds):
    """Every setting but σ, into the settings; returns the column the σ slider goes in (None when
    the model has no σ): σ is drawn by the fragment below, so that a σ move reruns it alone."""
    p = dict(state.params())
    model_controls(ds, p)
    if p["model"] in PATCH_MODELS:
        p["space"] = "data"  # local models work on pixels
    else:
        space_controls(ds, p)
    if p["model"] != "cfdm":  # σ, M, neighbours, index and Ray belong to the closed-form model
        c1, c2, c3, c4 = st.columns(4)
        p["steps"] = c1.slider("Steps S", 1, 200, int(p["steps"]), help=HELP["steps"], key="w_steps")
        p["start"] = c2.slider("Start time T", 0.0, 0.95, float(p["start"]), step=0.05, help=HELP["start"],
                               key="w_start")
        p["n"] = int(c3.number_input("Samples n", 1, 1024, int(p["n"]), help=HELP["n"], key="w_n"))
        p["seed"] = int(c4.number_input("Seed", 0, 2**31 - 1, int(p["seed"]), help=HELP["seed"], key="w_seed"))
        p["backend"], p["shards"] = "local", 0
        state.set_params(p)
        return None
    sigma_box, c2, c3, c4 = st.columns(4)
    p["draws"] = c2.slider("Draws M", 1, 32, int(p["draws"]), help=HELP["draws"], key="w_draws")
    p["steps"] = c3.slider("Steps S", 1, 200, int(p["steps"]), help=HELP["steps"], key="w_steps")
    p["start"] = c4.slider("Start time T", 0.0, 0.95, float(p["start"]), step=0.05, help=HELP["start"], key="w_start")
    c5, c6, c7, c8 = st.columns(4)
    p["n"] = int(c5.number_input("Samples n", 1, 1024, int(p["n"]), help=HELP["n"], key="w_n"))
    p["seed"] = int(c6.number_input("Seed", 0, 2**31 - 1, int(p["seed"]), help=HELP["seed"], key="w_seed"))
    p["neighbours"] = int(c7.number_input("Neighbours K", 1, 1024, int(p["neighbours"]), help=HELP["neighbours"],
                                          key="w_neighbours"))
    p["index"] = c8.selectbox("Index", INDEX_KINDS[:4],
                              index=INDEX_KINDS.index(p["index"]) if p["index"] in INDEX_KINDS[:4] else 0,
                              help=HELP["index"], key="w_index")
    if p["space"] == "latent":
        p["backend"], p["shards"] = "local", 0  # the autoencoder and its latents live in this process
        state.set_params(p)
        return sigma_box
    with st.expander("Compute backend", expanded=p.get("backend") == "ray"):
        b1, b2 = st.columns(2)
        p["backend"] = b1.radio("Backend", ["local", "ray"], index=1 if p.get("backend") == "ray" else 0,
                                horizontal=True, help=HELP["backend"], key="w_backend")
        if p["backend"] == "ray":
            p["shards"] = int(b2.number_input("Shards (actors)", 1, 64, max(1, int(p.get("shards") or 2)),
                                              key="w_shards"))
            if p["index"] not in ("auto", "exact"):
                p["index"] = "auto"
                b2.caption("Ray evaluates all points: index set to auto.")
        else:
            p["shards"] = 0
    state.set_params(p)
    return sigma_box


def sigma_control(box) -> None:
    """The σ slider, in its column of the settings row, and σ into the settings."""
    p = dict(state.params())
    # the range is fixed per data set and space (state.sigma_range): a range that followed σ
    # changed one rerun late and swallowed the move that crossed its boundary
    sig_max, sig_step = state.sigma_range(state.dataset_name(), p.get("space", "data"), float(p["sigma"]))
    p["sigma"] = box.slider("σ (smoothing)", 0.0, sig_max, min(float(p["sigma"]), sig_max), step=sig_step,
                            help=HELP["sigma"], key="w_sigma", format="%.4g")
    state.set_params(p)


def summary(res, ds) -> None:
    m = metrics.set_metrics(res, train_spread=state.train_spread(ds))
    c = st.columns(5)
    c[0].metric("Copies (exact sources)", f"{100 * m.copy_fraction:.0f}%",
                help=f"Samples made of one training item: it carries ≥ {m.copy_weight:.0%} of the exact blend "
                     "weight and is the sample's nearest item.")
    c[1].metric("Memorised (d1/d2 < 1/3)", f"{100 * m.memorised_fraction:.0f}%",
                help=f"The distance criterion of Gu et al. (2025): nearest / second-nearest training distance below "
                     f"{m.copy_ratio:.3g}. Mean ratio {m.mean_nn_ratio:.2f}. It looks at distances only, not at what "
                     "the sample is made of.")
    c[2].metric("Effective sources", f"{m.mean_effective_sources:.2f}",
                help="exp(entropy) of each sample's blend weights.")
    c[3].metric("Diversity", f"{m.diversity:.2f}", help="Mean pairwise sample distance / that of the training data.")
    precision = " Every reported number is computed in float64 (float32 only screens, with a certified bound)."
    c[4].metric("Time", f"{res.seconds:.2f} s", help=f"Max truncation bound {res.truncation_bound.max():.1e}; "
                                                      f"{100 * res.dense_fraction:.0f}% of queries computed densely."
                                                      + precision)


def results(run, ds) -> None:
    res = run.result
    summary(res, ds)
    ratio = metrics.nn_ratio(res.nn_dist)
    sel = state.selected_sample(len(res.samples))  # a link's sample beyond the run: clamped, with a notice
    view = None
    if ds.is_image:
        fig = figures.image_grid_figure(res.samples, ds.image_shape, ncols=12, values=ratio, value_name="NN ratio",
                                        scale=figures.grid_scale(ds.image_shape), selected=sel)
        # the invisible per-tile markers come last; the chart is updated in place (ui/live_chart.py)
        live_chart(fig, "gen_grid", [len(fig.data) - 1], lambda curve, i: state.select_sample(i),
                   config={"displayModeBar": False})
    else:
        # one view at a time: the animated trajectories (a frame per step) are costly to draw, so
        # they are sent to the browser only when asked for, keeping the slider loop fast
        view = st.segmented_control("View", ["Samples", "Trajectories"], default="Samples", key="w_gen_view",
                                    label_visibility="collapsed") or "Samples"
        if view == "Samples":
            fig = figures.samples_scatter(ds.points[:, :2], res.samples[:, :2], values=ratio, value_name="NN ratio",
                                          highlight=sel)
            figures.steady_ranges(fig, ds.points, res.samples)  # the same layout while samples stay inside
            # a zoom or pan is kept through σ moves and clicks alike (moved or redrawn), per data set
            fig.update_layout(uirevision=ds.content_hash)
            # updated in place on every σ move (ui/live_chart.py): a remounted chart took longer
            # to draw than the sampler took to run
            live_chart(fig, "gen_scatter", [1], lambda curve, i: state.select_sample(i))
        else:
            if res.trajectory is not None:
                st.plotly_chart(figures.trajectories_figure(ds.points[:, :2], res.trajectory[..., :2],
                                                            time_grid(res.config.start, res.config.steps)),
                                width="stretch", key="gen_traj")
                st.caption("Press Play or drag the time slider: samples flow from noise (t = T) to data (t = 1).")
    sel = state.selected_sample(len(res.samples))  # a click above may have changed it
    c1, c2 = st.columns([3, 1])
    if ds.is_image or view == "Samples":  # the trajectories view draws neither the colours nor the outline
        cue = "Border colour" if ds.is_image else "Colour"
        c1.caption(f"{cue}: nearest/second-nearest distance ratio on a fixed 0–1 scale (dark blue = close to one "
                   "item, yellow = far from any single item; below 1/3 the distance criterion calls it memorised). "
                   f"Selected sample: **#{sel}** (outlined). Click a sample to select it.")
    else:
        c1.caption(f"Selected sample: **#{sel}** (choose it on the Samples view).")
    c2.page_link("app_pages/sources.py", label=f"Sources of sample #{sel} →", icon=":material/account_tree:")


def body() -> None:
    st.title("Generate")
    ds = state.current_dataset()
    st.caption(f"Training-free samplers on **{ds.name}** ({ds.n:,} items), with the exact sources of every sample.")
    live_part(ds, controls(ds))


@st.fragment
def live_part(ds, sigma_box) -> None:
    """σ, the run and its results: what a σ move changes, rerun alone on a σ move (and on a click
    in the results), so the other settings, the title and the sidebar are not sent again. The
    sidebar's summary and the URL are refreshed by `frame.finish_fragment`."""
    state.guard(lambda: live_body(ds, sigma_box))
    frame.finish_fragment()


def live_body(ds, sigma_box) -> None:
    if sigma_box is not None:
        sigma_control(sigma_box)
    p = state.params()
    try:
        cfg = state.config_from(p, trajectory=not ds.is_image)
    except CdmInputError as e:
        st.error(f"Invalid settings: {e}")
        return
    cost_caption(ds, cfg)
    run = state.current_run()
    fresh = run is not None and run.key == state.result_key(ds, cfg)
    auto = state.is_interactive(ds, cfg)
    clicked = st.button("Generate", type="primary", icon=":material/play_arrow:",
                        help="Draw samples with these settings.")
    if clicked or (not fresh and auto):
        run = state.run_sampler(ds, cfg) or run
        if cfg.space == "latent" and not st.session_state.get("_latent_caption_ready", True) \
                and run is not None and run.key == state.result_key(ds, cfg):
            st.rerun()  # the autoencoder was just trained: redraw the controls with its hash and error
    elif not fresh and run is not None:
        st.info("Settings changed: press **Generate** to draw new samples (showing the previous ones).")
    if run is None:
        st.info("Press **Generate** to draw samples.")
        return
    if run.key[0] != ds.content_hash:
        st.info("These results belong to another data set: press **Generate**.")
        return
    results(run, ds)
    compare_panel(run, ds)


state.guard(body)
