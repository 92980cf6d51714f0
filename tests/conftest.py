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
