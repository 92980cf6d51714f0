"""tools.easyvqa_report: the few-label table of run/easyvqa_pretrain.bash from its run folders."""
import json

import pytest
import torch

from tools.easyvqa_report import main as report_main


def _run_folder(folder, steps, accuracy, epochs=2):
    folder.mkdir(parents=True)
    lines = [{"run_start": "t0", "argv": [], "resumed": False}]
    lines += [{"epoch": e, "train_loss": 1.0, "train_seconds": 2.0, "train_samples_per_s": 50.0,
               "valid": {"loss": 0.5}} for e in range(epochs)]
    lines += [{"run_start": "t1", "argv": [], "resumed": False},
              {"test": "test", "split": "test", "questions": 100, "accuracy": accuracy}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    torch.save({"global_step": torch.tensor(steps)}, folder / "resume.pth")


def _predictions(folder, answers):
    (folder / "test_predict.json").write_text(json.dumps(
        [{"question_id": i, "answer": a} for i, a in enumerate(answers)]))


def test_the_table_averages_the_seeds_and_reports_each_arms_gain(tmp_path, capsys):
    run = tmp_path / "run"
    accuracies = {"scratch": (60.5, 59.5), "captions": (70.0, 72.0), "qa": (80.0, 81.0)}
    for arm, (first, second) in accuracies.items():
        for seed, accuracy in (("9595", first), ("1", second)):
            _run_folder(run / "finetune" / f"train_1pct_{arm}_seed{seed}", 30, accuracy)
    _run_folder(run / "pretrain" / "token", 12, 0.0, epochs=1)
    _run_folder(run / "pretrain" / "qa", 20, 0.0, epochs=1)
    (run / "plan.json").write_text(json.dumps(
        {"arms": {"scratch": [], "captions": ["token"], "qa": ["token", "qa"]}}))
    report_main([str(run), "--percents", "1", "--seeds", "9595,1", "--pretrain-seconds", "60",
                 "--total-seconds", "120"])
    table = (run / "results.md").read_text()
    assert "| start | pre-training steps | 1% (30 steps) | gain |" in table
    assert "| from scratch | 0 | 60.00 ± 0.71 (60.50 / 59.50) |  |" in table
    assert "| pre-trained on captions | 12 | 71.00 ± 1.41 (70.00 / 72.00) | +11.00 |" in table
    assert "| pre-trained, then QA | 32 | 80.50 ± 0.71 (80.00 / 81.00) | +20.50 |" in table
    assert "token: 12 steps" in table and "qa: 20 steps" in table
    assert "Pre-training 1.0 min, all 2.0 min" in table
    result = json.loads((run / "results.json").read_text())
    assert result["rows"][0]["gains"] == {"captions": 11.0, "qa": 20.5}
    assert result["rows"][0]["arms"]["scratch"]["runs"][0]["epochs"] == 2
    assert "60.00" in capsys.readouterr().out


def test_accuracy_by_question_kind_is_counted_from_the_predictions(tmp_path):
    """Hand-counted: yes/no 2 of 3 right, colour 1 of 2, shape 1 of 1."""
    run = tmp_path / "run"
    gold = ["yes", "no", "yes", "red", "teal", "circle"]
    test_json = tmp_path / "test.json"
    test_json.write_text(json.dumps([{"question_id": i, "label": {a: 1.0}}
                                     for i, a in enumerate(gold)]))
    for arm in ("scratch", "captions"):
        folder = run / "finetune" / f"train_1pct_{arm}_seed9595"
        _run_folder(folder, 30, 50.0)
        _predictions(folder, ["yes", "no", "no", "red", "blue", "circle"])
    report_main([str(run), "--percents", "1", "--arms", "scratch,captions",
                 "--test-json", str(test_json)])
    result = json.loads((run / "results.json").read_text())
    kinds = result["rows"][0]["arms"]["captions"]["by_kind"]
    assert kinds == {"colour": {"mean": 50.0, "std": 0.0}, "shape": {"mean": 100.0, "std": 0.0},
                     "yes/no": {"mean": 66.67, "std": 0.0}}
    table = (run / "results.md").read_text()
    assert "| from scratch | 66.7 ± 0.0 | 50.0 ± 0.0 | 100.0 ± 0.0 |" in table
    assert "- 1%, from scratch: seed 9595 66.7 / 50.0 / 100.0" in table


def test_the_scratch_arm_is_required(tmp_path):
    with pytest.raises(SystemExit, match="scratch arm"):
        report_main([str(tmp_path), "--percents", "1", "--arms", "captions"])


def test_a_missing_test_record_is_named(tmp_path):
    run = tmp_path / "run"
    _run_folder(run / "finetune" / "train_1pct_captions_seed9595", 30, 80.0)
    folder = run / "finetune" / "train_1pct_scratch_seed9595"
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "train_seconds": 1}) + "\n")
    with pytest.raises(SystemExit, match="train_1pct_scratch_seed9595.*no test record"):
        report_main([str(run), "--percents", "1", "--arms", "scratch,captions"])
