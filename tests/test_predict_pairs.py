"""tools.predict for NLVR2 (statement + two images) and retrieval (caption -> images), checked
against the evaluators' result files of short runs on generated data."""
import json

import numpy as np
import pytest

from tasks.nlvr2.main import main as nlvr2_main
from tasks.retrieval.main import main as retrieval_main
from generated import common_flags
from tools import predict
from tools.predictor import Predictor, PredictorError

pytestmark = pytest.mark.slow  # end-to-end runs: not in the fast tier


@pytest.fixture(scope="module")
def root(generated_root_factory):
    return generated_root_factory(images=8)


def _common(root, out):
    return common_flags(root, out, load_lxmert=False) + ["--batchSize", "8"]


def test_nlvr2_verdicts_match_the_evaluator(root, tmp_path, capsys):
    run = tmp_path / "run"
    nlvr2_main(_common(root, run) + ["--loadLXMERT", str(root / "model"), "--train", "train",
                                     "--valid", "", "--epochs", "1"])
    nlvr2_main(_common(root, tmp_path / "test") + ["--train", "", "--valid", "", "--test",
                                                   "test", "--load", str(run / "LAST")])
    evaluated = dict(line.split(",") for line in
                     (tmp_path / "test" / "test_predict.csv").read_text().splitlines())
    predictor = Predictor.from_run(run / "LAST")
    features = root / "nlvr2_imgfeat" / "test_obj36.tsv"
    examples = json.loads((root / "nlvr2" / "test.json").read_text())[:12]
    for ex in examples:
        left, right = (predictor.image_from_features(features, ex[k]) for k in ("img0", "img1"))
        ((verdict, p_true),) = predictor.verify([ex["sent"]], left, right)
        assert str(verdict) == evaluated[ex["identifier"]] and 0 <= p_true <= 1
    ex = examples[0]
    argv = ["--load", str(run / "LAST"), "--features", str(features), "--imgId", ex["img0"],
            "--imgId", ex["img1"], "--statement", ex["sent"], "--json"]
    assert predict.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert str(out["statements"][0]["true"]) == evaluated[ex["identifier"]]
    assert predict.main(argv[:6] + ["--statement", ex["sent"]]) == 2
    assert "takes 2 image(s)" in capsys.readouterr().err
    assert predict.main(argv + ["--attention", str(tmp_path / "a.png")]) == 2
    assert "models that answer questions only" in capsys.readouterr().err
    with pytest.raises(PredictorError, match="is a nlvr2 model; answering questions"):
        predictor.answer(left, ["what is it?"])


def test_retrieval_ranking_matches_the_evaluator(root, tmp_path, capsys):
    run = tmp_path / "run"
    retrieval_main(_common(root, run) + ["--loadLXMERTQA", str(root / "model"), "--train",
                                         "train", "--valid", "", "--epochs", "1"])
    test = tmp_path / "test"
    retrieval_main(_common(root, test) + ["--train", "", "--test", "test", "--load",
                                          str(run / "LAST")])
    scores = np.load(test / "test_scores.npy")                     # [captions, images], P(match)
    images = json.loads((test / "test_metrics.json").read_text())["images"]
    captions = [s for item in json.loads((root / "flickr30k" / "flickr30k_test2014.json")
                                         .read_text()) for s in item["sentences"]]
    assert scores.shape == (len(captions), len(images))
    predictor = Predictor.from_run(run / "LAST")
    features = root / "flickr30k" / "flickr30k_test2014.tsv"
    for c in (0, 7, 21):
        ranked = predictor.rank_images(captions[c], features, topk=len(images))
        got = dict(ranked)
        np.testing.assert_allclose([got[i] for i in images], scores[c], atol=1e-5)
        assert [p for _, p in ranked] == sorted((p for _, p in ranked), reverse=True)
    assert predict.main(["--load", str(run / "LAST"), "--features", str(features), "--caption",
                         captions[0], "--topk", "3"]) == 0
    table = capsys.readouterr().out
    assert "P(match)" in table and len(table.strip().splitlines()) == 5
