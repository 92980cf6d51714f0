"""The declared dependencies match the imports: every module the code imports is the standard
library, the project itself, or listed in setup.py; every listed package is used; and
requirements.txt lists exactly what setup.py does (minus the opt-in extras)."""
from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# import name -> distribution name, where the two differ
DISTRIBUTION_OF = {"PIL": "pillow", "easy_vqa": "easy-vqa"}
# extras that requirements.txt leaves to the user (a build matching torch, or optional parts
# whose tests skip without them; .ci/run installs those)
OPT_IN_EXTRAS = {"backbone", "phrases", "tensorboard", "demo", "browser"}

pytestmark = pytest.mark.skipif(sys.version_info < (3, 10),
                                reason="sys.stdlib_module_names needs Python 3.10")


def _setup_lists() -> tuple[list[str], dict[str, list[str]]]:
    """INSTALL_REQUIRES and EXTRAS_REQUIRE read from setup.py without running it."""
    found = {}
    for node in ast.parse((ROOT / "setup.py").read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            found[node.targets[0].id] = ast.literal_eval(node.value)
    return found["INSTALL_REQUIRES"], found["EXTRAS_REQUIRE"]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower()


def _imported_distributions(folder: Path) -> dict[str, set[str]]:
    """distribution -> files importing it, for every absolute import anywhere in `folder`'s
    .py files (lazy imports inside functions included) that is neither stdlib nor local."""
    project = {p.name for p in (ROOT / "src").iterdir() if (p / "__init__.py").is_file()}
    local = project | {folder.name} | {p.stem for p in folder.glob("*.py")}
    local |= {p.name for p in folder.iterdir() if (p / "__init__.py").is_file()}
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in local:
                    continue
                dist = DISTRIBUTION_OF.get(top, top).lower()
                found.setdefault(dist, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_import_is_declared_and_every_declared_package_is_used():
    install, extras = _setup_lists()
    core = {_name(r) for r in install}
    extra = {key: {_name(r) for r in reqs} for key, reqs in extras.items()}
    src = _imported_distributions(ROOT / "src")
    bench = _imported_distributions(ROOT / "bench")
    tests = _imported_distributions(ROOT / "tests")

    everything = core.union(*extra.values())
    assert not set(src) - everything, {d: src[d] for d in set(src) - everything}
    assert not set(bench) - core - extra["bench"], set(bench) - core - extra["bench"]
    # tests may probe the opt-in extras (a test checks the clear error without torchvision)
    allowed_in_tests = core | extra["test"] | set().union(*(extra[k] for k in OPT_IN_EXTRAS))
    assert not set(tests) - allowed_in_tests, set(tests) - allowed_in_tests

    # nothing listed that no code needs (pandas and transformers were, once)
    from lxrt.tokenization import FALLBACK_PACKAGE  # located by name, holds the vocab
    used = set(src) | set(bench) | set(tests) | {FALLBACK_PACKAGE.replace("_", "-"), "pytest"}
    assert core <= set(src), core - set(src)
    assert everything <= used, everything - used


def test_requirements_txt_lists_what_setup_py_does():
    install, extras = _setup_lists()
    declared = {_name(r) for r in install}
    for key, reqs in extras.items():
        if key not in OPT_IN_EXTRAS:
            declared |= {_name(r) for r in reqs}
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    listed = {_name(line.split("#")[0]) for line in lines if line.split("#")[0].strip()}
    assert listed == declared, (listed - declared, declared - listed)


def test_run_info_is_written_without_optional_packages(tmp_path, monkeypatch):
    # transformers was imported by every run only to record its version, so a machine
    # without it crashed at the start of training
    from tasks.common.trainer import Task, Trainer
    monkeypatch.setitem(sys.modules, "transformers", None)  # any import of it now fails
    fake = SimpleNamespace(is_main=True, args=SimpleNamespace(batch_size=8, resume=False),
                           device=torch.device("cpu"), output=tmp_path,
                           dist=SimpleNamespace(world_size=1), task=Task())
    Trainer.write_run_info(fake, ["--batchSize", "8"])
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["argv"] == ["--batchSize", "8"] and info["versions"]["torch"] == torch.__version__
    assert "transformers" not in info["versions"]


def test_installed_version_of_a_missing_distribution_is_none():
    from tasks.common.runtime import installed_version
    assert installed_version("no-such-distribution-lxmert-s") is None
    assert installed_version("numpy") is not None
