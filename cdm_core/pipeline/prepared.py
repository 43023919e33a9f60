"""Prepared training sets: built once per (data, device, index) and cached, so the dashboard and
repeated library calls pay for them once; a set a caller prepared is checked against the request
before anything runs on it."""

from __future__ import annotations

import threading
from collections import OrderedDict
from contextlib import contextmanager

import numpy as np
import torch

from cdm_core.config import SamplerConfig
from cdm_core.data.dataset import Dataset
from cdm_core.engine import training_set
from cdm_core.engine.training_set import TrainingSet, index_backend, resolve_device
from cdm_core.errors import CdmInputError
from cdm_core.pipeline.inputs import as_dataset

_CACHE: "OrderedDict[tuple, TrainingSet]" = OrderedDict()
_CACHE_SIZE = 4
_LOCK = threading.Lock()


def sampled_dataset(data, config: SamplerConfig) -> Dataset:
    """The points the sampler runs on: the data, or their latents in latent space."""
    ds = as_dataset(data)
    if config.space == "latent":
        from cdm_core.latent.space import latent_space
        return latent_space(ds, config).dataset
    return ds


def prepare(data, config: SamplerConfig) -> TrainingSet:
    """The TrainingSet for `data` under `config` (space, device and index), from the cache when there."""
    ds = sampled_dataset(data, config)
    device = resolve_device(config.device)
    backend = index_backend(config.index, device)
    key = (ds.content_hash, str(device), config.index, config.nlist if backend == "ivf" else 0,
           config.nprobe if backend == "ivf" else 0)
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        # the centred points are the large part: every index kind on the same data and device shares them
        shared = next(((o.points, o.centre, o.points32) for o in _CACHE.values()
                       if o.describe["content_hash"] == ds.content_hash and o.device == device), None)
    ts = training_set.build(ds, config, shared)
    with _LOCK:
        _CACHE[key] = ts
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return ts


@contextmanager
def opened(data, config: SamplerConfig, prepared=None):
    """The training set a run works on: `prepared` when given (checked against the request);
    otherwise the cached local one, or the Ray actors holding the shards (started for the run and
    stopped after it)."""
    if prepared is not None:
        yield check_prepared(data, config, prepared)
    elif config.backend == "ray":
        from cdm_core.pipeline.shards import ShardedSet
        with ShardedSet.open(data, config) as ts:
            yield ts
    else:
        yield prepare(data, config)


def check_prepared(data, config: SamplerConfig, prepared):
    """`prepared`, after checking that it is what the request would have prepared: the same points
    (the data's latents in latent space, never the data themselves), backend, index (with its
    parameters) and device. A mismatch is a one-line error, so a result's config always states
    what ran."""
    sharded = getattr(prepared, "sharded", False)
    if sharded != (config.backend == "ray"):
        raise CdmInputError(f"the prepared training set is {'sharded' if sharded else 'local'}, the request asks "
                            f"for backend {config.backend}")
    if isinstance(data, (Dataset, np.ndarray, torch.Tensor)):
        want = sampled_dataset(data, config).content_hash
        if prepared.describe.get("content_hash") != want:
            what = "this data set's latent space (prepare it with the same space, latent_dim and ae_weights)" \
                if config.space == "latent" else "this data set (prepare it from the same data and space)"
            raise CdmInputError(f"the prepared training set is not {what}")
    if sharded:
        return prepared
    if prepared.kind != config.index:
        raise CdmInputError(f"the prepared training set was built for index {prepared.kind}, the request asks for "
                            f"index {config.index} (prepare it with the same index)")
    device = resolve_device(config.device)
    if prepared.device != device:
        raise CdmInputError(f"the prepared training set is on device {prepared.device}, the request asks for {device}")
    if index_backend(config.index, device) == "ivf" and \
            prepared.params != {"nlist": config.nlist, "nprobe": config.nprobe}:
        raise CdmInputError(f"the prepared training set's IVF index has {prepared.params}, the request asks for "
                            f"nlist {config.nlist} and nprobe {config.nprobe}")
    return prepared
