import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# Property tests draw the same examples on every run (seeded per test), so CI is deterministic;
# widen the search locally with HYPOTHESIS_PROFILE=explore.
settings.register_profile("deterministic", derandomize=True, database=None, max_examples=60)
settings.register_profile("explore", max_examples=500, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Hermetic: every test session starts from an empty cache of its own (decoded data sets, trained
# autoencoders, maps, shards), so a test takes the same path on every run, first or second, and
# never reads what an earlier run or the user's dashboard left behind. Servers the browser tests
# start inherit it.
_SESSION_CACHE = tempfile.mkdtemp(prefix="cfdm-test-cache-")
os.environ["CDM_CACHE_DIR"] = _SESSION_CACHE
atexit.register(shutil.rmtree, _SESSION_CACHE, ignore_errors=True)

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


def source_matrix(res, n_train: int):
    """A result's sources as a dense (samples, N) weight matrix: order-free comparisons."""
    import numpy as np
    out = np.zeros((len(res.source_ids), n_train))
    for i, (ids, w) in enumerate(zip(res.source_ids, res.source_weights)):
        ok = ids >= 0
        np.add.at(out[i], ids[ok], w[ok])
    return out
