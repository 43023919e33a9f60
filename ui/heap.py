"""The server's long-lived Python heap, kept out of the collection Streamlit runs after every rerun.

Streamlit calls `gc.collect(2)` when a script run ends (`runner.postScriptGC`, on by default), and
a full collection walks every container object the process holds. With torch, plotly, pandas,
scipy and Streamlit loaded that is a few hundred thousand objects and 0.1-0.2 s here, during which
the collection holds the GIL: the server cannot send the run's last messages, so every slider
move waited for it (BENCHMARKS.md, "the collection after every rerun"). `gc.freeze()` moves the
objects alive now into a permanent generation that collections skip; objects created later
(results, figures, a run's page) are still collected after every run, as before.

The heap is frozen at the start of a run, after a collection, whenever modules were imported
since the last freeze (a page's first visit imports its libraries lazily): at that moment the
previous run's garbage is gone and what is alive is modules, caches and session state. Frozen
objects that later become cyclic garbage are never reclaimed; freezes happen only when the set of
modules grows, a bounded number of times per process, so that cost is bounded too.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time

log = logging.getLogger(__name__)
_lock = threading.Lock()
_modules_at_freeze = 0  # len(sys.modules) at the last freeze


def freeze_imported_heap() -> bool:
    """Collect, then freeze what survives, if modules were imported since the last freeze.
    Returns whether it froze (a check of len(sys.modules) otherwise)."""
    global _modules_at_freeze
    if len(sys.modules) == _modules_at_freeze:
        return False
    with _lock:
        if len(sys.modules) == _modules_at_freeze:
            return False
        start = time.perf_counter()
        gc.collect()
        gc.freeze()
        _modules_at_freeze = len(sys.modules)
        log.info("froze %d long-lived objects out of later collections (%.2f s)", gc.get_freeze_count(),
                 time.perf_counter() - start)
        return True
