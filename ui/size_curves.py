"""The Memorisation page's tab "Against training-set size": the standard criterion on nested subsets."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from cdm_core.analysis.memorisation import emm, memorisation_curves
from cdm_core.analysis.metrics import COPY_RATIO, criterion_name
from cdm_core.analysis.sweep import parse_floats
from cdm_core.config import MODELS
from cdm_core.errors import CdmInputError
from cdm_core.report.memorisation_figures import criterion_label, curve_name, size_curves_figure
from ui import state

ABOUT = (
    "**How to read this.** Each curve is one model (and, for σ-CFDM, one σ), built on nested, class-balanced "
    "training subsets of each size (the smaller inside the larger) and sampled from the same seeds. *Memorised* "
    "is the field's standard criterion (Gu et al., TMLR 2025): the nearest training item is less than a third "
    "as far as the second-nearest. Error bars are Wilson 95% intervals over the samples. The diamond marks each "
    "curve's EMM, the largest size up to which at least 90% of samples are memorised (Gu et al.'s effective "
    "model memorisation). *Copies (exact sources)*, the tool's own verdict, is in the table, named apart."
)


def default_sizes(n: int) -> list[int]:
    """Doubling sizes up to the whole set, from about N / 32 (at least 10)."""
    out, s = [], max(10, n // 32)
    while s < n:
        out.append(s)
        s *= 2
    return out + [n]


def size_tab(ds, p: dict) -> None:
    c1, c2, c3 = st.columns([3, 3, 2])
    sizes_text = c1.text_input("Training-set sizes", state.view("mem_sizes") or ",".join(map(str, default_sizes(ds.n))),
                               key="w_mem_sizes", help=f"Comma-separated sizes up to {ds.n:,} (nested subsets).")
    model = p.get("model", "cfdm")
    choices = list(MODELS) if ds.is_image else ["cfdm", "gaussian"]
    default = [m for m in (state.view("mem_models") or ",".join(dict.fromkeys(["cfdm", model]))).split(",")
               if m in choices] or ["cfdm"]
    models = c2.multiselect("Models", choices, default=default, key="w_mem_models",
                            help="Each runs on every size from the same seeds; ls/els use the Generate page's patch "
                                 "sizes.")
    sigmas_text = c3.text_input("σ values (σ-CFDM)", state.view("mem_sigmas") or f"0,{float(p['sigma']):g}",
                                key="w_mem_sigmas")
    c4, c5, c6 = st.columns(3)
    n = int(c4.number_input("Samples per point", 8, 1024, state.view_number("mem_n", 8, 1024, integer=True),
                            key="w_mem_n"))
    seeds = int(c5.number_input("Seeds", 1, 8, state.view_number("mem_seeds", 1, 8, integer=True), key="w_mem_seeds",
                                help="Sample sets per point (seed, seed + 1, …), pooled for the fraction."))
    ratio = float(c6.number_input("Criterion: d1/d2 below", 0.01, 0.99, COPY_RATIO, format="%.3f",
                                  key="w_mem_ratio", help="1/3 is the standard criterion of Gu et al. (2025)."))
    for key, value in (("mem_sizes", sizes_text), ("mem_models", ",".join(models)), ("mem_sigmas", sigmas_text),
                       ("mem_n", n), ("mem_seeds", seeds)):
        state.set_view(key, value)
    if not models:
        st.info("Choose at least one model.")
        return
    if p.get("space") == "latent":
        st.info("Curves against size run in pixel space (they sample the data themselves): pick it on the "
                "Generate page.")
        return
    try:
        sizes = sorted({int(v) for v in parse_floats(sizes_text, "sizes")})
        sigmas = sorted(set(parse_floats(sigmas_text, "σ values")))
        base = state.config_from(p | {"model": "cfdm", "sigma": 0.0}).replace(n_samples=n, subset=0)

        if sizes[0] < 2 or sizes[-1] > ds.n:
            raise CdmInputError(f"sizes must lie in [2, {ds.n:,}]")
    except (CdmInputError, ValueError) as e:
        st.error(str(e))
        return
    key = (ds.content_hash, base.to_json(), tuple(sizes), tuple(models), tuple(sigmas), seeds, ratio)
    done = state.session_cache("size_curves", key)
    runs = len(sizes) * seeds * (len(sigmas) * ("cfdm" in models) + len([m for m in models if m != "cfdm"]))
    if done is None and st.button(f"Compute the curves ({runs} runs of {n} samples)", type="primary",
                                  key="w_mem_go"):
        done = state.computed("size_curves", key, "Memorisation against size", lambda callback: memorisation_curves(
            ds, base, sizes, models, sigmas, seeds=seeds, ratio=ratio, callback=callback))
    if done is None:
        st.markdown(ABOUT)
        return
    rows, levels = done, emm(done)
    st.plotly_chart(size_curves_figure(rows, levels, criterion_label(ratio)), width="stretch", key="mem_size_fig")
    said = []
    for e in levels:
        what = "below the smallest size" if e["emm"] is None else \
            f"≥ {e['emm']:,} (memorised at every size)" if e["every_size"] else f"{e['emm']:,}"
        said.append(f"{curve_name(e['model'], e['sigma'])}: {what}")
    st.caption(f"EMM (largest size with ≥ 90% memorised, {criterion_name(ratio)}): " + "; ".join(said) + ".")
    df = pd.DataFrame(rows)[["model", "sigma", "size", "samples", "memorised", "lo", "hi", "mean_nn_ratio",
                             "effective_sources", "copies"]]
    st.dataframe(df, hide_index=True, width="stretch", height=min(400, 38 + 35 * len(df)),
                 column_config={c: st.column_config.NumberColumn(format="%.3f") for c in
                                ("memorised", "lo", "hi", "mean_nn_ratio", "effective_sources", "copies")})
    st.download_button("Curves as CSV", df.to_csv(index=False).encode(), file_name="memorisation-size.csv",
                       mime="text/csv", key="w_mem_csv", on_click="ignore")
    st.markdown(ABOUT)
