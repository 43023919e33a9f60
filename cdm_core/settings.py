"""Every setting read from the environment, in one place, read at call time (never at import),
so a changed variable takes effect without a restart. A malformed value is an error naming the
variable, never silently replaced by the default.

| variable | default | meaning |
| --- | --- | --- |
| `CDM_MAX_FILE_MB` | 1024 | largest data or weights file read, in MiB |
| `CDM_MAX_POINTS` | 2,000,000 | most training rows N accepted |
| `CDM_MAX_DIM` | 65,536 | most columns D accepted |
| `CDM_MAX_WORK` | 2e14 | floating-point operations allowed in one request (`SamplerConfig.work`) |
| `CDM_MAX_BATCH_MB` | 512 | memory for one batch's smoothing draws, in MiB (per process; per actor on Ray) |
| `CDM_SHARD_KEEP_MB` | 512 | Ray: shards whose float64 copy fits are kept converted; larger ones stream |
| `CDM_CACHE_DIR` | `~/.cache/cfdm-explorer` | maps, rendered emoji and other cached results |
| `CDM_FASHION_DIR` | `/usr/share/datasets/fashion-mnist` | Fashion-MNIST IDX files (Debian `dataset-fashion-mnist`) |
| `CDM_EMOJI_FONT` | `/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf` | font the emoji data set is rendered from |
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from cdm_core.errors import CdmInputError

MAX_UNCOMPRESSED_BYTES = 4 * 2**30  # total unpacked from one .zip / .npz (not configurable)


def _number(name: str, default: float, lo: float, integer: bool = False) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise CdmInputError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value) or value < lo or (integer and value != int(value)):
        kind = "an integer" if integer else "a number"
        raise CdmInputError(f"{name}={raw!r} must be {kind} >= {lo:g}")
    return value


def _path(name: str, default: Path) -> Path:
    raw = os.environ.get(name)
    return default if raw is None or raw.strip() == "" else Path(raw).expanduser()


@dataclass(frozen=True)
class Limits:
    """Bounds on one request, checked before anything large is allocated."""

    max_file_bytes: int  # bytes of one file (CDM_MAX_FILE_MB)
    max_points: int  # training rows N (CDM_MAX_POINTS)
    max_dim: int  # columns D (CDM_MAX_DIM)
    max_work: float  # n x M x N x D x S per request (CDM_MAX_WORK)
    max_batch_bytes: int  # per-batch draw buffers (CDM_MAX_BATCH_MB)
    max_uncompressed_bytes: int = MAX_UNCOMPRESSED_BYTES  # total unpacked from an archive


def limits() -> Limits:
    """The limits now in force (read afresh from the environment)."""
    return Limits(
        max_file_bytes=int(_number("CDM_MAX_FILE_MB", 1024, 0) * 2**20),
        max_points=int(_number("CDM_MAX_POINTS", 2_000_000, 1, integer=True)),
        max_dim=int(_number("CDM_MAX_DIM", 65536, 1, integer=True)),
        max_work=_number("CDM_MAX_WORK", 2e14, 0),
        max_batch_bytes=int(_number("CDM_MAX_BATCH_MB", 512, 0) * 2**20),
    )


def shard_keep_bytes() -> int:
    return int(_number("CDM_SHARD_KEEP_MB", 512, 0) * 2**20)


def cache_dir() -> Path:
    return _path("CDM_CACHE_DIR", Path.home() / ".cache" / "cfdm-explorer")


def fashion_dir() -> Path:
    return _path("CDM_FASHION_DIR", Path("/usr/share/datasets/fashion-mnist"))


def emoji_font() -> Path:
    return _path("CDM_EMOJI_FONT", Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"))
