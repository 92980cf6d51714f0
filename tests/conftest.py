import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
FIXTURES = ROOT / "tests" / "fixtures"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The tests run many tiny models; on a 2-core machine one intra-op thread is fastest and avoids
# oversubscription when a test starts subprocesses (DDP, kill tests).
os.environ.setdefault("OMP_NUM_THREADS", "1")
try:
    import torch

    torch.set_num_threads(int(os.environ.get("LXRT_TEST_THREADS", "1")))
except ImportError:  # pragma: no cover
    pass

import pytest  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: end-to-end runs, subprocesses and other tests over a second or two; "
                   "`pytest -m \"not slow\"` is the fast tier (under a minute)")
    config.addinivalue_line("markers", "browser: drives a real headless Chromium (skipped "
                                       "where Debian's chromium and chromium-driver are absent)")


@pytest.fixture(scope="session")
def generated_root_factory(tmp_path_factory):
    """Generated data roots (tools.make_data, small model), one per (images, dim, seed), shared
    by every test of the session; a test that changes files works on a copy."""
    from tools.make_data import make_data
    roots = {}

    def make(images: int = 16, dim: int = 32, seed: int = 0):
        key = (images, dim, seed)
        if key not in roots:
            out = tmp_path_factory.mktemp(f"data_{images}x{dim}_seed{seed}") / "data"
            make_data(out, images=images, dim=dim, seed=seed, small_model=True)
            roots[key] = out
        return roots[key]

    return make


@pytest.fixture(scope="session")
def small_root(generated_root_factory):
    """The generated data root the end-to-end task tests read: 16 images, 32-d features."""
    return generated_root_factory()
