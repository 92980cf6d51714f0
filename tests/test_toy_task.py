"""A new task is one folder: a toy task defined in tests/toy_task/ (entry, task, main; no
edit to shared code) is registered at run time and runs end to end through main(argv):
training with a recipe, a --test result file, run info, and tools.predict's classify mode."""
import json

import pytest

from tasks.common import registry
from tasks.common.paths import DataRoot
from tools.predictor import Predictor
from toy_task.entry import TOY
from toy_task.main import main

pytestmark = pytest.mark.slow  # end-to-end runs: not in the fast tier


@pytest.fixture(scope="module")
def toy_root(generated_root_factory):
    """The generated root plus toy/{train,valid,test}.json: its yes/no questions, label 1 =
    the answer is yes."""
    root = generated_root_factory()
    registry.register(TOY)
    splits = {"train": "train", "valid": "minival", "test": "nominival"}
    for toy, vqa in splits.items():
        questions = json.loads((root / "vqa" / f"{vqa}.json").read_text())
        toy_data = [{**q, "label": int(max(q["label"], key=q["label"].get) == "yes")}
                    for q in questions if q["question_type"] == "is there a"]
        (root / "toy").mkdir(exist_ok=True)
        (root / "toy" / f"{toy}.json").write_text(json.dumps(toy_data))
    yield root
    registry.unregister("toy")


def _flags(root, out):
    return ["--dataRoot", str(root), "--modelConfig", str(root / "bert_config.json"),
            "--device", "cpu", "--numWorkers", "0", "--batchSize", "8", "--output", str(out)]


def test_the_toy_task_is_found_through_the_registry(toy_root):
    assert registry.get("toy") is TOY and "toy" in registry.with_mode("classify")
    r = DataRoot(toy_root)
    assert r.path("toy", "examples", "valid") == toy_root / "toy" / "valid.json"
    assert r.path("toy", "features", "test").name == "val2014_obj36.tsv"


def test_the_toy_task_trains_tests_and_answers_through_main(toy_root, tmp_path):
    run = tmp_path / "run"
    summary = main(_flags(toy_root, run) + ["--recipe", "toy_finetune", "--fromScratch"])
    assert summary["best_epoch"] in (0, 1) and 0 <= summary["best"]["accuracy"] <= 100
    info = json.loads((run / "run_info.json").read_text())
    assert info["task_info"]["task"] == "toy"
    assert info["task_info"]["class_names"] == ["no", "yes"]
    assert info["sources"]["lr"] == "recipe toy_finetune"

    test = tmp_path / "test"
    main(_flags(toy_root, test) + ["--test", "test", "--load", str(run / "BEST")])
    questions = json.loads((toy_root / "toy" / "test.json").read_text())
    lines = [json.loads(line) for line in
             (test / "test_predict.jsonl").read_text().splitlines()]
    assert [e["question_id"] for e in lines] == [q["question_id"] for q in questions]

    predictor = Predictor.from_run(run / "BEST")
    image = predictor.image_from_features(toy_root / "mscoco_imgfeat" / "val2014_obj36.tsv",
                                          questions[0]["img_id"])
    ((label, probabilities),) = predictor.classify([questions[0]["sent"]], [image])
    assert label == lines[0]["prediction"]
    assert set(probabilities) == {"no", "yes"} and abs(sum(probabilities.values()) - 1) < 1e-5
