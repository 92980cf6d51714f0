"""Generated data roots (tools.make_data) and the command-line flags of end-to-end runs on them.
The session-wide roots are the fixtures `small_root` / `generated_root_factory` (conftest.py)."""
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


def common_flags(root: Path, output: Path, config: str = "bert_config.json",
                 load_lxmert: bool = True) -> list[str]:
    """The flags every end-to-end run on a generated root needs: data, model config, CPU, no
    loader workers, the output folder and (with `load_lxmert`) the generated encoder."""
    flags = ["--dataRoot", str(root), "--modelConfig", str(root / config), "--device", "cpu",
             "--numWorkers", "0", "--output", str(output)]
    if load_lxmert:
        flags += ["--loadLXMERT", str(root / "model")]
    return flags
