"""The CLI contract: option names, .npz keys, exit codes, one-line errors, progress line."""

import json
import subprocess
import sys

import numpy as np
import pytest

from cdm_core.cli.main import main
from tests.conftest import ROOT


def run(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_sample_writes_documented_keys(tmp_path, capsys):
    out = tmp_path / "s.npz"
    code, _, err = run(["sample", "--data", "moons:n=300", "--n", "6", "--sigma", "0.1", "--draws", "2",
                        "--steps", "10", "--start", "0.2", "--neighbours", "16", "--index", "flat", "--seed", "3",
                        "--trajectory", "--out", str(out)], capsys)
    assert code == 0 and "step 10/10" in err
    z = np.load(out, allow_pickle=False)
    assert z["samples"].shape == (6, 2) and z["samples"].dtype == np.float64
    assert z["source_ids"].dtype == np.int64 and z["source_weights"].dtype == np.float64
    np.testing.assert_allclose(z["source_weights"].sum(1), 1, atol=1e-12)
    assert z["nn_ids"].shape == z["nn_dist"].shape and z["truncation_bound"].shape == (6,)
    assert z["trajectory"].shape == (11, 6, 2)
    cfg = json.loads(str(z["config"]))
    assert cfg["sampler"]["sigma"] == 0.1 and cfg["sampler"]["index"] == "flat"
    assert cfg["dataset"]["name"] == "moons" and len(cfg["dataset"]["content_hash"]) == 16


def test_file_data_and_weights(tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((50, 3)) * 100
    np.save(tmp_path / "x.npy", x)
    w = np.ones(50)
    w[:25] = 0
    np.save(tmp_path / "w.npy", w)
    code, _, _ = run(["sample", "--data", str(tmp_path / "x.npy"), "--weights", str(tmp_path / "w.npy"),
                      "--n", "5", "--steps", "50", "--out", str(tmp_path / "o.npz")], capsys)
    assert code == 0
    z = np.load(tmp_path / "o.npz")
    assert (z["source_ids"][z["source_ids"] >= 0] >= 25).all()
    assert np.abs(z["samples"]).max() > 10  # own units, not rescaled


@pytest.mark.parametrize("args,msg", [
    (["sample", "--data", "moons", "--sigma", "nan", "--out", "o.npz"], "sigma"),
    (["sample", "--data", "moons", "--steps", "0", "--out", "o.npz"], "steps"),
    (["sample", "--data", "moons", "--start", "1", "--out", "o.npz"], "start"),
    (["sample", "--data", "moons", "--index", "kd", "--out", "o.npz"], "index"),
    (["sample", "--data", "nope.npy", "--out", "o.npz"], "nope.npy"),
    (["sample", "--data", "moons", "--out", "o.txt"], ".npz"),
    (["sample", "--data", "moons", "--n", "x", "--out", "o.npz"], "--n"),
    (["sample", "--data", "moons", "--weights", "missing.npy", "--out", "o.npz"], "missing.npy"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_exits_2_with_one_line(args, msg, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(args, capsys)
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and msg in lines[0]
    assert not (tmp_path / "o.npz").exists()


def test_datasets_lists_availability(capsys):
    code, out, _ = run(["datasets"], capsys)
    assert code == 0 and "moons" in out and "fashion-mnist" in out


def test_module_entry_point(tmp_path):
    p = subprocess.run([sys.executable, "-m", "cdm_core", "sample", "--data", "circles:n=100", "--n", "3",
                        "--out", str(tmp_path / "a.npz")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([sys.executable, "-m", "cdm_core", "sample", "--data", "circles", "--n", "0",
                        "--out", str(tmp_path / "b.npz")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and "Traceback" not in p.stderr
