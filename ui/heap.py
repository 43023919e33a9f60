"""The server's long-lived Python heap, kept out of the collection Streamlit runs after every rerun.

Streamlit calls `gc.collect(2)` when a script run ends (`runner.postScriptGC`, on by default), and
a full collection walks every container object the process holds. With torch, plotly, pandas,
scipy and Streamlit loaded that is about 300,000 objects and 0.1-0.2 s here, during which the
collection holds the GIL: the server cannot send the run's last messages, so every slider move
waited for it (BENCHMARKS.md, "fourth session"). `gc.freeze()` moves the objects alive now into a
permanent generation that collections skip; objects created later (results, figures, a run's
page) are still collected after every run, as before.

The heap is frozen at the start of a run: whenever modules were imported since the last freeze
(a page's first visit imports its libraries lazily), and otherwise at most every
`REFREEZE_S` seconds. Each freeze first unfreezes and collects everything: what was alive at the
last freeze (a session's state, say) and has since become cyclic garbage (that session closed) is
reclaimed then, at the latest `REFREEZE_S` seconds after, instead of after the run that dropped
it. That full collection costs one run 0.1-0.2 s, a few times at start-up and then at most once
every `REFREEZE_S` seconds.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time

log = logging.getLogger(__name__)
REFREEZE_S = 300.0  # at most this long before frozen garbage is reclaimed
_lock = threading.Lock()
_modules_at_freeze = 0  # len(sys.modules) at the last freeze
_frozen_at = -float("inf")  # time.monotonic() of the last freeze


def _due() -> bool:
    return len(sys.modules) != _modules_at_freeze or time.monotonic() - _frozen_at >= REFREEZE_S


def freeze_imported_heap() -> bool:
    """Unfreeze, collect and freeze again what survives, if modules were imported since the last
    freeze or REFREEZE_S seconds have passed. Returns whether it froze (otherwise it costs a length
    check and a clock read)."""
    global _modules_at_freeze, _frozen_at
    if not _due():
        return False
    with _lock:
        if not _due():
            return False
        start = time.perf_counter()
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        _modules_at_freeze, _frozen_at = len(sys.modules), time.monotonic()
        log.info("froze %d long-lived objects out of later collections (%.2f s)", gc.get_freeze_count(),
                 time.perf_counter() - start)
        return True
