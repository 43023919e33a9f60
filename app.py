"""cfdm-explorer: the dashboard's entry point (page config, navigation, shared sidebar)."""

from pathlib import Path

import streamlit as st

from cdm_core.data.registry import REGISTRY, availability
from ui import frame, heap, state
from ui.history import one_entry_per_page

# the post-rerun collection skips the imported modules (0.1-0.2 s a rerun otherwise): ui/heap.py
heap.freeze_imported_heap()

ASSETS = Path(__file__).parent / "assets"
st.set_page_config(page_title="cfdm-explorer", page_icon=str(ASSETS / "logo.svg"), layout="wide")
st.markdown(f"<style>{(ASSETS / 'style.css').read_text()}</style>", unsafe_allow_html=True)

state.init()

PAGES = [
    st.Page("app_pages/data.py", title="Data", icon=":material/dataset:", default=True),  # served at /
    st.Page("app_pages/generate.py", title="Generate", icon=":material/auto_awesome:", url_path="generate"),
    st.Page("app_pages/sources.py", title="Sources", icon=":material/account_tree:", url_path="sources"),
    st.Page("app_pages/sensitivity.py", title="Sensitivity", icon=":material/insights:", url_path="sensitivity"),
    st.Page("app_pages/map.py", title="Map", icon=":material/scatter_plot:", url_path="map"),
    st.Page("app_pages/memorisation.py", title="Memorisation", icon=":material/stacked_line_chart:",
            url_path="memorisation"),
    st.Page("app_pages/attribute.py", title="Attribute", icon=":material/fact_check:", url_path="attribute"),
    st.Page("app_pages/export.py", title="Export", icon=":material/download:", url_path="export"),
]
nav = st.navigation(PAGES)

# what the link asked for that could not be used as given, until dismissed: filled after the page
# has run, so values a page clamps (map=tsne, fig_w=-1, sample=99999) are said in the same run
notice_box = st.empty()

with st.sidebar:
    one_entry_per_page()  # query-string updates replace the page's history entry instead of adding one
    st.logo(str(ASSETS / "logo.svg"))
    st.markdown("### cfdm-explorer")
    st.caption("Closed-form diffusion: where does every sample come from?")
    choices = state.dataset_choices()
    current = st.session_state.dataset_name
    if current not in choices:
        choices.append(current)
    # names only: the sidebar is too narrow for "name — summary", which Streamlit cut mid-word;
    # the summary is the caption below, wrapped
    picked = st.selectbox("Data set", choices, index=choices.index(current), format_func=state.name_for,
                          key=f"sidebar_dataset_{len(choices)}_{current}",
                          help="Registered data sets and your uploads (Data page).")
    if picked != current:
        state.set_dataset(picked)
        st.rerun()
    try:
        ds = state.current_dataset()
        shape = "x".join(map(str, ds.image_shape)) if ds.is_image else ""
        about = REGISTRY[current].summary if current in REGISTRY else ""
        # the count and the image size once: many summaries already say them
        parts = [about] if about else []
        if f"{ds.n:,}" not in about:
            parts.append(f"**{ds.n:,}** training items")
        if not ds.is_image or shape not in about:
            parts.append(f"images {shape}" if ds.is_image else f"{ds.dim}-D points")
        st.caption(" · ".join(parts))
    except Exception as e:  # a data set that fails to load must not take the app down
        st.error(f"Could not load the data set: {e}")
    summary = st.empty()  # filled after the page has run, so it shows this run's settings and result
    missing = [n for n in REGISTRY if not availability(n)[0]]
    if missing:
        st.caption("Unavailable here: " + ", ".join(missing) + " (see the Data page).")

with frame.full_run(notice_box, summary):  # then the URL, notices and summary (ui/frame.py)
    nav.run()
