"""tools.plot_metrics: metrics.jsonl sections, per-task losses, the PNG."""
import json

import pytest
from PIL import Image

from tools import plot_metrics


def _write(path, records):
    path.mkdir(parents=True, exist_ok=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _epoch(k, loss, acc=None, **extra):
    record = {"epoch": k, "train_loss": loss, "train_seconds": 1.0, **extra}
    if acc is not None:
        record["valid"] = {"split": "valid", "questions": 10, "accuracy": acc}
    return record


def test_last_run_section_and_non_epoch_records(tmp_path):
    run = _write(tmp_path / "a", [
        _epoch(0, 9.0, 10.0), _epoch(1, 8.0, 11.0),             # an earlier run, no marker
        {"test": "test", "accuracy": 50.0},
        {"run_start": {"argv": []}}, _epoch(0, 3.0, 60.0), _epoch(1, 2.0, 70.0),
        {"test": "test", "accuracy": 71.0},
    ])
    assert [r["train_loss"] for r in plot_metrics.read_epochs(run)] == [3.0, 2.0]
    unmarked = _write(tmp_path / "b", [_epoch(0, 9.0), _epoch(1, 8.0), _epoch(0, 4.0)])
    assert [r["train_loss"] for r in plot_metrics.read_epochs(unmarked)] == [4.0]
    resumed = _write(tmp_path / "c", [_epoch(0, 9.0), _epoch(1, 8.0), _epoch(2, 7.0)])
    assert len(plot_metrics.read_epochs(resumed)) == 3


def test_overlaid_runs_with_per_task_losses(tmp_path, monkeypatch):
    """The picture holds exactly the curves of the records: each run's training loss, the
    pre-training run's per-task losses dashed, the validation score in the run's colour."""
    from matplotlib.figure import Figure
    saved, save = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig",
                        lambda fig, *args, **kwargs: (saved.append(fig), save(fig, *args,
                                                                              **kwargs))[1])
    finetune = _write(tmp_path / "finetune", [_epoch(k, 3.0 - k, 50.0 + 10 * k)
                                              for k in range(3)])
    pretrain = _write(tmp_path / "pretrain", [
        _epoch(k, 5.0 - k, train_losses={"mlm": 3.0 - k / 2, "itm": 0.7 - k / 10})
        for k in range(3)])
    out = tmp_path / "curves.png"
    assert plot_metrics.main([str(finetune), str(pretrain), "-o", str(out)]) == 0
    with Image.open(out) as im:
        assert im.size == (720, 288)
    (figure,) = saved
    loss, valid = figure.axes

    def curves(ax):
        return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()),
                                   line.get_linestyle(), line.get_color())
                for line in ax.get_lines()}

    drawn = curves(loss)
    assert sorted(drawn) == ["finetune", "pretrain", "pretrain: itm", "pretrain: mlm"]
    expected = {"finetune": ([3.0, 2.0, 1.0], "-"), "pretrain": ([5.0, 4.0, 3.0], "-"),
                "pretrain: mlm": ([3.0, 2.5, 2.0], "--"), "pretrain: itm": ([0.7, 0.6, 0.5], "--")}
    for label, (ys, style) in expected.items():
        assert drawn[label][0] == [0, 1, 2] and drawn[label][2] == style
        assert drawn[label][1] == pytest.approx(ys)
    scores = curves(valid)
    assert list(scores) == ["finetune"]  # the pre-training records have no validation
    assert scores["finetune"][:2] == ([0, 1, 2], [50.0, 60.0, 70.0])
    assert scores["finetune"][3] == drawn["finetune"][3]  # one colour per run
    assert valid.get_ylabel() == "accuracy"
    assert [t.get_text() for t in loss.get_legend().get_texts()] == list(drawn)


def test_bad_runs_are_named(tmp_path, capsys):
    assert plot_metrics.main([str(tmp_path / "none"), "-o", str(tmp_path / "x.png")]) == 2
    assert "none/metrics.jsonl: no such file" in capsys.readouterr().err
    only_test = _write(tmp_path / "t", [{"test": "test", "accuracy": 1.0}])
    with pytest.raises(ValueError, match="no epoch records"):
        plot_metrics.read_epochs(only_test)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metrics.jsonl").write_text(json.dumps(_epoch(0, 1.0)) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl: line 2: not valid JSON"):
        plot_metrics.read_epochs(broken)
