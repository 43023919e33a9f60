"""The one place a sampler `index` option becomes a strategy (strategies.py, screen.py, truncated.py)."""

from __future__ import annotations

import numpy as np

from cdm_core.engine import strategies
from cdm_core.engine.screen import ScreenedStrategy
from cdm_core.engine.strategies import DenseStrategy, FactorisedStrategy, Strategy, screen_is_certified
from cdm_core.engine.training_set import TrainingSet
from cdm_core.engine.truncated import TruncatedStrategy


def make_strategy(ts: TrainingSet, log_pi: np.ndarray, neighbours: int = 64, truncation_tol: float = 1e-6) -> Strategy:
    """The strategy for the index the training set was prepared for (`TrainingSet.kind`)."""
    if ts.kind == "exact":
        return DenseStrategy(ts, log_pi)
    if ts.kind == "auto":
        if ts.n * ts.dim >= strategies.SCREEN_MIN_VALUES and screen_is_certified():
            return ScreenedStrategy(ts, log_pi)
        return FactorisedStrategy(ts, log_pi)
    return TruncatedStrategy(ts, log_pi, neighbours, truncation_tol)
