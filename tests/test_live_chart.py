"""The chart updated in place (ui/live_chart.py): what it sends the browser and where its plotly.js
comes from. Its behaviour in the page (drawn once, updated on a σ move, clicks and boxes select)
is tested in the real browser (tests/test_browser.py)."""

import base64
import json
import threading
from pathlib import Path

import numpy as np
import plotly
import pytest
import streamlit as st

from cdm_core.report import figures
from ui import live_chart


def decoded(values) -> np.ndarray:
    """An array as plotly.js reads it: a list, or plotly.py's typed-array form (dtype, base64)."""
    if isinstance(values, dict):
        out = np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
        return out.reshape(values["shape"]) if "shape" in values else out
    return np.asarray(values)


@pytest.fixture
def static_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(live_chart, "STATIC", tmp_path / "static")
    live_chart.served_copy.cache_clear()
    yield tmp_path / "static"
    live_chart.served_copy.cache_clear()


def test_figure_json_keeps_the_data_and_drops_only_the_default_template():
    rng = np.random.default_rng(0)
    train, samples = rng.normal(size=(50, 2)), rng.normal(size=(7, 2))
    fig = figures.samples_scatter(train, samples, values=rng.uniform(size=7), highlight=3)
    spec = json.loads(live_chart.figure_json(fig))
    assert "template" not in spec["layout"]  # themed in the browser from the app's colours
    assert len(spec["data"]) == len(fig.data) == 3
    for sent, trace in zip(spec["data"], fig.data):
        np.testing.assert_array_equal(decoded(sent["x"]), np.asarray(trace.x, float))
        np.testing.assert_array_equal(decoded(sent["y"]), np.asarray(trace.y, float))
    assert decoded(spec["data"][1]["customdata"]).tolist() == list(range(7))  # the ids a click sends back
    assert spec["layout"]["dragmode"] == "select" and spec["layout"]["height"] == fig.layout.height


def serving_on(name):
    return True if name == "server.enableStaticServing" else None


def test_plotly_js_is_plotly_pys_own_copy_served_from_the_static_folder(static_dir, monkeypatch):
    monkeypatch.setattr(st, "get_option", serving_on)
    url = live_chart.plotly_js_url()
    assert url == f"app/static/plotly-{plotly.__version__}.min.js"
    copy = static_dir / f"plotly-{plotly.__version__}.min.js"
    assert copy.read_bytes() == live_chart.PLOTLY_SOURCE.read_bytes()
    assert [f.name for f in static_dir.iterdir()] == [copy.name]  # no partial copy left behind
    assert copy.stat().st_mode & 0o777 == 0o644
    written = copy.stat().st_mtime_ns
    live_chart.served_copy.cache_clear()
    assert live_chart.plotly_js_url() == url
    assert copy.stat().st_mtime_ns == written  # a whole copy already there is served as is


def test_a_truncated_copy_is_replaced(static_dir, monkeypatch):
    monkeypatch.setattr(st, "get_option", serving_on)
    static_dir.mkdir()
    copy = static_dir / f"plotly-{plotly.__version__}.min.js"
    copy.write_text("/* half a file */")
    live_chart.plotly_js_url()
    assert copy.stat().st_size == live_chart.PLOTLY_SOURCE.stat().st_size


def test_sessions_copying_at_once_all_get_the_whole_file(static_dir, monkeypatch):
    monkeypatch.setattr(st, "get_option", serving_on)
    urls = []

    def session():
        live_chart.served_copy.cache_clear()
        urls.append(live_chart.plotly_js_url())

    threads = [threading.Thread(target=session) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(urls)) == 1 and urls[0] is not None
    assert (static_dir / f"plotly-{plotly.__version__}.min.js").read_bytes() == live_chart.PLOTLY_SOURCE.read_bytes()
    assert len(list(static_dir.iterdir())) == 1


def test_no_plotly_js_url_without_static_serving(static_dir, monkeypatch):
    monkeypatch.setattr(st, "get_option", lambda name: False)
    assert live_chart.plotly_js_url() is None
    assert not static_dir.exists()  # nothing written


def test_no_plotly_js_url_where_the_static_folder_cannot_be_written(static_dir, monkeypatch, caplog):
    monkeypatch.setattr(st, "get_option", lambda name: True)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(live_chart.tempfile, "mkstemp", refuse)
    assert live_chart.plotly_js_url() is None  # the caller then draws with st.plotly_chart
    assert "cannot be served" in caplog.text
    monkeypatch.undo()  # writable again: the failure was not cached
    monkeypatch.setattr(st, "get_option", serving_on)
    monkeypatch.setattr(live_chart, "STATIC", static_dir)
    assert live_chart.plotly_js_url() is not None


@pytest.mark.parametrize("value,curves,expected", [
    ({"clicked": {"curve": 1, "id": 5, "t": 1}}, [1], (1, 5)),
    ({"selected": {"points": [[0, 513], [1, 7], [1, 9]], "t": 1}}, [1], (1, 7)),  # first selectable point
    ({"selected": {"points": [[0, 513]]}}, [1], None),  # a box around training points only
    ({"selected": {"points": [["x", None]]}}, [1], None),  # malformed: nothing selected, no error
    ({"clicked": {"curve": 1}}, [1], None),
    ({"clicked": {"curve": 0, "id": 513}}, [1], None),  # a click on a trace that selects nothing
    (None, [1], None),
])
def test_picked_point_reads_a_click_or_the_first_point_of_a_box(value, curves, expected):
    assert live_chart.picked_point(value, curves) == expected


class Attributes:  # Streamlit may hand the component's value as an attribute object
    def __init__(self, **kw):
        self.__dict__.update(kw)


def test_picked_point_reads_attribute_values():
    assert live_chart.picked_point(Attributes(clicked=None, selected={"points": [[1, 3]]}), [1]) == (1, 3)


def generate_page():
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("app_pages/generate.py").run()
    assert not at.exception
    return at


def test_generate_draws_the_samples_in_the_live_chart():
    at = generate_page()  # moons, the built-in default: generates by itself
    charts = [e for e in at.main if getattr(e, "type", "") == "bidi_component"
              and "cfdm_live_chart" in e.proto.component_name]
    assert len(charts) == 1
    data = json.loads(charts[0].proto.json)
    assert data["curves"] == [1] and data["plotly_url"].startswith("app/static/plotly-")
    spec = json.loads(data["figure"])
    assert [t["name"] for t in spec["data"]][:2] == ["training data", "samples"]
    assert len(decoded(spec["data"][1]["x"])) == 64


def test_generate_falls_back_to_st_plotly_chart_without_plotly_js(monkeypatch):
    monkeypatch.setattr(live_chart, "plotly_js_url", lambda: None)
    at = generate_page()
    assert [c.proto.id for c in at.get("plotly_chart")]  # the samples drawn the usual way
    assert not [e for e in at.main if getattr(e, "type", "") == "bidi_component"
                and "cfdm_live_chart" in e.proto.component_name]
