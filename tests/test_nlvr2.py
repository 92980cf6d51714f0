"""NLVR2: the pair model, the metrics, the CSV files and `python -m tasks.nlvr2.main` end to end
on a generated data root (CPU, small model)."""
import json
import shutil

import pytest
import torch

from generated import common_flags
from tasks.common.run_folder import read_metrics
from tasks.nlvr2.main import build_parser, main
from tasks.nlvr2.model import NLVR2Model
from tasks.nlvr2.task import (check_predictions_csv, consistency, format_predictions,
                              nlvr2_metrics, sentence_key)
from tiny_model import tiny_config


# ---- the pair model on hand-built inputs ------------------------------------------------------

@pytest.fixture(scope="module")
def model():
    config = tiny_config(vocab_size=256, visual_feat_dim=16, l_layers=0, x_layers=2, r_layers=0)
    torch.manual_seed(0)
    return NLVR2Model(config).eval()  # eval: no dropout, so separate runs compare exactly


def _inputs(b=3, length=7, objs=5, dim=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 256, (b, length), generator=g)
    mask = torch.ones(b, length, dtype=torch.long)
    mask[0, 5:] = 0
    ids[0, 5:] = 0
    pos = torch.arange(length).expand(b, length).clone() * mask
    feats = torch.randn(b, 2, objs, dim, generator=g)
    xy = torch.rand(b, 2, objs, 2, generator=g) * 0.5
    boxes = torch.cat([xy, xy + 0.4], -1)
    return ids, pos, mask, feats, boxes


def test_model_keys_and_shapes(model):
    state = model.state_dict()
    h = model.lxrt_encoder.dim
    assert state["logit_fc.0.weight"].shape == (2 * h, 2 * h)
    assert state["logit_fc.2.weight"].shape == (2 * h,)
    assert state["logit_fc.3.weight"].shape == (2, 2 * h)
    assert any(k.startswith("lxrt_encoder.model.bert.") for k in state)
    # init_bert_weights on the head: zero biases, unit LayerNorm
    assert torch.all(state["logit_fc.0.bias"] == 0) and torch.all(state["logit_fc.2.weight"] == 1)


def test_pair_head_interleaving(model):
    ids, pos, mask, feats, boxes = _inputs()
    with torch.no_grad():
        logits = model(ids, pos, mask, feats, boxes)
        # each image through the encoder on its own, then [pooled(img0) ; pooled(img1)]
        p0 = model.lxrt_encoder(ids, pos, mask, feats[:, 0], boxes[:, 0])
        p1 = model.lxrt_encoder(ids, pos, mask, feats[:, 1], boxes[:, 1])
        assert torch.allclose(model.pooled(ids, pos, mask, feats, boxes),
                              torch.cat([p0, p1], 1), atol=1e-5)
        assert torch.allclose(logits, model.logit_fc(torch.cat([p0, p1], 1)), atol=1e-5)
        # swapping the two images of an example changes its logits (the head is ordered)
        swapped = model(ids, pos, mask, feats.flip(1), boxes.flip(1))
        assert torch.allclose(swapped, model.logit_fc(torch.cat([p1, p0], 1)), atol=1e-5)
        assert not torch.allclose(swapped, logits, atol=1e-4)
        # the sentence of example i goes with the images of example i only
        one = model(ids[1:2], pos[1:2], mask[1:2], feats[1:2], boxes[1:2])
        assert torch.allclose(one, logits[1:2], atol=1e-5)
    assert logits.shape == (3, 2)


def test_model_rejects_single_image(model):
    ids, pos, mask, feats, boxes = _inputs()
    with pytest.raises(ValueError, match=r"\[B, 2, O, D\]"):
        model(ids, pos, mask, feats[:, 0], boxes[:, 0])


# ---- metrics and files ------------------------------------------------------------------------

def test_sentence_key():
    # {split}-{set_id}-{pair_id}-{sentence_id}: a sentence spans the pairs of its set
    assert sentence_key("dev-850-0-1") == "dev-850-1"
    assert sentence_key("dev-850-3-1") == "dev-850-1"
    assert sentence_key("dev-850-3-0") == "dev-850-0"
    assert sentence_key("odd-id") == "odd-id"


def test_consistency_hand_case():
    identifiers = ["dev-1-0-0", "dev-1-1-0", "dev-1-2-0",   # sentence dev-1-0: one wrong
                   "dev-1-0-1", "dev-1-1-1",                # sentence dev-1-1: all right
                   "dev-2-0-0",                             # sentence dev-2-0: all right
                   "test1-2-0-0"]                           # other split: wrong
    correct = [True, False, True, True, True, True, False]
    assert consistency(identifiers, correct) == pytest.approx(2 / 4)
    predictions = [1, 0, 1, 1, 0, 0, 1]
    labels = [1, 1, 1, 1, 0, 0, 0]
    m = nlvr2_metrics(identifiers, predictions, labels)
    assert m["accuracy"] == pytest.approx(5 / 7) and m["consistency"] == pytest.approx(0.5)
    assert m["examples"] == 7 and m["labelled"] == 7


def test_metrics_unlabelled():
    m = nlvr2_metrics(["a-1-0-0", "a-1-1-0"], [1, 0], [-1, -1])
    assert m["labelled"] == 0 and m["accuracy"] != m["accuracy"] and "consistency" not in m
    m = nlvr2_metrics(["a-1-0-0", "a-1-1-0"], [1, 0], [1, -1])  # only labelled ones count
    assert m["accuracy"] == 1.0 and m["consistency"] == 1.0


def test_csv_format_and_check():
    text = format_predictions(["x-1-0-0", "x-1-1-0"], [1, 0])
    assert text == "x-1-0-0,True\nx-1-1-0,False\n"
    check_predictions_csv(text, ["x-1-0-0", "x-1-1-0"])
    with pytest.raises(RuntimeError, match="2 prediction lines for 3"):
        check_predictions_csv(text, ["x-1-0-0", "x-1-1-0", "x-1-2-0"])
    with pytest.raises(RuntimeError, match="line 2"):
        check_predictions_csv("x-1-0-0,True\nx-1-1-0,1\n", ["x-1-0-0", "x-1-1-0"])


# ---- end to end -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def root(small_root):
    return small_root


def _common(root, output):
    return common_flags(root, output, load_lxmert=False) + ["--batchSize", "8"]


def _test(root, output, split, load):
    return main(_common(root, output) + ["--train", "", "--valid", "", "--test", split,
                                         "--load", str(load)])


def check_nlvr2_csv(path, examples):
    """Independent check of a result file: `identifier,True|False` per example, no header,
    in the split's order; returns the predictions as 0/1."""
    lines = path.read_text().split("\n")
    assert lines[-1] == ""  # every line ends with a newline, as the authors' f.write
    lines = lines[:-1]
    assert len(lines) == len(examples)
    preds = []
    for line, ex in zip(lines, examples):
        ident, value = line.split(",")
        assert ident == ex["identifier"] and value in ("True", "False")
        preds.append(1 if value == "True" else 0)
    return preds


def hand_consistency(examples, preds):
    groups = {}
    for ex, p in zip(examples, preds):
        s, set_id, _pair, sent_id = ex["identifier"].split("-")
        groups.setdefault((s, set_id, sent_id), []).append(p == ex["label"])
    return sum(all(v) for v in groups.values()) / len(groups)


@pytest.fixture(scope="module")
def trained(root, tmp_path_factory):
    output = tmp_path_factory.mktemp("nlvr2_run")
    summary = main(_common(root, output) + ["--loadLXMERT", str(root / "model"), "--train",
                                            "train", "--valid", "valid", "--epochs", "2"])
    return output, summary


def test_parser_defaults():
    args = build_parser().parse_args([])
    assert args.epochs == 8 and args.batch_size == 32 and args.lr == 5e-5
    assert (args.train, args.valid, args.test) == ("train", "valid", None)


@pytest.mark.slow
def test_train_writes_checkpoints_and_logs(trained):
    output, summary = trained
    for name in ("BEST.pth", "LAST.pth", "log.log", "metrics.jsonl", "run_info.json"):
        assert (output / name).is_file(), name
    records = read_metrics(output / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [0, 1]
    for r in records:
        assert r["valid"]["split"] == "valid"
        assert 0 <= r["valid"]["accuracy"] <= 100 and 0 <= r["valid"]["consistency"] <= 100
        assert r["train_samples_per_s"] > 0
    assert summary["best"]["split"] == "valid"
    state = torch.load(output / "BEST.pth", map_location="cpu")
    assert state["logit_fc.3.weight"].shape == (2, 128)  # hidden 64 -> 2H


@pytest.mark.slow
@pytest.mark.parametrize("split", ["test", "valid"])
def test_predict_split_writes_csv(root, trained, tmp_path, split):
    output, _ = trained
    summary = _test(root, tmp_path, split, output / "BEST")
    examples = json.loads((root / "nlvr2" / f"{split}.json").read_text())
    preds = check_nlvr2_csv(tmp_path / f"{split}_predict.csv", examples)
    acc = sum(p == ex["label"] for p, ex in zip(preds, examples)) / len(examples)
    metrics = summary["test"]
    assert metrics["split"] == split and metrics["examples"] == len(examples)
    assert metrics["accuracy"] == pytest.approx(acc * 100)
    assert metrics["consistency"] == pytest.approx(hand_consistency(examples, preds) * 100)


def test_hidden_missing_is_a_clear_error(root, tmp_path):
    with pytest.raises(SystemExit, match="hidden") as err:
        _test(root, tmp_path, "hidden", root / "nonexistent")
    message = str(err.value)
    assert "nlvr2/hidden.json" in message and "hidden_obj36.tsv" in message
    assert not (tmp_path / "hidden_predict.csv").exists()


@pytest.mark.slow
def test_hidden_works_when_present(root, trained, tmp_path):
    """With hidden.json (unlabelled) and its features the split predicts like any other."""
    output, _ = trained
    hidden_root = tmp_path / "data"
    shutil.copytree(root, hidden_root, ignore=shutil.ignore_patterns("*.store*"))
    examples = json.loads((root / "nlvr2" / "test.json").read_text())[:10]
    for i, ex in enumerate(examples):
        del ex["label"]
        ex["identifier"] = ex["identifier"].replace("test1-", "test2-")
        ex["uid"] = f"nlvr2_hidden_{i}"
    (hidden_root / "nlvr2" / "hidden.json").write_text(json.dumps(examples))
    shutil.copyfile(root / "nlvr2_imgfeat" / "test_obj36.tsv",
                    hidden_root / "nlvr2_imgfeat" / "hidden_obj36.tsv")
    summary = _test(hidden_root, tmp_path / "out", "hidden", output / "BEST")
    check_nlvr2_csv(tmp_path / "out" / "hidden_predict.csv", examples)
    assert summary["test"]["labelled"] == 0 and "accuracy" not in summary["test"]


def test_load_lxmert_qa_is_an_error(root, tmp_path):
    with pytest.raises(SystemExit, match="--loadLXMERTQA is not supported for NLVR2"):
        main(_common(root, tmp_path) + ["--loadLXMERTQA", str(root / "model")])
