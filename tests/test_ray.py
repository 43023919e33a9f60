"""Scale-out: the training set split across Ray actors gives the same results as one process.

A local Ray instance (2 CPUs) is started once for this module; the library joins it (and leaves
it running). One CLI test starts and stops its own instance, as `--backend ray` does by default."""

import json
import subprocess
import sys

import numpy as np
import pytest
import ray
from conftest import source_matrix

from cdm_core import SamplerConfig, load, sample
from cdm_core.analysis.sensitivity import jacobian, sensitivity
from cdm_core.analysis.sweep import sweep
from cdm_core.data.shards import read_manifest, write_shards
from cdm_core.errors import BackendError, CdmInputError
from cdm_core.pipeline.shards import ShardedSet


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("name,sigma,index,shards,start", [("digits", 0.5, "auto", 3, 0.0),
                                                           ("digits", 0.0, "exact", 2, 0.0),
                                                           ("moons:n=500", 0.1, "auto", 4, 0.5)])
def test_ray_samples_equal_one_process(name, sigma, index, shards, start):
    ds = load(name)
    cfg = SamplerConfig(n_samples=6, sigma=sigma, draws=3, steps=8, start=start, index=index, seed=2)
    local = sample(ds, cfg)
    far = sample(ds, cfg.replace(backend="ray", shards=shards))
    np.testing.assert_allclose(far.samples, local.samples, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(far.nn_ids, local.nn_ids)
    np.testing.assert_allclose(far.nn_dist, local.nn_dist, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(far.source_ids[:, 0], local.source_ids[:, 0])
    np.testing.assert_allclose(source_matrix(far, ds.n), source_matrix(local, ds.n), rtol=0, atol=1e-9)
    np.testing.assert_allclose(source_matrix(far, ds.n) @ ds.points.astype(np.float64), far.samples, atol=1e-9)
    assert far.dataset["backend"] == "ray" and far.dataset["shards"] == shards
    assert far.config.backend == "ray" and far.config.shards == shards
    # what ran, and what it cost: each step moves a few numbers per sample and shard, never the points
    assert far.ran == {"model": "cfdm", "strategy": "sharded", "index": index, "device": "cpu", "backend": "ray",
                       "sources": "convex"}
    assert far.shards == shards and far.calls >= 2 * cfg.steps
    assert far.bytes_moved > 0
    if ds.dim > 10:  # digits: the whole run moves less than the float32 points themselves
        assert far.bytes_moved < ds.n * ds.dim * 4


def test_ray_streams_shards_larger_than_the_float64_budget(monkeypatch):
    """Actors that stream their memory-mapped shard in chunks give the same results."""
    from cdm_core.pipeline import shards as sharded
    monkeypatch.setenv("CDM_SHARD_KEEP_MB", "0")
    monkeypatch.setattr(sharded, "CHUNK_ROWS", 100)
    ds = load("digits")
    cfg = SamplerConfig(n_samples=4, sigma=0.5, draws=2, steps=6, seed=3)
    local = sample(ds, cfg)
    far = sample(ds, cfg.replace(backend="ray", shards=2))
    np.testing.assert_allclose(far.samples, local.samples, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(far.nn_ids, local.nn_ids)
    j_local, _ = jacobian(ds, cfg, [5, 900, 1500])
    j_far, _ = jacobian(ds, cfg.replace(backend="ray", shards=2), [5, 900, 1500])
    np.testing.assert_allclose(j_far, j_local, rtol=0, atol=1e-12)


def test_ray_with_weights_offset_data_and_jacobian():
    ds = load("digits")
    pts = ds.points + np.float32(1000)
    w = np.ones(ds.n)
    w[::3] = 0.0
    w[1::3] = 2.5
    cfg = SamplerConfig(n_samples=4, sigma=0.5, draws=2, steps=8, seed=5)
    local = sample(pts, cfg, weights=w)
    far = sample(pts, cfg.replace(backend="ray", shards=3), weights=w)
    np.testing.assert_allclose(far.samples, local.samples, rtol=0, atol=1e-9)
    assert (far.source_ids[far.source_ids >= 0] % 3 != 0).all()
    ids = np.unique(np.r_[local.source_ids[:, 0], local.nn_ids[:, 1]])[:5]
    j_local, _ = jacobian(pts, cfg, ids, weights=w)
    j_far, s_far = jacobian(pts, cfg.replace(backend="ray", shards=3), ids, weights=w)
    np.testing.assert_allclose(j_far, j_local, rtol=0, atol=1e-12 + 1e-9 * np.abs(j_local).max())
    np.testing.assert_allclose(s_far, local.samples, rtol=0, atol=1e-9)


def test_ray_sensitivity_and_sweep_equal_one_process():
    ds = load("moons:n=300")
    cfg = SamplerConfig(n_samples=4, sigma=0.1, draws=2, steps=10, seed=1)
    a = sensitivity(ds, cfg, top=3)
    b = sensitivity(ds, cfg.replace(backend="ray", shards=2), top=3)
    np.testing.assert_array_equal(a.training_ids, b.training_ids)
    np.testing.assert_allclose(a.jacobian, b.jacobian, rtol=0, atol=1e-12)
    rows_a = sweep(ds, cfg, [0.0, 0.1])
    rows_b = sweep(ds, cfg.replace(backend="ray", shards=2), [0.0, 0.1])
    for ra, rb in zip(rows_a, rows_b):
        for k in ("copy_fraction", "mean_nn_ratio", "diversity", "mean_effective_sources"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-9, abs=1e-12), k


def test_shard_files_are_checked_against_their_manifest(tmp_path):
    ds = load("moons:n=200")
    m = write_shards(ds, 3, tmp_path / "s")
    assert read_manifest(tmp_path / "s").n == 200 and sum(s.rows for s in m.shards) == 200
    np.testing.assert_allclose(m.centre, ds.points.astype(np.float64).mean(0), atol=1e-12)
    raw = bytearray((tmp_path / "s" / "shard-0001.npy").read_bytes())
    raw[-1] ^= 1  # one flipped bit in the last value
    (tmp_path / "s" / "shard-0001.npy").write_bytes(bytes(raw))
    cfg = SamplerConfig(n_samples=2, sigma=0.1, steps=4, backend="ray")
    with pytest.raises(CdmInputError, match="content hash does not match"):
        sample(read_manifest(tmp_path / "s"), cfg)
    doc = json.loads((tmp_path / "s" / "manifest.json").read_text())
    doc["n"] = 201
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(CdmInputError, match="manifest says 201"):
        read_manifest(tmp_path / "s")


def test_an_actor_that_dies_stops_the_run_with_one_line():
    ds = load("digits")
    cfg = SamplerConfig(n_samples=4, sigma=0.5, draws=2, steps=10, backend="ray", shards=3)

    with ShardedSet.open(ds, cfg) as ts:
        def kill_at_step_3(info):
            if info["step"] == 3:
                ray.kill(ts.actors[1])

        with pytest.raises(BackendError, match="shard actor died") as e:
            sample(ds, cfg, callback=kill_at_step_3, prepared=ts)
    assert "\n" not in str(e.value)


def test_ray_options_are_validated():
    with pytest.raises(CdmInputError, match="index auto or exact"):
        SamplerConfig(backend="ray", index="flat")
    with pytest.raises(CdmInputError, match="need backend ray"):
        SamplerConfig(shards=3)
    with pytest.raises(CdmInputError, match="--shards K"):
        sample(load("moons:n=100"), SamplerConfig(n_samples=2, backend="ray"))


def test_cli_shard_then_sample_on_a_fresh_local_ray(tmp_path):
    """`cfdm shard`, then `sample --backend ray` in a new process: it starts a local Ray instance,
    runs, stops it, and writes the same samples as one process."""
    run = [sys.executable, "-m", "cdm_core"]
    common = ["--n", "4", "--sigma", "0.5", "--draws", "2", "--steps", "6"]
    assert subprocess.run(run + ["shard", "--data", "digits", "--shards", "2", "--out", str(tmp_path / "sh")],
                          capture_output=True, timeout=120).returncode == 0
    p = subprocess.run(run + ["sample", "--data", str(tmp_path / "sh" / "manifest.json"), "--backend", "ray",
                              "--out", str(tmp_path / "far.npz")] + common, capture_output=True, text=True,
                       timeout=240)
    assert p.returncode == 0, p.stderr[-500:]
    q = subprocess.run(run + ["sample", "--data", "digits", "--out", str(tmp_path / "near.npz")] + common,
                       capture_output=True, timeout=120)
    assert q.returncode == 0
    far, near = np.load(tmp_path / "far.npz"), np.load(tmp_path / "near.npz")
    np.testing.assert_allclose(far["samples"], near["samples"], rtol=0, atol=1e-9)
    assert json.loads(str(far["config"]))["sampler"]["backend"] == "ray"
    bad = subprocess.run(run + ["sample", "--data", str(tmp_path / "sh"), "--out", str(tmp_path / "x.npz")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--backend ray" in bad.stderr and bad.stderr.count("\n") == 1


def test_dashboard_backend_setting_runs_on_ray():
    """The Generate page's "Compute backend": Ray with 2 shards gives the local page's samples."""
    from streamlit.testing.v1 import AppTest

    from tests.conftest import ROOT
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    at.switch_page("app_pages/generate.py").run()
    local = at.session_state["result"].result
    at.radio(key="w_backend").set_value("ray").run()
    assert not at.exception
    assert at.session_state["params"]["backend"] == "ray" and at.session_state["params"]["shards"] == 2
    at.button[0].click().run()  # Ray never runs on a slider move: the Generate button
    assert not at.exception and not [e.value for e in at.error]
    far = at.session_state["result"].result
    assert far.config.backend == "ray" and far.config.shards == 2
    np.testing.assert_allclose(far.samples, local.samples, rtol=0, atol=1e-9)


def test_cli_joins_a_running_cluster_by_address(tmp_path):
    """--ray-address joins the cluster this module started (and leaves it running)."""
    address = ray.get_runtime_context().gcs_address
    run = [sys.executable, "-m", "cdm_core", "sweep", "--data", "moons:n=200", "--sigmas", "0,0.1", "--draws", "2",
           "--steps", "6", "--n", "4"]
    p = subprocess.run(run + ["--backend", "ray", "--shards", "2", "--ray-address", address,
                              "--out", str(tmp_path / "far.csv")], capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-500:]
    q = subprocess.run(run + ["--out", str(tmp_path / "near.csv")], capture_output=True, text=True, timeout=120)
    assert q.returncode == 0
    far = (tmp_path / "far.csv").read_text().splitlines()
    near = (tmp_path / "near.csv").read_text().splitlines()
    assert far[0] == near[0] and len(far) == len(near) == 3
    col = far[0].split(",").index("copy_fraction")
    assert [r.split(",")[col] for r in far[1:]] == [r.split(",")[col] for r in near[1:]]
    assert ray.is_initialized() and len(ray.nodes()) >= 1


def test_a_missing_shard_file_is_named_in_one_line(tmp_path):
    write_shards(load("moons:n=120"), 2, tmp_path / "s")
    (tmp_path / "s" / "shard-0001.npy").unlink()
    with pytest.raises(CdmInputError, match="shard-0001.npy: cannot read shard") as e:
        sample(read_manifest(tmp_path / "s"), SamplerConfig(n_samples=2, steps=3, backend="ray"))
    assert "\n" not in str(e.value)
