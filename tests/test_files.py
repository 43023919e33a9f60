"""User data files: valid formats load in their own units; malformed ones give one-line errors."""

import io
import pickle
import zipfile
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from cdm_core.data.files import load_bytes, load_file
from cdm_core.data.registry import REGISTRY, availability, load, read_idx
from cdm_core.errors import CdmInputError
from cdm_core.settings import limits


def npy(arr) -> bytes:
    b = io.BytesIO()
    np.save(b, arr)
    return b.getvalue()


def png(arr) -> bytes:
    b = io.BytesIO()
    Image.fromarray(arr).save(b, format="PNG")
    return b.getvalue()


def test_npy_npz_csv_kept_in_own_units(tmp_path):
    x = np.array([[1000.0, -5.0], [3.0, 4.0]])
    assert np.array_equal(load_bytes("a.npy", npy(x)).points, x.astype(np.float32))
    b = io.BytesIO()
    np.savez(b, X=x, labels=np.array([0, 1]))
    ds = load_bytes("a.npz", b.getvalue())
    assert np.array_equal(ds.points, x.astype(np.float32)) and ds.labels.tolist() == [0, 1]
    ds = load_bytes("a.csv", b"x,y,label\n1000,-5,0\n3,4,1\n")
    assert np.array_equal(ds.points, x.astype(np.float32)) and ds.labels.tolist() == [0, 1]
    assert load_bytes("b.csv", b"1000,-5\n3,4\n").points.shape == (2, 2)
    p = tmp_path / "c.npy"
    p.write_bytes(npy(x))
    assert load(str(p)).points.shape == (2, 2)


def test_image_arrays_and_zip_of_pngs(tmp_path):
    ds = load_bytes("imgs.npy", npy(np.random.rand(5, 6, 7)))
    assert ds.image_shape == (6, 7) and ds.dim == 42
    z = io.BytesIO()
    with zipfile.ZipFile(z, "w") as zf:
        for i in range(3):
            zf.writestr(f"img{i}.png", png(np.full((4, 5, 3), 40 * i, np.uint8)))
    ds = load_bytes("set.zip", z.getvalue())
    assert ds.image_shape == (4, 5, 3) and ds.n == 3 and ds.points.max() <= 1.0
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes(png(np.zeros((4, 4), np.uint8)))
    (folder / "b.png").write_bytes(png(np.zeros((6, 6), np.uint8)))
    with pytest.raises(CdmInputError, match="resiz"):
        load_file(str(folder))
    assert load_file(str(folder), resize=(4, 4)).points.shape == (2, 16)


@pytest.mark.parametrize("name,raw,msg", [
    ("a.npy", b"not an npy at all", "not a valid .npy"),
    ("a.npy", npy(np.zeros((3, 2)))[:-5], "cannot read"),
    ("a.npy", npy(np.array([[1.0, np.nan]])), "NaN"),
    ("a.npy", npy(np.array([[1.0, np.inf]])), "NaN or infinite"),
    ("a.npy", npy(np.array([1e39, 1.0]).reshape(1, 2)), "too large"),
    ("a.npy", npy(np.zeros((0, 3))), "empty"),
    ("a.npy", npy(np.zeros(5)), "2-D"),
    ("a.npy", npy(np.array([["a", "b"]])), "numeric"),
    ("a.npy", npy(np.array([{"x": 1}], dtype=object)), "never unpickled"),
    ("a.pkl", pickle.dumps([1, 2]), "unsupported file type"),
    ("a.csv", b"1,2\n3\n4,5,6\n", "parse|non-numeric"),
    ("a.csv", b"a,b\nx,y\n", "non-numeric"),
    ("a.csv", b"\xff\xfe\x00", "UTF-8"),
    ("a.npz", b"PK\x03\x04garbage", "not a valid"),
    ("a.zip", b"garbage", "not a valid zip"),
])
def test_malformed_files_give_one_line_errors(name, raw, msg):
    with pytest.raises(CdmInputError, match=msg) as e:
        load_bytes(name, raw)
    assert "\n" not in str(e.value) and name in str(e.value)


def test_limits_are_enforced_and_named():
    with pytest.raises(CdmInputError, match="CDM_MAX_POINTS"):
        load_bytes("a.npy", npy(np.zeros((11, 2))), limits=replace(limits(), max_points=10))
    with pytest.raises(CdmInputError, match="CDM_MAX_FILE_MB"):
        load_bytes("a.npy", npy(np.zeros((100, 2))), limits=replace(limits(), max_file_bytes=100))
    # a header promising a huge array is refused before anything is allocated
    hdr = io.BytesIO()
    np.lib.format.write_array_header_1_0(hdr, {"descr": "<f8", "fortran_order": False, "shape": (10**7, 10**4)})
    with pytest.raises(CdmInputError, match="larger than the limit"):
        load_bytes("a.npy", hdr.getvalue())


def test_idx_reader_validates(tmp_path):
    p = tmp_path / "x.idx"
    p.write_bytes(bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(range(6)))
    assert read_idx(p).shape == (2, 3)
    p.write_bytes(bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(range(5)))
    with pytest.raises(CdmInputError, match="does not match"):
        read_idx(p)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registered_datasets(name):
    ok, msg = availability(name)
    if not ok:
        pytest.skip(f"{name} unavailable here: {msg}")
    ds = load(name)
    assert ds.points.dtype in (np.float32, np.float64) and ds.points.ndim == 2 and np.isfinite(ds.points).all()
    assert len(ds.content_hash) == 16 and ds.licence and ds.scaling
    if ds.is_image:
        assert ds.points.min() >= 0 and ds.points.max() <= 1
        assert int(np.prod(ds.image_shape)) == ds.dim
    if name == "fashion-mnist":
        assert ds.n == 60000 and ds.dim == 784


def test_toy_options_and_errors():
    assert load("moons:n=123,noise=0.2").n == 123
    with pytest.raises(CdmInputError):
        load("moons:n=-5")
    with pytest.raises(CdmInputError):
        load("moons:colour=red")
    with pytest.raises(CdmInputError):
        load("digits:n=5")


def _idx_gz(path, arr, kind):
    import gzip
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes()))


def test_fashion_is_decoded_once_then_memory_mapped_by_content_hash(tmp_path, monkeypatch):
    """Cold start: the IDX files are decoded once into the cache; later loads map the decoded copy,
    and a changed file (another hash) is decoded afresh."""
    import cdm_core.data.registry as registry
    rng = np.random.default_rng(0)
    d = tmp_path / "fm"
    d.mkdir()
    imgs, labs = rng.integers(0, 256, (30, 28, 28)), rng.integers(0, 10, 30)
    _idx_gz(d / "train-images-idx3-ubyte.gz", imgs, "images")
    _idx_gz(d / "train-labels-idx1-ubyte.gz", labs, "labels")
    monkeypatch.setenv("CDM_FASHION_DIR", str(d))
    monkeypatch.setenv("CDM_CACHE_DIR", str(tmp_path / "cache"))
    first = load("fashion-mnist")
    np.testing.assert_array_equal(first.points, (imgs.reshape(30, -1) / np.float32(255)).astype(np.float32))
    calls = []
    monkeypatch.setattr(registry, "read_idx", lambda p: calls.append(p) or read_idx(p))
    again = load("fashion-mnist")
    assert calls == [] and isinstance(again.points, np.memmap)
    assert again.content_hash == first.content_hash and (again.labels == labs).all()
    import warnings

    from cdm_core import SamplerConfig, sample
    with warnings.catch_warnings():  # the read-only map is copied, never handed to torch as is
        warnings.simplefilter("error")
        res = sample(again, SamplerConfig(n_samples=2, sigma=0.5, steps=3))
    np.testing.assert_allclose(res.samples, sample(first, SamplerConfig(n_samples=2, sigma=0.5, steps=3)).samples)
    _idx_gz(d / "train-labels-idx1-ubyte.gz", (labs + 1) % 10, "labels")  # a changed file
    changed = load("fashion-mnist")
    assert len(calls) == 2 and (changed.labels == (labs + 1) % 10).all()
    for f in (tmp_path / "cache" / "fashion-mnist").glob("*-points.npy"):
        f.write_bytes(b"damaged")
    calls.clear()
    assert load("fashion-mnist").content_hash == first.content_hash and len(calls) == 2
