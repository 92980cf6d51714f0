"""The application's shape: every task folder has the same files with the same jobs, tasks
share code only through `tasks.common` (and VQA/GQA through `tasks.qa`), and the model library
knows nothing of the tasks."""
import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
TASKS = SRC / "tasks"
TASK_FILES = ("data.py", "model.py", "task.py", "main.py")
# the task folders; `qa` holds what VQA and GQA share, so their folders hold only main.py
FULL_TASKS = ("nlvr2", "retrieval", "pretrain")
QA_ENTRY_POINTS = ("vqa", "gqa")
SHARED_PACKAGES = ("common", "qa")


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


def test_the_task_folders_are_the_known_ones():
    assert _task_packages() == sorted(FULL_TASKS + QA_ENTRY_POINTS + SHARED_PACKAGES)


@pytest.mark.parametrize("task", FULL_TASKS)
def test_every_task_folder_has_data_model_task_and_main(task):
    missing = [f for f in TASK_FILES if not (TASKS / task / f).is_file()]
    assert not missing, f"tasks/{task} lacks {missing}"


def test_qa_holds_the_vqa_and_gqa_code_and_their_folders_the_entry_points():
    assert all((TASKS / "qa" / f).is_file() for f in ("data.py", "model.py", "task.py"))
    for task in QA_ENTRY_POINTS:
        assert (TASKS / task / "main.py").is_file()
        extra = {p.name for p in (TASKS / task).glob("*.py")} - {"__init__.py", "main.py"}
        assert not extra, f"tasks/{task} should hold only main.py, found {sorted(extra)}"


def test_no_task_imports_another_tasks_module_or_private_names():
    offences = []
    for package in _task_packages():
        if package == "common":
            allowed = {"common"}
        elif package in QA_ENTRY_POINTS:
            allowed = {"common", "qa", package}
        else:
            allowed = {"common", package}
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


@pytest.mark.parametrize("library", ["lxrt", "butd"])
def test_the_model_libraries_do_not_import_the_application(library):
    other = {"lxrt": "butd", "butd": "lxrt"}[library]
    offences = [f"{path.relative_to(SRC)} imports {module}"
                for path in (SRC / library).glob("*.py")
                for module in _imported_modules(path)
                if module.split(".")[0] in ("tasks", "tools", other)]
    assert not offences, "\n".join(offences)


def test_the_check_sees_a_cross_task_import(tmp_path):
    """The AST walk finds both import forms, so the checks above can fail."""
    sample = tmp_path / "sample.py"
    sample.write_text("import tasks.nlvr2.data\nfrom tasks.retrieval.data import _private\n")
    modules = _imported_modules(sample)
    assert "tasks.nlvr2.data" in modules and "tasks.retrieval.data._private" in modules
