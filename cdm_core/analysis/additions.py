"""What if we add these items? Re-sample with new training items and measure the actual change.

No derivative is used here on purpose: at zero weight, a new item that is closer to a sample
than its current sources takes over its blend abruptly as its weight grows, so a first-order
prediction can be wrong by the whole move. Instead the training set is extended, every random
number is kept (per-sample seeds), and each sample is compared with itself.

Samples can move without ever blending an added item: at t = 0 every training item has the
same blend weight, so any addition changes the early drift of every sample (more so the farther
the item lies from the data). `added_share` tells the two effects apart.

With weight w, each added item gets w times the mean weight of the existing items (w = 1: as
likely as a typical training item). In latent space the new items are encoded by the same
autoencoder and the extended latent set is sampled and decoded, so the autoencoder is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cdm_core.analysis.dust import length_dust
from cdm_core.config import SamplerConfig
from cdm_core.data.dataset import Dataset
from cdm_core.data.files import check_points
from cdm_core.engine.blend import normalise_log_weights
from cdm_core.errors import CdmInputError
from cdm_core.pipeline.inputs import as_dataset
from cdm_core.pipeline.run import sample

MAX_ADDED = 10_000


@dataclass
class Addition:
    original: np.ndarray  # (n, D) samples of the training set as it is (data units)
    actual: np.ndarray  # (n, D) the same seeds with the items added
    displacement: np.ndarray  # (n,) |actual - original|, data units
    added_share: np.ndarray  # (n,) blend weight the added items carry in each new sample
    added_sources: list  # per sample, the added items (0-based among the added) with weight >= 1e-3
    n_added: int
    weight: float  # relative weight of each added item (1 = a mean training item)
    moved_tol: float  # displacements at or below this are dust, no move (data units; analysis/dust.py)

    @property
    def moved(self) -> np.ndarray:
        """Ids of the samples that moved, largest move first."""
        ids = np.flatnonzero(self.displacement > self.moved_tol)
        return ids[np.argsort(-self.displacement[ids], kind="stable")]


def add_items(data, config: SamplerConfig, items, weight: float = 1.0, weights=None) -> Addition:
    """Sample `config` on `data`, then on `data` plus `items` ((k, D) in the data's units, or a
    Dataset) with every added item weighted `weight` x the mean existing weight, and compare."""
    ds = as_dataset(data)
    new = items.points if isinstance(items, Dataset) else items
    new = check_points("added items", np.asarray(new))
    if new.shape[1] != ds.dim:
        raise CdmInputError(f"added items have {new.shape[1]} values each, the training set {ds.dim}")
    if not 1 <= len(new) <= MAX_ADDED:
        raise CdmInputError(f"add between 1 and {MAX_ADDED} items, got {len(new)}")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not np.isfinite(weight) or weight <= 0:
        raise CdmInputError(f"the added items' weight must be a positive number, got {weight!r}")
    if config.backend != "local":
        raise CdmInputError("additions run in one process (backend local)")
    if config.start > 0:  # the start item is drawn from the training weights, which the addition changes
        raise CdmInputError("additions compare each sample with itself from the same start, which needs start time "
                            "T = 0 (with T > 0 the start item is drawn from the weights the addition changes)")
    base_w = np.ones(ds.n) if weights is None else np.asarray(weights, np.float64)
    normalise_log_weights(base_w, ds.n)  # validates the given weights
    new_w = np.concatenate([base_w, np.full(len(new), weight * float(base_w.mean()))])
    original = sample(ds, config, weights=weights)
    if config.space == "latent":
        from cdm_core.latent.space import latent_space
        space = latent_space(ds, config)
        lat = np.concatenate([space.latents, space.encode(new).astype(np.float32)])
        grown = sample(Dataset(f"{ds.name} + {len(new)} added (latent)", lat),
                       config.replace(space="data", ae_weights=""), weights=new_w)
        actual = space.decode(grown.samples)
    else:
        grown = sample(Dataset(f"{ds.name} + {len(new)} added", np.concatenate([ds.points, new]), ds.image_shape),
                       config, weights=new_w)
        actual = grown.samples
    is_new = grown.source_ids >= ds.n
    share = np.where(is_new, grown.source_weights, 0.0).sum(1)
    srcs = [sorted({int(j) - ds.n for j, w in zip(ids, ws) if j >= ds.n and w >= 1e-3})
            for ids, ws in zip(grown.source_ids, grown.source_weights)]
    return Addition(original.samples, actual, np.linalg.norm(actual - original.samples, axis=1), share, srcs,
                    len(new), float(weight), length_dust(ds.points))
