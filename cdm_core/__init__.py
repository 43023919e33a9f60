"""cdm_core: closed-form (smoothed) diffusion models, their samples' sources and sensitivities.

The engine behind cfdm-explorer; usable as a library and as a CLI (`python -m cdm_core`, or
`cfdm`). It never imports Streamlit. Layers, each importing only those before it:
`config`/`errors`/`settings` -> `data` -> `engine` -> `analysis` -> `report` -> `cli`
(docs/architecture.md).
"""

from cdm_core.config import SamplerConfig
from cdm_core.data.dataset import Dataset
from cdm_core.data.registry import REGISTRY, load
from cdm_core.errors import CdmInputError, DatasetUnavailable

__all__ = ["SamplerConfig", "Dataset", "REGISTRY", "load", "sample", "SampleResult",
           "CdmInputError", "DatasetUnavailable"]
__version__ = "0.2.0"

_ENGINE = {"sample", "SampleResult"}  # imported on first use: torch takes about a second to import


def __getattr__(name: str):
    if name in _ENGINE:
        from cdm_core.engine import sampler
        return getattr(sampler, name)
    raise AttributeError(f"module 'cdm_core' has no attribute {name!r}")
