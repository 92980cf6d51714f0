"""The trainer under abuse: non-finite losses, interrupted runs, tampered or truncated resume
states, changed flags on --resume, two runs in one folder, file modes, and the
best epoch in the summary. Tiny models on generated data, a few steps each."""
import json
import os
import pickle
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch

from generated import ROOT, _env, common_flags, make_root
from tasks.common.readers import DataFormatError
from tasks.common.resume import rng_state, set_rng_state
from tasks.common.run_folder import RunLock, append_metrics, read_metrics
from tasks.nlvr2.main import main as nlvr2_main
from tasks.qa.data import QADataset
from tasks.qa.task import QATask
from tasks.retrieval.data import load_hard_negatives
from tasks.vqa.main import main as vqa_main

pytestmark = pytest.mark.slow  # end-to-end runs: not in the fast tier

STEPS = 384 // 32  # VQA train+nominival examples of the generated root / batch
TRAIN = ["--train", "train,nominival", "--valid", "minival", "--batchSize", "32", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_root(tmp_path_factory.mktemp("data"), no_dropout=True)


def _vqa(root, out, *extra):
    return vqa_main(common_flags(root, out, "bert_config_nodrop.json") + TRAIN + list(extra))


def _strict_json(line):
    def refuse(name):
        raise ValueError(f"non-JSON constant {name}")
    return json.loads(line, parse_constant=refuse)


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)


# ---- 1. non-finite loss --------------------------------------------------------------------

BAD_INDEX = 77


def test_nan_input_stops_naming_the_batch_and_saves_nothing_bad(root, tmp_path, monkeypatch):
    real = QADataset.__getitem__

    def poisoned(self, index):
        item = real(self, index)
        if index == BAD_INDEX:
            item["feats"] = torch.full_like(item["feats"], float("nan"))
        return item

    monkeypatch.setattr(QADataset, "__getitem__", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(SystemExit) as stopped:
        _vqa(root, out, "--epochs", "2", "--checkpointEvery", "1")
    message = str(stopped.value)
    assert stopped.value.code and "not finite" in message and "epoch 0" in message
    assert "step " in message and str(BAD_INDEX) in message
    assert not (out / "BEST.pth").exists() and not (out / "LAST.pth").exists()
    resume = torch.load(out / "resume.pth", map_location="cpu", weights_only=True)
    assert all(torch.isfinite(v).all() for v in resume["model"].values())
    for line in (out / "metrics.jsonl").read_text().splitlines():
        _strict_json(line)
    assert not (out / "log.log").exists()  # no Valid/Best lines for the diverged epoch


def test_metrics_jsonl_writes_non_finite_numbers_as_null(tmp_path):
    append_metrics(tmp_path, {"epoch": 0, "train_loss": float("nan"),
                              "valid": {"loss": float("inf"), "accuracy": 1.5}})
    record = _strict_json((tmp_path / "metrics.jsonl").read_text())
    assert record == {"epoch": 0, "train_loss": None, "valid": {"loss": None, "accuracy": 1.5}}


# ---- 2. resume point at an epoch's last step -----------------------------------------------

def test_vqa_resume_at_the_last_step_of_an_epoch_runs_the_owed_validation(root, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    _vqa(root, full, "--epochs", "2")
    _vqa(root, part, "--epochs", "2", "--stopAfterSteps", str(STEPS))
    assert read_metrics(part / "metrics.jsonl") == []  # stopped before the validation
    summary = _vqa(root, part, "--epochs", "2", "--resume")
    expected = read_metrics(full / "metrics.jsonl")
    got = read_metrics(part / "metrics.jsonl")
    assert [r["epoch"] for r in got] == [0, 1]
    for a, b in zip(expected, got):
        assert a["valid"] == b["valid"]
        assert a["train_score"] == b["train_score"]  # the saved epoch stats, not an empty epoch
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
    a, b = _weights(full / "LAST.pth"), _weights(part / "LAST.pth")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert summary["best_epoch"] in (0, 1)


def test_nlvr2_resume_from_a_checkpoint_on_the_last_step(small_root, tmp_path):
    out = tmp_path / "nlvr2"
    flags = common_flags(small_root, out) + ["--batchSize", "8", "--epochs", "1"]
    nlvr2_main(flags + ["--stopAfterSteps", "1000"])  # more than the run has: ends normally
    steps = torch.load(out / "resume.pth", weights_only=True)["global_step"]
    (out / "resume.pth").unlink()
    nlvr2_main(flags + ["--stopAfterSteps", str(steps)])  # lands on the epoch's last step
    assert torch.load(out / "resume.pth", weights_only=True)["batch"] == steps
    summary = nlvr2_main(flags + ["--resume"])
    records = read_metrics(out / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [0] and "hits" not in records[0]
    assert 0 <= records[0]["train_score"] <= 1 and summary["best_epoch"] == 0


# ---- 3. resume state and hard negatives cannot run code -------------------------------------

class RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _stopped_run(root, out):
    _vqa(root, out, "--epochs", "1", "--stopAfterSteps", "2")
    return out / "resume.pth"


def test_malicious_resume_state_is_refused_without_running_it(root, tmp_path):
    path = _stopped_run(root, tmp_path / "evil")
    marker = tmp_path / "code_ran"
    saved = torch.load(path, weights_only=True)
    saved["args"]["payload"] = RunsCode(marker)
    torch.save(saved, path)
    with pytest.raises(SystemExit, match="refused to load .*resume.pth"):
        _vqa(root, tmp_path / "evil", "--epochs", "1", "--resume")
    assert not marker.exists()


def test_truncated_resume_state_names_the_file(root, tmp_path):
    path = _stopped_run(root, tmp_path / "cut")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SystemExit, match=r"resume.pth is truncated or corrupt"):
        _vqa(root, tmp_path / "cut", "--epochs", "1", "--resume")


def test_resume_state_of_an_earlier_format_is_refused_naming_it(root, tmp_path):
    path = _stopped_run(root, tmp_path / "old")
    saved = torch.load(path, weights_only=True)
    del saved["format"]  # format 1 had no "format" key
    torch.save(saved, path)
    with pytest.raises(SystemExit, match=r"resume.pth was written by an earlier version .*"
                                         r"format 1, expected 2"):
        _vqa(root, tmp_path / "old", "--epochs", "1", "--resume")


def test_rng_state_is_plain_data_and_round_trips(tmp_path):
    import random
    state = rng_state()
    torch.save(state, tmp_path / "rng.pth")
    loaded = torch.load(tmp_path / "rng.pth", weights_only=True)
    expected = (random.random(), np.random.rand(), torch.rand(()).item())
    set_rng_state(loaded)
    assert (random.random(), np.random.rand(), torch.rand(()).item()) == expected


def test_malicious_hard_negative_pickle_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "hard_negative.pkl"
    with open(path, "wb") as f:
        pickle.dump({"train_image_list": [1, 2], "train_hard_pool": RunsCode(marker)}, f)
    with pytest.raises(DataFormatError, match="refused to unpickle global io.open"):
        load_hard_negatives(path)
    assert not marker.exists()
    with open(path, "wb") as f:  # the real file's content: lists and numpy arrays still load
        pickle.dump({"train_image_list": [5, 6, 7], "train_hard_pool": np.array(
            [[0, 1], [1, 2], [2, 0]]), "note": np.int64(3)}, f, protocol=2)
    assert load_hard_negatives(path).pool_size == 2


# ---- 4. changed flags on --resume -----------------------------------------------------------

def test_resume_with_changed_flags_stops_unless_told(root, tmp_path, caplog):
    out = tmp_path / "flags"
    _stopped_run(root, out)
    with pytest.raises(SystemExit) as stopped:
        vqa_main(common_flags(root, out, "bert_config_nodrop.json") + [
            "--train", "train,nominival", "--valid", "minival", "--batchSize", "16",
            "--lr", "2e-3", "--epochs", "1", "--resume"])
    message = str(stopped.value)
    assert "lr: saved 0.001, now 0.002" in message and "batch_size: saved 32, now 16" in message
    assert "--resumeChangedFlags" in message
    vqa_main(common_flags(root, out, "bert_config_nodrop.json") + [
        "--train", "train,nominival", "--valid", "minival", "--batchSize", "32",
        "--lr", "2e-3", "--epochs", "1", "--resume", "--resume-changed-flags"])
    assert "changed flags" in (out / "log.txt").read_text()
    groups = torch.load(out / "resume.pth", weights_only=True)["optimizer"]["param_groups"]
    assert {(g["lr"], g["t_total"]) for g in groups} == {(2e-3, STEPS)}  # the new lr is used
    assert read_metrics(out / "metrics.jsonl")[-1]["epoch"] == 0


# ---- 5. one run per output folder -----------------------------------------------------------

def test_second_run_in_a_busy_folder_stops_naming_the_first(root, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from tasks.common.run_folder import RunLock; "
         "lock = RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(60)",
         str(out)], env=_env(), cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SystemExit, match=f"in use by another run .*pid {holder.pid} on "
                                             f"host {platform.node()}"):
            _vqa(root, out, "--epochs", "1")
        assert not (out / "log.txt").exists() and not (out / "metrics.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    RunLock(out).acquire().release()  # the OS dropped the dead holder's lock


# ---- 6. files ---------------------------------------------------------------------------------

def test_rerun_sections_temporaries_and_file_modes(root, tmp_path):
    out = tmp_path / "rerun"
    out.mkdir()
    stale = out / ".LAST.pth.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    old = os.umask(0o022)
    try:
        _vqa(root, out, "--epochs", "1", "--stopAfterSteps", "2")
        _vqa(root, out, "--epochs", "1", "--resume")
    finally:
        os.umask(old)
    assert not stale.exists()
    lines = [_strict_json(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    starts = [r for r in lines if "run_start" in r]
    assert [r["resumed"] for r in starts] == [False, True]
    assert "--resume" in starts[1]["argv"]
    assert [r["epoch"] for r in read_metrics(out / "metrics.jsonl")] == [0]
    for name in ("LAST.pth", "BEST.pth", "resume.pth", "run_info.json"):
        assert (out / name).stat().st_mode & 0o777 == 0o644, name


# ---- 7. the best epoch, not the last ----------------------------------------------------------

def test_summary_reports_the_best_epoch_not_the_last(root, tmp_path, monkeypatch):
    scores = iter([0.30, 0.70, 0.20])
    real = QATask.evaluate

    def scripted(self, trainer, model, split):
        result = real(self, trainer, model, split)
        result.score = next(scores)
        result.metrics = {**result.metrics, "accuracy": result.score * 100}
        return result

    monkeypatch.setattr(QATask, "evaluate", scripted)
    out = tmp_path / "best"
    summary = _vqa(root, out, "--epochs", "3")
    assert summary["best_epoch"] == 1 and summary["best"]["accuracy"] == pytest.approx(70)
    assert read_metrics(out / "metrics.jsonl")[-1]["best_epoch"] == 1
    assert "best epoch 1" in (out / "log.txt").read_text()


# ---- 8. the trainer's own totals apart from the task's stats ----------------------------------

def test_task_stats_named_like_the_trainers_totals_stay_apart(root, tmp_path, monkeypatch):
    # the trainer once summed its loss into the task's stats dict under "loss_sum": a task
    # stat of that name corrupted the train loss and never reached train_score
    real_loss, losses, seen = QATask.compute_loss, [], {}

    def compute_loss(self, model, batch):
        loss, stats = real_loss(self, model, batch)
        losses.append(loss.item())
        return loss, {**stats, "loss_sum": torch.tensor(1.0), "steps": torch.tensor(2.0)}

    def train_score(self, stats, samples):
        seen.update(stats, samples=samples)
        return 0.5

    monkeypatch.setattr(QATask, "compute_loss", compute_loss)
    monkeypatch.setattr(QATask, "train_score", train_score)
    out = tmp_path / "names"
    _vqa(root, out, "--epochs", "1", "--stopAfterSteps", "5")
    _vqa(root, out, "--epochs", "1", "--resume")  # the task's running stats are resumed too
    record = read_metrics(out / "metrics.jsonl")[-1]
    assert len(losses) == STEPS
    assert record["train_loss"] == pytest.approx(sum(losses) / STEPS, rel=1e-5)
    assert seen["loss_sum"].item() == STEPS and seen["steps"].item() == 2 * STEPS
    assert seen["samples"] == 32 * STEPS and record["train_score"] == 0.5


def test_a_training_set_must_be_a_task_dataset(tmp_path):
    from tasks.common.args import base_parser
    from tasks.common.trainer import Task, Trainer

    class PlainListTask(Task):
        def train_dataset(self):
            return torch.utils.data.TensorDataset(torch.zeros(4, 2))

    args = base_parser("t", 1).parse_args(["--device", "cpu", "--numWorkers", "0",
                                            "--output", str(tmp_path), "--train", "train"])
    trainer = Trainer(args, PlainListTask())
    try:
        with pytest.raises(TypeError, match="PlainListTask.train_dataset.* TensorDataset.*"
                                            "TaskDataset"):
            trainer.fit(torch.nn.Linear(2, 1), None)
    finally:
        trainer.close()
