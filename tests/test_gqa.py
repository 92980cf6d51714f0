"""GQA: `python -m tasks.gqa.main` end to end on a generated data root (CPU, small model)."""
import json
import math

import pytest
import torch

from generated import common_flags
from tasks.common.run_folder import read_metrics
from tasks.gqa.main import build_parser, main
from tasks.qa.task import GQA_SPEC, QATask



@pytest.fixture(scope="module")
def root(small_root):
    return small_root


def _common(root, output):
    return common_flags(root, output, load_lxmert=False) + ["--batchSize", "16"]


def _train(root, output, *extra):
    return main(_common(root, output) + ["--loadLXMERT", str(root / "model"),
                                         "--train", "train,valid", "--valid", "testdev",
                                         "--epochs", "1", *extra])


def _test(root, output, split, load):
    return main(_common(root, output) + ["--train", "", "--valid", "", "--test", split,
                                         "--load", str(load)])


def _records(output):
    return read_metrics(output / "metrics.jsonl")


def check_gqa_result_file(path, questions, answers):
    """What the GQA server needs: a list of {"questionId": str, "prediction": str}, one per
    question of the split, answers from the answer table."""
    entries = json.loads(path.read_text())
    assert isinstance(entries, list) and len(entries) == len(questions)
    for entry in entries:
        assert set(entry) == {"questionId", "prediction"}
        assert isinstance(entry["questionId"], str)
        assert entry["prediction"] in answers
    assert [e["questionId"] for e in entries] == [q["question_id"] for q in questions]
    return entries


@pytest.fixture(scope="module")
def trained(root, tmp_path_factory):
    output = tmp_path_factory.mktemp("gqa_run")
    summary = _train(root, output)
    return output, summary


def test_parser_defaults():
    args = build_parser().parse_args([])
    assert args.epochs == 5 and args.mce_loss is False and args.batch_size == 32
    assert build_parser().parse_args(["--mceLoss"]).mce_loss
    assert build_parser().parse_args(["--mce-loss"]).mce_loss


@pytest.mark.slow
def test_train_writes_checkpoints_and_logs(trained):
    output, summary = trained
    for name in ("BEST.pth", "LAST.pth", "log.log", "metrics.jsonl", "run_info.json"):
        assert (output / name).is_file(), name
    (record,) = _records(output)
    assert record["valid"]["split"] == "testdev"
    assert 0 <= record["valid"]["accuracy"] <= 100
    assert summary["best"]["split"] == "testdev"
    state = torch.load(output / "BEST.pth", map_location="cpu")
    assert state["logit_fc.3.weight"].shape[0] == 14  # the generated 14-answer table
    assert any(k.startswith("lxrt_encoder.model.bert.") for k in state)


@pytest.mark.slow
def test_testdev_scores_and_writes(root, trained, tmp_path):
    output, _ = trained
    summary = _test(root, tmp_path, "testdev", output / "BEST")
    questions = json.loads((root / "gqa" / "testdev.json").read_text())
    answers = json.loads((root / "gqa" / "trainval_label2ans.json").read_text())
    entries = check_gqa_result_file(tmp_path / "testdev_predict.json", questions, answers)
    expected = sum(q["label"].get(e["prediction"], 0.0)
                   for q, e in zip(questions, entries)) / len(questions)
    assert summary["test"]["accuracy"] == pytest.approx(expected * 100)
    # the file is the authors' json.dump(indent=4, sort_keys=True)
    text = (tmp_path / "testdev_predict.json").read_text()
    assert text == json.dumps(entries, indent=4, sort_keys=True)


@pytest.mark.slow
def test_submit_and_test_alias(root, trained, tmp_path):
    output, _ = trained
    questions = json.loads((root / "gqa" / "submit.json").read_text())
    answers = json.loads((root / "gqa" / "trainval_label2ans.json").read_text())
    files = {}
    for split in ("submit", "test"):  # the README's `--test test` means submit
        out = tmp_path / split
        summary = _test(root, out, split, output / "BEST")
        assert summary["test"]["split"] == "submit"
        assert "accuracy" not in summary["test"]  # unlabelled
        assert sorted(p.name for p in out.glob("*_predict.json")) == ["submit_predict.json"]
        check_gqa_result_file(out / "submit_predict.json", questions, answers)
        files[split] = (out / "submit_predict.json").read_text()
    assert files["submit"] == files["test"]


@pytest.mark.slow
def test_mce_loss_runs(root, trained, tmp_path):
    output, _ = trained
    _train(root, tmp_path, "--mceLoss")
    (mce,) = _records(tmp_path)
    (bce,) = _records(output)
    assert math.isfinite(mce["train_loss"]) and mce["train_loss"] != bce["train_loss"]
    assert (tmp_path / "BEST.pth").is_file()


def test_mce_loss_value(root):
    """--mceLoss: CE(argmax(target)) x answers; an all-zero target is class 0."""
    args = build_parser().parse_args(["--dataRoot", str(root), "--mceLoss"])
    task = QATask(args, GQA_SPEC)

    def model(*_):
        return logits

    logits = torch.randn(3, 5)
    target = torch.zeros(3, 5)
    target[0, 2] = 1.0
    target[1, 4] = 0.6
    batch = {"input_ids": None, "token_position": None, "input_mask": None, "feats": None,
             "boxes": None, "target": target}
    loss, _ = task.compute_loss(model, batch)
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([2, 4, 0])) * 5
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    args.mce_loss = False
    loss, _ = task.compute_loss(model, batch)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, target) * 5
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_unknown_answers_ignored(root):
    """GQA drops answers outside the answer table from the targets (no error), as the authors."""
    questions = json.loads((root / "gqa" / "valid.json").read_text())[:3]
    questions[0]["label"] = {"never-an-answer": 1.0, "yes": 0.5}
    questions[1]["label"] = {"never-an-answer": 1.0}
    (root / "gqa" / "extra.json").write_text(json.dumps(questions))
    try:
        args = build_parser().parse_args(["--dataRoot", str(root), "--modelConfig",
                                          str(root / "bert_config.json")])
        task = QATask(args, GQA_SPEC)
        dataset = task.dataset("extra")
        t0, t1 = dataset[0]["target"], dataset[1]["target"]
        assert t0.sum().item() == pytest.approx(0.5)
        assert t0[task.answers.label("yes")].item() == pytest.approx(0.5)
        assert t1.sum().item() == 0.0
    finally:
        (root / "gqa" / "extra.json").unlink()
