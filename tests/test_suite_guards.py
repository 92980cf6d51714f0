"""The suite's own guards (tests/conftest.py, pytest.ini): a hung test fails alone after
LXRT_TEST_TIMEOUT seconds, and a passing test leaves no temporary folder behind."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = '''
import time

def test_hangs():
    time.sleep(60)

def test_writes(tmp_path):
    (tmp_path / "big.bin").write_bytes(b"0" * 1000)
'''


@pytest.mark.slow
def test_a_hung_test_fails_alone_and_passing_tests_leave_no_files(tmp_path):
    # the suite's conftest.py and pytest.ini beside a probe test file, run as a suite of its own
    suite = tmp_path / "suite"
    (suite / "tests").mkdir(parents=True)
    shutil.copy(ROOT / "pytest.ini", suite / "pytest.ini")
    shutil.copy(ROOT / "tests" / "conftest.py", suite / "tests" / "conftest.py")
    (suite / "tests" / "test_probe.py").write_text(PROBE)
    basetemp = tmp_path / "basetemp"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests",
         f"--basetemp={basetemp}"], cwd=suite, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, LXRT_TEST_TIMEOUT="2"))
    elapsed = time.monotonic() - started
    assert "1 failed, 1 passed" in done.stdout, done.stdout[-2000:]
    assert "ran over 2 s (LXRT_TEST_TIMEOUT)" in done.stdout
    assert elapsed < 50  # the sleeping test was cut, not waited for
    assert not list(basetemp.rglob("big.bin")), "a passing test's folder was kept"
