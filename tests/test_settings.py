"""Settings from the environment (`cdm_core/settings.py`) and the one option mapping and cost
model (`SamplerConfig.from_options`, `SamplerConfig.work` in `cdm_core/config.py`)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from cdm_core import settings
from cdm_core.config import OPTIONS, SamplerConfig
from cdm_core.errors import CdmInputError
from cdm_core.settings import MAX_UNCOMPRESSED_BYTES, Limits, limits

MIB = 2**20
NUMBERS = ["CDM_MAX_FILE_MB", "CDM_MAX_POINTS", "CDM_MAX_DIM", "CDM_MAX_WORK", "CDM_MAX_BATCH_MB"]
PATHS = {"CDM_CACHE_DIR": settings.cache_dir, "CDM_FASHION_DIR": settings.fashion_dir,
         "CDM_EMOJI_FONT": settings.emoji_font}
DEFAULT_LIMITS = Limits(max_file_bytes=1024 * MIB, max_points=2_000_000, max_dim=65536, max_work=2e14,
                        max_batch_bytes=512 * MIB, max_uncompressed_bytes=4 * 2**30)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No CDM_* variable set (conftest sets CDM_CACHE_DIR for the suite) and a known home."""
    for name in NUMBERS + list(PATHS):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


def test_every_documented_variable_is_tested():
    documented = set(re.findall(r"`(CDM_[A-Z_]+)`", settings.__doc__))
    assert documented == set(NUMBERS) | set(PATHS) | {"CDM_SHARD_KEEP_MB"}


def test_shard_keep_budget(monkeypatch):
    monkeypatch.delenv("CDM_SHARD_KEEP_MB", raising=False)
    assert settings.shard_keep_bytes() == 512 * MIB
    monkeypatch.setenv("CDM_SHARD_KEEP_MB", "0")
    assert settings.shard_keep_bytes() == 0
    monkeypatch.setenv("CDM_SHARD_KEEP_MB", "lots")
    with pytest.raises(CdmInputError, match="^CDM_SHARD_KEEP_MB='lots'"):
        settings.shard_keep_bytes()


def test_defaults(clean_env, tmp_path):
    assert limits() == DEFAULT_LIMITS
    assert MAX_UNCOMPRESSED_BYTES == 4 * 2**30
    assert settings.cache_dir() == tmp_path / "home" / ".cache" / "cfdm-explorer"
    assert settings.fashion_dir() == Path("/usr/share/datasets/fashion-mnist")
    assert settings.emoji_font() == Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")


@pytest.mark.parametrize("name", NUMBERS)
@pytest.mark.parametrize("blank", ["", "   "])
def test_blank_number_means_default(clean_env, name, blank):
    clean_env.setenv(name, blank)
    assert limits() == DEFAULT_LIMITS


@pytest.mark.parametrize("name,raw,field,value", [
    ("CDM_MAX_FILE_MB", "8", "max_file_bytes", 8 * MIB),
    ("CDM_MAX_FILE_MB", "0.5", "max_file_bytes", MIB // 2),
    ("CDM_MAX_FILE_MB", "0", "max_file_bytes", 0),
    ("CDM_MAX_POINTS", "10", "max_points", 10),
    ("CDM_MAX_POINTS", " 1e3 ", "max_points", 1000),  # a whole number in any float spelling
    ("CDM_MAX_POINTS", "1", "max_points", 1),
    ("CDM_MAX_DIM", "784", "max_dim", 784),
    ("CDM_MAX_DIM", "2.0", "max_dim", 2),
    ("CDM_MAX_WORK", "2e7", "max_work", 2e7),
    ("CDM_MAX_WORK", "0", "max_work", 0.0),
    ("CDM_MAX_BATCH_MB", "0.02", "max_batch_bytes", int(0.02 * MIB)),
    ("CDM_MAX_BATCH_MB", "4096", "max_batch_bytes", 4096 * MIB),
])
def test_valid_override_changes_only_its_limit(clean_env, name, raw, field, value):
    clean_env.setenv(name, raw)
    got = limits()
    assert getattr(got, field) == value and type(getattr(got, field)) is type(getattr(DEFAULT_LIMITS, field))
    assert replace(got, **{field: getattr(DEFAULT_LIMITS, field)}) == DEFAULT_LIMITS  # nothing else moved


def test_limits_are_read_at_call_time(clean_env):
    clean_env.setenv("CDM_MAX_POINTS", "5")
    assert limits().max_points == 5
    clean_env.setenv("CDM_MAX_POINTS", "6")
    assert limits().max_points == 6
    clean_env.delenv("CDM_MAX_POINTS")
    assert limits().max_points == 2_000_000


@pytest.mark.parametrize("name,raw", [
    ("CDM_MAX_POINTS", "abc"), ("CDM_MAX_POINTS", "0"), ("CDM_MAX_POINTS", "-3"), ("CDM_MAX_POINTS", "2.5"),
    ("CDM_MAX_POINTS", "1e400"), ("CDM_MAX_WORK", "-1"), ("CDM_MAX_WORK", "nan"), ("CDM_MAX_WORK", "inf"),
    ("CDM_MAX_WORK", "2e14 flops"), ("CDM_MAX_DIM", "1.5"), ("CDM_MAX_DIM", "0"), ("CDM_MAX_DIM", "0x10"),
    ("CDM_MAX_FILE_MB", "-1"), ("CDM_MAX_FILE_MB", "1 GiB"), ("CDM_MAX_FILE_MB", "-inf"),
    ("CDM_MAX_BATCH_MB", "-0.5"), ("CDM_MAX_BATCH_MB", "many"), ("CDM_MAX_BATCH_MB", "nan"),
])
def test_malformed_number_is_an_error_naming_the_variable(clean_env, name, raw):
    clean_env.setenv(name, raw)
    with pytest.raises(CdmInputError) as e:
        limits()
    text = str(e.value)
    assert text.startswith(f"{name}=") and repr(raw) in text and "\n" not in text, text


@pytest.mark.parametrize("name", sorted(PATHS))
def test_path_override(clean_env, tmp_path, name):
    clean_env.setenv(name, str(tmp_path / "x"))
    assert PATHS[name]() == tmp_path / "x"
    clean_env.setenv(name, "~/y")
    assert PATHS[name]() == tmp_path / "home" / "y"  # ~ is expanded
    clean_env.setenv(name, "")
    assert PATHS[name]() == {"CDM_CACHE_DIR": tmp_path / "home" / ".cache" / "cfdm-explorer",
                             "CDM_FASHION_DIR": Path("/usr/share/datasets/fashion-mnist"),
                             "CDM_EMOJI_FONT": Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")}[name]


# --------------------------------------------------------------------------------------------
# SamplerConfig.from_options: the one mapping from outside names (CLI, URL, UI) to fields


def test_from_options_parses_url_strings():
    cfg = SamplerConfig.from_options({"n": "5", "sigma": "0.5", "draws": "3", "steps": "7", "start": "0.25",
                                      "neighbours": "16", "index": "exact", "seed": "9", "device": "cpu",
                                      "nearest": "2", "batch_size": "4", "truncation_tol": "1e-3",
                                      "nprobe": "8", "nlist": "0"})
    assert cfg == SamplerConfig(n_samples=5, sigma=0.5, draws=3, steps=7, start=0.25, neighbours=16, index="exact",
                                seed=9, device="cpu", nearest=2, batch_size=4, truncation_tol=1e-3, nprobe=8, nlist=0)
    assert type(cfg.n_samples) is int and type(cfg.sigma) is float


def test_from_options_numbers_extra_and_defaults():
    assert SamplerConfig.from_options({"n": 5, "sigma": 0.5}) == SamplerConfig(n_samples=5, sigma=0.5)
    assert SamplerConfig.from_options({"n": "5.0"}).n_samples == 5  # a whole number spelt as a float
    assert SamplerConfig.from_options({}) == SamplerConfig()
    assert SamplerConfig.from_options({"n": "5"}, trajectory=True) == SamplerConfig(n_samples=5, trajectory=True)


@pytest.mark.parametrize("name", ["colour", "n_samples", "sigma ", "N", "--n"])
def test_from_options_rejects_unknown_names(name):
    with pytest.raises(CdmInputError, match="unknown sampler option") as e:
        SamplerConfig.from_options({"n": "5", name: "1"})
    assert repr(name) in str(e.value)


@pytest.mark.parametrize("name,value", [
    ("n", "abc"), ("n", "2.5"), ("n", ""), ("n", "inf"), ("n", "nan"), ("n", True), ("n", None),
    ("sigma", "banana"), ("sigma", ""), ("sigma", "0,5"), ("sigma", False), ("sigma", [0.5]),
    ("draws", "x"), ("steps", "1e400"), ("seed", "-"), ("start", "½"),
])
def test_from_options_rejects_non_numeric_values(name, value):
    with pytest.raises(CdmInputError) as e:
        SamplerConfig.from_options({name: value})
    text = str(e.value)
    assert text.startswith(f"{name} must be ") and repr(value) in text, text


@pytest.mark.parametrize("name,value", [("n", "-4"), ("sigma", "-1"), ("sigma", "nan"), ("start", "1"),
                                        ("index", "kd"), ("draws", "0")])
def test_from_options_values_out_of_range_are_named(name, value):
    with pytest.raises(CdmInputError, match=rf"^{OPTIONS[name][0]} must"):
        SamplerConfig.from_options({name: value})


def test_from_options_says_integer_for_integer_options():
    with pytest.raises(CdmInputError, match="n must be an integer"):
        SamplerConfig.from_options({"n": "abc"})


# --------------------------------------------------------------------------------------------
# SamplerConfig.work: the one cost model


@pytest.mark.parametrize("draws", [2, 4, 16, 64])
@pytest.mark.parametrize("n_train,dim", [(1797, 64), (60000, 784), (1000, 16)])
@pytest.mark.parametrize("steps", [5, 20, 100])
def test_exact_index_costs_more_than_auto_with_several_draws(draws, n_train, dim, steps):
    cfg = SamplerConfig(n_samples=64, sigma=0.5, draws=draws, steps=steps)
    auto, exact = cfg.work(n_train, dim), cfg.replace(index="exact").work(n_train, dim)
    assert exact > auto > 0
    softmax = 5.0 * 64 * draws * n_train * steps  # exp and sums over every draw's logits
    assert exact == 2.0 * 64 * draws * n_train * dim * steps + softmax  # every draw over every point, every step


def test_work_scales_with_every_factor():
    cfg = SamplerConfig(n_samples=8, sigma=0.5, draws=4, steps=10)
    for index in ("auto", "exact"):
        c = cfg.replace(index=index)
        base = c.work(500, 32)
        assert c.replace(n_samples=16).work(500, 32) == pytest.approx(2 * base)
        assert c.work(1000, 32) == pytest.approx(2 * base)
        assert c.work(500, 64) > base and c.replace(steps=20).work(500, 32) > base
    # without smoothing there is one "draw", whatever `draws` says
    assert cfg.replace(sigma=0.0).work(500, 32) == cfg.replace(sigma=0.0, draws=1).work(500, 32)
