"""Readers for user data files: .npy, .npz, .csv, and a folder or .zip of PNG/JPEG images.

Files are used in their own units (no rescaling), except images, which are read as pixels in
[0, 1]. Nothing is ever unpickled. Limits are checked before allocating: a file larger than
`Limits.max_file_bytes`, more than `max_points` rows or more than `max_dim` columns is refused
with an error that names the limit.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path

import numpy as np

from cdm_core.data.dataset import Dataset
from cdm_core.errors import CdmInputError
from cdm_core.settings import Limits, limits as current_limits

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_IMAGE_PIXELS = 4096 * 4096  # larger images are refused before decoding (decompression bombs)


def _fail(name: str, problem: str):
    raise CdmInputError(f"{name}: {problem}")


def points_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype data are kept in: float64 stays float64 (its precision is the user's, and a
    float32 copy would move far-from-origin data by 6e-8 of their magnitude before any centring:
    memory is 8 bytes a value instead of 4); 64-bit integers too (float32 is exact only to 2^24);
    everything else becomes float32."""
    return np.dtype(np.float64) if dtype.itemsize == 8 else np.dtype(np.float32)


def check_points(name: str, arr: np.ndarray, limits: Limits | None = None) -> np.ndarray:
    """Validate an (N, D) numeric array and return it as float32, or float64 for 64-bit input
    (`points_dtype`); errors name the file."""
    limits = limits or current_limits()
    if arr.dtype == object or arr.dtype.kind not in "iuf":
        _fail(name, f"data must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 2:
        _fail(name, f"expected a 2-D array (N points, D dims), got shape {arr.shape}")
    n, d = arr.shape
    if n < 1 or d < 1:
        _fail(name, f"data is empty (shape {arr.shape})")
    if n > limits.max_points:
        _fail(name, f"{n} points exceed the limit of {limits.max_points} (CDM_MAX_POINTS)")
    if d > limits.max_dim:
        _fail(name, f"{d} dimensions exceed the limit of {limits.max_dim} (CDM_MAX_DIM)")
    dtype = points_dtype(arr.dtype)
    with np.errstate(over="ignore"):  # values beyond float32 become inf, reported below
        out = arr.astype(dtype)
    # float64 data keep their precision, but their float32 copies screen and search: values
    # beyond float32's range are refused for both
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(out) <= np.finfo(np.float32).max)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        _fail(name, f"contains NaN or infinite values (first in row {row}), or values too large for float32")
    return out


def _check_size(name: str, nbytes: int, limits: Limits) -> None:
    if nbytes > limits.max_file_bytes:
        _fail(name, f"file is {nbytes / 2**20:.0f} MiB, over the limit of "
                    f"{limits.max_file_bytes / 2**20:.0f} MiB (CDM_MAX_FILE_MB)")


def _as_points(name: str, arr: np.ndarray, limits: Limits):
    """(N, D) stays; (N, H, W) and (N, H, W, C) become flattened images."""
    image_shape = None
    if arr.ndim in (3, 4):
        if arr.ndim == 4 and arr.shape[3] not in (1, 3):
            _fail(name, f"image arrays need 1 or 3 channels, got shape {arr.shape}")
        image_shape = tuple(int(s) for s in arr.shape[1:])
        if len(image_shape) == 3 and image_shape[2] == 1:
            image_shape = image_shape[:2]
        arr = arr.reshape(arr.shape[0], -1)
    return check_points(name, arr, limits), image_shape


def read_npy_bytes(name: str, raw: bytes, limits: Limits | None = None) -> np.ndarray:
    limits = limits or current_limits()
    try:
        bio = io.BytesIO(raw)
        version = np.lib.format.read_magic(bio)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(bio, max_header_size=10000)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(bio, max_header_size=10000)
    except Exception as e:  # numpy raises ValueError/UnicodeError/SyntaxError on bad headers
        _fail(name, f"not a valid .npy file ({type(e).__name__}: {' '.join(str(e).split())[:120]})")
    if dtype.hasobject:
        _fail(name, "contains Python objects; only numeric arrays are accepted (never unpickled)")
    count = int(np.prod(shape)) if shape else 1
    if count * dtype.itemsize > limits.max_uncompressed_bytes:
        _fail(name, f"array of shape {shape} is larger than the limit of "
                    f"{limits.max_uncompressed_bytes / 2**30:.0f} GiB")
    try:
        return np.load(io.BytesIO(raw), allow_pickle=False)
    except Exception as e:
        _fail(name, f"cannot read array ({type(e).__name__}: {' '.join(str(e).split())[:120]})")


def _member(name: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """Read one archive member; a corrupt, encrypted or exotic member is a one-line error."""
    try:
        return zf.read(info)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError, ValueError) as e:
        _fail(name, f"member {info.filename} is unreadable ({type(e).__name__})")


def _read_npz(name: str, raw: bytes, limits: Limits):
    try:
        zf = zipfile.ZipFile(io.BytesIO(raw))
    except zipfile.BadZipFile:
        _fail(name, "not a valid .npz (zip) file")
    members = {i.filename[:-4] if i.filename.endswith(".npy") else i.filename: i for i in zf.infolist()}
    if sum(i.file_size for i in members.values()) > limits.max_uncompressed_bytes:
        _fail(name, "unpacks to more than the size limit (zip bomb?)")
    key = next((k for k in ("X", "x", "data", "points", "images") if k in members), None)
    if key is None:
        arrays = [k for k in members if k not in ("labels", "y")]
        if len(arrays) != 1:
            _fail(name, f"expected an array named X, data, points or images; found {sorted(members)}")
        key = arrays[0]
    data = read_npy_bytes(f"{name}[{key}]", _member(name, zf, members[key]), limits)
    labels = None
    lab_key = next((k for k in ("labels", "y") if k in members), None)
    if lab_key is not None:
        labels = read_npy_bytes(f"{name}[{lab_key}]", _member(name, zf, members[lab_key]), limits)
    return data, labels


def _read_csv(name: str, raw: bytes, limits: Limits):
    import pandas as pd
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        _fail(name, "is not UTF-8 text")
    first = text.lstrip().split("\n", 1)[0]
    has_header = any(c.isalpha() and c not in "eE" for c in first.replace("nan", "").replace("inf", ""))
    try:
        df = pd.read_csv(io.StringIO(text), header=0 if has_header else None)
    except Exception as e:
        _fail(name, f"cannot parse CSV ({type(e).__name__}: {' '.join(str(e).split())[:120]})")
    labels = None
    if has_header and "label" in df.columns:
        labels = df.pop("label").to_numpy()
    non_numeric = [str(c) for c in df.columns if df[c].dtype.kind not in "biuf"]
    if non_numeric:
        _fail(name, f"non-numeric column(s) {', '.join(non_numeric[:5])} (ragged rows or text?)")
    return df.to_numpy(), labels


def _read_images(name: str, items, resize: tuple | None, limits: Limits):
    """items: iterable of (member name, bytes). All images must share a size unless resize."""
    from PIL import Image, UnidentifiedImageError
    arrays, shape, names = [], None, []
    for member, raw in items:
        try:
            with Image.open(io.BytesIO(raw)) as im:  # lazy: reads the header only
                # our own limit, checked per image before decoding (PIL's global one is left alone)
                if im.width * im.height > MAX_IMAGE_PIXELS:
                    raise Image.DecompressionBombError(f"{im.width} x {im.height} pixels")
                im = im.convert("RGB") if im.mode not in ("L", "I;16", "I", "F") else im.convert("L")
                if resize is not None:
                    im = im.resize((int(resize[1]), int(resize[0])), Image.BILINEAR)
                a = np.asarray(im, dtype=np.float32) / 255.0
        except Image.DecompressionBombError as e:
            _fail(name, f"{member} is not a readable image (DecompressionBombError: {' '.join(str(e).split())[:80]}; "
                        f"at most {MAX_IMAGE_PIXELS} pixels)")
        except (UnidentifiedImageError, OSError, ValueError) as e:
            _fail(name, f"{member} is not a readable image ({type(e).__name__})")
        if shape is None:
            shape = a.shape
        elif a.shape != shape:
            _fail(name, f"{member} has size {a.shape[:2]} but earlier images are {shape[:2]}; "
                        "ask for resizing (resize=(H, W))")
        arrays.append(a)
        names.append(member)
        if len(arrays) > limits.max_points:
            _fail(name, f"more than {limits.max_points} images (CDM_MAX_POINTS)")
    if not arrays:
        _fail(name, "contains no PNG or JPEG images")
    return np.stack(arrays), names


def load_bytes(name: str, raw: bytes, resize: tuple | None = None, limits: Limits | None = None) -> Dataset:
    """Load user data from bytes; `name` (a file name) decides the format by its suffix. Limits
    default to the environment's at call time (`cdm_core.settings.limits`)."""
    limits = limits or current_limits()
    _check_size(name, len(raw), limits)
    suffix = Path(name).suffix.lower()
    labels = None
    if suffix == ".npy":
        arr = read_npy_bytes(name, raw, limits)
    elif suffix == ".npz":
        arr, labels = _read_npz(name, raw, limits)
    elif suffix == ".csv":
        arr, labels = _read_csv(name, raw, limits)
    elif suffix == ".zip":
        try:
            zf = zipfile.ZipFile(io.BytesIO(raw))
        except zipfile.BadZipFile:
            _fail(name, "not a valid zip file")
        infos = sorted((i for i in zf.infolist() if i.filename.lower().endswith(IMAGE_SUFFIXES)
                        and not i.is_dir() and "__MACOSX" not in i.filename), key=lambda i: i.filename)
        if sum(i.file_size for i in infos) > limits.max_uncompressed_bytes:
            _fail(name, "unpacks to more than the size limit (zip bomb?)")
        arr, _ = _read_images(name, ((i.filename, _member(name, zf, i)) for i in infos), resize, limits)
    elif suffix in IMAGE_SUFFIXES:
        arr, _ = _read_images(name, [(name, raw)], resize, limits)
    else:
        _fail(name, f"unsupported file type {suffix or '(none)'}; use .npy, .npz, .csv or .zip of images")
    arr = np.asarray(arr)
    if suffix in (".zip",) + IMAGE_SUFFIXES:
        points, image_shape = _as_points(name, arr, limits)
        scaling = "pixels in [0, 1]"
    else:
        points, image_shape = _as_points(name, arr, limits)
        scaling = "file units (not rescaled)"
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (points.shape[0],) or labels.dtype.kind not in "biuf":
            _fail(name, f"labels must be {points.shape[0]} numbers, got shape {labels.shape}")
        labels = labels.astype(np.int64)
    return Dataset(name=Path(name).name, points=points, image_shape=image_shape, labels=labels,
                   scaling=scaling, source=f"user file {Path(name).name}", licence="user-supplied")


def load_file(path: str, resize: tuple | None = None, limits: Limits | None = None) -> Dataset:
    limits = limits or current_limits()
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        total = sum(f.stat().st_size for f in files)
        _check_size(str(p), total, limits)
        arr, _ = _read_images(str(p), ((str(f.relative_to(p)), f.read_bytes()) for f in files), resize, limits)
        points, image_shape = _as_points(str(p), arr, limits)
        return Dataset(name=p.name, points=points, image_shape=image_shape, scaling="pixels in [0, 1]",
                       source=f"user folder {p.name}", licence="user-supplied")
    if not p.exists():
        raise CdmInputError(f"{path}: no such data set or file (see `python -m cdm_core datasets`)")
    _check_size(str(p), p.stat().st_size, limits)
    return load_bytes(str(p), p.read_bytes(), resize, limits)
