"""tools.predict / tools.predictor / tools.attention_map on a run trained on generated data."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from generated import ROOT, _env, common_flags, make_root
from tasks.vqa.main import main as vqa_main
from tools import attention_map, predict
from tools.predictor import Predictor, PredictorError

pytestmark = pytest.mark.slow  # end-to-end runs: not in the fast tier


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(data root, run folder, test output folder) of a 1-epoch VQA run and its --test run."""
    root = make_root(tmp_path_factory.mktemp("data"), no_dropout=True)
    out = tmp_path_factory.mktemp("run")
    vqa_main(common_flags(root, out) + ["--train", "train", "--valid", "minival",
                                        "--batchSize", "16", "--lr", "1e-3", "--epochs", "1"])
    test_out = tmp_path_factory.mktemp("test")
    vqa_main(common_flags(root, test_out) + ["--train", "", "--valid", "", "--test", "test",
                                             "--load", str(out / "BEST")])
    return root, out, test_out


@pytest.fixture(scope="module")
def predictor(run):
    return Predictor.from_run(run[1] / "BEST")


def _cli(argv, capsys):
    code = predict.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_run_info_records_what_the_predictor_needs(run):
    info = json.loads((run[1] / "run_info.json").read_text())["task_info"]
    assert info["task"] == "vqa" and info["num_answers"] == 14
    assert info["model_config"]["hidden_size"] > 0
    assert any(f.endswith("train2014_obj36.tsv") for f in info["feature_files"])


def test_top_answer_equals_the_evaluators_prediction(run, predictor):
    root, _, test_out = run
    evaluated = {e["question_id"]: e["answer"]
                 for e in json.loads((test_out / "test_predict.json").read_text())}
    questions = json.loads((root / "vqa" / "test.json").read_text())[:24]
    features = root / "mscoco_imgfeat" / "test2015_obj36.tsv"
    for q in questions:
        image = predictor.image_from_features(features, q["img_id"])
        (top, _), *_ = predictor.answer(image, [q["sent"]], topk=3)[0]
        assert top == evaluated[q["question_id"]], q


def test_api_and_cli_agree(run, predictor, capsys):
    root = run[0]
    q = json.loads((root / "vqa" / "test.json").read_text())[0]
    features = root / "mscoco_imgfeat" / "test2015_obj36.tsv"
    image = predictor.image_from_features(features, q["img_id"])
    questions = [q["sent"], "what color is the ball?"]
    api = predictor.answer(image, questions, topk=4)
    assert all(len(a) == 4 for a in api)
    assert all(a[0][1] >= a[1][1] >= a[3][1] for a in api)
    code, out, _ = _cli(["--load", str(run[1] / "BEST"), "--features", str(features),
                         "--imgId", q["img_id"], "--question", questions[0], "--question",
                         questions[1], "--topk", "4", "--json"], capsys)
    assert code == 0
    cli = json.loads(out)
    assert cli["normalise"] == "sigmoid"
    assert [[(a, pytest.approx(p, abs=1e-6)) for a, p in item["answers"]]
            for item in cli["questions"]] == api
    # the softmax alternative keeps the ranking and sums to 1 over the answer table
    soft = predictor.answer_scores(image, questions, normalise="softmax")
    assert torch.allclose(soft.sum(1), torch.ones(2))
    assert [a for a, _ in predictor.answer(image, questions, 4, "softmax")[0]] == \
        [a for a, _ in api[0]]
    code, out, _ = _cli(["--load", str(run[1] / "BEST"), "--features", str(features),
                         "--imgId", q["img_id"], "--question", questions[0]], capsys)
    assert code == 0 and "sigmoid score per answer" in out and api[0][0][0] in out


def test_attention_picture_on_a_blank_canvas(run, predictor, tmp_path, capsys):
    root = run[0]
    q = json.loads((root / "vqa" / "test.json").read_text())[0]
    features = root / "mscoco_imgfeat" / "test2015_obj36.tsv"
    image = predictor.image_from_features(features, q["img_id"])
    maps = predictor.attention(image, q["sent"])
    assert maps.region_weights.shape == (36,) and (maps.region_weights >= 0).all()
    assert maps.region_weights.sum() == pytest.approx(1, abs=1e-5)
    assert maps.token_weights.sum() == pytest.approx(1, abs=1e-5)
    assert maps.tokens[0] == "[CLS]" and maps.tokens[-1] == "[SEP]"
    assert 0 <= maps.visual_cls_share <= 1 and maps.layer == predictor.model.lxrt_encoder \
        .config.x_layers - 1
    word = maps.tokens[1]
    out = tmp_path / "att.png"
    code, stdout, _ = _cli(["--load", str(run[1] / "BEST"), "--features", str(features),
                            "--imgId", q["img_id"], "--question", q["sent"], "--attention",
                            str(out), "--word", word, "--layer", "0", "--head", "1",
                            "--json"], capsys)
    assert code == 0
    att = json.loads(stdout)["attention"]
    assert att["query"] == word and att["layer"] == 0 and att["head"] == 1
    assert sum(att["region_weights"]) == pytest.approx(1, abs=1e-5)
    with Image.open(out) as im:
        assert im.size == (attention_map.PANEL + attention_map.TEXT_WIDTH,
                           attention_map.PANEL + attention_map.CAPTION)
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.std() > 10 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20


def test_image_file_is_described_as_the_training_features(run, predictor, tmp_path):
    """--image goes through the extractor recorded next to the run's feature TSV."""
    from tools.extract_features import extract_to_tsv, fit_standardizer
    paths = {}
    for k, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        im = Image.new("RGB", (60, 40), (240, 240, 240))
        ImageDraw.Draw(im).ellipse((10, 5, 40, 35), fill=colour)
        paths[f"img{k}"] = str(tmp_path / f"img{k}.png")
        im.save(paths[f"img{k}"])
    tsv = tmp_path / "imgs_obj36.tsv"
    dim = predictor.model.lxrt_encoder.config.visual_feat_dim
    extract_to_tsv(paths, tsv, dim=dim, standardize=fit_standardizer(list(paths.values())))
    with pytest.raises(PredictorError, match="extractor"):
        predictor.image_from_file(paths["img0"])      # the run's features are not extracted
    local = Predictor(predictor.model, {**predictor.task_info, "feature_files": [str(tsv)]},
                      predictor.tokenizer, predictor.device, predictor.checkpoint)
    from_file = local.image_from_file(paths["img1"])
    from_tsv = local.image_from_features(tsv, "img1")
    np.testing.assert_array_equal(from_file.feats, from_tsv.feats)
    np.testing.assert_array_equal(from_file.boxes, from_tsv.boxes)
    assert (from_file.img_w, from_file.img_h) == (60, 40)
    maps = local.attention(from_file, "what color is the ball?")
    out = attention_map.draw_attention(from_file, maps, tmp_path / "att.png")
    assert np.asarray(out).std() > 10


def _copy_run(run_dir, dest, change):
    dest.mkdir()
    shutil.copy(run_dir / "BEST.pth", dest / "BEST.pth")
    info = json.loads((run_dir / "run_info.json").read_text())
    change(info["task_info"])
    (dest / "run_info.json").write_text(json.dumps(info))
    return dest / "BEST"


def test_bad_inputs_give_clear_errors(run, predictor, tmp_path, capsys):
    root, run_dir, _ = run
    features = root / "mscoco_imgfeat" / "test2015_obj36.tsv"
    image = predictor.image_from_features(features, json.loads(
        (root / "vqa" / "test.json").read_text())[0]["img_id"])
    base = ["--load", str(run_dir / "BEST"), "--question", "what is it?"]
    code, _, err = _cli(base + ["--image", str(tmp_path / "nope.png")], capsys)
    assert code == 2 and "nope.png: no such file" in err
    code, _, err = _cli(base + ["--features", str(features), "--imgId", "no_such"], capsys)
    assert code == 2 and "'no_such': not in" in err
    code, _, err = _cli(["--load", str(run_dir / "BEST"), "--features", str(features),
                         "--imgId", image.img_id, "--question", "  "], capsys)
    assert code == 2 and "empty question" in err
    code, _, err = _cli(["--load", str(run_dir / "BEST"), "--features", str(features),
                         "--imgId", image.img_id], capsys)
    assert code == 2 and "give --question" in err
    with pytest.raises(PredictorError, match="empty question"):
        predictor.answer(image, [""])
    bigger = _copy_run(run_dir, tmp_path / "bigger", lambda t: t["model_config"].update(
        hidden_size=2 * t["model_config"]["hidden_size"]))
    with pytest.raises(PredictorError, match="does not fit the vqa model"):
        Predictor.from_run(bigger)
    other = _copy_run(run_dir, tmp_path / "other", lambda t: t.update(task="nlvr2"))
    with pytest.raises(PredictorError, match="does not fit the nlvr2 model"):
        Predictor.from_run(other)
    old = _copy_run(run_dir, tmp_path / "old", lambda t: t.clear())
    with pytest.raises(PredictorError, match="no task_info.task"):
        Predictor.from_run(old)
    with pytest.raises(PredictorError, match="checkpoint not found"):
        Predictor.from_run(tmp_path / "missing" / "BEST")
    with pytest.raises(ValueError, match="--layer 9"):
        predictor.attention(image, "what is it?", layer=9)
    with pytest.raises(ValueError, match="--word 'zebra'"):
        predictor.attention(image, "what is it?", word="zebra")


def test_module_entry_point_reports_errors(run, tmp_path):
    result = subprocess.run([sys.executable, "-m", "tools.predict", "--load",
                             str(run[1] / "BEST"), "--image", str(tmp_path / "missing.png"),
                             "--question", "what?"], capture_output=True, text=True, env=_env())
    assert result.returncode == 2
    assert "missing.png: no such file" in result.stderr and "Traceback" not in result.stderr


def test_easyvqa_image_file_answers_as_the_evaluator(tmp_path, capsys):
    """The launcher's route: an easy-VQA image file goes through the extractor record of the
    converted features, and the answer equals the evaluator's for that question."""
    easy_vqa = pytest.importorskip("easy_vqa")
    from tools import easyvqa
    root, out = tmp_path / "data", tmp_path / "run"
    easyvqa.convert(root, limit_images=12, verbose=False)
    flags = ["--task", "easyvqa", "--dataRoot", str(root), "--modelConfig",
             str(ROOT / "run" / "configs" / "easyvqa_cpu.json"), "--xlayers", "2",
             "--device", "cpu", "--numWorkers", "0", "--batchSize", "16", "--output", str(out)]
    vqa_main(flags + ["--fromScratch", "--train", "train", "--valid", "valid", "--epochs", "1",
                      "--lr", "1e-3"])
    vqa_main(flags + ["--train", "", "--valid", "", "--test", "test", "--load", str(out / "BEST")])
    evaluated = {e["question_id"]: e["answer"]
                 for e in json.loads((out / "test_predict.json").read_text())}
    questions = json.loads((root / "easyvqa" / "test.json").read_text())[:6]
    paths = easy_vqa.get_test_image_paths()
    predictor = Predictor.from_run(out / "BEST")
    for q in questions:
        image = predictor.image_from_file(paths[int(q["img_id"].rsplit("_", 1)[1])])
        stored = predictor.image_from_features(
            root / "easyvqa_imgfeat" / "test_obj36.tsv", q["img_id"])
        np.testing.assert_allclose(image.feats, stored.feats, rtol=1e-6, atol=1e-6)
        assert predictor.answer(image, [q["sent"]])[0][0][0] == evaluated[q["question_id"]]


def test_answers_stay_on_sdpa_and_only_attention_reads_maps(run, predictor, monkeypatch):
    root = run[0]
    q = json.loads((root / "vqa" / "test.json").read_text())[0]
    image = predictor.image_from_features(root / "mscoco_imgfeat" / "test2015_obj36.tsv",
                                          q["img_id"])
    calls = []
    original = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    predictor.answer(image, [q["sent"]])
    assert len(calls) > 0
    calls.clear()
    predictor.attention(image, q["sent"])
    assert calls == []
