"""Training sets split into shard files: K `.npy` files of float32 or float64 rows plus `manifest.json`.

The manifest records, per shard, its file, rows, first global id, sha256 and the float64 sum of
its rows (so the global centre is known without reading the data). A shard whose hash does not
match is refused. Shards are opened memory-mapped, never unpickled, never all in one process.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cdm_core.config import MAX_SHARDS
from cdm_core.data.dataset import Dataset
from cdm_core.data.files import points_dtype
from cdm_core.data.store import atomic_write_bytes
from cdm_core.errors import CdmInputError

MANIFEST_KIND = "cfdm-explorer shards"


@dataclass(frozen=True)
class Shard:
    file: str  # path of the .npy, relative to the manifest's folder
    rows: int  # rows in this shard
    offset: int  # global id of its first row
    sha256: str  # of the file's bytes
    total: tuple  # float64 sum of its rows (D,)


@dataclass(frozen=True)
class ShardManifest:
    """A sharded training set, described without loading it."""

    folder: Path
    name: str
    n: int
    dim: int
    image_shape: tuple | None
    content_hash: str  # the training set's own content hash (as `Dataset.content_hash`)
    shards: tuple  # of Shard

    @property
    def centre(self) -> np.ndarray:
        return np.sum([np.asarray(s.total) for s in self.shards], axis=0) / self.n

    def path(self, shard: Shard) -> Path:
        return self.folder / shard.file

    def describe(self) -> dict:
        return {"name": self.name, "n": self.n, "dim": self.dim, "image_shape": self.image_shape,
                "scaling": "file units", "source": f"shards in {self.folder}", "licence": "",
                "params": {"shards": len(self.shards)}, "content_hash": self.content_hash}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                h.update(block)
    except OSError as e:
        raise CdmInputError(f"{path}: cannot read shard ({e.strerror})") from None
    return h.hexdigest()


def _npy_bytes(a: np.ndarray) -> bytes:
    import io
    bio = io.BytesIO()
    np.save(bio, np.ascontiguousarray(a), allow_pickle=False)
    return bio.getvalue()


def write_shards(ds: Dataset, k: int, out_dir, callback=None) -> ShardManifest:
    """Split `ds` into `k` shards of consecutive rows in `out_dir` (written atomically)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= min(MAX_SHARDS, ds.n):
        raise CdmInputError(f"shards must be an integer in [1, {min(MAX_SHARDS, ds.n)}], got {k!r}")
    return write_shard_blocks(np.array_split(np.arange(ds.n), k), lambda ids: ds.points[ids[0]:ids[-1] + 1],
                              out_dir, ds.name, ds.dim, ds.image_shape, ds.content_hash, callback)


def write_shard_blocks(blocks, rows_of, out_dir, name: str, dim: int, image_shape, content_hash: str,
                       callback=None) -> ShardManifest:
    """Write one shard per block of global ids, `rows_of(block)` giving its rows (so a set larger
    than memory can be written block by block). Float64 rows stay float64 (as in one process:
    data/files.py `points_dtype`); anything else is written as float32."""
    out = Path(out_dir).resolve()  # actors on other machines open the shards by this path
    out.mkdir(parents=True, exist_ok=True)
    shards, offset = [], 0
    for i, block in enumerate(blocks):
        rows = np.asarray(rows_of(block))
        rows = rows.astype(points_dtype(rows.dtype), copy=False)
        if rows.ndim != 2 or rows.shape[1] != dim:
            raise CdmInputError(f"shard {i}: expected rows of dimension {dim}, got shape {rows.shape}")
        file = f"shard-{i:04d}.npy"
        raw = _npy_bytes(rows)
        atomic_write_bytes(out / file, raw)
        shards.append(Shard(file, len(rows), offset, hashlib.sha256(raw).hexdigest(),
                            tuple(rows.astype(np.float64).sum(0).tolist())))
        offset += len(rows)
        if callback is not None:
            callback(i + 1, len(blocks))
    m = ShardManifest(out, name, offset, dim, tuple(image_shape) if image_shape else None, content_hash, tuple(shards))
    doc = {"kind": MANIFEST_KIND, "name": name, "n": offset, "dim": dim, "image_shape": m.image_shape,
           "content_hash": content_hash, "shards": [s.__dict__ | {"total": list(s.total)} for s in shards]}
    atomic_write_bytes(out / "manifest.json", json.dumps(doc, indent=1).encode())
    return m


def read_manifest(path) -> ShardManifest:
    """Read and validate a shard manifest (`manifest.json`, or the folder holding it)."""
    p = Path(path)
    if p.is_dir():
        p = p / "manifest.json"
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise CdmInputError(f"{p}: cannot read shard manifest ({e})") from None
    if not isinstance(doc, dict) or doc.get("kind") != MANIFEST_KIND:
        raise CdmInputError(f"{p}: not a cfdm-explorer shard manifest")
    try:
        shards = tuple(Shard(str(s["file"]), int(s["rows"]), int(s["offset"]), str(s["sha256"]),
                             tuple(float(v) for v in s["total"])) for s in doc["shards"])
        m = ShardManifest(p.parent.resolve(), str(doc["name"]), int(doc["n"]), int(doc["dim"]),
                          tuple(doc["image_shape"]) if doc.get("image_shape") else None, str(doc["content_hash"]),
                          shards)
    except (KeyError, TypeError, ValueError) as e:
        raise CdmInputError(f"{p}: malformed shard manifest ({e})") from None
    expected = 0
    for s in m.shards:
        if s.offset != expected or s.rows < 1 or len(s.total) != m.dim or Path(s.file).name != s.file:
            raise CdmInputError(f"{p}: shard {s.file} does not fit the manifest (offsets, rows or dimension)")
        expected += s.rows
    if expected != m.n or not m.shards:
        raise CdmInputError(f"{p}: shards hold {expected} rows, the manifest says {m.n}")
    return m


def open_shard(m: ShardManifest, shard: Shard, verify: bool = True) -> np.ndarray:
    """The shard's rows, memory-mapped (float32 or float64, read-only), after checking its hash."""
    path = m.path(shard)
    if verify and file_sha256(path) != shard.sha256:
        raise CdmInputError(f"{path}: content hash does not match the manifest; refusing this shard")
    try:
        rows = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise CdmInputError(f"{path}: cannot open shard ({e})") from None
    if rows.dtype not in (np.float32, np.float64) or rows.shape != (shard.rows, m.dim):
        raise CdmInputError(f"{path}: expected float32 or float64 rows of shape {(shard.rows, m.dim)}, got "
                            f"{rows.dtype} {rows.shape}")
    return rows
