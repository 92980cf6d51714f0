"""--tensorboard: a short run writes the event file under the run folder and its scalars read
back with TensorBoard's own reader; off by default, and then TensorBoard is never imported."""
import json
import re
import sys

import pytest

from generated import ROOT, common_flags
from tasks.common.run_folder import read_metrics
from tasks.common.scalar_log import FOLDER, ScalarLog, epoch_scalars, scalar_log
from tasks.vqa.main import main as vqa_main

RUN = ["--train", "train", "--valid", "minival", "--batchSize", "8", "--epochs", "2"]


def _scalars(folder):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    reader = EventAccumulator(str(folder))
    reader.Reload()
    return {tag: [(e.step, e.value) for e in reader.Scalars(tag)]
            for tag in reader.Tags()["scalars"]}


@pytest.mark.slow
def test_a_short_run_writes_curves_that_read_back(small_root, tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    vqa_main(common_flags(small_root, out) + RUN + ["--tensorboard", "--tensorboardEvery", "2"])
    assert list((out / FOLDER).glob("events.out.tfevents.*"))
    scalars = _scalars(out / FOLDER)
    records = read_metrics(out / "metrics.jsonl")
    steps = int(re.search(r"(\d+) steps/epoch", (out / "log.txt").read_text()).group(1))
    for name in ("loss", "lr", "samples_per_s", "grad_norm"):
        points = scalars[f"step/{name}"]
        assert [s for s, _ in points] == list(range(2, len(records) * steps + 1, 2)), name
        assert all(v >= 0 for _, v in points)
    assert scalars["step/lr"][0][1] > 0
    for name in ("valid_accuracy", "train_loss", "train_score", "best"):
        assert scalars[f"epoch/{name}"] == [
            (r["epoch"], pytest.approx(epoch_scalars(r)[name], rel=1e-6)) for r in records]


@pytest.mark.slow
def test_pretraining_logs_each_tasks_loss_and_accuracy(small_root, tmp_path):
    pytest.importorskip("tensorboard")
    from tasks.pretrain.main import main as pretrain_main
    out = tmp_path / "token"
    pretrain_main(["--stage", str(ROOT / "run" / "configs" / "msp" / "token.json"),
                   *common_flags(small_root, out, load_lxmert=False), "--train",
                   "mscoco_nominival", "--valid", "mscoco_minival", "--batchSize", "8",
                   "--epochs", "1", "--tensorboard"])
    tags = set(_scalars(out / FOLDER))
    record = read_metrics(out / "metrics.jsonl")[-1]
    expected = {f"epoch/train_{k}" for k in record["train"]} | \
               {f"epoch/valid_{k}" for k in record["valid"]}
    assert {"epoch/train_mlm_loss", "epoch/train_mlm_acc", "epoch/valid_loss",
            "epoch/valid_feat_loss"} <= expected <= tags


@pytest.mark.slow
def test_off_by_default_and_then_never_imported(small_root, tmp_path, monkeypatch):
    from tasks.vqa.main import build_parser
    args = build_parser().parse_args([])
    assert args.tensorboard is False and type(scalar_log(args, tmp_path, True)) is ScalarLog
    for name in [m for m in sys.modules if m.startswith("torch.utils.tensorboard")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # importing it now fails
    out = tmp_path / "run"
    vqa_main(common_flags(small_root, out) + RUN[:-1] + ["1"])
    assert not (out / FOLDER).exists() and (out / "BEST.pth").is_file()
    assert "tensorboard" not in json.dumps(read_metrics(out / "metrics.jsonl"))


def test_rank_zero_only_and_the_flag_is_checked(tmp_path):
    from tasks.vqa.main import build_parser
    args = build_parser().parse_args(["--tensorboard"])
    assert type(scalar_log(args, tmp_path, is_main=False)) is ScalarLog
    with pytest.raises(SystemExit, match="--tensorboardEvery 0: expected a positive number"):
        vqa_main(["--tensorboardEvery", "0", "--output", str(tmp_path)])
