"""A latent run's result: the engine's plain `SampleResult` decoded into data units, with the
latents it blended kept beside the images."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cdm_core.engine.sampler import SampleResult


@dataclass
class LatentSampleResult(SampleResult):
    """`samples` and `trajectory` are decoded (data units); source ids, `nn_ids` and `nn_dist`
    refer to the training latents, `pixel_nn_*` to the training items in data units."""

    latents: np.ndarray | None = None  # (n, K) float64: the sampler's output, sum_k w_k z_{id_k}
    train_latents: np.ndarray | None = None  # (N, K) float64: encoder outputs of the training set
    latent_trajectory: np.ndarray | None = None  # (S + 1, n, K) when a trajectory is kept
    pixel_nn_ids: np.ndarray | None = None  # (n, nearest): nearest training items to the decoded samples
    pixel_nn_dist: np.ndarray | None = None  # (n, nearest): their distances in data units
    space: dict = field(default_factory=dict)  # LatentSpace.describe(): autoencoder hash, errors

    OPTIONAL = ("trajectory", "latents", "train_latents", "latent_trajectory", "pixel_nn_ids", "pixel_nn_dist")

    @property
    def blend_space_points(self) -> np.ndarray:
        return self.latents

    @property
    def data_nearest(self) -> tuple[np.ndarray, np.ndarray]:
        return self.pixel_nn_ids, self.pixel_nn_dist
