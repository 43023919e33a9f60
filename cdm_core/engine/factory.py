"""The one place the sampler's options become an evaluation strategy of the sigma-CFDM model."""

from __future__ import annotations

import numpy as np

from cdm_core.engine import strategies
from cdm_core.engine.screen import ScreenedStrategy
from cdm_core.engine.sharded import ShardedStrategy
from cdm_core.engine.strategies import DenseStrategy, FactorisedStrategy, Strategy, screen_is_certified
from cdm_core.engine.training_set import TrainingSet
from cdm_core.engine.truncated import TruncatedStrategy
from cdm_core.runtime import adapt_allocator


def make_strategy(ts: TrainingSet, log_pi: np.ndarray, neighbours: int = 64, truncation_tol: float = 1e-6) -> Strategy:
    """The strategy for the index the training set was prepared for (`TrainingSet.kind`)."""
    adapt_allocator()  # steady step latency in any process (cdm_core/runtime.py)
    if getattr(ts, "sharded", False):  # held by shard actors (cdm_core.pipeline.shards)
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


def strategy_name(strategy) -> str:
    """What ran, in the words of docs/architecture.md: dense, factorised, screened, truncated or sharded."""
    return {DenseStrategy: "dense", FactorisedStrategy: "factorised", ScreenedStrategy: "screened",
            TruncatedStrategy: "truncated", ShardedStrategy: "sharded"}.get(type(strategy), type(strategy).__name__)
