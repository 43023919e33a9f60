"""Atomic file writes: write to a temporary file beside the target, then rename, so a failed
write never leaves a half-written file or destroys the previous one."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np


def atomic_write_bytes(path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def npy_bytes(a: np.ndarray) -> bytes:
    """A `.npy` file's bytes (never pickled)."""
    bio = io.BytesIO()
    np.save(bio, a, allow_pickle=False)
    return bio.getvalue()


def npz_bytes(arrays: dict, config_json: str | None = None) -> bytes:
    payload = dict(arrays)
    if config_json is not None:
        payload["config"] = np.array(config_json)
    bio = io.BytesIO()
    np.savez_compressed(bio, **payload)
    return bio.getvalue()


def save_result(path, result) -> None:
    """Write a SampleResult as `.npz` with the documented keys plus `config` (JSON)."""
    cfg = {"sampler": result.config.to_dict(), "dataset": result.dataset,
           "weights_given": result.weights_given, "ran": getattr(result, "ran", {})}
    if cfg["ran"].get("patch_sizes"):  # ls / els: the window size used at each step
        cfg["patch_sizes"] = cfg["ran"]["patch_sizes"]
    if getattr(result, "space", None):  # a latent run (cdm_core.latent.results)
        cfg["autoencoder"] = result.space
    atomic_write_bytes(path, npz_bytes(result.arrays(), json.dumps(cfg, sort_keys=True, default=str)))
