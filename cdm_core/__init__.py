"""cdm_core: closed-form (smoothed) diffusion models, their samples' sources and sensitivities.

The engine behind cfdm-explorer; usable as a library and as a CLI (`python -m cdm_core`, or
`cfdm`). It never imports Streamlit. Each layer imports only those before it (docs/architecture.md):
Layers, lowest first: foundation -> data -> engine -> latent -> pipeline -> analysis -> report -> cli
(foundation: `config`, `errors`, `settings`, `runtime`, `patches`; `engine` is pure, arrays in and out).
"""

from cdm_core.config import SamplerConfig
from cdm_core.data.dataset import Dataset
from cdm_core.data.registry import REGISTRY, load
from cdm_core.errors import CdmInputError, DatasetUnavailable

__all__ = ["SamplerConfig", "Dataset", "REGISTRY", "load", "sample", "SampleResult",
           "CdmInputError", "DatasetUnavailable"]
__version__ = "0.2.0"



def __getattr__(name: str):
    # imported on first use: torch takes about a second to import
    if name == "sample":
        from cdm_core.pipeline.run import sample
        return sample
    if name == "SampleResult":
        from cdm_core.engine.sampler import SampleResult
        return SampleResult
    raise AttributeError(f"module 'cdm_core' has no attribute {name!r}")
