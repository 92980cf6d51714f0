"""A generated data root (tools.make_data) shared by the end-to-end tests of one session."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_root(path: Path, images: int = 64, dim: int = 64, no_dropout: bool = False) -> Path:
    subprocess.run([sys.executable, "-m", "tools.make_data", str(path), "--images", str(images),
                    "--dim", str(dim), "--small-model"], check=True, capture_output=True,
                   env=_env())
    if no_dropout:  # for runs that must match across process counts exactly
        config = json.loads((path / "bert_config.json").read_text())
        config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        (path / "bert_config_nodrop.json").write_text(json.dumps(config))
    return path


def _env():
    import os
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def common_flags(root: Path, output: Path, config: str = "bert_config.json") -> list[str]:
    return ["--dataRoot", str(root), "--modelConfig", str(root / config),
            "--loadLXMERT", str(root / "model"), "--device", "cpu", "--numWorkers", "0",
            "--output", str(output)]
