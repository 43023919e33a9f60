"""The denoiser protocol: what the sampler, the sensitivity recursion and every page ask of a model.

A model is an object that, for a batch of states x at time t, returns the posterior-mean denoiser
D(x, t) ~ E[x_1 | x_t = x] and what it was made of: its sources (training ids and weights whose
blend reproduces D), the weights of every smoothing draw when asked for (sensitivity), and a
bound on what it left out (`blend.StepResult`). States live in the training set's centred
coordinates (training_set.py). The Euler sampler (sampler.py) runs any model with the same
per-sample seeds, so sample i starts from the same noise under every model.

Adding a model is one small module: a class with the members of `Denoiser`, registered in
`MODELS` under the name `SamplerConfig.model` accepts (config.MODELS), plus its tests
(docs/architecture.md, "Adding a model").
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from cdm_core.config import MODELS as MODEL_NAMES, SamplerConfig
from cdm_core.engine.blend import StepResult
from cdm_core.engine.factory import make_strategy, strategy_name
from cdm_core.engine.gaussian import Gaussian
from cdm_core.engine.local import EquivariantLocalScore, LocalScore
from cdm_core.errors import CdmInputError
from cdm_core.runtime import adapt_allocator


@runtime_checkable
class Denoiser(Protocol):
    name: str  # the registry name, recorded in every result
    training_set: object  # TrainingSet or a sharded set: the centred points states are drawn around
    log_pi: np.ndarray  # (N,) float64 log training weights, -inf where pi = 0 (start points ~ pi)
    supports_sensitivity: bool  # whether `denoise(..., draws=True)` returns every draw's weights
    source_kind: str  # what its sources are: "convex" (a blend of whole items that reproduces the
    #                   sample), "affine" (signed weights summing to one that reproduce it), or
    #                   "item shares" (each item's share of per-pixel sources, StepResult.pixels)

    def begin(self, scaled: torch.Tensor):
        """Per-batch state from the batch's smoothing draws sigma eps (B, M, D), fixed along its
        trajectories (a model without smoothing ignores them)."""

    def denoise(self, state, x: torch.Tensor, t: float, sources: bool = False, draws: bool = False) -> StepResult:
        """D(x, t) for states x (B, D) at time t in [0, 1), with sources / draw weights on request."""

    def describe(self) -> dict:
        """What runs: the model's name and its evaluation choices (recorded in results)."""


class CFDM:
    """sigma-CFDM: D_sigma(x, t) = (1/M) sum_m D(x + sigma eps_m, t), the closed-form denoiser of the
    training set smoothed over fixed draws (blend.py); sigma = 0 is the exact empirical model. It
    is evaluated by one of the strategies of strategies.py, chosen by `factory.make_strategy`
    from the index the training set was prepared for."""

    name = "cfdm"
    supports_sensitivity = True
    source_kind = "convex"  # non-negative weights over whole items that reproduce the sample

    def __init__(self, training_set, log_pi: np.ndarray, config: SamplerConfig):
        self.training_set, self.log_pi = training_set, log_pi
        self.strategy = make_strategy(training_set, log_pi, config.neighbours, config.truncation_tol)

    def begin(self, scaled):
        return self.strategy.begin(scaled)

    def denoise(self, state, x, t, sources=False, draws=False):
        return self.strategy.step(state, x, t, sources=sources, draws=draws)

    def describe(self) -> dict:
        ts = self.training_set
        return {"model": self.name, "strategy": strategy_name(self.strategy), "index": ts.kind,
                "device": str(ts.device), "backend": "ray" if getattr(ts, "sharded", False) else "local",
                "sources": self.source_kind}


MODELS = {"cfdm": CFDM, "gaussian": Gaussian, "ls": LocalScore, "els": EquivariantLocalScore}


def build_model(training_set, log_pi: np.ndarray, config: SamplerConfig) -> Denoiser:
    """The model `config.model` over a prepared training set."""
    adapt_allocator()  # every model, not only cfdm's strategies: steady step latency (cdm_core/runtime.py)
    try:
        cls = MODELS[config.model]
    except KeyError:
        raise CdmInputError(f"model must be one of {', '.join(MODEL_NAMES)}, got {config.model!r}") from None
    return cls(training_set, log_pi, config)
