"""`sample`: from a data set and a configuration to a result, through the engine.

The engine (cdm_core.engine) samples a model over prepared points; this layer owns what lies
around it: the prepared set (cached or checked, prepared.py), Ray's actors (shards.py), the
training weights file, and in latent space the autoencoder (the latent space wraps the engine:
encode the training set, sample the latents, decode the samples).
"""

from __future__ import annotations

import time

import numpy as np

from cdm_core.config import SamplerConfig
from cdm_core.data.files import read_npy_bytes
from cdm_core.engine.blend import normalise_log_weights
from cdm_core.engine.models import build_model
from cdm_core.engine.sampler import SampleResult, sample_model
from cdm_core.errors import CdmInputError
from cdm_core.latent.results import LatentSampleResult
from cdm_core.latent.space import latent_space
from cdm_core.pipeline.prepared import opened, prepare


def sample(data, config: SamplerConfig, weights=None, callback=None, prepared=None, noise=None) -> SampleResult:
    """Draw `config.n_samples` samples. `data`: a `Dataset` or an (N, D) array (a shard manifest
    with backend ray); `weights`: N non-negative training weights (default uniform); `prepared`:
    a training set from `prepare(data, config)`; `callback(info)` after every step (the engine's
    `step_info`; also the autoencoder's training on a first latent run); `noise` (n, D): start
    states at t = 0 to run from instead of the seeded noise (data space, start 0)."""
    if noise is not None and (config.space != "data" or config.subset):
        raise CdmInputError("a run from given noise needs space data and no subset")
    if config.subset:
        return _on_subset(data, config, weights, callback, prepared)
    space = latent_space(data, config, callback) if config.space == "latent" else None
    t0 = time.perf_counter()  # after the autoencoder is ready: a first latent run's training is not sampling time
    with opened(data, config, prepared) as ts_set:
        sharded = getattr(ts_set, "sharded", False)
        before = (ts_set.bytes_moved, ts_set.calls) if sharded else None
        model = build_model(ts_set, normalise_log_weights(weights, ts_set.n), config)
        res = sample_model(model, config, callback, noise=noise)
        if sharded:
            from cdm_core.pipeline.shards import sharded_result
            res = sharded_result(res, ts_set, *before)
    res.weights_given = weights is not None
    if space is not None:
        res = decoded(res, space, config)
    res.seconds = time.perf_counter() - t0
    return res


def _on_subset(data, config: SamplerConfig, weights, callback, prepared) -> SampleResult:
    """A run on the nested subset `config.subset` (data/subsets.py), its ids mapped back to the
    full set's: sources, nearest items and start items index the data set as given."""
    from cdm_core.data.subsets import subset
    from cdm_core.pipeline.inputs import as_dataset
    ds = as_dataset(data)
    part, ids = subset(ds, config.subset)
    if prepared is not None and getattr(prepared, "describe", {}).get("content_hash") != part.content_hash:
        prepared = None  # prepared for the whole set, not this subset
    w = None
    if weights is not None:
        w = np.asarray(weights)
        if w.shape != (ds.n,):
            raise CdmInputError(f"weights: expected {ds.n} training weights, got shape {w.shape}")
        w = w[ids]
    res = sample(part, config.replace(subset=0), weights=w, callback=callback, prepared=prepared)
    res.config = config

    def full(a):
        return None if a is None else np.where(a >= 0, ids[np.clip(a, 0, None)], -1)
    res.source_ids, res.nn_ids, res.start_ids = full(res.source_ids), full(res.nn_ids), ids[res.start_ids]
    if res.pixel_source_ids is not None:
        res.pixel_source_ids = full(res.pixel_source_ids)
    res.dataset = dict(ds.describe()) | {"subset": int(len(ids)), "subset_of": ds.n}
    return res


def decoded(res: SampleResult, space, config: SamplerConfig) -> LatentSampleResult:
    """A latent run in data units: samples (and trajectory) decoded, latents kept beside them,
    and the nearest training items to each decoded sample measured in data units too."""
    out = res.extended(LatentSampleResult)
    out.latents, out.train_latents = res.samples, space.latents.astype(np.float64)
    out.samples = space.decode(out.latents)
    if res.trajectory is not None:
        out.latent_trajectory = res.trajectory
        steps, n, k = res.trajectory.shape
        out.trajectory = space.decode(res.trajectory.reshape(-1, k)).reshape(steps, n, -1)
    pixels = prepare(space.data, config.replace(space="data", ae_weights="", index="exact"))
    out.pixel_nn_ids, out.pixel_nn_dist = pixels.nearest(out.samples, config.nearest)
    out.dataset, out.space = space.data.describe(), space.describe()
    return out


def check_weights_file(path: str, n: int) -> np.ndarray:
    """Load a `.npy` of N training weights (never unpickled) and validate it."""
    try:
        raw = open(path, "rb").read()
    except OSError as e:
        raise CdmInputError(f"{path}: cannot read weights ({e.strerror})") from None
    w = read_npy_bytes(path, raw)
    normalise_log_weights(w, n, name=path)
    return w
