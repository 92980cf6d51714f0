"""SNLI-VE, the fifth task: its generated files, reader, metrics against hand-computed values,
an end-to-end run through main(argv) with its predictions file, tools.predict, launchers."""
import json
import os
import subprocess

import numpy as np
import pytest
import torch

from generated import ROOT, common_flags
from tasks.common.distributed import DistInfo
from tasks.common.evaluation import EvalContext
from tasks.common.readers import DataFormatError
from tasks.snli_ve.entry import CLASSES
from tasks.snli_ve.main import build_parser, main
from tasks.snli_ve.task import SNLIVETask, load_snli_ve_split
from tools import predict


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_tools_make_data_writes_the_snli_ve_files(small_root):
    tsv_ids = set()
    for name in ("train2014", "test2014"):
        tsv = small_root / "flickr30k" / f"flickr30k_{name}.tsv"
        tsv_ids |= {line.split("\t", 1)[0] for line in tsv.read_text().splitlines()}
    for split, images in (("train", 16), ("dev", 8), ("test", 8)):
        examples = _lines(small_root / "snli_ve" / f"snli_ve_{split}.jsonl")
        assert len(examples) == 3 * images
        assert [e["gold_label"] for e in examples[:3]] == list(CLASSES)
        assert all(f"{e['Flickr30K_ID']}.jpg" in tsv_ids for e in examples)
        assert load_snli_ve_split(small_root / "snli_ve" / f"snli_ve_{split}.jsonl",
                                  require_label=True)[0]["img_id"].endswith(".jpg")


@pytest.mark.parametrize("line,message", [
    ({"Flickr30K_ID": "1", "sentence2": "x", "gold_label": "-"}, "'gold_label' must be one of"),
    ({"Flickr30K_ID": 1, "sentence2": "x"}, "must be strings"),
    ({"sentence2": "x"}, "line 1: missing key 'Flickr30K_ID'"),
])
def test_the_reader_names_the_file_and_what_is_wrong(tmp_path, line, message):
    path = tmp_path / "snli_ve_dev.jsonl"
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(DataFormatError, match=message):
        load_snli_ve_split(path)


def test_a_validation_split_must_be_labelled(tmp_path):
    path = tmp_path / "snli_ve_dev.jsonl"
    path.write_text(json.dumps({"Flickr30K_ID": "1", "sentence2": "x", "pairID": "p"}) + "\n")
    assert load_snli_ve_split(path)[0]["img_id"] == "1.jpg"  # a test split may be unlabelled
    with pytest.raises(DataFormatError, match="pairID 'p'.*must be labelled"):
        load_snli_ve_split(path, require_label=True)


def test_accuracy_per_class_against_hand_computed_values(small_root, tmp_path):
    """dev holds 8 images x (entailment, neutral, contradiction). Predicting entailment for
    all, except contradiction for the first four images' contradictions and neutral for the
    first image's neutral: 8 + 1 + 4 = 13 of 24 right; per class 8/8, 1/8, 4/8."""
    task = SNLIVETask(build_parser().parse_args(common_flags(small_root, tmp_path)))
    dataset = task.dataset("dev")
    assert dataset.labels.tolist() == [0, 1, 2] * 8
    predictions = np.zeros(24, dtype=np.int64)
    predictions[[2, 5, 8, 11]] = 2
    predictions[1] = 1

    # the trainer's loop, answering with `predictions` in one batch
    ctx = EvalContext(device=None, autocast=None, dist=DistInfo(), is_main=True,
                      progress=False, output=tmp_path,
                      run_batches=lambda *_: (list(range(24)),
                                              [{"label": torch.from_numpy(predictions)}]))
    result = task.evaluate(ctx, None, "dev")
    assert result.score == pytest.approx(13 / 24)
    assert result.metrics == {"split": "dev", "examples": 24, "labelled": 24,
                              "accuracy": pytest.approx(100 * 13 / 24),
                              "accuracy_entailment": 100.0, "accuracy_neutral": 12.5,
                              "accuracy_contradiction": 50.0}


@pytest.mark.slow
def test_train_test_and_predict_end_to_end(small_root, tmp_path, capsys):
    run, test = tmp_path / "run", tmp_path / "test"
    summary = main(common_flags(small_root, run) + [
        "--recipe", "snli_ve_finetune", "--batchSize", "8", "--lr", "1e-3", "--epochs", "2"])
    assert summary["best_epoch"] in (0, 1)
    assert set(summary["best"]) >= {"accuracy", "accuracy_entailment", "accuracy_neutral",
                                    "accuracy_contradiction"}
    info = json.loads((run / "run_info.json").read_text())
    assert info["task_info"]["class_names"] == list(CLASSES)
    assert info["sources"]["valid"] == "default" and info["args"]["valid"] == "dev"
    assert info["sources"]["load_lxmert"] == "command line"  # the generated encoder

    main(common_flags(small_root, test, load_lxmert=False) + [
        "--recipe", "snli_ve_test", "--test", "test", "--load", str(run / "BEST")])
    written = _lines(test / "test_predict.jsonl")
    gold = _lines(small_root / "snli_ve" / "snli_ve_test.jsonl")
    assert [w["pairID"] for w in written] == [g["pairID"] for g in gold]
    assert all(w["prediction"] in CLASSES for w in written)
    record = [json.loads(line) for line in (test / "metrics.jsonl").read_text().splitlines()
              if '"test"' in line][-1]
    right = [w["prediction"] == g["gold_label"] for w, g in zip(written, gold)]
    assert record["accuracy"] == pytest.approx(100 * np.mean(right))
    for name in CLASSES:
        mine = [r for r, g in zip(right, gold) if g["gold_label"] == name]
        assert record[f"accuracy_{name}"] == pytest.approx(100 * np.mean(mine))

    example = gold[0]
    argv = ["--load", str(run / "BEST"), "--features",
            str(small_root / "flickr30k" / "flickr30k_test2014.tsv"), "--imgId",
            f"{example['Flickr30K_ID']}.jpg", "--statement", example["sentence2"], "--json"]
    capsys.readouterr()
    assert predict.main(argv) == 0
    answer = json.loads(capsys.readouterr().out)["statements"][0]
    assert answer["label"] == written[0]["prediction"]
    assert set(answer["probabilities"]) == set(CLASSES)
    assert sum(answer["probabilities"].values()) == pytest.approx(1, abs=1e-5)


def test_the_launchers(tmp_path):
    env = dict(os.environ, LXRT_DRY_RUN="1")

    def launch(script, *args):
        return subprocess.run(["bash", str(ROOT / "run" / script), "cpu", "x", *args],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)

    done = launch("snli_ve_finetune.bash")
    assert done.returncode == 0 and "tasks.snli_ve.main --recipe snli_ve_finetune" in done.stdout
    refused = launch("snli_ve_test.bash", "--load", "snap/snli_ve/ft/BEST")
    assert refused.returncode == 2 and "give the split to predict" in refused.stderr
    done = launch("snli_ve_test.bash", "--test", "test", "--load", "snap/snli_ve/ft/BEST")
    assert done.returncode == 0 and "--recipe snli_ve_test" in done.stdout
