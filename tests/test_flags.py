"""Command-line flags, launchers and the --tiny/--fast limits: bad values are refused with a
message naming the flag, every documented camelCase flag has a working kebab-case alias, the
launchers check their arguments before creating anything, and the --test split (and GQA
testdev) is never cut by --tiny/--fast."""
import dataclasses
import importlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from generated import ROOT, common_flags
from tasks.common import registry
from tasks.common.args import kebab
from tasks.gqa.main import build_parser as gqa_parser
from tasks.nlvr2.main import build_parser as nlvr2_parser
from tasks.qa.task import GQA_SPEC, VQA_SPEC, QATask
from tasks.retrieval.main import build_parser as retrieval_parser
from tasks.retrieval.task import RetrievalTask
from tasks.vqa.main import build_parser as vqa_parser
from tasks.vqa.main import main as vqa_main
from tools.demo import build_parser as demo_parser
from tools.export import build_parser as export_parser
from tools.predict import build_parser as predict_parser

# every registered task's entry point, by folder
PARSERS = {entry.folder.rsplit(".", 1)[1]:
           importlib.import_module(entry.main).build_parser
           for entry in registry.entries().values()}
# command-line tools beside the tasks: their documented flags follow the same alias rule
TOOL_PARSERS = {"predict": predict_parser, "export": export_parser, "demo": demo_parser}


# ------------------------------------------------------------------------------ values
BAD_VALUES = [
    (["--epochs", "0"], "--epochs 0"),
    (["--epochs", "-3"], "--epochs -3"),
    (["--checkpointEvery", "-1"], "--checkpointEvery -1"),
    (["--evalBatchSize", "0"], "--evalBatchSize 0"),
    (["--eval-batch-size", "-8"], "--evalBatchSize -8"),
    (["--output", ""], "--output ''"),
    (["--output", "  "], "--output ''"),
    (["--batchSize", "0"], "--batchSize 0"),
    (["--lr", "0"], "--lr 0.0"),
    (["--lr=-1e-4"], "--lr -0.0001"),
    (["--lr", "nan"], "--lr nan"),
    (["--lr", "inf"], "--lr inf"),
    (["--clipNorm", "inf"], "--clipNorm inf"),
    (["--warmup", "1.5"], "--warmup 1.5"),
    (["--warmup", "-0.1"], "--warmup -0.1"),
    (["--clipNorm", "0"], "--clipNorm 0.0"),
    (["--seed", "-1"], "--seed -1"),
    (["--seed", str(2 ** 32)], "--seed 4294967296"),
    (["--xlayers", "-1"], "--xlayers -1"),
    (["--numWorkers", "-2"], "--numWorkers -2"),
    (["--lengthBuckets", "-1"], "--lengthBuckets -1"),
    (["--stopAfterSteps", "-5"], "--stopAfterSteps -5"),
]


@pytest.mark.parametrize("task", sorted(PARSERS))
@pytest.mark.parametrize("argv,message", BAD_VALUES)
def test_bad_values_are_refused_naming_the_flag(task, argv, message):
    from tasks.common.args import validate_args
    args = PARSERS[task]().parse_args(argv)
    with pytest.raises(SystemExit, match=re.escape(message) + ": expected"):
        validate_args(args)


@pytest.mark.parametrize("argv,message", [
    (["--pairsPerForward", "0"], "--pairsPerForward 0"),
    (["--validImages", "0"], "--validImages 0"),
    (["--authorsScoring", "-1"], "--authorsScoring -1"),
])
def test_bad_retrieval_values_are_refused(argv, message):
    from tasks.common.args import validate_args
    with pytest.raises(SystemExit, match=re.escape(message) + ": expected"):
        validate_args(retrieval_parser().parse_args(argv))


@pytest.mark.parametrize("task", sorted(PARSERS))
def test_defaults_and_edge_values_pass(task):
    from tasks.common.args import validate_args
    validate_args(PARSERS[task]().parse_args([]))
    validate_args(PARSERS[task]().parse_args(["--epochs", "1", "--checkpointEvery", "0", "--warmup",
                                       "0", "--evalBatchSize", "1", "--numWorkers", "0",
                                       "--seed", "0", "--llayers", "0"]))


# ------------------------------------------------------------------------------ aliases
def documented_flags() -> set:
    """Every `--camelCase` flag named in README.md and docs/*.md."""
    texts = [(ROOT / "README.md").read_text()]
    texts += [p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))]
    found = set()
    for text in texts:
        found.update(re.findall(r"(?<![\w-])--[a-z][a-z0-9]*[A-Z][A-Za-z0-9]*", text))
    return found


def test_kebab_rule():
    assert kebab("--batchSize") == "--batch-size"
    assert kebab("--loadLXMERT") == "--load-lxmert"
    assert kebab("--loadLXMERTQA") == "--load-lxmertqa"
    assert kebab("--multiGPU") == "--multi-gpu"
    assert kebab("--fp16Features") == "--fp16-features"
    assert kebab("--tiny") == "--tiny"


def test_documented_flags_and_kebab_aliases_parse_in_every_task():
    documented = documented_flags()
    assert {"--loadLXMERT", "--loadLXMERTQA", "--batchSize", "--checkpointEvery"} <= documented
    for task, build in {**PARSERS, **TOOL_PARSERS}.items():
        actions = build()._option_string_actions
        for flag in documented:
            if flag not in actions:
                continue  # a flag of another task
            alias = kebab(flag)
            assert alias in actions, (task, flag, alias)
            assert actions[alias].dest == actions[flag].dest, (task, flag, alias)
    every = set().union(*(build()._option_string_actions
                          for build in [*PARSERS.values(), *TOOL_PARSERS.values()]))
    assert not documented - every, f"documented flags no parser knows: {documented - every}"


@pytest.mark.parametrize("task", sorted({**PARSERS, **TOOL_PARSERS}))
def test_every_camel_case_flag_has_a_working_alias(task):
    parser = {**PARSERS, **TOOL_PARSERS}[task]()
    for flag, action in parser._option_string_actions.items():
        if flag == kebab(flag):
            continue
        assert parser._option_string_actions.get(kebab(flag)) is action, (task, flag)


def test_load_lxmert_aliases_set_the_same_destinations():
    args = vqa_parser().parse_args(["--load-lxmert", "a", "--load-lxmert-qa", "b",
                                    "--multi-gpu", "--fp16-features", "--batch-size", "4"])
    assert (args.load_lxmert, args.load_lxmert_qa, args.multi_gpu, args.fp16_features,
            args.batch_size) == ("a", "b", True, True, 4)


# ------------------------------------------------------------------------------ launchers
LAUNCHERS = sorted((ROOT / "run").glob("*.bash"))
BAD_LAUNCH_ARGS = [[], ["0"], ["cpu"], ["gpu0", "x"], ["0,1,", "x"], ["0", ""],
                   ["0", "--tiny"], ["0", ".."], ["0", "."], ["0", "../../../escaped"],
                   ["0", "a/b"], ["cpu", "/tmp/absolute"]]


def _launch(script: Path, args, cwd: Path, dry_run: bool = False):
    env = dict(os.environ)
    env.pop("LXRT_DRY_RUN", None)
    if dry_run:
        env["LXRT_DRY_RUN"] = "1"
    return subprocess.run(["bash", str(script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.slow
@pytest.mark.parametrize("script", LAUNCHERS, ids=lambda p: p.name)
def test_launchers_refuse_bad_arguments_before_creating_anything(script, tmp_path):
    cwd = tmp_path / "a" / "b" / "c"
    cwd.mkdir(parents=True)
    for args in BAD_LAUNCH_ARGS:
        done = _launch(script, args, cwd)
        assert done.returncode == 2, (args, done.stderr)
        assert "usage: bash run/" in done.stderr, (args, done.stderr)
        created = [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")]
        assert created == ["a", "a/b", "a/b/c"], (args, created)


def test_launcher_dry_run_prints_the_command(tmp_path):
    done = _launch(ROOT / "run" / "vqa_finetune.bash", ["cpu", "run1", "--tiny"], tmp_path,
                   dry_run=True)
    assert done.returncode == 0, done.stderr
    assert "python -m tasks.vqa.main" in done.stdout and "--output snap/vqa/run1 --tiny" in \
        done.stdout
    assert (tmp_path / "snap" / "vqa" / "run1").is_dir()


# ------------------------------------------------------------------------ --tiny / --fast
@pytest.fixture(scope="module")
def root(small_root):
    return small_root


@pytest.fixture
def small_limits(monkeypatch):
    """--tiny reads 4 images and --fast 6, so that they cut the 16-image generated splits."""
    for name in ("vqa", "gqa", "nlvr2", "retrieval"):
        small = dataclasses.replace(registry.get(name), tiny_images=4, fast_images=6)
        monkeypatch.setitem(registry.entries(), name, small)


def _flags(root, output):
    return common_flags(root, output, load_lxmert=False)


@pytest.mark.parametrize("limit", ["--tiny", "--fast"])
def test_vqa_test_split_is_never_cut(root, tmp_path, small_limits, limit, caplog):
    """The test-server file covers every test question even with --tiny/--fast (the authors
    turn both off for testing); the other splits stay cut."""
    args = vqa_parser().parse_args(_flags(root, tmp_path) + [limit, "--test", "test"])
    task = QATask(args, VQA_SPEC)
    questions = json.loads((root / "vqa" / "test.json").read_text())
    assert len(task.dataset("test")) == len(questions)
    assert "does not apply to the --test split 'test'" in caplog.text
    train = json.loads((root / "vqa" / "train.json").read_text())
    assert 0 < len(task.dataset("train")) < len(train)

    vqa_main(_flags(root, tmp_path) + [limit, "--train", "", "--valid", "", "--test", "test",
                                       "--loadLXMERT", str(root / "model")])
    entries = json.loads((tmp_path / "test_predict.json").read_text())
    assert sorted(e["question_id"] for e in entries) == sorted(q["question_id"]
                                                               for q in questions)


def test_gqa_test_alias_and_testdev_are_loaded_whole(root, tmp_path, small_limits):
    args = gqa_parser().parse_args(_flags(root, tmp_path) + ["--tiny", "--test", "test"])
    task = QATask(args, GQA_SPEC)
    submit = json.loads((root / "gqa" / "submit.json").read_text())
    assert len(task.dataset("submit")) == len(submit)  # --test test is the submit split
    testdev = json.loads((root / "gqa" / "testdev.json").read_text())
    assert len(task.dataset("testdev")) == len(testdev)  # as the authors: never cut
    train = json.loads((root / "gqa" / "train.json").read_text())
    assert 0 < len(task.dataset("train")) < len(train)


def test_nlvr2_test_split_is_never_cut(root, tmp_path, small_limits):
    from tasks.nlvr2.task import NLVR2Task
    args = nlvr2_parser().parse_args(_flags(root, tmp_path) + ["--tiny", "--test", "test"])
    task = NLVR2Task(args)
    full = NLVR2Task(nlvr2_parser().parse_args(_flags(root, tmp_path) + ["--test", "test"]))
    assert len(task.dataset("test")) == len(full.dataset("test"))
    assert 0 < len(task.dataset("valid")) < len(full.dataset("valid"))


def test_retrieval_test_split_is_never_cut(root, tmp_path, small_limits):
    args = retrieval_parser().parse_args(_flags(root, tmp_path) + ["--tiny", "--test", "test",
                                                                    "--valid", ""])
    task = RetrievalTask(args)
    assert task.split("test").num_images == 16
    assert task.split("train").num_images == 4
