"""cdm_core: closed-form (smoothed) diffusion models, their samples' sources and sensitivities.

The engine behind cfdm-explorer; usable as a library and as a CLI (`python -m cdm_core`).
It never imports Streamlit.
"""

from .config import SamplerConfig
from .datasets import REGISTRY, Dataset, load
from .errors import CdmInputError, DatasetUnavailable
from .sampler import SampleResult, sample

__all__ = ["SamplerConfig", "Dataset", "REGISTRY", "load", "sample", "SampleResult",
           "CdmInputError", "DatasetUnavailable"]
__version__ = "0.1.0"
