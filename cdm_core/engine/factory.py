"""The one place the sampler's options become a training set and a strategy."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from cdm_core.config import SamplerConfig
from cdm_core.engine import strategies
from cdm_core.engine.screen import ScreenedStrategy
from cdm_core.engine.sharded import ShardedSet, ShardedStrategy
from cdm_core.engine.strategies import DenseStrategy, FactorisedStrategy, Strategy, screen_is_certified
from cdm_core.engine.training_set import TrainingSet, prepare
from cdm_core.engine.truncated import TruncatedStrategy
from cdm_core.errors import CdmInputError
from cdm_core.runtime import adapt_allocator


@contextmanager
def opened(data, config: SamplerConfig, prepared=None):
    """The training set a run works on: `prepared` when given; otherwise the cached local one, or
    the Ray actors holding the shards (started for the run and stopped after it)."""
    if prepared is not None:
        yield check_prepared(data, config, prepared)
    elif config.backend == "ray":
        with ShardedSet.open(data, config) as ts:
            yield ts
    else:
        yield prepare(data, config)


def check_prepared(data, config: SamplerConfig, prepared):
    """`prepared`, after checking that in latent space it holds the latents (never the data
    themselves, whose rows would be read as latents)."""
    if config.space == "latent":
        from cdm_core.latent.space import latent_space
        want = latent_space(data, config).dataset.content_hash
        if getattr(prepared, "describe", {}).get("content_hash") != want:
            raise CdmInputError("the prepared training set is not this data set's latent space (prepare it with "
                                "the same space, latent_dim and ae_weights)")
    return prepared


def make_strategy(ts: TrainingSet, log_pi: np.ndarray, neighbours: int = 64, truncation_tol: float = 1e-6) -> Strategy:
    """The strategy for the index the training set was prepared for (`TrainingSet.kind`)."""
    adapt_allocator()  # steady step latency in any process (cdm_core/runtime.py)
    if isinstance(ts, ShardedSet):
        return ShardedStrategy(ts, log_pi)
    if ts.kind == "exact":
        return DenseStrategy(ts, log_pi)
    if ts.kind == "auto":
        # the screen trades float64 products for data-dependent gathers: a gain on a CPU, a loss on
        # a GPU, whose float64 products are cheap and whose gathers cost launches and host syncs
        if ts.device.type == "cpu" and ts.n * ts.dim >= strategies.SCREEN_MIN_VALUES and screen_is_certified():
            return ScreenedStrategy(ts, log_pi)
        return FactorisedStrategy(ts, log_pi)
    return TruncatedStrategy(ts, log_pi, neighbours, truncation_tol)
