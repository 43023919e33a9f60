"""Process-level tuning for the dashboard and the CLI (never applied by the library itself).

glibc's malloc serves large blocks with mmap and hands freed heap memory back to the system, so
a sampler step that allocates a few megabytes of temporaries can pay a page fault per 4 KiB on
every call. Which of these happens depends on the heap's state, and it made the same 64-sample
moons run take 0.08 s in some processes and 0.25-0.30 s in others (measured; BENCHMARKS.md).
Fixed thresholds keep blocks below 32 MiB on the heap and keep up to 512 MiB of freed memory
for reuse: every process then runs in the fast mode, at the cost of holding on to that memory.
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameters
MIB = 1 << 20


def keep_freed_memory(mmap_mib: int = 32, trim_mib: int = 512, top_pad_mib: int = 64) -> bool:
    """Set glibc's malloc thresholds (see the module docstring). True if applied; False on other
    platforms or C libraries, where it does nothing."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    applied = all(mallopt(param, value * MIB) == 1 for param, value in
                  ((M_MMAP_THRESHOLD, mmap_mib), (M_TRIM_THRESHOLD, trim_mib), (M_TOP_PAD, top_pad_mib)))
    log.info("malloc thresholds %s", "set" if applied else "not accepted")
    return applied
