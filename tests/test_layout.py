"""The application's shape, read from the task registry: every task folder declares itself
(`entry.py`) and has an entry point (`main.py`), tasks share code only through `tasks.common`
(and the packages their entries say they share, VQA and GQA `tasks.qa`), shared code never
names a task, and the model library knows nothing of the tasks."""
import ast
import importlib
import re
from pathlib import Path

import pytest

from tasks.common import registry

SRC = Path(__file__).resolve().parents[1] / "src"
TASKS = SRC / "tasks"
ENTRIES = list(registry.entries().values())
FOLDERS = sorted({e.folder.split(".")[1] for e in ENTRIES})
SHARED = sorted({s for e in ENTRIES for s in e.shares})
# code every task may use, which must not name one (the registry's list of folders aside)
SHARED_CODE = [p for p in sorted((TASKS / "common").glob("*.py")) if p.name != "registry.py"]
SHARED_CODE += [SRC / "tools" / f for f in ("predictor.py", "predict.py", "attention_map.py",
                                            "plot_metrics.py")]


def _imported_modules(path: Path) -> list[str]:
    modules = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.append(node.module)
            modules += [f"{node.module}.{alias.name}" for alias in node.names]
    return modules


def _task_packages() -> list[str]:
    return sorted(p.name for p in TASKS.iterdir()
                  if p.is_dir() and (p / "__init__.py").is_file())


def test_the_task_folders_are_the_registered_ones():
    assert _task_packages() == sorted({"common", *FOLDERS, *SHARED})
    assert FOLDERS and len(ENTRIES) >= len(FOLDERS)


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_task_folder_declares_itself_and_has_an_entry_point(folder):
    assert (TASKS / folder / "entry.py").is_file() and (TASKS / folder / "main.py").is_file()
    main = importlib.import_module(f"tasks.{folder}.main")
    assert callable(main.main) and callable(main.build_parser)
    declared = importlib.import_module(f"tasks.{folder}.entry").ENTRIES
    assert declared and all(e.folder == f"tasks.{folder}" for e in declared)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_every_entry_is_complete(entry):
    for kind, declared in entry.files.items():
        assert declared.what and declared.dirs and declared.source, (entry.name, kind)
    if entry.predict is not None:
        assert entry.predict in registry.PREDICT_MODES and callable(entry.build_model)
    assert entry.tiny_images > 0 and entry.fast_images > 0 and entry.num_images >= 1
    parser = importlib.import_module(entry.main).build_parser()
    dests = {a.dest for a in parser._actions}
    for name, recipe in entry.recipes.items():
        unknown = set(recipe) - dests
        assert not unknown, f"{entry.name} recipe {name} sets unknown settings {unknown}"


def test_every_launcher_recipe_is_declared():
    """The launchers pass `--recipe NAME` (or set `recipe=NAME`), and each NAME is a recipe of
    the registry; none repeats a default layer count."""
    recipes = {name for e in ENTRIES for name in e.recipes}
    named = set()
    for path in sorted((SRC.parent / "run").glob("*.bash")):
        text = path.read_text()
        named.update(re.findall(r"--recipe ([a-z_0-9]+)", text))
        named.update(re.findall(r"\brecipe=([a-z_0-9]+)", text))
        if path.name != "easyvqa_pretrain.bash":
            assert "--xlayers 5" not in text, path.name
    assert len(named) >= 10 and named <= recipes, named - recipes


def test_no_task_imports_another_tasks_module_or_private_names():
    offences = []
    shares = {folder: set() for folder in FOLDERS}
    for entry in ENTRIES:
        shares[entry.folder.split(".")[1]].update(entry.shares)
    for package in _task_packages():
        allowed = {"common", package, *shares.get(package, ())}
        for path in (TASKS / package).glob("*.py"):
            for module in _imported_modules(path):
                parts = module.split(".")
                if parts[0] != "tasks" or len(parts) < 2:
                    continue
                if parts[1] not in allowed:
                    offences.append(f"{path.relative_to(SRC)} imports {module}")
                if parts[1] != package and any(p.startswith("_") for p in parts[2:]):
                    offences.append(f"{path.relative_to(SRC)} imports private {module}")
    assert not offences, "\n".join(offences)


def _named_tasks(path: Path, base: Path = SRC) -> list[str]:
    names = set(registry.entries())
    return [f"{path.relative_to(base)}:{node.lineno} names {node.value!r}"
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and node.value in names]


def test_shared_code_never_names_a_task():
    offences = [line for path in SHARED_CODE for line in _named_tasks(path)]
    assert not offences, "\n".join(offences)


@pytest.mark.parametrize("library", ["lxrt", "butd"])
def test_the_model_libraries_do_not_import_the_application(library):
    other = {"lxrt": "butd", "butd": "lxrt"}[library]
    offences = [f"{path.relative_to(SRC)} imports {module}"
                for path in (SRC / library).glob("*.py")
                for module in _imported_modules(path)
                if module.split(".")[0] in ("tasks", "tools", other)]
    assert not offences, "\n".join(offences)


def test_the_checks_see_a_cross_task_import_and_a_named_task(tmp_path):
    """The AST walks find both import forms and a task's name, so the checks above can fail."""
    sample = tmp_path / "sample.py"
    sample.write_text("import tasks.nlvr2.data\nfrom tasks.retrieval.data import _private\n"
                      "MODE = 'nlvr2'\n")
    modules = _imported_modules(sample)
    assert "tasks.nlvr2.data" in modules and "tasks.retrieval.data._private" in modules
    assert _named_tasks(sample, tmp_path) == ["sample.py:3 names 'nlvr2'"]
