"""Session state, caching and URL sync for the dashboard.

- Data sets and their prepared neighbour indexes live in `st.cache_resource` (shared by all
  sessions, read-only); results live in `st.session_state` (per session), so switching pages never
  recomputes what is already there.
- Sampler parameters are kept in `st.session_state["params"]` (not in widget keys, which Streamlit
  drops when a page is left) and mirrored into the URL query string so a link reopens the view.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import streamlit as st

from cdm_core import SamplerConfig, patches, sample
from cdm_core.config import MODELS, OPTIONS, PATCH_MODELS
from cdm_core.data.dataset import Dataset
from cdm_core.data.files import load_bytes
from cdm_core.data.registry import DEFAULT_DATASET, REGISTRY, availability, load
from cdm_core.engine.sampler import fraction_done
from cdm_core.errors import CdmInputError
from cdm_core.pipeline.prepared import prepare

UPLOAD_PREFIX = "upload:"
# Query-string names of the parameters, and how to parse them.
# The sampler settings a link carries, by their outside names (cdm_core.config.OPTIONS parses them).
URL_PARAMS = ("model", "patch_schedule", "subset", "sigma", "draws", "steps", "start", "n", "seed", "neighbours",
              "index", "backend", "shards",
              "space", "latent_dim")
LATENT_SIGMA = 0.5  # default latent smoothing: latents have unit RMS per coordinate, so one value suits every set


def defaults_for(name: str, space: str = "data") -> dict:
    entry = REGISTRY.get(name)
    sigma = LATENT_SIGMA if space == "latent" else entry.default_sigma if entry else 0.1
    return {"model": "cfdm", "patch_schedule": "", "subset": 0, "sigma": sigma, "draws": 4,
            "steps": 100 if entry is None or entry.kind == "toy" else 20,
            "start": 0.0, "n": 64, "seed": 0, "neighbours": 64, "index": "auto", "backend": "local", "shards": 0,
            "space": space, "latent_dim": 16}


@st.cache_resource(show_spinner="Loading data set…", max_entries=8)
def cached_dataset(name: str) -> Dataset:
    return load(name)


@st.cache_resource(show_spinner="Building the neighbour index…", max_entries=8)
def cached_prepared(content_hash: str, index: str, _dataset: Dataset):
    return prepare(_dataset, SamplerConfig(index=index))


# The range each setting's widget offers: a link outside it is clamped, with a notice.
UI_LIMITS = {"sigma": (0.0, 1e6), "draws": (1, 32), "steps": (1, 200), "start": (0.0, 0.95), "n": (1, 1024),
             "seed": (0, 2**31 - 1), "neighbours": (1, 1024), "shards": (0, 64), "latent_dim": (2, 64),
             "subset": (0, 100_000_000)}
CHOICES = {"model": MODELS, "index": ("auto", "exact", "flat", "ivf"), "backend": ("local", "ray"),
           "space": ("data", "latent")}
# Page-level settings a link carries besides the sampler's (URL key -> default, as text).
VIEW_PARAMS = {"map": "umap", "top": "6", "sweep": "", "figs": "samples,sources", "fig_w": "3.25", "fig_h": "2.6",
               "dpi": "300", "font": "", "fs": "8", "bg": "white", "fmt": "png,svg,pdf", "colour": "NN ratio",
               "place": "mean of blend sources", "sweep_n": "32", "seeds": "3",
               "mem_sizes": "", "mem_models": "", "mem_sigmas": "", "mem_n": "64", "mem_seeds": "1"}


def _link_params(qp, name: str, notices: list[str]) -> dict:
    """The sampler settings of a link for data set `name`: each parsed, checked against its
    widget's range (clamped) or choices, with one notice per value that was changed."""
    params = defaults_for(name)
    for key in URL_PARAMS:
        if key not in qp:
            continue
        raw = qp[key]
        if key == "model" and raw in PATCH_MODELS and name in REGISTRY and REGISTRY[name].kind != "image":
            notices.append(f"model={raw} works on images and {name} is not an image data set: using cfdm.")
            continue
        if key in CHOICES:
            if raw in CHOICES[key]:
                params[key] = raw
            else:
                notices.append(f"{key}={raw!r} is not one of {', '.join(CHOICES[key])}: using {params[key]}.")
            continue
        try:
            value = OPTIONS[key][1](raw)
            if isinstance(value, float) and not np.isfinite(value):
                raise ValueError(raw)
        except (ValueError, OverflowError):
            notices.append(f"{key}={raw!r} is not a valid number: using {params[key]}.")
            continue
        lo, hi = UI_LIMITS.get(key, (value, value))
        clamped = type(value)(min(max(value, lo), hi))
        if clamped != value:
            notices.append(f"{key}={raw} is outside {lo:g}–{hi:g}: clamped to {clamped:g}.")
        params[key] = clamped
    if params.get("patch_schedule"):
        try:
            patches.parse(params["patch_schedule"], int(params["steps"]))
        except patches.ScheduleError as e:
            notices.append(f"patch_schedule={params['patch_schedule']!r}: {e}; using {patches.DEFAULT_PRESET}.")
            params["patch_schedule"] = ""
    return params


def init() -> None:
    """First run of a session: defaults, then whatever the URL says. Anything in the link that
    cannot be used as given is clamped or replaced, and said so (`link_notices`)."""
    ss = st.session_state
    if "params" in ss:
        return
    qp = st.query_params
    notices: list[str] = []
    name = qp.get("data", DEFAULT_DATASET)
    usable = True
    if name == "upload":
        notices.append("This link was made with an uploaded file, which a link cannot carry: upload it again on "
                       f"the Data page. Showing {DEFAULT_DATASET} with its default settings.")
        name, usable = DEFAULT_DATASET, False
    elif name not in REGISTRY:
        notices.append(f"Unknown data set {name!r} in the link: showing {DEFAULT_DATASET} with its default settings "
                       f"(known: {', '.join(REGISTRY)}).")
        name, usable = DEFAULT_DATASET, False
    elif not availability(name)[0]:
        notices.append(f"Data set {name!r} is not available here ({availability(name)[1]}): showing "
                       f"{DEFAULT_DATASET} with its default settings.")
        name, usable = DEFAULT_DATASET, False
    ss.dataset_name = name
    params = _link_params(qp, name, notices) if usable else defaults_for(name)
    if usable and "sigma" not in qp and params.get("space") == "latent":
        params["sigma"] = LATENT_SIGMA  # each space has its own default smoothing
    if REGISTRY[name].kind == "toy" and params.get("space") == "latent":
        notices.append(f"{name} is point data, which has no latent space: using the data space.")
        params["space"] = "data"
    try:
        config_from(params)
    except CdmInputError as e:
        notices.append(f"The link's settings do not combine ({e}): using the defaults.")
        params = defaults_for(name)
    ss.params = params
    ss.result = None
    raw_sample = str(qp.get("sample", "0"))
    plain = raw_sample.isascii() and raw_sample.isdigit() and len(raw_sample) <= 9  # not '²', not 10**400
    ss.selected_sample = int(raw_sample) if plain else 0
    ss.link_sample = ss.selected_sample if plain and "sample" in qp else None
    if not plain:
        notices.append(f"sample={raw_sample!r} is not a sample number: selecting #0.")
    ss.view = {k: qp[k] for k in VIEW_PARAMS if usable and k in qp}
    ss.uploads = {}
    ss.link_notices = notices


def link_notices() -> list[str]:
    return st.session_state.get("link_notices", [])


def dismiss_link_notices() -> None:
    st.session_state.link_notices = []


def view(key: str) -> str:
    """A page-level setting as the link gives it (text), or its default."""
    return st.session_state.get("view", {}).get(key, VIEW_PARAMS[key])


def notice_once(key: str, message: str) -> None:
    """Say once per session that a page-level link value was changed (`link_notices`)."""
    seen = st.session_state.setdefault("noticed_views", set())
    if key not in seen:
        seen.add(key)
        st.session_state.setdefault("link_notices", []).append(message)


def view_number(key: str, lo: float, hi: float, integer: bool = False) -> float:
    """A numeric page setting from the link, clamped to [lo, hi] (the default when unreadable),
    with a notice when the link's value was changed."""
    raw = view(key)
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value):
        value = float(VIEW_PARAMS[key])
        notice_once(key, f"{key}={raw!r} is not a number: using {value:g}.")
    elif not lo <= value <= hi:
        clamped = min(max(value, lo), hi)
        notice_once(key, f"{key}={raw} is outside {lo:g}..{hi:g}: using {clamped:g}.")
        value = clamped
    if integer and value != int(value):
        value = int(value)
    return int(value) if integer else value


def set_view(key: str, value) -> None:
    text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    st.session_state.setdefault("view", {})[key] = text


def sync_url() -> None:
    ss = st.session_state
    wanted = {"data": ss.dataset_name if not ss.dataset_name.startswith(UPLOAD_PREFIX) else "upload"}
    wanted |= {k: str(v) for k, v in ss.params.items()}
    wanted["sample"] = str(ss.get("selected_sample", 0))
    wanted |= {k: v for k, v in ss.get("view", {}).items() if v != VIEW_PARAMS[k]}
    if {k: st.query_params.get(k) for k in wanted} != wanted:
        st.query_params.update(wanted)


def nice_ceiling(x: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least x (> 0)."""
    k = math.floor(math.log10(x))
    for f in (1.0, 2.0, 2.5, 5.0, 10.0):
        if f * 10.0 ** k >= x * (1 - 1e-12):
            return float(f"{f * 10.0 ** k:.12g}")
    return 10.0 ** (k + 1)


def sigma_range(name: str, space: str, sigma: float) -> tuple[float, float]:
    """(maximum, step) of the σ slider for a data set and space: decided once per session, when
    the set is first shown (from its default σ and the σ it is shown with, such as a link's), and
    never again, so the range cannot change under the user's hand."""
    ranges = st.session_state.setdefault("sigma_ranges", {})
    key = (name, space)
    if key not in ranges:
        top = nice_ceiling(max(1.0, 4 * defaults_for(name, space)["sigma"], 2 * sigma))
        ranges[key] = (top, nice_ceiling(top / 200))
    return ranges[key]


def config_from(params: dict, **extra) -> SamplerConfig:
    """The sampler configuration of the page's settings. Each model takes only its own settings:
    sigma and draws smooth cfdm alone, a patch schedule belongs to ls and els; the others are kept
    in the settings (and the link) for when the user switches back, but not sent."""
    p = dict(params)
    model = p.get("model", "cfdm")
    if model != "cfdm":
        p["sigma"], p["draws"] = 0.0, 1
    if model not in PATCH_MODELS:
        p["patch_schedule"] = ""
    return SamplerConfig.from_options(p, **extra)


# ------------------------------------------------------------------ typed accessors
# Pages read and write session state only through these, never through another page's widget key.
def params() -> dict:
    """The sampler settings in outside names (`cdm_core.config.OPTIONS`), as the URL holds them."""
    return st.session_state.params


def set_params(p: dict) -> None:
    st.session_state.params = dict(p)


def dataset_name() -> str:
    return st.session_state.dataset_name


def is_upload(name: str | None = None) -> bool:
    return (name or dataset_name()).startswith(UPLOAD_PREFIX)


def data_spec() -> str:
    """How a manifest names the data: the registry name, or the bundled file for an upload."""
    from cdm_core.report.export import UPLOADED_DATA
    return UPLOADED_DATA if is_upload() else dataset_name()


def selected_sample(n: int | None = None) -> int:
    """The selected sample, clamped to [0, n) when the number of samples is given (with a notice
    the first time a link's sample number is beyond the run)."""
    ss = st.session_state
    i = int(ss.get("selected_sample", 0))
    if not n:
        return i
    shown = min(max(i, 0), n - 1)
    if ss.get("link_sample") is not None:  # said once, and only of the link's own value
        if ss.link_sample == i and shown != i:
            notice_once("sample", f"sample={i} is beyond this run's {n} samples: showing #{shown}.")
        ss.link_sample = None
    return shown


def select_sample(i: int) -> None:
    st.session_state.selected_sample = int(i)


def map_method() -> str:
    """The Map page's method ("umap" or "pca"); other pages (Export) read it from here."""
    method = view("map")
    if method not in ("umap", "pca"):
        notice_once("map", f"map={method!r} is not a map method here (umap or pca): using umap.")
        set_view("map", "umap")
        return "umap"
    return method


def set_map_method(method: str) -> None:
    set_view("map", method)


def session_cache(name: str, key, compute=None):
    """One-entry cache per `name` in this session: `compute()` when `key` changed, else the
    stored value (heavy results are kept for one configuration at a time, bounding memory).
    Without `compute`, only a look-up: the stored value for `key`, or None."""
    cache = st.session_state.setdefault(f"cache_{name}", {})
    if key not in cache:
        if compute is None:
            return None
        value = compute()
        cache.clear()
        cache[key] = value
    return cache[key]


def computed(name: str, key, label: str, work):
    """`session_cache(name, key)` of `work(callback)`, with a progress bar while it runs; an input
    error becomes one error line (nothing else changes) and None."""
    def compute():
        bar = st.progress(0.0, text=f"{label}…")
        try:
            return work(progress_callback(bar, label))
        finally:
            bar.empty()
    try:
        return session_cache(name, key, compute)
    except CdmInputError as e:
        st.error(f"Could not finish ({label}): {e}. Nothing else changed.")
        return None


def current_dataset() -> Dataset:
    name = st.session_state.dataset_name
    if name.startswith(UPLOAD_PREFIX):
        return st.session_state.uploads[name]
    return cached_dataset(name)


# The Generate page's widgets for `params`: those always drawn (widget key -> parameter), then the rest.
PARAM_WIDGETS = {"w_sigma": "sigma", "w_draws": "draws", "w_steps": "steps", "w_start": "start", "w_n": "n",
                 "w_seed": "seed", "w_neighbours": "neighbours", "w_index": "index"}
OTHER_WIDGETS = ("w_backend", "w_shards", "w_space", "w_latent_dim")


def sync_param_widgets() -> None:
    """Set the Generate page's widgets to `params` after a programmatic change (a data set or
    space switch): a keyed widget otherwise keeps the value the browser last sent, and would show
    one setting while the run uses another. Widgets drawn only sometimes are reset."""
    p = st.session_state.params
    for key, name in PARAM_WIDGETS.items():
        if name == "index":
            st.session_state[key] = p[name] if p[name] in ("auto", "exact", "flat", "ivf") else "auto"
        else:
            st.session_state[key] = float(p[name]) if name in ("sigma", "start") else int(p[name])
    for key in OTHER_WIDGETS:
        st.session_state.pop(key, None)


def set_dataset(name: str) -> None:
    ss = st.session_state
    if name == ss.dataset_name:
        return
    ss.dataset_name = name
    keep = {k: ss.params[k] for k in ("n", "seed", "index")}
    ds = current_dataset()
    space = ss.params.get("space", "data") if ds.is_image else "data"  # point data have no latent space
    ss.params = defaults_for(name, space) | keep
    sync_param_widgets()
    ss.result = None
    ss.selected_sample = 0


def add_upload(file_name: str, raw: bytes) -> str:
    """Validate an upload; on success it becomes the current data set. Raises CdmInputError."""
    ds = load_bytes(file_name, raw)
    key = f"{UPLOAD_PREFIX}{file_name}#{hashlib.sha256(raw).hexdigest()[:8]}"
    st.session_state.uploads[key] = ds
    set_dataset(key)
    st.session_state.params["sigma"] = float(np.round(0.1 * ds.points.std() * np.sqrt(ds.dim), 3)) or 0.1
    sync_param_widgets()
    return key


def dataset_choices() -> list[str]:
    names = [n for n in REGISTRY if availability(n)[0]]
    return names + list(st.session_state.uploads)


def name_for(name: str) -> str:
    """A data set's short name: the registry name, or an upload's file name."""
    if name.startswith(UPLOAD_PREFIX):
        return f"⬆ {name[len(UPLOAD_PREFIX):].split('#')[0]}"
    return name


def label_for(name: str) -> str:
    if name.startswith(UPLOAD_PREFIX):
        return f"⬆ {name[len(UPLOAD_PREFIX):].split('#')[0]}"
    return f"{name} — {REGISTRY[name].summary}"


def items_used(ds: Dataset, cfg: SamplerConfig) -> int:
    """Training items a run uses: its subset, or all."""
    return min(cfg.subset, ds.n) if cfg.subset else ds.n


INTERACTIVE_WORK = 2e10  # floating-point work (SamplerConfig.work) regenerated as a slider moves


def is_interactive(ds: Dataset, cfg: SamplerConfig) -> bool:
    """Small enough (well under a second here) that moving a slider regenerates at once (never
    on Ray, whose actors take seconds to start)."""
    if cfg.space == "latent":  # only once the autoencoder exists: training takes seconds to minutes
        from cdm_core.latent.space import is_ready
        return ds.is_image and is_ready(ds, cfg) and cfg.work(ds.n, cfg.latent_dim) <= INTERACTIVE_WORK
    return cfg.backend == "local" and cfg.work(items_used(ds, cfg), ds.dim, ds.image_shape) <= INTERACTIVE_WORK


@dataclass
class Run:
    result: object
    key: tuple
    dataset_name: str


def result_key(ds: Dataset, cfg: SamplerConfig, weights_hash: str = "") -> tuple:
    return (ds.content_hash, cfg.to_json(), weights_hash)


def current_run() -> Run | None:
    return st.session_state.get("result")


def progress_callback(bar, label: str, every_s: float = 0.2):
    """A sampler callback that drives a Streamlit progress bar, at most once per `every_s` seconds
    (each update is a message to the browser: a 100-step toy run would otherwise send 100)."""
    import time
    last = [time.perf_counter()]

    def callback(info):
        now = time.perf_counter()
        if now - last[0] < every_s and fraction_done(info) < 1:
            return
        last[0] = now
        if "stage" in info:  # e.g. training the autoencoder before a first latent run
            bar.progress(fraction_done(info), text=f"{info['stage'].capitalize()}: step {info['step']}/{info['steps']}")
            return
        where = f"setting {info['setting']}/{info['settings']}" if "setting" in info else \
            f"batch {info['batch']}/{info['batches']}"
        bar.progress(fraction_done(info), text=f"{label}: {where}, step {info['step']}/{info['steps']}")
    return callback


def require_run(ds: Dataset) -> Run | None:
    """`ensure_run`, or a note with a link to the Generate page when there is nothing to show."""
    run = ensure_run(ds)
    if run is None:
        st.info("No samples yet for this data set.")
        st.page_link("app_pages/generate.py", label="Generate samples →", icon=":material/auto_awesome:")
    return run


def latent_space_of(ds: Dataset, cfg: SamplerConfig):
    """The run's latent space (from memory: a latent run has opened it), or None in data space."""
    if cfg.space != "latent":
        return None
    from cdm_core.latent.space import latent_space
    return latent_space(ds, cfg)


# Runs expected to take longer than about a quarter of a second here (samples x draws x N x D x
# steps, `SamplerConfig.work`) show a progress bar; shorter ones do not, because adding and
# removing the bar re-lays out the page below it, which cost more than the run on small sets.
PROGRESS_MIN_WORK = 3e9


def shows_progress(ds: Dataset, cfg: SamplerConfig) -> bool:
    if cfg.space == "latent" or cfg.backend != "local":  # autoencoder training, actors starting
        return True
    return cfg.work(items_used(ds, cfg), ds.dim, ds.image_shape) > PROGRESS_MIN_WORK


class _NoBar:
    def progress(self, *args, **kwargs) -> None:
        pass

    def empty(self) -> None:
        pass


_SPREADS: dict[str, float] = {}


def train_spread(ds: Dataset) -> float:
    """Mean pairwise distance of the training items (the diversity metric's denominator), computed
    once per data set instead of on every slider move."""
    if ds.content_hash not in _SPREADS:
        from cdm_core.analysis.metrics import mean_pairwise_distance
        _SPREADS[ds.content_hash] = mean_pairwise_distance(ds.points)
    return _SPREADS[ds.content_hash]


def run_sampler(ds: Dataset, cfg: SamplerConfig) -> Run | None:
    """Sample with a progress bar (long runs only); errors become one inline message and keep the
    old result."""
    bar = st.progress(0.0, text="Sampling…") if shows_progress(ds, cfg) else _NoBar()
    callback = progress_callback(bar, "Sampling")

    try:
        prep = cached_prepared(ds.content_hash, cfg.index, ds) if cfg.backend == "local" and cfg.space == "data" \
            else None
        res = sample(ds, cfg, callback=callback, prepared=prep)
    except CdmInputError as e:
        bar.empty()
        st.error(f"Could not sample: {e}")
        return None
    except MemoryError:
        bar.empty()
        st.error("Out of memory: ask for fewer samples or draws.")
        return None
    except Exception as e:  # never a raw traceback in the UI
        bar.empty()
        st.error(f"Sampling failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}")
        return None
    bar.empty()
    run = Run(res, result_key(ds, cfg), st.session_state.dataset_name)
    st.session_state.result = run
    n = res.samples.shape[0]
    # a link's own sample number beyond the run is clamped with a notice by `selected_sample`
    if st.session_state.get("selected_sample", 0) >= n and st.session_state.get("link_sample") is None:
        st.session_state.selected_sample = 0
    return run


def ensure_run(ds: Dataset) -> Run | None:
    """The current run for this data set; recomputed from the URL's settings when cheap (results
    are deterministic, so a shared link reopens the same view)."""
    run = current_run()
    if run is not None and run.key[0] == ds.content_hash:
        return run
    try:
        cfg = config_from(st.session_state.params, trajectory=not ds.is_image)
    except CdmInputError:
        return None
    return run_sampler(ds, cfg) if is_interactive(ds, cfg) else None


def guard(fn):
    """Run a page body; any unexpected error becomes one message instead of a traceback."""
    try:
        fn()
    except CdmInputError as e:
        st.error(str(e))
    except Exception as e:
        st.error(f"Something went wrong: {type(e).__name__}: {' '.join(str(e).split())[:300]}")
