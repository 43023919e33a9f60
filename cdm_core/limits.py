"""Limits that keep one request bounded, checked before anything large is allocated.
Each is configurable by an environment variable, named in the error when exceeded."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _env_int(name: str, default: int) -> int:
    try:
        return int(float(os.environ.get(name, default)))
    except ValueError:
        return default


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass(frozen=True)
class Limits:
    # defaults read the environment when a Limits is made (not once at import)
    max_file_bytes: int = field(default_factory=lambda: _env_int("CDM_MAX_FILE_MB", 1024) * 2**20)  # bytes of one file
    max_points: int = field(default_factory=lambda: _env_int("CDM_MAX_POINTS", 2_000_000))  # training rows N
    max_dim: int = field(default_factory=lambda: _env_int("CDM_MAX_DIM", 65536))  # columns D
    max_uncompressed_bytes: int = 4 * 2**30  # total unpacked from a .zip / .npz
    max_work: float = field(default_factory=lambda: _env_float("CDM_MAX_WORK", 2e14))  # n x M x N x D x S
    max_batch_bytes: int = field(default_factory=lambda: int(_env_float("CDM_MAX_BATCH_MB", 512) * 2**20))  # per batch


def current() -> Limits:
    """Read afresh, so a changed environment variable takes effect without a restart."""
    return Limits()
