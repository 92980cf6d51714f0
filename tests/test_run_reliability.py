"""A run's folder and files under real failures: a file-size limit while checkpoints are saved,
a training set changed between stop and resume, a kill -9 while forked workers live on, a
run.lock that is a directory, a metrics line cut by a crash, and a device that does not exist."""
import json
import re
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from generated import ROOT, _env, common_flags
from tasks.common.checkpoints import atomic_torch_save
from tasks.common.resume import changed_inputs
from tasks.common.run_folder import RunLock, append_metrics, read_metrics
from tasks.vqa.main import main as vqa_main

LIMIT = 16 << 20  # bytes: above a small model's weights, below its resume state


def _limited(script: str, *args, limit: int = LIMIT) -> subprocess.CompletedProcess:
    """Run `script` in a Python whose files may not grow beyond `limit` bytes: a write past
    it fails with EFBIG (SIGXFSZ ignored), as on a full disk or a quota."""
    prelude = ("import resource, signal\n"
               "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
               f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n")
    return subprocess.run([sys.executable, "-c", prelude + script, *map(str, args)],
                          capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=300)


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)


# ---- a real file-size limit ---------------------------------------------------------------------

@pytest.mark.slow
def test_a_write_past_a_real_size_limit_names_the_file_and_keeps_the_previous(tmp_path):
    path = tmp_path / "LAST.pth"
    atomic_torch_save({"w": torch.ones(2)}, path)
    result = _limited(
        "import sys, torch\n"
        "from tasks.common.checkpoints import atomic_torch_save\n"
        "atomic_torch_save({'w': torch.zeros(1 << 20)}, sys.argv[1])\n",
        path, limit=1 << 20)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("tasks.common.checkpoints.CheckpointWriteError: [Errno 27] could "
                           f"not write {path}: File too large (the previous version is kept)")
    assert "unexpected pos" not in result.stderr
    assert torch.equal(_weights(path)["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["LAST.pth"]


@pytest.mark.slow
def test_training_that_hits_a_size_limit_stops_clearly_and_keeps_its_checkpoints(
        small_root, tmp_path):
    out = tmp_path / "run"
    flags = common_flags(small_root, out) + ["--train", "train", "--valid", "minival",
                                             "--batchSize", "16", "--epochs", "2"]
    result = _limited("import sys\nfrom tasks.vqa.main import main\nmain(sys.argv[1:])\n",
                      *flags)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert f"could not write {out / 'resume.pth'}: File too large" in last, result.stderr[-2000:]
    assert (out / "LAST.pth").stat().st_size < LIMIT  # the test's premise
    for name in ("BEST.pth", "LAST.pth"):  # the epoch's finished checkpoints are whole
        assert set(_weights(out / name)) == set(_weights(out / "LAST.pth"))
    assert not (out / "resume.pth").exists() and not list(out.glob(".*.tmp"))
    assert read_metrics(out / "metrics.jsonl")[-1]["epoch"] == 0


# ---- --resume after the training set changed -------------------------------------------------

@pytest.mark.slow
def test_resume_refuses_a_training_set_that_changed(small_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(small_root, root, ignore=shutil.ignore_patterns("*.store", ".*"))
    out = tmp_path / "run"
    flags = common_flags(root, out) + ["--train", "train", "--valid", "", "--batchSize", "16",
                                       "--epochs", "1"]
    vqa_main(flags + ["--stopAfterSteps", "1"])
    train = root / "vqa" / "train.json"
    questions = json.loads(train.read_text())
    train.write_text(json.dumps(questions[:-16]))  # shrank by one batch
    with pytest.raises(SystemExit, match=rf"train_examples: saved {len(questions)}, now "
                                         rf"{len(questions) - 16}"):
        vqa_main(flags + ["--resume"])
    questions[0]["sent"] = "is this a different question?"  # same size, other text
    train.write_text(json.dumps(questions))
    with pytest.raises(SystemExit, match=r"train_sha1: saved '[0-9a-f]+', now '[0-9a-f]+'"):
        vqa_main(flags + ["--resume"])


# ---- locks -------------------------------------------------------------------------------------

HOLDER = """
import multiprocessing, sys, time
from tasks.common.run_folder import RunLock

def work(started):
    started.set()  # the child runs: its after-fork hooks have run
    time.sleep(120)

lock = RunLock(sys.argv[1]).acquire()
context = multiprocessing.get_context("fork")
started = context.Event()
worker = context.Process(target=work, args=(started,))
worker.start()  # as a DataLoader worker: a forked child living on after its parent
started.wait(60)
print(worker.pid, flush=True)
time.sleep(120)
"""


def test_a_killed_run_does_not_leave_its_folder_locked_by_its_workers(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], env=_env(),
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    worker = int(holder.stdout.readline())
    try:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        RunLock(tmp_path).acquire().release()  # at once, while the worker still lives
    finally:
        subprocess.run(["kill", "-9", str(worker)], check=False)


def test_a_directory_named_run_lock_is_refused_by_name(tmp_path):
    (tmp_path / "run.lock").mkdir()
    with pytest.raises(SystemExit, match=r"run\.lock is a directory, not the lock file of a "
                                         r"run"):
        RunLock(tmp_path).acquire()


# ---- metrics.jsonl after a crash mid-line; --device ---------------------------------------------

def test_a_line_cut_by_a_crash_stays_apart_from_the_next_record(tmp_path):
    append_metrics(tmp_path, {"epoch": 0, "train_loss": 1.5})
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"epoch": 1, "train_lo')  # killed here
    append_metrics(tmp_path, {"run_start": "now", "argv": [], "resumed": True})
    append_metrics(tmp_path, {"epoch": 1, "train_loss": 1.2})
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[1] == {"partial_record": '{"epoch": 1, "train_lo'}
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"epoch": 1, "train_loss": 1.2}]
    assert read_metrics(tmp_path / "metrics.jsonl", 0) == [{"epoch": 0, "train_loss": 1.5}]


@pytest.mark.parametrize("device, message", [("tpu", "not a device name"),
                                             ("cuda:x", "not a device name"),
                                             ("meta", "no meta device on this machine")])
def test_an_unknown_device_is_refused_by_name(small_root, tmp_path, device, message):
    with pytest.raises(SystemExit, match=rf"--device {device}: {message}"):
        vqa_main(common_flags(small_root, tmp_path / "run") + ["--device", device,
                                                               "--epochs", "1"])


def test_resume_states_without_recorded_inputs_compare_flags_only():
    now = {"train_examples": 10, "train_sha1": "abc", "stage_sha1": "def"}
    assert changed_inputs(None, now) == [] and changed_inputs({}, now) == []
    assert changed_inputs({"train_examples": 12}, now) == ["train_examples: saved 12, now 10"]


def test_every_test_the_reliability_table_names_exists():
    """docs/reliability.md names, per case, the test that covers it: each name must be a test
    function of the suite (in the file it names, when it names one)."""
    table = (ROOT / "docs" / "reliability.md").read_text()
    sources = {p.relative_to(ROOT).as_posix(): p.read_text()
               for p in (ROOT / "tests").glob("test_*.py")}
    missing = []
    for file, name in re.findall(r"`(?:(tests/test_\w+\.py)::)?(test_\w+)`", table):
        texts = [sources.get(file, "")] if file else sources.values()
        if not any(re.search(rf"^def {name}\(", text, re.M) for text in texts):
            missing.append(f"{file + '::' if file else ''}{name}")
    assert len(re.findall(r"`(?:tests/test_\w+\.py::)?test_\w+`", table)) > 50
    assert not missing, missing
