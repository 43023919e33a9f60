"""The models on the command line: --model and --patch-schedule on sample and sweep, the per-pixel
sources and patch sizes in the .npz, user image files, and one-line refusals with exit code 2."""

import json

import numpy as np
import pytest

from cdm_core.cli.main import main


def run(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def image_file(tmp_path):
    """A user's file of 12 colour images 4 x 5 x 3, offset from zero (as .npy, (N, H, W, C))."""
    x = np.random.default_rng(4).random((12, 4, 5, 3)) + 3.0
    path = tmp_path / "imgs.npy"
    np.save(path, x)
    return path, x.reshape(12, -1)


@pytest.mark.parametrize("model, schedule", [("ls", "3,5,3,1"), ("els", "3")])
def test_local_models_write_pixel_sources_that_reproduce_every_pixel(tmp_path, capsys, image_file, model, schedule):
    path, x = image_file
    out = tmp_path / f"{model}.npz"
    code, _, err = run(["sample", "--data", str(path), "--model", model, "--patch-schedule", schedule, "--n", "3",
                        "--steps", "4", "--pixel-sources", "5", "--out", str(out)], capsys)
    assert code == 0, err
    assert "patch sizes per step" in err
    z = np.load(out, allow_pickle=False)
    cfg = json.loads(str(z["config"]))
    sizes = [3, 5, 3, 1] if model == "ls" else [3] * 4
    assert cfg["sampler"]["model"] == model and cfg["patch_sizes"] == sizes and cfg["ran"]["sources"] == "item shares"
    ids, pix, w = z["pixel_source_ids"], z["pixel_source_pixels"], z["pixel_source_weights"]
    assert ids.shape == pix.shape == w.shape == (3, 20, 5)
    rows = x.reshape(12, 20, 3)
    recon = (w[..., None] * rows[ids.clip(0), pix.clip(0)] * (ids >= 0)[..., None]).sum(2)
    bound = z["pixel_source_omitted"][..., None] * np.abs(x).max() + 1e-9
    assert (np.abs(recon - z["samples"].reshape(3, 20, 3)) <= bound).all()
    if model == "ls":
        assert ((pix == np.arange(20)[None, :, None]) | (ids < 0)).all()  # LS takes pixels from the same place


def test_gaussian_sources_are_signed_sum_to_one_and_reproduce(tmp_path, capsys):
    out = tmp_path / "g.npz"
    code, _, err = run(["sample", "--data", "digits", "--model", "gaussian", "--n", "4", "--out", str(out)], capsys)
    assert code == 0, err
    z = np.load(out, allow_pickle=False)
    from cdm_core import load
    x = load("digits").points.astype(np.float64)
    w, ids = z["source_weights"], z["source_ids"]
    assert (w < 0).any() and np.allclose(w.sum(1), 1, atol=1e-10)
    np.testing.assert_allclose(np.einsum("nk,nkd->nd", w, x[ids]), z["samples"], atol=1e-9)
    assert json.loads(str(z["config"]))["ran"]["sources"] == "affine"


def test_sweep_takes_a_model(tmp_path, capsys):
    out = tmp_path / "sw.csv"
    code, _, err = run(["sweep", "--data", "digits", "--model", "ls", "--patch-schedule", "15", "--sigmas", "0",
                        "--n", "4", "--steps", "5", "--out", str(out)], capsys)
    assert code == 0, err
    assert out.read_text().count("\n") == 2  # header and one setting


@pytest.mark.parametrize("args, message", [
    (["--data", "moons", "--model", "ls"], "works on images; moons is not an image data set"),
    (["--data", "digits", "--model", "els", "--patch-schedule", "4"], "patch sizes must be odd"),
    (["--data", "digits", "--model", "els", "--patch-schedule", "-1"], "patch sizes must be odd"),
    (["--data", "digits", "--model", "ls", "--patch-schedule", "3,5", "--steps", "3"], "2 sizes for 3 steps"),
    (["--data", "digits", "--model", "ls", "--patch-schedule", "nope"], "or one of fashion-resnet"),
    (["--data", "digits", "--model", "foo"], "invalid choice: 'foo'"),
    (["--data", "digits", "--model", "ls", "--sigma", "0.5"], "sigma smooths model cfdm only"),
    (["--data", "digits", "--patch-schedule", "5"], "patch_schedule applies to models ls and els"),
])
def test_bad_model_options_are_one_line_and_exit_2(tmp_path, capsys, args, message):
    code, _, err = run(["sample", *args, "--n", "2", "--out", str(tmp_path / "x.npz")], capsys)
    assert code == 2 and message in err and err.strip().count("\n") == 0
    assert not (tmp_path / "x.npz").exists()


def test_sensitivity_refuses_models_without_it(tmp_path, capsys):
    code, _, err = run(["sensitivity", "--data", "digits", "--model", "els", "--patch-schedule", "3", "--n", "2",
                        "--top", "2", "--out", str(tmp_path / "s.npz")], capsys)
    assert code == 2 and "has no sensitivity" in err


def test_a_subset_is_nested_balanced_and_its_ids_index_the_whole_set(tmp_path, capsys):
    from cdm_core import SamplerConfig, load, sample
    from cdm_core.data.subsets import nested_order, subset
    ds = load("digits")
    order = nested_order(ds.n, ds.labels)
    assert sorted(order) == list(range(ds.n))
    counts = np.bincount(ds.labels[order[:100]], minlength=10)
    assert counts.max() - counts.min() <= 1  # class-balanced prefix
    small, ids_small = subset(ds, 50)
    _, ids_big = subset(ds, 200)
    assert set(ids_small) <= set(ids_big) and small.n == 50  # nested
    res = sample(ds, SamplerConfig(n_samples=4, subset=50, steps=10))
    alone = sample(small, SamplerConfig(n_samples=4, steps=10))
    np.testing.assert_array_equal(res.samples, alone.samples)  # the same run as on the subset itself
    used = res.source_ids[res.source_ids >= 0]
    assert set(used) <= set(ids_small) and set(res.nn_ids.ravel()) <= set(ids_small)
    ok = res.source_ids >= 0
    recon = np.einsum("nk,nkd->nd", np.where(ok, res.source_weights, 0), ds.points[np.where(ok, res.source_ids, 0)])
    np.testing.assert_allclose(recon, res.samples, atol=1e-9)  # full-set ids reproduce the samples
    code, _, err = run(["sensitivity", "--data", "digits", "--subset", "50", "--n", "2", "--top", "2",
                        "--out", str(tmp_path / "s.npz")], capsys)
    assert code == 2 and "sensitivity runs on the whole training set" in err
