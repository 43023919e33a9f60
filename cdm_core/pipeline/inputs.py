"""What callers may pass as training data, turned into a `Dataset`."""

from __future__ import annotations

import numpy as np
import torch

from cdm_core.data.dataset import Dataset
from cdm_core.data.files import check_points
from cdm_core.errors import CdmInputError


def as_dataset(data) -> Dataset:
    """A `Dataset` from a Dataset, an (N, D) numpy array or a torch tensor (validated)."""
    if isinstance(data, Dataset):
        return data
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().numpy()
    if isinstance(data, np.ndarray):
        return Dataset(name="array", points=check_points("array", data), source="in-memory array")
    raise CdmInputError(f"data must be a Dataset or an (N, D) array, got {type(data).__name__}")
