"""AppTest: every page loads without exception, controls change results, state survives page
switches, a bad upload shows an error and keeps the previous data set."""

import io

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT

APP = str(ROOT / "app.py")
TITLES = {"app_pages/data.py": "Data", "app_pages/generate.py": "Generate", "app_pages/sources.py": "Sources",
          "app_pages/sensitivity.py": "Sensitivity", "app_pages/map.py": "Map",
          "app_pages/memorisation.py": "Memorisation", "app_pages/attribute.py": "Attribute your samples",
          "app_pages/export.py": "Export"}
PAGES = list(TITLES)


def app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception
    return at


def errors(at):
    return [e.value for e in at.error]


def metric(at, label):
    return next(m.value for m in at.metric if m.label == label)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_loads(page):
    at = app()
    at.switch_page(page).run()
    assert not at.exception and not errors(at)
    assert [t.value for t in at.title] == [TITLES[page]]  # the page switched to, not just any page


def test_generate_slider_changes_results_and_state_survives_pages():
    at = app()
    at.switch_page("app_pages/generate.py").run()
    first = at.session_state["result"].result.samples.copy()
    copies_before = metric(at, "Copies (exact sources)")
    at.slider(key="w_sigma").set_value(0.0).run()
    assert not at.exception and not errors(at)
    res = at.session_state["result"].result
    assert res.config.sigma == 0.0 and not np.allclose(first, res.samples)
    assert metric(at, "Copies (exact sources)") != copies_before
    at.switch_page("app_pages/sources.py").run()
    assert at.session_state["result"].result is res  # not recomputed
    assert any("sample" in m.value.lower() or "copy" in m.value.lower() for m in at.markdown)
    at.switch_page("app_pages/generate.py").run()
    assert at.session_state["result"].result is res
    assert at.slider(key="w_sigma").value == 0.0


def test_sources_page_for_images_and_item_users():
    at = app()
    at.session_state["params"] = at.session_state["params"] | {"n": 8}
    at.sidebar.selectbox[0].set_value("digits").run()
    # the sidebar shows the name in the box and the whole summary, wrapped, below it
    assert at.sidebar.selectbox[0].format_func("digits") == "digits"
    # the count and the size once: the summary already says both
    assert any(c.value == "scikit-learn 8x8 digits, 1,797 images" for c in at.sidebar.caption)
    at.switch_page("app_pages/sources.py").run()
    assert not at.exception and not errors(at)
    # n = 8 survives the switch to digits (8 x 8 images, 64 pixels): 8 samples of 64 values
    assert at.session_state["result"].result.samples.shape == (8, 64)
    at.number_input(key="w_sample_0").set_value(3).run()
    assert at.session_state["selected_sample"] == 3
    assert any("is a source of" in m.value for m in at.markdown)


def test_bad_upload_shows_error_and_keeps_dataset():
    at = app()
    before = at.session_state["dataset_name"]
    at.file_uploader[0].upload("broken.npy", b"this is not numpy", "application/octet-stream").run()
    assert not at.exception
    assert any("broken.npy" in e for e in errors(at))
    assert at.session_state["dataset_name"] == before


def test_good_upload_becomes_current_dataset():
    at = app()
    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(0).standard_normal((200, 2)) * 5)
    at.file_uploader[0].upload("points.npy", buf.getvalue(), "application/octet-stream").run()
    assert not at.exception and not errors(at)
    assert at.session_state["dataset_name"].startswith("upload:points.npy")
    at.switch_page("app_pages/generate.py").run()
    assert not at.exception and not errors(at)
    assert at.session_state["result"].result.samples.shape == (64, 2)


def notices(at):
    return " ".join(w.value for w in at.warning)


def test_unknown_data_set_in_a_link_is_reported():
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["data"] = "no-such-set"
    at.query_params["sigma"] = "0.3"
    at.run()
    assert not at.exception
    assert at.session_state["dataset_name"] == "moons"
    assert at.session_state["params"]["sigma"] == 0.1  # the unknown set's settings are not applied to moons
    assert "Unknown data set 'no-such-set'" in notices(at)
    at.button(key="w_dismiss_notices").click().run()
    assert not at.warning


def test_out_of_range_and_bad_link_values_are_clamped_with_a_notice():
    """?sigma=99&n=100000 used to show 'Something went wrong' and no controls."""
    at = AppTest.from_file(APP, default_timeout=120)
    for k, v in {"sigma": "99", "n": "100000", "steps": "-4", "draws": "banana", "index": "magic",
                 "sample": "x"}.items():
        at.query_params[k] = v
    at.run()
    at.switch_page("app_pages/generate.py").run()
    assert not at.exception and not errors(at)
    p = at.session_state["params"]
    assert p["sigma"] == 99.0 and p["n"] == 1024 and p["steps"] == 1 and p["draws"] == 4 and p["index"] == "auto"
    text = notices(at)
    for words in ("n=100000 is outside 1–1024: clamped to 1024", "steps=-4", "draws='banana'", "index='magic'",
                  "sample='x'"):
        assert words in text, words
    assert at.slider(key="w_sigma").value == 99.0 and at.number_input(key="w_n").value == 1024


def test_a_link_to_an_upload_says_it_cannot_be_restored():
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["data"] = "upload"
    at.query_params["sigma"] = "7.5"
    at.run()
    assert not at.exception
    assert at.session_state["dataset_name"] == "moons" and at.session_state["params"]["sigma"] == 0.1
    assert "uploaded file" in notices(at)


def test_page_settings_travel_in_the_link():
    at = AppTest.from_file(APP, default_timeout=180)
    for k, v in {"data": "moons", "map": "pca", "top": "3", "sweep": "0,0.05,0.1", "n": "8"}.items():
        at.query_params[k] = v
    at.run()
    at.switch_page("app_pages/sensitivity.py").run()
    assert at.slider(key="w_top").value == 3
    at.switch_page("app_pages/map.py").run()
    assert any("PCA map" in c.value for c in at.caption)
    at.switch_page("app_pages/memorisation.py").run()
    rows, _ = next(iter(at.session_state["cache_sweep"].values()))
    assert [r["sigma"] for r in rows] == [0.0, 0.05, 0.1]
    assert not at.exception and not errors(at)
    assert at.query_params["map"] in ("pca", ["pca"]) and at.query_params["top"] in ("3", ["3"])


def test_query_params_restore_configuration():
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["data"] = "circles"
    at.query_params["sigma"] = "0.25"
    at.query_params["seed"] = "9"
    at.run()
    at.switch_page("app_pages/generate.py").run()
    assert not at.exception
    cfg = at.session_state["result"].result.config
    assert cfg.sigma == 0.25 and cfg.seed == 9 and at.session_state["dataset_name"] == "circles"


@pytest.mark.parametrize("data", ["moons", "digits"])
def test_sensitivity_page_and_counterfactual(data):
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["data"] = data
    at.query_params["n"] = "8"
    at.run()
    at.switch_page("app_pages/sensitivity.py").run()
    assert not at.exception and not errors(at)
    key = next(iter(at.session_state["cache_sensitivity"]))
    sens = at.session_state["cache_sensitivity"][key]
    assert sens.jacobian.shape[:2] == (8, 6)
    at.slider(key="w_top").set_value(3).run()
    assert not at.exception
    sens = next(iter(at.session_state["cache_sensitivity"].values()))
    assert sens.training_ids.shape == (8, 3)
    at.button(key="w_cf_go").click().run()
    assert not at.exception and not errors(at)
    (_, cfg), chosen, factor, cf = at.session_state["cf"]
    dim = 2 if data == "moons" else 64
    assert cfg == sens.config and at.session_state["selected_sample"] == 0
    # the default edit: remove (factor 0) sample #0's most influential training item
    assert chosen == (int(sens.training_ids[0, 0]),) and factor == 0.0
    assert cf.edited_ids.tolist() == list(chosen) and cf.factors.tolist() == [0.0]
    assert cf.original.shape == cf.actual.shape == cf.predicted.shape == (8, dim)
    # removing a source that carries weight moves that sample, so the correlation is defined
    assert cf.displacement[0] > 0 and np.isfinite(cf.correlation)


def test_map_page_pca_and_umap():
    at = app()
    at.switch_page("app_pages/map.py").run()
    assert not at.exception and not errors(at)
    at.selectbox(key="w_map_method").set_value("pca").run()
    assert not at.exception and not errors(at)
    assert any("PCA map" in c.value for c in at.caption)


def test_memorisation_page_sweeps_and_reacts():
    at = app()
    at.switch_page("app_pages/memorisation.py").run()
    assert not at.exception and not errors(at)
    rows, _ = next(iter(at.session_state["cache_sweep"].values()))
    assert rows[0]["sigma"] == 0.0 and rows[0]["copy_fraction"] >= rows[-1]["copy_fraction"]
    key = next(t.key for t in at.text_input if t.key.startswith("w_sweep_sigmas"))
    at.text_input(key=key).set_value("0, abc").run()
    assert not at.exception and any("σ values" in e for e in errors(at))
    at.text_input(key=key).set_value("0,0.2").run()
    rows, _ = next(iter(at.session_state["cache_sweep"].values()))
    assert [r["sigma"] for r in rows] == [0.0, 0.2]


def test_export_page_builds_a_bundle():
    at = app()
    at.switch_page("app_pages/export.py").run()
    assert not at.exception and not errors(at)
    at.button(key="w_exp_go").click().run()
    assert not at.exception and not errors(at)
    blob, names, message, _ = at.session_state["export_zip"]
    assert "manifest.json" in names and "data.npz" in names
    assert message or "samples.svg" in names


def test_latent_space_across_pages():
    """digits in latent space from a link: Generate trains (or reuses) the autoencoder on the press of
    Generate, and every page then works on the latents and labels what it shows."""
    at = AppTest.from_file(APP, default_timeout=300)
    for k, v in {"data": "digits", "space": "latent", "latent_dim": "8", "n": "8", "sigma": "0.5"}.items():
        at.query_params[k] = v
    at.run()
    at.switch_page("app_pages/generate.py").run()
    assert not at.exception and not errors(at)
    run = at.session_state["result"]
    if run is None or run.result.latents is None:  # a fresh cache: the first latent run waits for the button
        next(b for b in at.button if b.label == "Generate").click().run()
    res = at.session_state["result"].result
    assert res.config.space == "latent" and res.latents.shape == (8, 8) and res.samples.shape == (8, 64)
    assert any("Autoencoder" in c.value for c in at.caption)
    pages = {"app_pages/sources.py": "decoded", "app_pages/sensitivity.py": "through the decoder",
             "app_pages/map.py": "autoencoder latents", "app_pages/memorisation.py": "Latent space",
             "app_pages/export.py": "Preview"}
    for page, words in pages.items():
        at.switch_page(page).run()
        assert not at.exception and not errors(at), page
        texts = [m.value for m in list(at.markdown) + list(at.caption) + list(at.subheader)]
        assert any(words in t for t in texts), (page, words)
    assert at.session_state["result"].result is res
    assert at.query_params["space"] == ["latent"] or at.query_params["space"] == "latent"


def test_pin_a_run_and_compare_with_new_settings():
    at = app()
    at.switch_page("app_pages/generate.py").run()
    first = at.session_state["result"]
    at.button(key="w_pin").click().run()
    assert at.session_state["pinned_run"] is first
    at.slider(key="w_sigma").set_value(0.3).run()
    assert not at.exception and not errors(at)
    assert any("Pinned run and current run" in h.value for h in at.subheader)
    df = at.dataframe[0].value
    assert list(df.columns) == ["", "pinned", "current", "current − pinned"]
    row = df[df[""] == "σ"].iloc[0]
    assert row["pinned"] == "0.1" and row["current"] == "0.3" and row["current − pinned"] == "changed"
    assert any("only σ changed" in c.value for c in at.caption)
    at.button(key="w_unpin").click().run()
    assert at.session_state["pinned_run"] is None and not at.exception


def test_what_if_we_add_items_on_the_sensitivity_page():
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["data"] = "moons"
    at.query_params["n"] = "8"
    at.run()
    at.switch_page("app_pages/sensitivity.py").run()
    at.number_input(key="w_add_weight").set_value(5.0).run()
    at.button(key="w_add_go").click().run()
    assert not at.exception and not errors(at)
    (_, cfg), label, add = at.session_state["addition"]
    assert label.startswith("copies of #") and add.n_added == 1 and add.weight == 5.0
    assert add.added_share[0] > 0  # the copied item is sample #0's most influential source
    assert any("now blend an added item" in m.value for m in at.markdown)


def test_odd_sample_numbers_in_a_link_do_not_crash():
    for raw in ("²", "1" * 400, "-3"):
        at = AppTest.from_file(APP, default_timeout=120)
        at.query_params["sample"] = raw
        at.run()
        assert not at.exception and at.session_state["selected_sample"] == 0
        assert "is not a sample number" in notices(at)


def test_results_of_one_data_set_are_not_shown_for_another():
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["data"] = "moons"
    at.query_params["n"] = "8"
    at.run()
    at.switch_page("app_pages/sensitivity.py").run()
    at.button(key="w_add_go").click().run()
    assert any("now blend an added item" in m.value for m in at.markdown)
    at.sidebar.selectbox[0].set_value("circles").run()
    at.switch_page("app_pages/sensitivity.py").run()
    assert not at.exception and not errors(at)
    assert not any("now blend an added item" in m.value for m in at.markdown)
    at.session_state["map_clicked_item"] = ("another data set", 1700)  # a click on another set's map
    at.switch_page("app_pages/map.py").run()
    assert not at.exception and not errors(at) and at.session_state["map_clicked_item"] is None


def test_compare_runs_in_different_spaces_measures_both_in_data_units():
    from ui.compare import table

    class Run:
        def __init__(self, result):
            self.result = result

    from cdm_core import SamplerConfig, sample
    from cdm_core.data.registry import load
    ds = load("digits")
    pix = sample(ds, SamplerConfig(n_samples=6, sigma=0.5, draws=3))
    lat = sample(ds, SamplerConfig(n_samples=6, sigma=0.5, draws=3, space="latent", latent_dim=8))
    df = table(Run(pix), Run(lat), ds)
    row = df[df[""] == "mean NN distance"].iloc[0]
    assert float(row["current"]) == pytest.approx(float(lat.pixel_nn_dist[:, 0].mean()), rel=1e-2)
    assert float(row["pinned"]) == pytest.approx(float(pix.nn_dist[:, 0].mean()), rel=1e-2)


def test_switching_data_sets_resets_the_controls_to_the_settings_used():
    """digits (S = 20) -> moons (S = 100): the Steps slider shows what the run uses, and moving σ
    afterwards keeps S = 100."""
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["data"] = "digits"
    at.run()
    at.switch_page("app_pages/generate.py").run()
    assert at.slider(key="w_steps").value == 20
    at.sidebar.selectbox[0].set_value("moons").run()
    at.switch_page("app_pages/generate.py").run()
    assert at.slider(key="w_steps").value == 100 and at.session_state["params"]["steps"] == 100
    at.slider(key="w_sigma").set_value(0.15).run()
    assert at.session_state["result"].result.config.steps == 100
    assert not at.exception and not errors(at)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_opens_from_a_link_to_a_set_that_does_not_generate_by_itself(page):
    """`/map?data=fashion-mnist` (and every other page) before any run: no traceback (the Map
    raised UnboundLocalError 'colour_by' for UMAP and PCA until Generate was pressed)."""
    from cdm_core.data.registry import availability
    if not availability("fashion-mnist")[0]:
        pytest.skip("the Debian package dataset-fashion-mnist is not installed (make setup installs it as root)")
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params["data"] = "fashion-mnist"
    at.switch_page(page).run()
    assert not at.exception, at.exception
    assert not [e for e in errors(at) if "went wrong" in e or "Error" in e]
    if page == "app_pages/map.py":
        at.selectbox(key="w_map_method").set_value("pca").run()
        assert not at.exception


@pytest.mark.parametrize("data", ["moons", "digits"])
def test_sigma_moves_across_the_whole_range_are_never_lost(data):
    """The σ slider's range used to follow σ (max(1, 4 x default, 2 x σ)): it changed one rerun
    late when σ crossed 0.5 on moons and swallowed that move. Now the range is fixed per data set:
    every move, across every value the old range switched at, reaches the samples, the sidebar and
    the URL, and the range and step never change."""
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["data"] = data
    at.switch_page("app_pages/generate.py").run()
    slider = at.slider(key="w_sigma")
    top, step = slider.max, slider.step
    assert top >= 1.0
    # across the old boundaries (0.5 and 2 x default on moons) and back, then the ends
    for value in [0.3, 0.52, 0.6, 0.24, 0.9, 0.48, 0.0, top, 0.1]:
        value = round(round(value / step) * step, 10)
        at.slider(key="w_sigma").set_value(value).run()
        assert not at.exception
        slider = at.slider(key="w_sigma")
        assert (slider.max, slider.step) == (top, step) and slider.value == pytest.approx(value)
        assert at.session_state["params"]["sigma"] == pytest.approx(value)
        assert float(at.query_params["sigma"][0] if isinstance(at.query_params["sigma"], list)
                     else at.query_params["sigma"]) == pytest.approx(value)
        assert any(f"σ = {value:g}" in c.value for c in at.sidebar.caption)
        run = at.session_state["result"]
        if run is not None and data == "moons":  # moons regenerate on every move
            assert run.result.config.sigma == pytest.approx(value)


@pytest.mark.parametrize("page,query,words", [
    ("app_pages/map.py", {"map": "tsne"}, "map='tsne'"),
    ("app_pages/export.py", {"fig_w": "-1"}, "fig_w=-1"),
])
def test_page_level_link_values_that_are_changed_are_said(page, query, words):
    """Page-level link values were clamped silently (the sampler's values got a notice)."""
    at = AppTest.from_file(APP, default_timeout=180)
    for k, v in query.items():
        at.query_params[k] = v
    at.switch_page(page).run()
    assert not at.exception
    notes = " ".join(w.value for w in at.warning)
    assert "This link needed changes" in notes and words in notes, notes


def test_a_link_to_a_sample_beyond_the_run_says_which_one_is_shown():
    at = AppTest.from_file(APP, default_timeout=120)
    for k, v in {"data": "moons", "n": "8", "sample": "99999"}.items():
        at.query_params[k] = v
    at.switch_page("app_pages/sources.py").run()  # the link opens the Sources page itself
    assert not at.exception and not errors(at)
    assert "sample=99999 is beyond this run's 8 samples: showing #7." in notices(at)
    at.switch_page("app_pages/generate.py").run()
    assert notices(at).count("sample=99999") == 1  # said once, kept until dismissed


def test_a_link_to_a_sample_beyond_the_run_is_clamped_on_the_generate_page_too():
    """Generate showed "Selected sample: #99999" with nothing outlined and no notice."""
    at = AppTest.from_file(APP, default_timeout=120)
    for k, v in {"data": "moons", "n": "8", "sample": "99999"}.items():
        at.query_params[k] = v
    at.switch_page("app_pages/generate.py").run()
    assert not at.exception and not errors(at)
    assert "sample=99999 is beyond this run's 8 samples: showing #7." in notices(at)
    assert any("Selected sample: **#7**" in c.value for c in at.caption)
