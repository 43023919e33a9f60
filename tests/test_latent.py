"""Latent space (#16): the autoencoder, its cache and weights files, and the sampler, sensitivity,
sweep, export and CLI run on training latents."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cdm_core import SamplerConfig
from cdm_core.analysis.sensitivity import jacobian, position_derivative, sensitivity
from cdm_core.analysis.sweep import sweep
from cdm_core.data.dataset import Dataset
from cdm_core.data.registry import availability, load
from cdm_core.errors import CdmInputError
from cdm_core.latent import space as latent
from cdm_core.latent.autoencoder import AutoencoderSpec, train
from cdm_core.latent.space import LatentSpace, cache_path, latent_space, weights_bytes, weights_hash
from cdm_core.pipeline.run import sample

LATENT = SamplerConfig(n_samples=6, sigma=0.5, draws=3, steps=12, space="latent", latent_dim=8)


@pytest.fixture(scope="module")
def digits():
    return load("digits")


@pytest.fixture(scope="module")
def digits_space(digits) -> LatentSpace:
    return latent_space(digits, LATENT)


def blend(res) -> np.ndarray:
    ids = np.maximum(res.source_ids, 0)
    return np.einsum("nk,nkd->nd", np.where(res.source_ids >= 0, res.source_weights, 0.0), res.train_latents[ids])


def test_latent_samples_are_exact_blends_of_training_latents(digits, digits_space):
    res = sample(digits, LATENT)
    assert res.latents.shape == (6, 8) and res.train_latents.shape == (digits.n, 8)
    np.testing.assert_allclose(blend(res), res.latents, atol=1e-12, rtol=0)
    np.testing.assert_array_equal(res.train_latents, digits_space.latents.astype(np.float64))
    # samples are the decoded latents, in the data's own shape and units
    assert res.samples.shape == (6, digits.dim)
    np.testing.assert_allclose(res.samples, digits_space.decode(res.latents), atol=0)
    # nearest neighbours in both spaces, each sorted and measured in its own units
    nearest = res.train_latents[res.nn_ids[:, 0]]
    np.testing.assert_allclose(res.nn_dist[:, 0], np.linalg.norm(nearest - res.latents, axis=1), rtol=1e-9)
    np.testing.assert_allclose(res.pixel_nn_dist[:, 0],
                               np.linalg.norm(digits.points[res.pixel_nn_ids[:, 0]] - res.samples, axis=1), rtol=1e-6)
    assert res.space["autoencoder_hash"] == digits_space.weights_hash
    assert 0 < res.space["relative_error"] < 0.2


def test_latent_batches_of_one_equal_one_batch(digits, digits_space):
    a = sample(digits, LATENT)
    b = sample(digits, LATENT.replace(batch_size=1))
    np.testing.assert_allclose(a.latents, b.latents, atol=1e-13, rtol=0)


def test_reconstruction_of_held_out_images():
    """Trained on 1,500 digits, the autoencoder reconstructs the 297 it never saw well: much
    better than their mean image, and not far from its training error."""
    d = load("digits")
    held_in = Dataset("digits-train", d.points[:1500], d.image_shape)
    space = latent_space(held_in, LATENT)
    held_out = d.points[1500:].astype(np.float64)
    rec = space.decode(space.encode(held_out))
    err = np.mean((rec - held_out) ** 2)
    baseline = np.mean((held_out - held_out.mean(0)) ** 2)
    assert err < 0.3 * baseline
    assert err < 3 * space.recon_rmse ** 2


def test_training_is_deterministic_for_a_seed(digits):
    spec = AutoencoderSpec(latent_dim=4, train_steps=40)
    a = train(digits.points[:400], digits.image_shape, spec)
    b = train(digits.points[:400], digits.image_shape, spec)
    c = train(digits.points[:400], digits.image_shape, AutoencoderSpec(latent_dim=4, train_steps=40, seed=1))
    assert weights_hash(a.state_dict()) == weights_hash(b.state_dict())
    assert weights_hash(a.state_dict()) != weights_hash(c.state_dict())


def test_the_cache_is_reused(digits, digits_space, monkeypatch):
    path = cache_path(digits, AutoencoderSpec(latent_dim=8))
    assert path.exists()
    before = path.stat().st_mtime_ns
    latent._CACHE.clear()  # a new process: only the disk cache is left
    monkeypatch.setattr(latent, "train", lambda *a, **k: pytest.fail("retrained despite the cache"))
    again = latent_space(digits, LATENT)
    assert again.origin == "cache" and again.weights_hash == digits_space.weights_hash
    assert path.stat().st_mtime_ns == before
    np.testing.assert_array_equal(again.latents, digits_space.latents)


def test_user_weights_file_gives_the_same_space(digits, digits_space, tmp_path):
    f = tmp_path / "mine.safetensors"
    f.write_bytes(weights_bytes(digits_space.model, digits))
    mine = latent_space(digits, LATENT.replace(ae_weights=str(f)))
    assert mine.origin == "file mine.safetensors" and mine.weights_hash == digits_space.weights_hash
    res = sample(digits, LATENT.replace(ae_weights=str(f)))
    np.testing.assert_array_equal(res.latents, sample(digits, LATENT).latents)


def test_bad_weights_files_are_one_line_errors_and_change_nothing(digits, digits_space, tmp_path):
    import torch
    from safetensors.torch import save
    cached = cache_path(digits, AutoencoderSpec(latent_dim=8))
    before = cached.read_bytes()
    good = {k: v.clone() for k, v in digits_space.model.state_dict().items()}
    cases = {
        "corrupt.safetensors": b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + b"\0" * 32,
        "random.safetensors": np.random.default_rng(0).bytes(300),
        "short.safetensors": b"abc",
        "other.safetensors": save({"w": torch.zeros(3, 3)}),
        "truncated.safetensors": weights_bytes(digits_space.model, digits)[:-100],
        "nan.safetensors": save(good | {"encoder.5.bias": torch.full_like(good["encoder.5.bias"], float("nan"))}),
        "dim4.safetensors": weights_bytes(latent_space(digits, LATENT.replace(latent_dim=4)).model, digits),
        "scalar.safetensors": save(good | {"decoder_in.0.weight": torch.zeros(())}),
        "float8.safetensors": save(good | {"encoder.5.bias": good["encoder.5.bias"].to(torch.float8_e4m3fn)}),
        "nested.safetensors": (lambda h: len(h).to_bytes(8, "little") + h)(b"[" * 200000 + b"]" * 200000),
    }
    faces_like = Dataset("wide", np.zeros((10, 12 * 16), np.float32), (12, 16))
    for name, blob in cases.items():
        f = tmp_path / name
        f.write_bytes(blob)
        with pytest.raises(CdmInputError) as e:
            latent_space(digits, LATENT.replace(ae_weights=str(f)))
        msg = str(e.value)
        assert "\n" not in msg and name in msg, msg
    with pytest.raises(CdmInputError, match="set latent_dim to 4"):
        latent_space(digits, LATENT.replace(ae_weights=str(tmp_path / "dim4.safetensors")))
    f = tmp_path / "digits.safetensors"
    f.write_bytes(weights_bytes(digits_space.model, digits))
    with pytest.raises(CdmInputError, match="needs"):  # another image size
        latent_space(faces_like, LATENT.replace(ae_weights=str(f)))
    with pytest.raises(CdmInputError, match="cannot read"):
        latent_space(digits, LATENT.replace(ae_weights=str(tmp_path / "missing.safetensors")))
    assert cached.read_bytes() == before


def test_a_damaged_cache_entry_is_retrained(tmp_path, monkeypatch):
    monkeypatch.setenv("CDM_CACHE_DIR", str(tmp_path))
    d = Dataset("tiny", load("digits").points[:300], (8, 8))
    spec_cfg = LATENT.replace(latent_dim=3)
    first = latent_space(d, spec_cfg)
    path = cache_path(d, AutoencoderSpec(latent_dim=3))
    path.write_bytes(b"garbage")
    latent._CACHE.clear()
    again = latent_space(d, spec_cfg)
    assert again.origin == "trained" and again.weights_hash == first.weights_hash


def test_latent_request_on_point_data_is_refused():
    with pytest.raises(CdmInputError, match="needs an image data set; moons is point data"):
        sample(load("moons"), SamplerConfig(n_samples=2, space="latent"))
    with pytest.raises(CdmInputError, match="needs an image data set"):
        sample(np.zeros((5, 4), np.float32), SamplerConfig(n_samples=2, space="latent"))
    with pytest.raises(CdmInputError, match="ae_weights needs space latent"):
        SamplerConfig(ae_weights="x.safetensors")
    with pytest.raises(CdmInputError, match="one process"):
        SamplerConfig(space="latent", backend="ray")
    with pytest.raises(CdmInputError, match="space must be one of"):
        SamplerConfig(space="pixels")


def test_latent_jacobian_matches_finite_differences(digits, digits_space):
    """d decoded sample / d log pi_j, through the decoder, against central differences of the
    whole pipeline (sampling on latents, then decoding)."""
    cfg = LATENT.replace(sigma=1.0, steps=8)
    sens = sensitivity(digits, cfg, top=2)
    assert sens.jacobian.shape == (6, 2, digits.dim) and sens.latent_jacobian.shape == (6, 2, 8)
    j = int(sens.training_ids[0, 0])
    jac, samples = jacobian(digits, cfg, [j])
    eps = 1e-5
    w_hi, w_lo = np.ones(digits.n), np.ones(digits.n)
    w_hi[j], w_lo[j] = np.exp(eps), np.exp(-eps)
    fd = (sample(digits, cfg, weights=w_hi).samples - sample(digits, cfg, weights=w_lo).samples) / (2 * eps)
    scale = np.abs(jac[:, 0]).max()
    assert scale > 1e-6
    assert np.abs(fd - jac[:, 0]).max() <= 1e-5 * scale
    # the chain rule: data-unit J is the decoder's Jacobian times the latent J
    dec = digits_space.decoder_jacobian(sens.latents)
    np.testing.assert_allclose(sens.jacobian, np.einsum("ndk,nck->ncd", dec, sens.latent_jacobian), atol=1e-12)


def test_latent_position_derivative_matches_finite_differences(digits, digits_space):
    """Moving training image j along v moves its latent by E'(x_j) v; the decoded samples follow."""
    cfg = LATENT.replace(sigma=1.0, steps=6, n_samples=4)
    res = sample(digits, cfg)
    j = int(res.source_ids[0, 0])
    v = np.random.default_rng(1).standard_normal(digits.dim)
    analytic = position_derivative(digits, cfg, j, v)
    h = 1e-4

    def moved(sign):
        pts = digits.points.astype(np.float64).copy()
        z = digits_space.latents.astype(np.float64).copy()
        z[j] = digits_space.encode(pts[j:j + 1] + sign * h * v)[0]
        plain = sample
        lat = plain(z, cfg.replace(space="data", latent_dim=16)).samples
        return digits_space.decode(lat)

    fd = (moved(1) - moved(-1)) / (2 * h)
    scale = np.abs(analytic[0]).max()
    assert scale > 1e-6
    # float32 encoder outputs in the finite difference: agreement to the encoder's rounding
    assert np.abs(fd[0] - analytic[0]).max() <= 2e-2 * scale


def test_sweep_and_map_data_in_latent_space(digits):
    rows = sweep(digits, LATENT.replace(n_samples=4), [0.0, 1.0])
    assert [r["sigma"] for r in rows] == [0.0, 1.0]
    assert rows[0]["memorised_fraction"] >= 0.5  # the distance criterion, in latent space
    # 12 steps stop short of t = 1, so the exact model still blends close latents: fewer copies by
    # exact sources than memorised samples by distance, and fewer still with smoothing
    assert rows[0]["copy_fraction"] <= rows[0]["memorised_fraction"]
    assert rows[1]["copy_fraction"] <= rows[0]["copy_fraction"]
    assert rows[1]["mean_effective_sources"] > rows[0]["mean_effective_sources"]


@pytest.mark.parametrize("name", ["faces", "emoji"])
def test_colour_and_odd_sized_images_in_both_spaces(name):
    if not availability(name)[0]:
        pytest.skip(f"{name}: {availability(name)[1]}")
    ds = load(name)
    for space in ("data", "latent"):
        res = sample(ds, SamplerConfig(n_samples=3, sigma=0.5, draws=2, steps=6, space=space, latent_dim=8))
        assert res.samples.shape == (3, ds.dim) and np.all(np.isfinite(res.samples))
        # the sources reproduce what was sampled (the images, or the latents they decode from)
        points = ds.points.astype(np.float64) if space == "data" else res.train_latents
        w = np.where(res.source_ids >= 0, res.source_weights, 0.0)
        np.testing.assert_allclose(np.einsum("nk,nkd->nd", w, points[np.maximum(res.source_ids, 0)]),
                                   res.blend_space_points, atol=1e-9 * np.abs(points).max())
        # and every pixel stays inside the data's range (the decoder is squashed into it)
        assert ds.points.min() - 1e-9 <= res.samples.min() and res.samples.max() <= ds.points.max() + 1e-9
    assert res.latents.shape == (3, 8)
    np.testing.assert_allclose(res.samples, latent_space(ds, res.config).decode(res.latents), atol=0)


def test_cli_sample_in_latent_space(tmp_path):
    out = tmp_path / "lat.npz"
    p = subprocess.run([sys.executable, "-m", "cdm_core", "sample", "--data", "digits", "--space", "latent",
                        "--latent-dim", "8", "--n", "5", "--sigma", "0.5", "--draws", "2", "--steps", "10",
                        "--out", str(out)], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert p.returncode == 0, p.stderr
    assert "latent space: K=8" in p.stderr
    z = np.load(out, allow_pickle=False)
    assert z["samples"].shape == (5, 64) and z["latents"].shape == (5, 8) and z["train_latents"].shape == (1797, 8)
    cfg = json.loads(str(z["config"]))
    assert cfg["sampler"]["space"] == "latent" and len(cfg["autoencoder"]["autoencoder_hash"]) == 16
    assert cfg["autoencoder"]["reconstruction_rmse"] > 0
    ids, w = z["source_ids"], z["source_weights"]
    rec = np.einsum("nk,nkd->nd", np.where(ids >= 0, w, 0), z["train_latents"][np.maximum(ids, 0)])
    np.testing.assert_allclose(rec, z["latents"], atol=1e-12)
    bad = subprocess.run([sys.executable, "-m", "cdm_core", "sample", "--data", "moons", "--space", "latent",
                          "--out", str(tmp_path / "m.npz")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "point data" in bad.stderr


def test_export_records_the_space_and_regenerates_identically(digits, digits_space, tmp_path):
    from cdm_core.report.export import AUTOENCODER_FILE, export_bundle, make_manifest, read_manifest
    m = make_manifest("digits", digits, LATENT, ["samples", "sources"], {"sample": 1})
    first = export_bundle(m, tmp_path / "a")
    assert AUTOENCODER_FILE in first["files"]
    saved = read_manifest(tmp_path / "a" / "manifest.json")
    assert saved["sampler"]["space"] == "latent" and saved["sampler"]["ae_weights"] == AUTOENCODER_FILE
    assert saved["autoencoder"]["autoencoder_hash"] == digits_space.weights_hash
    export_bundle(saved, tmp_path / "b", base_dir=tmp_path / "a")
    a, b = np.load(tmp_path / "a" / "data.npz"), np.load(tmp_path / "b" / "data.npz")
    assert set(a.files) == set(b.files) and "latents" in a.files
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k])
    assert (tmp_path / "a" / "sources.png").read_bytes() == (tmp_path / "b" / "sources.png").read_bytes()
    # a manifest whose autoencoder is not the one at hand is refused, not silently re-made
    wrong = saved | {"autoencoder": saved["autoencoder"] | {"autoencoder_hash": "0" * 16}}
    with pytest.raises(CdmInputError, match="manifest was made with"):
        export_bundle(wrong, tmp_path / "c", base_dir=tmp_path / "a")


def test_cli_sensitivity_in_latent_space_records_the_autoencoder(tmp_path, digits_space):
    out = tmp_path / "sens.npz"
    p = subprocess.run([sys.executable, "-m", "cdm_core", "sensitivity", "--data", "digits", "--space", "latent",
                        "--latent-dim", "8", "--n", "3", "--sigma", "0.5", "--draws", "2", "--steps", "6", "--top", "2",
                        "--out", str(out)], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert p.returncode == 0, p.stderr
    z = np.load(out, allow_pickle=False)
    assert z["jacobian"].shape == (3, 2, 64) and z["latent_jacobian"].shape == (3, 2, 8)
    meta = json.loads(str(z["config"]))
    assert meta["autoencoder"]["autoencoder_hash"] == digits_space.weights_hash


def test_a_prepared_set_of_the_wrong_space_is_refused(digits, digits_space):
    from cdm_core.pipeline.prepared import prepare
    pixels = prepare(digits, LATENT.replace(space="data"))
    with pytest.raises(CdmInputError, match="not this data set's latent space"):
        sample(digits, LATENT, prepared=pixels)
    latents = prepare(digits, LATENT)
    np.testing.assert_array_equal(sample(digits, LATENT, prepared=latents).latents, sample(digits, LATENT).latents)


def test_latent_sweep_diversity_matches_the_run_metrics(digits, digits_space):
    """The sweep's diversity compares decoded samples with the training images (data units), as the
    Generate page does for the same run."""
    from cdm_core.analysis.metrics import set_metrics
    cfg = LATENT.replace(n_samples=8)
    row = sweep(digits, cfg, [0.5])[0]
    direct = set_metrics(sample(digits, cfg.replace(sigma=0.5)), digits.points)
    assert row["diversity"] == pytest.approx(direct.diversity, rel=1e-9)


def test_decoded_samples_stay_in_the_data_range(digits):
    """Digits scaled to 0..255 in latent space at sigma 0.8 (the audit's case: decoded pixels
    spanned about -32..288): the decoder's output is squashed into the training set's range."""
    scaled = Dataset("digits-255", (digits.points * 255).astype(np.float32), digits.image_shape)
    res = sample(scaled, LATENT.replace(sigma=0.8, n_samples=32, steps=20))
    assert res.samples.min() >= 0.0 and res.samples.max() <= 255.0
    # the range is the data's own: shifted data give a shifted range
    shifted = Dataset("digits-shifted", (digits.points * 4 - 7).astype(np.float32), digits.image_shape)
    out = sample(shifted, LATENT.replace(sigma=0.8, n_samples=16)).samples
    assert out.min() >= -7.0 and out.max() <= -3.0
