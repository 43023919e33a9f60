"""Hostile and broken input: every reader and CLI option gets a clear one-line error (never a
crash, hang or unbounded allocation); numerics at the extremes never give NaN; failures leave
previous results and files intact."""

import io
import os
import pickle
import tomllib
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from cdm_core import SamplerConfig, sample
from cdm_core.cli.main import main
from cdm_core.data.files import load_bytes
from cdm_core.data.store import atomic_write_bytes
from cdm_core.errors import CdmInputError
from cdm_core.settings import Limits
from tests.conftest import ROOT

SMALL = Limits(max_file_bytes=2**20, max_points=10_000, max_dim=4096, max_work=2e14,
               max_batch_bytes=512 * 2**20, max_uncompressed_bytes=2**22)
FUZZ = settings(deadline=2000, suppress_health_check=[HealthCheck.too_slow])  # examples: conftest profile


def npy(arr) -> bytes:
    b = io.BytesIO()
    np.save(b, arr, allow_pickle=True)
    return b.getvalue()


def valid_files() -> dict:
    x = np.random.default_rng(0).random((6, 3))
    z = io.BytesIO()
    np.savez(z, X=x, labels=np.arange(6))
    png = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(png, format="PNG")
    zb = io.BytesIO()
    with zipfile.ZipFile(zb, "w") as zf:
        zf.writestr("a.png", png.getvalue())
        zf.writestr("b.png", png.getvalue())
    return {"a.npy": npy(x), "a.npz": z.getvalue(), "a.csv": b"x,y,z\n1,2,3\n4,5,6\n",
            "a.zip": zb.getvalue(), "a.png": png.getvalue()}


VALID = valid_files()


def check_one(name: str, raw: bytes) -> None:
    """The reader's contract: a Dataset or one CdmInputError line that names the file."""
    try:
        ds = load_bytes(name, raw, limits=SMALL)
    except CdmInputError as e:
        msg = str(e)
        assert "\n" not in msg and name in msg
        return
    assert ds.points.dtype in (np.float32, np.float64) and ds.points.ndim == 2 and np.isfinite(ds.points).all()


@FUZZ
@given(suffix=st.sampled_from(sorted(VALID)), raw=st.binary(max_size=2048))
def test_random_bytes_never_crash_a_reader(suffix, raw):
    check_one(suffix, raw)


@FUZZ
@given(suffix=st.sampled_from(sorted(VALID)), data=st.data())
def test_corrupted_valid_files_never_crash_a_reader(suffix, data):
    raw = bytearray(VALID[suffix])
    cut = data.draw(st.integers(0, len(raw)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, max(len(raw) - 1, 0)), st.integers(0, 255)), max_size=8))
    for pos, val in flips:
        if raw:
            raw[pos] = val
    check_one(suffix, bytes(raw[:cut]) if data.draw(st.booleans()) else bytes(raw))


@FUZZ
@given(rows=st.lists(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3)),
                              min_size=0, max_size=5), max_size=6))
def test_arbitrary_csv_tables(rows):
    check_one("t.csv", "\n".join(",".join(map(str, r)) for r in rows).encode())


@pytest.mark.parametrize("name,raw,msg", [
    ("obj.npy", npy(np.array([object(), 1], dtype=object)), "never unpickled"),
    ("pickle.npy", pickle.dumps(np.zeros(3)), "not a valid .npy"),
    ("ragged.csv", b"1,2,3\n4,5\n6,7,8,9\n", "cannot parse CSV|non-numeric"),
    ("empty.csv", b"", "cannot parse CSV|empty"),
    ("empty.npy", npy(np.zeros((0, 2))), "empty"),
    ("c.npy", npy(np.zeros((3, 2), dtype=np.complex64)), "numeric"),
    ("s.npy", npy(np.array([["a"]])), "numeric"),
    ("b.npy", npy(np.zeros((3, 2), dtype=bool)), "numeric"),
])
def test_named_bad_files(name, raw, msg):
    with pytest.raises(CdmInputError, match=msg) as e:
        load_bytes(name, raw, limits=SMALL)
    text = str(e.value)
    assert "\n" not in text and text.startswith(f"{name}: "), text  # one line, naming the file first


def test_huge_header_and_zip_bomb_refused_before_allocation():
    hdr = io.BytesIO()
    np.lib.format.write_array_header_1_0(hdr, {"descr": "<f8", "fortran_order": False, "shape": (10**9, 10**6)})
    with pytest.raises(CdmInputError, match="larger than the limit"):
        load_bytes("big.npy", hdr.getvalue(), limits=SMALL)
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("X.npy", npy(np.zeros((4096, 256))))  # 8 MiB that compresses to a few KiB
    assert len(bomb.getvalue()) < 100_000
    with pytest.raises(CdmInputError, match="zip bomb"):
        load_bytes("bomb.npz", bomb.getvalue(), limits=SMALL)
    png = io.BytesIO()
    Image.new("1", (6000, 6000)).save(png, format="PNG")  # 36 Mpixel decompression bomb
    with pytest.raises(CdmInputError, match="not a readable image"):
        load_bytes("bomb.png", png.getvalue(), limits=SMALL)
    with pytest.raises(CdmInputError, match="CDM_MAX_DIM"):
        load_bytes("wide.npy", npy(np.zeros((2, 5000))), limits=SMALL)


def test_one_row_file_samples_that_row():
    ds = load_bytes("one.npy", npy(np.array([[3.0, -1.0]])))
    res = sample(ds, SamplerConfig(n_samples=3, sigma=0.5, draws=2, steps=5))
    np.testing.assert_allclose(res.samples, [[3.0, -1.0]] * 3, atol=1e-6)


OPTION_VALUES = {
    "--n": st.one_of(st.integers(-5, 300), st.sampled_from(["x", "1e9", ""])),
    "--sigma": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["-0", "abc"])),
    "--draws": st.integers(-2, 400), "--steps": st.integers(-2, 20_000),
    "--start": st.one_of(st.floats(-2, 2), st.just(float("nan"))), "--neighbours": st.integers(-1, 5000),
    "--seed": st.integers(-10, 2**64), "--index": st.sampled_from(["auto", "exact", "flat", "ivf", "torch", "kd"]),
    "--batch-size": st.integers(-1, 10**6), "--nearest": st.integers(-1, 100),
}


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_cli_options_give_exit_0_or_one_line_exit_2(data, tmp_path_factory, capsys, monkeypatch):
    monkeypatch.setenv("CDM_MAX_WORK", "2e7")  # anything bigger is refused at once, by name
    out = tmp_path_factory.mktemp("cli") / "o.npz"
    args = ["sample", "--data", "moons:n=50", "--out", str(out)]
    for opt in data.draw(st.lists(st.sampled_from(sorted(OPTION_VALUES)), unique=True, max_size=5)):
        args += [opt, str(data.draw(OPTION_VALUES[opt]))]
    code = main(args)
    err = capsys.readouterr().err
    assert code in (0, 2)
    if code == 2:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:")
        assert not out.exists()
    else:
        assert np.isfinite(np.load(out)["samples"]).all()


def test_work_limit_is_named(monkeypatch):
    monkeypatch.setenv("CDM_MAX_WORK", "1e6")
    with pytest.raises(CdmInputError, match="CDM_MAX_WORK"):
        sample(np.zeros((100, 10), np.float32), SamplerConfig(n_samples=100, steps=100))
    monkeypatch.setenv("CDM_MAX_BATCH_MB", "1")
    monkeypatch.setenv("CDM_MAX_WORK", "1e15")
    with pytest.raises(CdmInputError, match="CDM_MAX_BATCH_MB"):
        sample(np.zeros((10, 40_000), np.float32), SamplerConfig(n_samples=1, sigma=1.0, draws=4, steps=1))


def test_small_batch_limit_shrinks_batches_without_changing_results(monkeypatch):
    x = np.random.default_rng(1).random((300, 5)).astype(np.float32)
    cfg = SamplerConfig(n_samples=10, sigma=0.2, draws=4, steps=5)
    ref = sample(x, cfg)
    monkeypatch.setenv("CDM_MAX_BATCH_MB", "0.02")  # 20 KiB: about two samples per batch
    np.testing.assert_allclose(sample(x, cfg).samples, ref.samples, atol=1e-6)


@pytest.mark.parametrize("index", ["auto", "exact", "flat"])
@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e6])
@pytest.mark.parametrize("sigma_rel", [0.0, 0.3, 1e6])
def test_extreme_scales_and_sigma_never_nan(index, scale, sigma_rel):
    rng = np.random.default_rng(2)
    x = (np.r_[rng.standard_normal((20, 3)), np.zeros((3, 3)), np.zeros((3, 3))] * scale).astype(np.float32)
    cfg = SamplerConfig(n_samples=5, sigma=sigma_rel * scale, draws=3, steps=8, start=0.3, neighbours=40,
                        index=index)
    res = sample(x, cfg)
    assert np.isfinite(res.samples).all() and np.isfinite(res.source_weights).all()
    np.testing.assert_allclose(res.source_weights.sum(1), 1, atol=1e-9)


def test_time_near_one_and_one_dimension():
    x = np.linspace(0, 1, 7, dtype=np.float32)[:, None]
    res = sample(x, SamplerConfig(n_samples=4, start=0.9999, steps=3, sigma=0.01, draws=2))
    assert np.isfinite(res.samples).all()


def test_atomic_write_keeps_previous_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "result.npz"
    atomic_write_bytes(target, b"previous")

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new but failing")
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.npz"]  # no temporary left behind


def test_failed_run_in_the_ui_keeps_previous_results(monkeypatch):
    from streamlit.testing.v1 import AppTest

    import ui.state
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("app_pages/generate.py").run()
    before = at.session_state["result"].result

    def explode(*a, **k):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(ui.state, "sample", explode)
    at.slider(key="w_sigma").set_value(0.3).run()
    assert not at.exception
    assert any("simulated failure" in e.value for e in at.error)
    assert at.session_state["result"].result is before


def test_server_defaults_are_safe():
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] == "127.0.0.1"
    assert cfg["server"]["enableXsrfProtection"] is True
    assert 0 < cfg["server"]["maxUploadSize"] <= 1024
    assert "ADDRESS=0.0.0.0" in (ROOT / "README.md").read_text()


OTHER_COMMANDS = {
    "sensitivity": {"--top": st.one_of(st.integers(-3, 50), st.just("x")),
                    "--ids": st.one_of(st.lists(st.integers(-5, 80), max_size=4).map(lambda v: ",".join(map(str, v))),
                                       st.text(max_size=6))},
    "sweep": {"--sigmas": st.one_of(st.lists(st.floats(-1, 2, allow_nan=False), max_size=3)
                                    .map(lambda v: ",".join(map(str, v))),
                                    st.text(max_size=6)),
              "--draws-list": st.one_of(st.lists(st.floats(-1, 5, allow_nan=False), max_size=2)
                                        .map(lambda v: ",".join(map(str, v))),
                                        st.just("2,x")),
              "--starts": st.one_of(st.lists(st.floats(-1, 1.5, allow_nan=False), max_size=2)
                                    .map(lambda v: ",".join(map(str, v))),
                                    st.just("nan"))},
}


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_other_commands_give_exit_0_or_one_line_exit_2(data, tmp_path_factory, capsys, monkeypatch):
    monkeypatch.setenv("CDM_MAX_WORK", "2e7")
    command = data.draw(st.sampled_from(sorted(OTHER_COMMANDS)))
    out = tmp_path_factory.mktemp("cmd") / ("o.npz" if command == "sensitivity" else "o.csv")
    args = [command, "--data", "moons:n=40", "--n", "3", "--steps", "4", "--out", str(out)]
    for opt in data.draw(st.lists(st.sampled_from(sorted(OTHER_COMMANDS[command])), unique=True, min_size=1)):
        value = data.draw(OTHER_COMMANDS[command][opt])
        args += [opt, str(value)] if value != "" else [opt, ","]
    code = main(args)
    err = capsys.readouterr().err
    assert code in (0, 2)
    if code == 2:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), err
        assert not out.exists()


@pytest.mark.parametrize("text", ["", "{}", "[1, 2]", '{"kind": "cfdm-explorer figure manifest"}', "\x00\xff"])
def test_figure_command_rejects_broken_manifests(text, tmp_path, capsys):
    m = tmp_path / "manifest.json"
    m.write_text(text, errors="ignore")
    assert main(["figure", "--manifest", str(m), "--out", str(tmp_path / "o")]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:")


def test_file_limits_follow_the_environment_at_call_time(monkeypatch):
    monkeypatch.setenv("CDM_MAX_POINTS", "5")
    with pytest.raises(CdmInputError, match="CDM_MAX_POINTS"):
        load_bytes("six.npy", npy(np.zeros((6, 2))))
    monkeypatch.setenv("CDM_MAX_POINTS", "6")
    assert load_bytes("six.npy", npy(np.zeros((6, 2)))).n == 6
