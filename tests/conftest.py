import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CDM_CACHE_DIR", str(ROOT / "test-artifacts" / "cache"))

ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def spread_points():
    """A few well-separated 2-D points: samples converge cleanly onto them."""
    rng = np.random.default_rng(3)
    return (rng.standard_normal((12, 2)) * 2).astype(np.float32)
