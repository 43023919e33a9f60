"""AppTest for the model zoo: the Model choice and each model's controls on Generate, the patch
mosaic on Sources, comparing models from the same seeds, and bad model links."""

import numpy as np
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT

APP = str(ROOT / "app.py")


def opened(page: str, **query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    for k, v in query.items():
        at.query_params[k] = v
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def errors(at):
    return [e.value for e in at.error]


def captions(at) -> str:
    return " ".join(c.value for c in at.caption)


def test_model_choice_shows_each_models_controls_and_runs_it():
    at = opened("app_pages/generate.py", data="digits", n="8")
    assert at.session_state["result"].result.config.model == "cfdm"
    assert at.slider(key="w_sigma") is not None
    at.segmented_control(key="w_model").set_value("gaussian").run()
    assert not at.exception and not errors(at)
    res = at.session_state["result"].result
    assert res.config.model == "gaussian" and res.config.sigma == 0.0 and res.ran["sources"] == "affine"
    assert not [s for s in at.slider if s.key == "w_sigma"]  # σ smooths cfdm only: not offered
    assert "mean and covariance" in captions(at)
    at.segmented_control(key="w_model").set_value("ls").run()
    assert not at.exception and not errors(at)
    assert at.selectbox(key="w_patch_kind").value == "fashion-resnet"
    at.selectbox(key="w_patch_kind").set_value("one size").run()
    at.slider(key="w_patch_size").set_value(3).run()
    assert not at.exception and not errors(at)
    res = at.session_state["result"].result
    assert res.config.model == "ls" and res.ran["patch_sizes"] == [3] * res.config.steps
    assert "Patch sizes per step" in captions(at) and "floating-point operations" in captions(at)
    assert st_param(at, "patch_schedule") == "3" and st_param(at, "model") == "ls"  # the link carries both


def st_param(at, key):
    return at.session_state["params"][key]


def test_sources_page_shows_the_patch_mosaic_and_a_picked_pixel():
    at = opened("app_pages/sources.py", data="digits", model="els", patch_schedule="5", n="4", steps="10")
    assert not errors(at)
    text = " ".join(m.value for m in at.markdown)
    assert "Patch mosaic" in text and "Items that gave the largest regions" in text and "New mosaic" in text
    res = at.session_state["result"].result
    assert res.pixel_source_ids.shape[:2] == (4, 64)
    at.session_state["w_mosaic_pixel_0"] = 27  # what a click on the map's pixel (3, 3) sets
    at.run()
    assert not at.exception
    assert any(m.value.startswith("**Pixel (3, 3)**") for m in at.markdown)
    table = at.dataframe[0].value
    assert list(table.columns) == ["item", "row", "col", "weight"]
    assert np.isclose(table["weight"].sum() + res.pixel_source_omitted[0, 27], 1.0, atol=1e-9)


def test_compare_a_pinned_cfdm_run_with_els_from_the_same_seeds():
    at = opened("app_pages/generate.py", data="digits", n="6", steps="10", sigma="0")
    at.button(key="w_pin").click().run()
    at.segmented_control(key="w_model").set_value("els").run()
    at.selectbox(key="w_patch_kind").set_value("one size").run()
    assert not at.exception and not errors(at)
    labels = [m.label for m in at.metric]
    assert "Median pixel Pearson r" in labels and "Median r² = 1 − SS_res/SS_tot" in labels
    pinned, current = at.session_state["pinned_run"].result, at.session_state["result"].result
    assert pinned.config.model == "cfdm" and current.config.model == "els"
    r = float(next(m.value for m in at.metric if m.label == "Median pixel Pearson r"))
    assert -1.0 <= r <= 1.0


def test_bad_model_links_are_said_and_replaced():
    at = opened("app_pages/generate.py", data="moons", model="ls")
    notes = " ".join(w.value for w in at.warning)
    assert "model=ls works on images" in notes
    assert at.session_state["params"]["model"] == "cfdm"
    at = opened("app_pages/generate.py", data="digits", model="ls", patch_schedule="4", n="4")
    assert "patch_schedule='4': patch sizes must be odd" in " ".join(w.value for w in at.warning)
    assert not errors(at) and at.session_state["result"].result.config.patch_schedule == "fashion-resnet"
    at = opened("app_pages/generate.py", data="digits", model="nope")
    assert "model='nope' is not one of" in " ".join(w.value for w in at.warning)
