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


def test_the_table_pairs_each_fraction_and_reports_the_gain(tmp_path, capsys):
    run = tmp_path / "run"
    _run_folder(run / "finetune" / "train_1pct_pretrained", 30, 80.0)
    _run_folder(run / "finetune" / "train_1pct_scratch", 30, 60.5)
    _run_folder(run / "pretrain" / "token", 12, 0.0, epochs=1)
    report_main([str(run), "--percents", "1", "--pretrain-seconds", "60",
                 "--total-seconds", "120"])
    table = (run / "results.md").read_text()
    assert "| 1% of the images | 30 | 60.50 | 80.00 | +19.50 |" in table
    assert "token: 12 steps" in table and "Pre-training 1.0 min, all 2.0 min" in table
    result = json.loads((run / "results.json").read_text())
    assert result["rows"][0]["gain"] == 19.5 and result["rows"][0]["scratch"]["epochs"] == 2
    assert "60.50" in capsys.readouterr().out


def test_a_missing_test_record_is_named(tmp_path):
    run = tmp_path / "run"
    _run_folder(run / "finetune" / "train_1pct_pretrained", 30, 80.0)
    folder = run / "finetune" / "train_1pct_scratch"
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "train_seconds": 1}) + "\n")
    with pytest.raises(SystemExit, match="train_1pct_scratch.*no test record"):
        report_main([str(run), "--percents", "1"])
