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

import contextlib  # noqa: E402
import signal  # noqa: E402

import pytest  # noqa: E402

# A phase (setup, call, teardown) of one test that runs longer than this many seconds fails
# with a traceback instead of holding the whole run until the CI's limit: a hung worker or
# lock wait then costs one test, not the run. The slowest test takes about a minute on 2 cores.
PHASE_TIMEOUT_S = int(os.environ.get("LXRT_TEST_TIMEOUT", "600"))


class PhaseTimeout(Exception):
    pass


@contextlib.contextmanager
def _deadline(item, phase: str):
    if PHASE_TIMEOUT_S <= 0 or not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum, frame):
        raise PhaseTimeout(f"{item.nodeid}: {phase} ran over {PHASE_TIMEOUT_S} s "
                           "(LXRT_TEST_TIMEOUT)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(PHASE_TIMEOUT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    with _deadline(item, "setup"):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    with _deadline(item, "call"):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item):
    with _deadline(item, "teardown"):
        yield


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
