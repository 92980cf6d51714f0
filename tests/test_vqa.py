"""VQA end to end through main(argv) on a generated data root: training, exact resume,
test-server files, interruption safety, and DDP equivalence."""
import json
import signal
import subprocess
import sys

import pytest
import torch

from generated import ROOT, _env, common_flags, make_root
from tasks.qa.task import soft_score
from tasks.common.run_folder import read_metrics
from tasks.vqa.main import main

pytestmark = pytest.mark.slow  # end-to-end runs: not in the fast tier

TRAIN = ["--train", "train,nominival", "--valid", "minival", "--batchSize", "8", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_root(tmp_path_factory.mktemp("data"), no_dropout=True)


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_train_then_test_writes_a_valid_submission(root, tmp_path):
    out = tmp_path / "run"
    summary = main(common_flags(root, out) + TRAIN + ["--epochs", "2"])
    for name in ("BEST.pth", "LAST.pth", "log.log", "metrics.jsonl", "run_info.json"):
        assert (out / name).is_file(), name
    log_text = (out / "log.log").read_text()
    assert "Epoch 0: Train" in log_text and "Epoch 1: Valid" in log_text
    records = read_metrics(out / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [0, 1]
    assert records[1]["train_loss"] < records[0]["train_loss"]
    assert summary["best"]["accuracy"] == max(r["valid"]["accuracy"] for r in records)
    info = json.loads((out / "run_info.json").read_text())
    assert info["args"]["batch_size"] == 8 and "torch" in info["versions"]

    test_out = tmp_path / "test"
    main(common_flags(root, test_out) + ["--train", "", "--valid", "", "--test", "test",
                                         "--load", str(out / "BEST")])
    entries = json.loads((test_out / "test_predict.json").read_text())
    questions = json.loads((root / "vqa" / "test.json").read_text())
    assert sorted(e["question_id"] for e in entries) == sorted(q["question_id"] for q in questions)
    assert all(isinstance(e["question_id"], int) and isinstance(e["answer"], str) for e in entries)
    answers = json.loads((root / "vqa" / "trainval_label2ans.json").read_text())
    assert all(e["answer"] in answers for e in entries)

    minival = tmp_path / "minival"
    result = main(common_flags(root, minival) + ["--train", "", "--valid", "", "--test",
                                                  "minival", "--load", str(out / "BEST")])
    assert (minival / "minival_predict.json").is_file()
    best = max(r["valid"]["accuracy"] for r in records)
    assert result["test"]["accuracy"] == pytest.approx(best)


def test_resume_continues_exactly(root, tmp_path):
    flags = TRAIN + ["--epochs", "2"]
    full = tmp_path / "full"
    main(common_flags(root, full) + flags)
    part = tmp_path / "part"
    steps_per_epoch = 384 // 8
    main(common_flags(root, part) + flags + ["--stopAfterSteps", str(steps_per_epoch + 5)])
    assert len(read_metrics(part / "metrics.jsonl")) == 1
    resume = torch.load(part / "resume.pth", weights_only=True)
    assert (resume["epoch"], resume["batch"], resume["global_step"]) == (1, 5, steps_per_epoch + 5)
    main(common_flags(root, part) + flags + ["--resume"])
    a, b = _weights(full / "LAST.pth"), _weights(part / "LAST.pth")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    full_metrics = (full / "metrics.jsonl").read_text().splitlines()
    part_metrics = (part / "metrics.jsonl").read_text().splitlines()
    assert json.loads(full_metrics[-1])["valid"] == json.loads(part_metrics[-1])["valid"]
    # the resumed epoch's Train line counts the batches done before the stop too
    assert json.loads(full_metrics[-1])["train_score"] == json.loads(part_metrics[-1])["train_score"]


@pytest.mark.parametrize("extra", [[], ["--lengthBuckets", "4"]], ids=["random", "bucketed"])
def test_resume_with_dropout_matches_too(root, tmp_path, extra):
    """Dropout masks come from the restored RNG state, so resume is exact with dropout on (and
    with length-bucketed batches, whose order is fixed by seed and epoch too)."""
    flags = TRAIN + ["--epochs", "1", "--modelConfig", str(root / "bert_config.json")] + extra
    full, part = tmp_path / "full", tmp_path / "part"
    main(common_flags(root, full) + flags)
    main(common_flags(root, part) + flags + ["--stopAfterSteps", "7"])
    main(common_flags(root, part) + flags + ["--resume"])
    a, b = _weights(full / "LAST.pth"), _weights(part / "LAST.pth")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert ("length-bucketed batches" in (full / "log.txt").read_text()) == bool(extra)


def test_soft_score_against_hand_computed_values():
    data = [{"label": {"red": 1.0, "blue": 0.3}}, {"label": {"no": 0.9}}, {"label": {}},
            {"label": {"2": 0.6, "3": 1.0}}]
    answers = ["blue", "yes", "red", "2"]
    assert soft_score(data, answers) == pytest.approx((0.3 + 0 + 0 + 0.6) / 4)
    with pytest.raises(ValueError):
        soft_score(data, answers[:2])


# Run as a child process: dies by SIGKILL half-way through writing the second LAST.pth (the
# first overwrite of a finished checkpoint), at the same point on every machine.
DIE_WRITING_LAST = """
import io, os, signal, sys
import torch
import tasks.common.checkpoints as checkpoints
import tasks.common.trainer as trainer

lasts = []

def save(obj, path):
    if os.path.basename(path) == "LAST.pth":
        lasts.append(path)
        if len(lasts) == 2:
            def half_then_die(handle):
                buffer = io.BytesIO()
                torch.save(obj, buffer)
                handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                handle.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            checkpoints._atomic_write(path, half_then_die)
    checkpoints.atomic_torch_save(obj, path)

trainer.atomic_torch_save = save
from tasks.vqa.main import main
main(sys.argv[1:])
"""


def test_kill_never_leaves_a_corrupt_checkpoint(root, tmp_path):
    """SIGKILL a run half-way through overwriting LAST.pth: every checkpoint on disk loads,
    the half-written file is only a temporary, and --resume removes it and finishes."""
    out = tmp_path / "killed"
    argv = common_flags(root, out) + TRAIN + ["--epochs", "3", "--checkpointEvery", "7"]
    done = subprocess.run([sys.executable, "-c", DIE_WRITING_LAST] + argv, env=_env(),
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    first_last = _weights(out / "LAST.pth")  # epoch 0's, intact
    for name in ("BEST.pth", "resume.pth"):
        torch.load(out / name, map_location="cpu", weights_only=False)
    leftovers = [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".LAST.pth.")
    with pytest.raises(Exception):  # the temporary is truncated: it never became LAST.pth
        torch.load(out / leftovers[0], map_location="cpu", weights_only=True)
    main(argv + ["--resume"])
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    records = read_metrics(out / "metrics.jsonl")
    assert [r["epoch"] for r in records if "epoch" in r][-1] == 2
    assert any(not torch.equal(first_last[k], v) for k, v in _weights(out / "LAST.pth").items())


def test_two_process_ddp_matches_one_process(root, tmp_path):
    flags = TRAIN + ["--epochs", "1", "--modelConfig", str(root / "bert_config_nodrop.json")]
    one = tmp_path / "one"
    main(common_flags(root, one) + flags)
    two = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "tasks.vqa.main"] + common_flags(root, two) + flags
    env = _env()
    env["OMP_NUM_THREADS"] = "1"
    subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True, timeout=300)
    m1 = json.loads((one / "metrics.jsonl").read_text().splitlines()[-1])
    m2 = json.loads((two / "metrics.jsonl").read_text().splitlines()[-1])
    assert m1["valid"] == m2["valid"]
    assert m1["train_loss"] == pytest.approx(m2["train_loss"], rel=1e-3)
    # BertAdam divides by sqrt(v): for weights whose gradient is ~0, roundoff-level gradient
    # differences (2 ranks sum in another order) become updates of up to lr, so weights agree
    # to a few lr, not to float precision.
    a, b = _weights(one / "LAST.pth"), _weights(two / "LAST.pth")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=5e-3, msg=key)


def test_generated_data_is_learnable(tmp_path):
    """The generated root carries real signal: a small model trained from scratch answers
    well above the ~25% a constant answer gets (measured: 69% after 4 short epochs)."""
    root = make_root(tmp_path / "data", images=256)
    out = tmp_path / "run"
    summary = main(["--dataRoot", str(root), "--modelConfig", str(root / "bert_config.json"),
                    "--fromScratch", "--train", "train,nominival", "--valid", "minival",
                    "--epochs", "4", "--batchSize", "32", "--lr", "5e-4", "--device", "cpu",
                    "--numWorkers", "0", "--output", str(out)])
    assert summary["best"]["accuracy"] > 50
