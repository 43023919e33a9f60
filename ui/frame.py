"""What app.py draws around every page and refreshes once the page has run: the URL, the link
notices above the page and the run summary in the sidebar.

A full run refreshes them at the end of app.py. A fragment rerun (the Generate page reruns only
its fragment when σ moves, so that the rest of the page is not sent again) does not run app.py:
the fragment calls `finish_fragment` at its end, which refreshes the URL and the sidebar's summary
in the placeholder the last full run created (Streamlit lets a fragment write into a container
made outside it). A fragment rerun that raised a link notice of its own asks for a full run,
which draws the notice with its Dismiss button.
"""

from __future__ import annotations

from contextlib import contextmanager

import streamlit as st

from ui import state

_BOXES = "_frame_boxes"  # (notices, summary) placeholders of the last full run
_FULL_RUN = "_frame_full_run"  # True between `begin` and `finish` of a full run
_SHOWN = "_frame_notices_shown"  # the link notices the last full run drew
_SUMMARY_BY_FRAGMENT = "_frame_summary_by_fragment"  # a fragment wrote the summary in this full run


@contextmanager
def full_run(notice_box, summary_box):
    """Around the page of a full run: the placeholders `finish` and fragments fill, then `finish`.
    A run that ends early (st.rerun, st.stop, an error) is no longer a full run either, so the
    fragment reruns that follow still refresh the URL and the summary."""
    begin(notice_box, summary_box)
    try:
        yield
        finish()
    finally:
        st.session_state[_FULL_RUN] = False


def begin(notice_box, summary_box) -> None:
    """At the top of a full run, the placeholders `finish` and fragments fill."""
    st.session_state[_BOXES] = (notice_box, summary_box)
    st.session_state[_FULL_RUN] = True
    st.session_state[_SUMMARY_BY_FRAGMENT] = False


def finish() -> None:
    """At the end of a full run: the URL, the notices, and the summary unless a fragment drew it."""
    notice_box, summary_box = st.session_state[_BOXES]
    state.sync_url()
    notices = list(state.link_notices())
    st.session_state[_SHOWN] = notices
    if notices:
        with notice_box.container(border=True, key="link_notices"):
            st.warning("**This link needed changes:**\n\n" + "\n".join(f"- {m}" for m in notices),
                       icon=":material/link_off:")
            if st.button("Dismiss", key="w_dismiss_notices"):
                state.dismiss_link_notices()
                st.rerun()
    if not st.session_state[_SUMMARY_BY_FRAGMENT]:
        run_summary(summary_box)
    st.session_state[_FULL_RUN] = False


def finish_fragment() -> None:
    """At the end of a fragment, in every run: the sidebar's summary. Streamlit lets a fragment
    rerun write into an outside container only if the fragment wrote there in the full run too,
    so the fragment draws the summary in both (and `finish` then leaves it alone). On a fragment
    rerun, also the URL, and a full run if the rerun raised a new link notice."""
    if _BOXES not in st.session_state:
        return
    if not st.session_state.get(_FULL_RUN, True):
        state.sync_url()
        if list(state.link_notices()) != st.session_state.get(_SHOWN, []):
            st.rerun()  # a notice needs its box and Dismiss button, which a full run draws
    run_summary(st.session_state[_BOXES][1])
    st.session_state[_SUMMARY_BY_FRAGMENT] = True


def run_summary(box) -> None:
    """The sidebar's line of settings and the last run's size and time."""
    with box.container():
        p = st.session_state.params
        space = " · latent space" if p.get("space") == "latent" else ""
        model = p.get("model", "cfdm")
        smoothing = f"σ = {p['sigma']:g} · M = {p['draws']}" if model == "cfdm" else model
        if model in ("ls", "els"):
            smoothing += f" · patches {p.get('patch_schedule') or 'fashion-resnet'}"
        st.caption(f"{smoothing} · S = {p['steps']} · T = {p['start']:g} · n = {p['n']} · seed {p['seed']}{space}")
        run = state.current_run()
        if run is not None:
            st.caption(f"Last run: {run.result.samples.shape[0]} samples in {run.result.seconds:.2f} s")
