"""Steady sampler latency without a process-wide allocator setting.

glibc's malloc serves blocks above its mmap threshold (128 KiB at start) with a fresh mmap and
unmaps them on free, so a sampler step whose temporaries are a few megabytes pays a page fault per
4 KiB on every call. glibc adapts on its own: when a program frees an mmapped block of at most
32 MiB, the threshold rises to that block's size and the heap-trim threshold to twice it, and
later blocks of that size are reused from the heap. Whether a process has reached that state
depended on what it had freed before, and the same 64-sample moons run took 0.02 s in some
processes and 0.05 s in others (BENCHMARKS.md).

`adapt_allocator` takes glibc to that state at once, the way glibc itself would: it allocates
and frees one 30 MiB block. Nothing is configured, so glibc's own adaptation stays on (an explicit
`mallopt` switches it off for good, which is why an earlier version applied one only in the
entry points). The cost: a process may keep up to about 60 MiB of freed heap for reuse instead of
128 KiB (`malloc_trim(0)` returns it). The engine calls it once per process when it makes its
first strategy (`engine/factory.py`), so the library, the CLI and the dashboard run alike.
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

# glibc raises its thresholds only for freed mmapped blocks up to 32 MiB (DEFAULT_MMAP_THRESHOLD_MAX
# on 64-bit); the block's header and alignment must fit under that.
PRIME_BYTES = 30 << 20

_adapted: bool | None = None


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc.restype = ctypes.c_void_p
        libc.malloc.argtypes = [ctypes.c_size_t]
        libc.free.argtypes = [ctypes.c_void_p]
        return libc
    except (OSError, AttributeError):
        return None


def adapt_allocator() -> bool:
    """Free one 30 MiB block through glibc's malloc, once per process, so its adaptive thresholds
    settle where a long sampler session would take them (module docstring). True if done (now or
    earlier); False on other platforms or C libraries, where it does nothing."""
    global _adapted
    if _adapted is None:
        libc = _libc()
        block = libc.malloc(PRIME_BYTES) if libc is not None else None
        if block:
            libc.free(block)
        _adapted = bool(block)
        log.debug("malloc thresholds %s", "adapted" if _adapted else "left alone")
    return _adapted
