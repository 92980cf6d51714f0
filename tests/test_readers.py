"""Data layout, readers and datasets on a generated data root (tools.make_data)."""
import json
import logging
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from tasks.common.paths import ENV_VAR, DataFileNotFoundError, DataRoot
from tasks.common.registry import UnknownTaskError
from tasks.common.readers import DataFormatError, MissingFeaturesError, feature_topk
from tasks.nlvr2.data import NLVR2Dataset, load_nlvr2_dataset, load_nlvr2_split
from tasks.qa.data import AnswerTable, QADataset, load_qa_dataset, load_qa_split
from tasks.retrieval.data import load_flickr_annotations, load_hard_negatives
from tools.make_data import make_data

DIM = 16
IMAGES = 16


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("readers") / "data"
    make_data(out, images=IMAGES, dim=DIM, seed=1)
    return out


@pytest.fixture(scope="module")
def tokenizer():
    from lxrt.tokenization import LXRTTokenizer, find_vocab_file
    return LXRTTokenizer(find_vocab_file(), max_seq_length=20)


class CountingTokenizer:
    """Wraps a tokenizer and counts encode_batch calls."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def encode_batch(self, sents):
        self.calls += 1
        return self.inner.encode_batch(sents)


def _store(root, path):
    from tasks.common.features import open_feature_store
    return open_feature_store(path, cache_dir=root.parent / "cache", progress=False)


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


# ------------------------------------------------------------------------------ DataRoot
def test_root_selection(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert DataRoot().root == DataRoot("data").root
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert DataRoot().root == tmp_path
    assert DataRoot(tmp_path / "x").root == tmp_path / "x"


def test_split_mappings(root):
    r = DataRoot(root)
    assert r.path("vqa", "features", "train").name == "train2014_obj36.tsv"
    for split in ("valid", "minival", "nominival"):
        assert r.path("vqa", "features", split).name == "val2014_obj36.tsv"
    assert r.path("vqa", "features", "test").name == "test2015_obj36.tsv"
    with pytest.raises(ValueError, match="unknown VQA split"):
        r.path("vqa", "features", "bogus")
    assert r.path("gqa", "features", "testdev").name == "gqa_testdev_obj36.tsv"
    for split in ("train", "valid", "submit", "anything"):
        assert r.path("gqa", "features", split).name == "vg_gqa_obj36.tsv"
    assert r.path("retrieval", "annotations", "train").name == "flickr30k_train2014.json"
    for split in ("valid", "test", "minival"):  # every other split reads the test files
        assert r.path("retrieval", "annotations", split).name == "flickr30k_test2014.json"
        assert r.path("retrieval", "features", split).name == "flickr30k_test2014.tsv"
    assert r.path("nlvr2", "features", "valid").name == "valid_obj36.tsv"
    with pytest.raises(UnknownTaskError, match="unknown task 'bogus'; registered: .*'vqa'"):
        r.path("bogus", "examples", "train")


def test_missing_file_lists_tried_paths(tmp_path):
    r = DataRoot(tmp_path / "data")
    with pytest.raises(DataFileNotFoundError) as err:
        r.path("vqa", "examples", "train")
    msg = str(err.value)
    assert str(tmp_path / "data" / "vqa" / "train.json") in msg
    assert str(tmp_path / "data" / "lxmert_data" / "vqa" / "train.json") in msg
    assert str(tmp_path / "lxmert_data" / "vqa" / "train.json") in msg
    assert "airsplay/lxmert" in msg
    assert isinstance(err.value, FileNotFoundError) and len(err.value.tried) == 3
    with pytest.raises(DataFileNotFoundError, match="vilbert-multi-task"):
        r.path("retrieval", "hard_negatives")
    with pytest.raises(DataFileNotFoundError, match="image_retrieval"):
        r.path("retrieval", "annotations", "train")
    with pytest.raises(DataFileNotFoundError, match="gqa_imgfeat"):
        r.path("gqa", "features", "train")
    with pytest.raises(DataFileNotFoundError, match="Flickr30k"):
        r.path("retrieval", "features", "test")


def test_lxmert_s_alternative_paths(tmp_path):
    data = tmp_path / "data"
    # the authors' paths: data/lxmert_data/vqa, lxmert_data/gqa_imgfeat (top level),
    # data/image_retrieval, lxmert_data/flickr30k, lxmert_data/lxmert/all_ans.json
    _write(data / "lxmert_data" / "vqa" / "train.json", [])
    (tmp_path / "lxmert_data" / "gqa_imgfeat").mkdir(parents=True)
    (tmp_path / "lxmert_data" / "gqa_imgfeat" / "vg_gqa_obj36.tsv").write_text("")
    _write(data / "image_retrieval" / "flickr30k_test2014.json", [])
    (data / "image_retrieval" / "hard_negative.pkl").write_bytes(b"")
    (tmp_path / "lxmert_data" / "flickr30k").mkdir(parents=True)
    (tmp_path / "lxmert_data" / "flickr30k" / "flickr30k_test2014.tsv").write_text("")
    _write(tmp_path / "lxmert_data" / "lxmert" / "all_ans.json", [])
    r = DataRoot(data)
    assert r.path("vqa", "examples", "train") == data / "lxmert_data" / "vqa" / "train.json"
    assert r.path("gqa", "features", "valid") == tmp_path / "lxmert_data" / "gqa_imgfeat" / "vg_gqa_obj36.tsv"
    assert r.path("retrieval", "annotations", "valid") == data / "image_retrieval" / "flickr30k_test2014.json"
    assert r.path("retrieval", "hard_negatives") == data / "image_retrieval" / "hard_negative.pkl"
    assert r.path("retrieval", "features", "test") == tmp_path / "lxmert_data/flickr30k/flickr30k_test2014.tsv"
    assert r.path("pretrain", "answers") == tmp_path / "lxmert_data" / "lxmert" / "all_ans.json"
    # the primary layout wins over the alternatives
    _write(data / "vqa" / "train.json", [])
    assert r.path("vqa", "examples", "train") == data / "vqa" / "train.json"


def test_shipped_tables_are_the_fallback(tmp_path):
    r = DataRoot(tmp_path)
    a2l, l2a = r.path("vqa", "ans2label"), r.path("vqa", "label2ans")
    assert AnswerTable(a2l, l2a).num_answers == 3129
    assert AnswerTable.of(r, "gqa").num_answers == 1842
    assert len(json.loads(r.path("pretrain", "answers").read_text())) == 9500
    with pytest.raises(DataFileNotFoundError):
        AnswerTable.of(r, "easyvqa")  # nothing shipped for easy-VQA
    with pytest.raises(UnknownTaskError, match="'nlvr2' declares no 'ans2label' file"):
        AnswerTable.of(r, "nlvr2")


def test_easyvqa_layout(tmp_path):
    for split in ("train", "valid", "test"):
        _write(tmp_path / "easyvqa" / f"{split}.json", [])
    for name in ("train", "test"):
        (tmp_path / "easyvqa_imgfeat").mkdir(exist_ok=True)
        (tmp_path / "easyvqa_imgfeat" / f"{name}_obj36.tsv").write_text("")
    _write(tmp_path / "easyvqa" / "trainval_ans2label.json", {"yes": 0})
    _write(tmp_path / "easyvqa" / "trainval_label2ans.json", ["yes"])
    r = DataRoot(tmp_path)
    assert r.path("easyvqa", "features", "valid").name == "train_obj36.tsv"
    assert r.path("easyvqa", "features", "test").name == "test_obj36.tsv"
    assert r.path("easyvqa", "examples", "valid") == tmp_path / "easyvqa" / "valid.json"
    assert AnswerTable.of(r, "easyvqa").num_answers == 1


# ------------------------------------------------------------------------------ QA readers
def test_topk_helpers():
    assert feature_topk("train", task="vqa", tiny=True) == 200
    assert feature_topk("train", task="gqa", tiny=True) == 512
    assert feature_topk("train", task="nlvr2", tiny=True) == 512
    assert feature_topk("train", task="retrieval", tiny=True) == 512
    assert feature_topk("test", task="retrieval", fast=True) == 5000
    assert feature_topk("train", task="vqa", fast=True) == 5000
    assert feature_topk("minival", task="vqa") == 5000
    assert feature_topk("minival", task="vqa", tiny=True) == 200
    assert feature_topk("nominival", task="vqa") is None
    assert feature_topk("minival", task="gqa") is None
    assert feature_topk("test", task="easyvqa") is None


def test_load_qa_split_validation(tmp_path, root):
    data = load_qa_split(DataRoot(root).path("vqa", "examples", "train"), require_label=True)
    assert data and all("label" in d for d in data)
    p = _write(tmp_path / "q.json", {"not": "a list"})
    with pytest.raises(DataFormatError, match="expected a JSON list"):
        load_qa_split(p)
    good = {"img_id": "a", "question_id": 1, "sent": "what?", "label": {"yes": 1}}
    p = _write(tmp_path / "q.json", [good, {k: v for k, v in good.items() if k != "sent"}])
    with pytest.raises(DataFormatError) as err:
        load_qa_split(p)
    assert str(p) in str(err.value) and "item 1" in str(err.value) and "'sent'" in str(err.value)
    p = _write(tmp_path / "q.json", [good, dict(good, label={"yes": "high"})])
    with pytest.raises(DataFormatError, match=r"item 1.*'label'.*'yes'"):
        load_qa_split(p)
    p = _write(tmp_path / "q.json", [dict(good, question_id=1.5)])
    with pytest.raises(DataFormatError, match=r"item 0.*'question_id'"):
        load_qa_split(p)
    p = _write(tmp_path / "q.json", [{k: v for k, v in good.items() if k != "label"}])
    assert load_qa_split(p)[0]["question_id"] == 1
    with pytest.raises(DataFormatError, match=r"item 0 \(question_id 1\): missing key 'label'"):
        load_qa_split(p, require_label=True)
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(DataFormatError, match="not valid JSON"):
        load_qa_split(tmp_path / "bad.json")


def test_answer_table_consistency(tmp_path):
    a2l = _write(tmp_path / "a2l.json", {"yes": 0, "no": 1})
    l2a = _write(tmp_path / "l2a.json", ["yes", "no"])
    t = AnswerTable(a2l, l2a)
    assert len(t) == 2 and t.label("no") == 1 and t.answer(0) == "yes" and "yes" in t
    _write(tmp_path / "l2a.json", ["no", "yes"])
    with pytest.raises(DataFormatError, match="disagree at label 0"):
        AnswerTable(a2l, l2a)
    _write(tmp_path / "l2a.json", ["yes"])
    with pytest.raises(DataFormatError, match="has 2 answers"):
        AnswerTable(a2l, l2a)


# ------------------------------------------------------------------------------ QADataset
def test_qa_dataset_items(root, tokenizer):
    r = DataRoot(root)
    table = AnswerTable.of(r, "vqa")
    data = load_qa_split(r.path("vqa", "examples", "train"))
    counting = CountingTokenizer(tokenizer)
    ds = QADataset(data, [_store(root, r.path("vqa", "features", "train"))], counting, table,
                   split_name="train")
    assert counting.calls == 1  # all sentences tokenized once, at init
    assert len(ds) == len(data) and ds.question_ids == [d["question_id"] for d in data]
    assert ds.data == data and ds.split_name == "train"
    item = ds[3]
    assert counting.calls == 1
    assert item["index"].dtype == torch.int64 and int(item["index"]) == 3
    for name in ("input_ids", "token_position", "input_mask"):
        assert item[name].shape == (20,) and item[name].dtype == torch.int64
    assert item["input_ids"][0] == 101
    assert item["feats"].shape == (36, DIM) and item["feats"].dtype == torch.float32
    assert item["boxes"].shape == (36, 4) and item["boxes"].dtype == torch.float32
    assert float(item["boxes"].min()) >= 0 and float(item["boxes"].max()) <= 1
    assert item["target"].shape == (table.num_answers,)
    expected = np.zeros(table.num_answers, dtype=np.float32)
    for ans, score in data[3]["label"].items():
        expected[table.label(ans)] = score
    assert np.array_equal(item["target"].numpy(), expected)
    batch = next(iter(DataLoader(ds, batch_size=5)))
    assert batch["feats"].shape == (5, 36, DIM) and batch["target"].shape == (5, 14)
    # features come from the store for the right image
    feats, _ = _store(root, r.path("vqa", "features", "train"))[data[3]["img_id"]]
    assert np.array_equal(item["feats"].numpy(), feats)


def test_qa_dataset_unlabelled_and_workers(root, tokenizer):
    r = DataRoot(root)
    table = AnswerTable.of(r, "vqa")
    ds = QADataset(load_qa_split(r.path("vqa", "examples", "test")), _store(root, r.path("vqa", "features", "test")),
                   tokenizer, table, split_name="test")
    batches = list(DataLoader(ds, batch_size=16, num_workers=2))
    assert sum(b["index"].shape[0] for b in batches) == len(ds)
    assert all(float(b["target"].abs().sum()) == 0 for b in batches)


def test_unknown_answers(root, tokenizer, caplog):
    r = DataRoot(root)
    table = AnswerTable.of(r, "vqa")
    data = load_qa_split(r.path("vqa", "examples", "train"))[:6]
    data[0] = dict(data[0], label={"zebra": 1.0, "yes": 0.3})
    data[2] = dict(data[2], label={"zebra": 0.6})
    store = _store(root, r.path("vqa", "features", "train"))
    with caplog.at_level(logging.WARNING):
        ds = QADataset(data, store, tokenizer, table, split_name="train")
    assert ds.num_unknown_answers == 2
    warnings = [rec for rec in caplog.records if "not in the" in rec.getMessage()]
    assert len(warnings) == 1 and "zebra" in warnings[0].getMessage()
    target = ds[0]["target"]
    assert float(target.sum()) == pytest.approx(0.3) and target[table.label("yes")] == 0.3
    assert float(ds[2]["target"].sum()) == 0
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        ds = QADataset(data, store, tokenizer, table, unknown_answer="ignore")
    assert ds.num_unknown_answers == 2 and not caplog.records
    with pytest.raises(KeyError, match="zebra"):
        QADataset(data, store, tokenizer, table, unknown_answer="raise")
    with pytest.raises(ValueError, match="unknown_answer"):
        QADataset(data, store, tokenizer, table, unknown_answer="drop")


def test_missing_images_subset_vs_error(root, tokenizer, caplog):
    r = DataRoot(root)
    table = AnswerTable.of(r, "vqa")
    data = load_qa_split(r.path("vqa", "examples", "train"))
    from tasks.common.features import open_feature_store
    partial = open_feature_store(r.path("vqa", "features", "train"), cache_dir=root.parent / "cache",
                                 topk=4, progress=False)
    kept_imgs = set(partial.img_ids)
    assert len(kept_imgs) == 4
    with caplog.at_level(logging.INFO):
        ds = QADataset(data, partial, tokenizer, table, split_name="train", subset=True)
    assert len(ds) == sum(d["img_id"] in kept_imgs for d in data) > 0
    assert any("dropped" in rec.getMessage() for rec in caplog.records)
    with pytest.raises(MissingFeaturesError) as err:
        QADataset(data, partial, tokenizer, table, split_name="train")
    missing = next(d["img_id"] for d in data if d["img_id"] not in kept_imgs)
    assert missing in str(err.value) and "'train'" in str(err.value)


def test_load_qa_dataset(root, tokenizer):
    r = DataRoot(root)
    ds = load_qa_dataset(r, "vqa", "train,nominival", tokenizer,
                         cache_dir=root.parent / "cache")
    n = len(load_qa_split(r.path("vqa", "examples", "train"))) + len(load_qa_split(r.path("vqa", "examples", "nominival")))
    assert len(ds) == n and ds.split_name == "train,nominival"
    assert ds[len(ds) - 1]["feats"].shape == (36, DIM)  # a val2014 image
    gqa = load_qa_dataset(root, "gqa", "testdev", tokenizer, cache_dir=root.parent / "cache")
    assert isinstance(gqa.question_ids[0], str) and len(gqa) > 0
    sub = load_qa_dataset(root, "gqa", "submit", tokenizer, cache_dir=root.parent / "cache")
    assert float(sub[0]["target"].sum()) == 0
    tiny = load_qa_dataset(root, "vqa", ["minival"], tokenizer, tiny=True,
                           cache_dir=root.parent / "cache")
    assert len(tiny) == len(load_qa_split(r.path("vqa", "examples", "minival")))  # 16 images < 200


# ------------------------------------------------------------------------------ NLVR2
def test_nlvr2_reader_validation(tmp_path, root):
    data = load_nlvr2_split(DataRoot(root).path("nlvr2", "examples", "train"), require_label=True)
    assert data[0]["identifier"].startswith("train-")
    good = {"identifier": "dev-1-0-0", "img0": "a", "img1": "b", "label": 1, "sent": "s",
            "uid": "nlvr2_dev_0"}
    p = _write(tmp_path / "n.json", [good, dict(good, label=2)])
    with pytest.raises(DataFormatError, match=r"item 1: key 'label' must be 0 or 1"):
        load_nlvr2_split(p)
    p = _write(tmp_path / "n.json", [{k: v for k, v in good.items() if k != "img1"}])
    with pytest.raises(DataFormatError, match=r"n.json: item 0: missing key 'img1'"):
        load_nlvr2_split(p)
    p = _write(tmp_path / "n.json", [dict(good, label=True)])
    with pytest.raises(DataFormatError, match="'label'"):
        load_nlvr2_split(p)
    p = _write(tmp_path / "n.json", [{k: v for k, v in good.items() if k != "label"}])
    assert load_nlvr2_split(p)[0]["uid"] == "nlvr2_dev_0"
    with pytest.raises(DataFormatError, match="missing key 'label'"):
        load_nlvr2_split(p, require_label=True)


def test_nlvr2_dataset(root, tokenizer):
    r = DataRoot(root)
    data = load_nlvr2_split(r.path("nlvr2", "examples", "valid"))
    data[1] = {k: v for k, v in data[1].items() if k != "label"}
    store = _store(root, r.path("nlvr2", "features", "valid"))
    ds = NLVR2Dataset(data, store, tokenizer, split_name="valid")
    item = ds[0]
    assert item["feats"].shape == (2, 36, DIM) and item["feats"].dtype == torch.float32
    assert item["boxes"].shape == (2, 36, 4)
    assert item["target"].dtype == torch.int64 and int(item["target"]) == data[0]["label"]
    assert int(ds[1]["target"]) == -1
    assert item["input_ids"].shape == (20,) and item["index"].dtype == torch.int64
    f1, _ = store[data[0]["img1"]]
    assert np.array_equal(item["feats"][1].numpy(), f1)
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["feats"].shape == (4, 2, 36, DIM) and batch["target"].shape == (4,)
    assert ds.identifiers[0] == data[0]["identifier"]
    bad = [dict(data[0], img1="nope-0-0-img1")]
    with pytest.raises(MissingFeaturesError, match="nope-0-0-img1"):
        NLVR2Dataset(bad, store, tokenizer, split_name="valid")
    assert len(NLVR2Dataset(bad + data[:2], store, tokenizer, subset=True)) == 2
    full = load_nlvr2_dataset(r, "train,valid", tokenizer, cache_dir=root.parent / "cache")
    assert len(full) == len(load_nlvr2_split(r.path("nlvr2", "examples", "train"))) + len(data)


# ------------------------------------------------------------------------------ retrieval
def test_flickr_annotations(tmp_path, root):
    ann = load_flickr_annotations(DataRoot(root).path("retrieval", "annotations", "test"))
    assert len(ann) == IMAGES and ann.num_captions == 5 * IMAGES
    assert ann.captions_per_image == 5 and ann.image_ids[0] == int(ann.img_paths[0][:-4])
    assert ann.flat_captions()[6] == (1, ann.captions[1][1])
    p = _write(tmp_path / "f.json", [{"img_path": "1.jpg", "sentences": ["a", "b"]},
                                     {"img_path": "2.jpg", "sentences": ["c"]}])
    ann = load_flickr_annotations(p)
    assert ann.captions_per_image is None and ann.caption_counts == [2, 1]
    assert ann.caption_count_histogram() == {1: 1, 2: 1}
    p = _write(tmp_path / "f.json", [{"img_path": "1.jpg", "sentences": ["a"]},
                                     {"img_path": "abc.jpg", "sentences": ["a"]}])
    with pytest.raises(DataFormatError, match=r"f.json: item 1: key 'img_path' 'abc.jpg'"):
        load_flickr_annotations(p)
    p = _write(tmp_path / "f.json", [{"img_path": "1.jpg"}])
    with pytest.raises(DataFormatError, match="item 0: missing key 'sentences'"):
        load_flickr_annotations(p)
    p = _write(tmp_path / "f.json", [{"img_path": "1.jpg", "sentences": ["a", 3]}])
    with pytest.raises(DataFormatError, match="'sentences' item 1"):
        load_flickr_annotations(p)
    p = _write(tmp_path / "f.json", [{"img_path": "1.jpg", "sentences": ["a"]}] * 2)
    with pytest.raises(DataFormatError, match="repeats item 0"):
        load_flickr_annotations(p)


def _pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    return path


def test_hard_negatives(tmp_path, root):
    hn = load_hard_negatives(DataRoot(root).path("retrieval", "hard_negatives"))
    assert hn.num_images == IMAGES and hn.column0_is_self
    assert hn.index_of()[int(hn.train_image_list[3])] == 3
    p = tmp_path / "hn.pkl"
    ok = {"train_image_list": [10, 20, 30], "train_hard_pool": np.array([[0, 1], [1, 2], [2, 0]]),
          "note": "x"}
    hn = load_hard_negatives(_pickle(p, ok))
    assert hn.pool_size == 2 and hn.extra == {"note": "x"}
    assert hn.train_hard_pool.dtype == np.int64
    with pytest.raises(DataFormatError, match="not in train_image_list"):
        hn.check_images([10, 40])
    cases = [
        ({"train_image_list": [10, 20, 30]}, "missing key 'train_hard_pool'"),
        (dict(ok, train_hard_pool=np.array([[0], [1], [2]])), "K >= 2"),
        (dict(ok, train_hard_pool=np.array([[0, 1], [1, 2]])), "has 2 rows"),
        (dict(ok, train_hard_pool=np.array([[0, 1], [1, 3], [2, 0]])), "row 1 column 1 holds 3"),
        (dict(ok, train_hard_pool=np.array([[0, -1], [1, 2], [2, 0]])), "row 0 column 1"),
        (dict(ok, train_hard_pool=np.array([0, 1, 2])), "must be 2-D"),
        (dict(ok, train_image_list=[10, "20", 30]), "item 1 is not an int image id"),
        (dict(ok, train_image_list=[10, 10, 30]), "repeated"),
        ([1, 2], "expected a pickled dict"),
    ]
    for obj, msg in cases:
        with pytest.raises(DataFormatError, match=msg):
            load_hard_negatives(_pickle(p, obj))
    p.write_bytes(b"not a pickle")
    with pytest.raises(DataFormatError, match="not a readable pickle"):
        load_hard_negatives(p)


def test_json_lines_errors_name_the_file_line_and_key(tmp_path):
    from tasks.common.readers import read_json_lines
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1, "b": "x"}\n\n{"a": 2, "b": "y"}\n')
    assert read_json_lines(path, "examples", ("a", "b")) == [{"a": 1, "b": "x"},
                                                              {"a": 2, "b": "y"}]
    for text, message in (('{"a": 1}\n', "line 1: missing key 'b'"),
                          ('{"a": 1, "b": 2}\n{oops\n', "line 2: not valid JSON"),
                          ('{"a": 1, "b": 2}\n[1]\n', "line 2: expected a JSON object")):
        path.write_text(text)
        with pytest.raises(DataFormatError, match=f"x.jsonl: {message}"):
            read_json_lines(path, "examples", ("a", "b"))
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        read_json_lines(tmp_path / "missing.jsonl", "examples", ())


def test_class_accuracies_against_hand_computed_values():
    from tasks.common.task import class_accuracies
    # labels: a a b b b c -1 ; predictions: a b b b a c c
    got = class_accuracies([0, 1, 1, 1, 0, 2, 2], [0, 0, 1, 1, 1, 2, -1], ("a", "b", "c"))
    assert got == {"examples": 7, "labelled": 6, "accuracy": pytest.approx(100 * 4 / 6),
                   "accuracy_a": 50.0, "accuracy_b": pytest.approx(200 / 3),
                   "accuracy_c": 100.0}
    assert class_accuracies([1, 0], [-1, -1], ("a", "b")) == {"examples": 2, "labelled": 0}
