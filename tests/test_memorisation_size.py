"""Memorisation against training-set size: Wilson intervals, the EMM, the curves' science
(the exact model memorises at every size, smoothing with several draws does not), the CLI and
the Memorisation page's tab."""

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from cdm_core import SamplerConfig, load
from cdm_core.analysis.memorisation import emm, memorisation_curves, wilson
from cdm_core.cli.main import main
from tests.conftest import ROOT


def test_wilson_interval_matches_the_formula_and_its_corner_cases():
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4901624, abs=1e-6) and hi == pytest.approx(0.9433178, abs=1e-6)
    assert wilson(0, 20)[0] == 0.0 and wilson(20, 20)[1] == 1.0
    assert wilson(0, 20)[1] > 0 and wilson(20, 20)[0] < 1  # never a zero-width interval at the ends


def test_emm_is_where_the_fraction_first_drops_below_ninety_percent():
    rows = [{"model": "cfdm", "sigma": 0.5, "size": s, "memorised": m}
            for s, m in ((100, 0.99), (200, 0.95), (400, 0.7), (800, 0.92))]
    rows += [{"model": "gaussian", "sigma": 0.0, "size": s, "memorised": 0.0} for s in (100, 200)]
    rows += [{"model": "cfdm", "sigma": 0.0, "size": s, "memorised": 1.0} for s in (100, 200)]
    got = {(e["model"], e["sigma"]): (e["emm"], e["every_size"]) for e in emm(rows)}
    assert got == {("cfdm", 0.5): (200, False), ("gaussian", 0.0): (None, False), ("cfdm", 0.0): (200, True)}


def test_exact_model_memorises_at_every_size_and_smoothing_moves_the_curve():
    ds = load("digits")
    base = SamplerConfig(n_samples=24, steps=50, draws=8)
    rows = memorisation_curves(ds, base, [60, 240, 960], ["cfdm", "gaussian"], [0.0, 0.6])
    by = {(r["model"], r["sigma"], r["size"]): r for r in rows}
    for size in (60, 240, 960):
        exact = by[("cfdm", 0.0, size)]
        assert exact["memorised"] == 1.0 and exact["copies"] == 1.0 and exact["lo"] > 0.8
        smooth = by[("cfdm", 0.6, size)]
        assert smooth["memorised"] < 0.5 and smooth["effective_sources"] > 2  # blends of several items
        assert by[("gaussian", 0.0, size)]["memorised"] <= 0.1  # the linear model does not copy
        for r in (exact, smooth):
            assert r["lo"] <= r["memorised"] <= r["hi"] and r["samples"] == 24
    levels = {(e["model"], e["sigma"]): e for e in emm(rows)}
    assert levels[("cfdm", 0.0)]["emm"] == 960 and levels[("cfdm", 0.0)]["every_size"]
    assert levels[("gaussian", 0.0)]["emm"] is None


def test_cli_writes_curves_and_emm(tmp_path, capsys):
    out = tmp_path / "mem.csv"
    code = main(["memorisation", "--data", "digits", "--sizes", "50,200", "--sigmas", "0,0.5", "--draws", "4",
                 "--models", "cfdm,gaussian", "--n", "8", "--steps", "20", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    lines = out.read_text().splitlines()
    assert lines[0].startswith("model,sigma,size,samples,memorised,lo,hi") and len(lines) == 1 + 3 * 2
    assert (tmp_path / "mem.emm.csv").read_text().splitlines()[0] == "model,sigma,emm,every_size"
    assert "d1/d2 < 1/3 (Gu et al. 2025)" in err and "EMM (largest size memorised >= 90%)" in err
    for bad, message in ((["--sizes", "50,99999"], "sizes must lie in"),
                         (["--sizes", "50", "--models", "nope"], "--models must be"),
                         (["--sizes", "5.5"], "whole numbers")):
        code = main(["memorisation", "--data", "digits", "--n", "4", *bad, "--out", str(out)])
        assert code == 2 and message in capsys.readouterr().err


def test_memorisation_page_tab_computes_curves_with_the_criterion_named():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.query_params["data"] = "digits"
    at.switch_page("app_pages/memorisation.py").run()
    assert not at.exception
    at.text_input(key="w_mem_sizes").set_value("40,160").run()
    at.number_input(key="w_mem_n").set_value(8).run()
    next(b for b in at.button if b.key == "w_mem_go").click().run()
    assert not at.exception and not [e.value for e in at.error]
    said = " ".join(c.value for c in at.caption)
    assert "EMM" in said and "d1/d2 < 1/3 (Gu et al. 2025)" in said
    table = at.dataframe[0].value
    assert set(table["size"]) == {40, 160} and np.all((table["lo"] <= table["memorised"]) &
                                                        (table["memorised"] <= table["hi"]))
    at.text_input(key="w_mem_sizes").set_value("40,99999").run()
    assert any("sizes must lie in" in e.value for e in at.error) and not at.exception


def test_split_half_halves_are_disjoint_balanced_and_nested():
    from cdm_core.analysis.split_half import halves
    ds = load("digits")
    a, b = halves(ds.n, ds.labels)
    assert not set(a) & set(b) and len(a) + len(b) == ds.n
    for h in (a, b):
        counts = np.bincount(ds.labels[h[:100]], minlength=10)
        assert counts.max() - counts.min() <= 1


def test_split_half_gaussian_converges_and_the_exact_model_does_not(tmp_path, capsys):
    from cdm_core.analysis.split_half import split_half
    ds = load("digits")
    gauss = split_half(ds, SamplerConfig(n_samples=24, model="gaussian"), [20, 800])
    exact = split_half(ds, SamplerConfig(n_samples=24, steps=50), [20, 800])
    assert gauss[1]["similarity"] > 0.95 and gauss[1]["similarity"] > gauss[0]["similarity"] + 0.2
    assert gauss[1]["distance"] < gauss[0]["distance"]
    assert exact[1]["similarity"] < 0.85  # two different training items, not one sample
    code = main(["split-half", "--data", "digits", "--sizes", "20,100", "--model", "gaussian", "--n", "8",
                 "--out", str(tmp_path / "sh.csv")])
    assert code == 0 and (tmp_path / "sh.csv").read_text().startswith("size,similarity,similarity_sd,distance")
    capsys.readouterr()
    code = main(["split-half", "--data", "digits", "--sizes", "5000", "--out", str(tmp_path / "x.csv")])
    assert code == 2 and "must lie in [2, 896]" in capsys.readouterr().err


def test_split_half_tab_shows_the_curve_and_pairs():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.query_params["data"] = "digits"
    at.query_params["model"] = "gaussian"
    at.switch_page("app_pages/memorisation.py").run()
    at.text_input(key="w_sh_sizes").set_value("20,200").run()
    next(b for b in at.button if b.key == "w_sh_go").click().run()
    assert not at.exception and not [e.value for e in at.error]
    table = next(d.value for d in at.dataframe if "similarity" in d.value.columns)
    assert list(table["size"]) == [20, 200] and table["similarity"].between(-1, 1).all()
    assert any("σ smooths σ-CFDM only" in i.value for i in at.info)  # the σ tab for a model without σ
