"""A training set as the engine sees it: float32 or float64 points (N, D) plus what describes them."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Dataset:
    """A training set. `points` is float32, or float64 when given as float64, (N, D); images are
    flattened row-major (H, W[, C])."""

    name: str  # registry name, or the file name for user data
    points: np.ndarray  # float32 (N, D), or float64 for float64 input (data/files.py points_dtype)
    image_shape: tuple | None = None  # (H, W) or (H, W, 3) for images, None for point clouds
    labels: np.ndarray | None = None  # int64 (N,) or None
    label_names: tuple | None = None  # names for label values, when known
    scaling: str = "file units"  # how values are scaled, in words
    source: str = ""  # where the data come from
    licence: str = ""  # licence / attribution text
    params: dict = field(default_factory=dict)  # loader parameters (size, noise, ...)

    @property
    def n(self) -> int:
        return int(self.points.shape[0])

    @property
    def dim(self) -> int:
        return int(self.points.shape[1])

    @property
    def is_image(self) -> bool:
        return self.image_shape is not None

    @functools.cached_property
    def content_hash(self) -> str:
        """sha256 of shape, dtype, image shape and bytes (first 16 hex digits); computed once."""
        return content_hash(self.points, self.image_shape)

    def describe(self) -> dict:
        return {
            "name": self.name, "n": self.n, "dim": self.dim, "image_shape": self.image_shape,
            "scaling": self.scaling, "source": self.source, "licence": self.licence,
            "params": self.params, "content_hash": self.content_hash,
        }


def content_hash(points: np.ndarray, image_shape=None) -> str:
    h = hashlib.sha256()
    h.update(repr((points.shape, str(points.dtype), image_shape)).encode())
    h.update(np.ascontiguousarray(points).tobytes())
    return h.hexdigest()[:16]
