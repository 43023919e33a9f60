"""One browser-history entry per page navigation.

Streamlit pushes a history entry when the page changes and another when the script then writes
the settings into the query string, so Back first "undoes" the query string and only a second
Back leaves the page. This small component (its JavaScript runs in the app page, once) turns a
`pushState` that changes only the query string of the current path into a `replaceState`: page
changes still add an entry, setting changes update it in place.
"""

from __future__ import annotations

import streamlit as st

JS = """
export default function() {
  if (window.__cfdmHistoryPatched) return;
  window.__cfdmHistoryPatched = true;
  const push = window.history.pushState.bind(window.history);
  window.history.pushState = function(state, title, url) {
    try {
      const target = new URL(url, window.location.href);
      if (target.pathname === window.location.pathname) {
        return window.history.replaceState(state, title, url);
      }
    } catch (e) { /* not a URL we understand: leave it to the browser */ }
    return push(state, title, url);
  };
}
"""

_component = st.components.v2.component("cfdm_history", js=JS)


def one_entry_per_page() -> None:
    """Mount the history patch (idempotent in the browser)."""
    _component(key="cfdm_history")
