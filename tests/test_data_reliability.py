"""Bad data and weight files fail early with a message naming the file and what was expected:
non-finite features and scores, concurrent conversion of one store, validation splits that
are unlabelled or empty, wrong encodings, garbled stores, NUL tails, foreign checkpoints."""
import codecs
import json
import math
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pytest

from lxrt.config import LXRTConfig
from lxrt.loading import CheckpointError, read_state_dict
from tasks.common.features import (CorruptStoreError, convert_tsv_to_store, open_feature_store,
                                   store_path_for)
from tasks.common.paths import DataRoot
from tasks.common.readers import DataFormatError, read_json
from tasks.qa.data import load_qa_dataset, load_qa_split
from tasks.common.tsv_format import TSVFormatError, encode_row
from tasks.nlvr2.data import load_nlvr2_dataset
from tools.make_data import make_data

from test_features import make_item, write_tsv

DIM = 16


@pytest.fixture
def root(tmp_path):
    out = tmp_path / "data"
    make_data(out, images=16, dim=DIM, seed=3, small_model=True)
    return out


@pytest.fixture(scope="module")
def tokenizer():
    from lxrt.tokenization import LXRTTokenizer, find_vocab_file
    return LXRTTokenizer(find_vocab_file(), max_seq_length=20)


def _items(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return [make_item(rng, f"img{i}", n=3, d=8) for i in range(n)]


def _rewrite(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    path.write_text(json.dumps(edit(data)))


# ------------------------------------------------------------------------- non-finite input
@pytest.mark.parametrize("column,value", [("features", np.nan), ("boxes", np.inf)])
def test_non_finite_tsv_values_refused_at_conversion(tmp_path, column, value):
    items = _items()
    bad = getattr(items[2], column).copy()
    bad[1, 0] = value
    setattr(items[2], column, bad)
    tsv = write_tsv(tmp_path / "f.tsv", items)
    with pytest.raises(TSVFormatError, match=rf"f\.tsv:3: img_id 'img2': {column} .*"
                                             r"non-finite"):
        convert_tsv_to_store(tsv, tmp_path / "f.store", progress=False)
    assert not (tmp_path / "f.store").exists()


@pytest.mark.parametrize("score", [math.nan, math.inf, -0.3])
def test_label_scores_must_be_finite_and_non_negative(tmp_path, score):
    path = tmp_path / "q.json"
    good = {"img_id": "a", "question_id": 7, "sent": "s?", "label": {"yes": 1.0}}
    # json.dumps writes NaN/Infinity, which Python's json (and the old reader) accepts
    path.write_text(json.dumps([good, dict(good, question_id=8, label={"no": score})]))
    with pytest.raises(DataFormatError, match=r"q\.json: item 1 \(question_id 8\): key 'label' "
                                              r"answer 'no' has score"):
        load_qa_split(path)


def test_vqa_question_ids_must_be_integers(root, tokenizer):
    minival = DataRoot(root).path("vqa", "examples", "minival")
    _rewrite(minival, lambda d: d[:2] + [dict(d[2], question_id="q2")] + d[3:])
    with pytest.raises(DataFormatError, match=r"minival\.json: item 2: key 'question_id' must "
                                              r"be an integer .*'q2'"):
        load_qa_dataset(root, "vqa", "minival", tokenizer, cache_dir=root / "cache")


# ------------------------------------------------------------------------- concurrent conversion
def _open_in_child(tsv, log_path, barrier, queue):
    import time
    from tasks.common import features
    real = features.convert_tsv_to_store

    def counted(*args, **kwargs):
        with open(log_path, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.3)  # widen the window in which other ranks look for the store
        return real(*args, **kwargs)
    features.convert_tsv_to_store = counted
    barrier.wait()
    try:
        store = features.open_feature_store(tsv, progress=False)
        queue.put(("ok", [store.row(i)[0].tobytes() for i in range(store.num_rows)]))
    except BaseException as err:  # reported to the parent
        queue.put(("error", repr(err)))


def test_concurrent_first_open_converts_once(tmp_path):
    tsv = write_tsv(tmp_path / "shared.tsv", _items(12))
    ctx = mp.get_context("fork")
    procs, barrier, queue = 4, ctx.Barrier(4), ctx.Queue()
    log_path = tmp_path / "conversions.log"
    workers = [ctx.Process(target=_open_in_child, args=(tsv, log_path, barrier, queue))
               for _ in range(procs)]
    for w in workers:
        w.start()
    results = [queue.get(timeout=120) for _ in range(procs)]
    for w in workers:
        w.join(timeout=60)
    assert [r[0] for r in results] == ["ok"] * procs, [r for r in results if r[0] != "ok"]
    assert all(r[1] == results[0][1] for r in results)
    assert len(log_path.read_text().split()) == 1  # one converter, the others waited


# ------------------------------------------------------------------------- validation splits
def _vqa_task(root, *flags):
    from tasks.qa.task import VQA_SPEC, QATask
    from tasks.vqa.main import build_parser
    args = build_parser().parse_args(
        ["--dataRoot", str(root), "--modelConfig", str(root / "bert_config.json"),
         "--featureCache", str(root / "cache"), *flags])
    return QATask(args, VQA_SPEC)


def test_unlabelled_question_in_valid_split_fails_before_training(root):
    minival = DataRoot(root).path("vqa", "examples", "minival")
    qid = json.loads(minival.read_text())[1]["question_id"]
    _rewrite(minival, lambda d: d[:1] + [{k: v for k, v in d[1].items() if k != "label"}]
             + d[2:])
    task = _vqa_task(root, "--train", "train", "--valid", "minival")
    with pytest.raises(DataFormatError, match=rf"minival\.json: item 1 \(question_id {qid}\): "
                                              r"missing key 'label'"):
        task.train_dataset()  # the trainer calls this before the first step
    # the same file is fine as a test split (scored on the labelled ones, or not at all)
    assert len(_vqa_task(root, "--test", "minival").dataset("minival")) > 0


def test_empty_valid_split_fails_before_training(root):
    _rewrite(DataRoot(root).path("vqa", "examples", "minival"), lambda d: [])
    task = _vqa_task(root, "--train", "train", "--valid", "minival")
    with pytest.raises(DataFormatError, match=r"split 'minival' is empty: the file\(s\) "
                                              r".*minival\.json hold no questions"):
        task.train_dataset()


def test_nlvr2_valid_split_labelled_and_not_empty(root, tokenizer):
    valid = DataRoot(root).path("nlvr2", "examples", "valid")
    ident = json.loads(valid.read_text())[0]["identifier"]
    _rewrite(valid, lambda d: [{k: v for k, v in d[0].items() if k != "label"}] + d[1:])
    with pytest.raises(DataFormatError, match=rf"valid\.json: item 0 \(identifier '{ident}'\): "
                                              r"missing key 'label'"):
        load_nlvr2_dataset(root, "valid", tokenizer, cache_dir=root / "cache",
                           require_label=True)
    _rewrite(valid, lambda d: [])
    with pytest.raises(DataFormatError, match=r"split 'valid' is empty"):
        load_nlvr2_dataset(root, "valid", tokenizer, cache_dir=root / "cache")


def test_retrieval_empty_annotations(root, tokenizer):
    from tasks.retrieval.data import SplitLoader
    ann = DataRoot(root).path("retrieval", "annotations", "test")
    ann.write_text("[]")
    loader = SplitLoader(DataRoot(root), tokenizer, cache_dir=root / "cache")
    with pytest.raises(DataFormatError, match=r"flickr30k_test2014\.json holds no images"):
        loader.split("test")


# ------------------------------------------------------------------------- messages that name
def test_feature_size_differs_from_model_config(root, tokenizer):
    with pytest.raises(DataFormatError, match=rf"feature store .*\.store holds {DIM}-d features "
                                              r"but the model config expects visual_feat_dim "
                                              r"= 2048"):
        load_qa_dataset(root, "vqa", "minival", tokenizer, cache_dir=root / "cache",
                        feat_dim=2048)
    with pytest.raises(DataFormatError, match=rf"holds {DIM}-d features"):
        load_nlvr2_dataset(root, "valid", tokenizer, cache_dir=root / "cache", feat_dim=2048)
    from tasks.retrieval.data import SplitLoader
    loader = SplitLoader(DataRoot(root), tokenizer, cache_dir=root / "cache", feat_dim=2048)
    with pytest.raises(DataFormatError, match=rf"holds {DIM}-d features"):
        loader.split("test")


def test_text_file_as_checkpoint(tmp_path):
    path = tmp_path / "BEST.pth"
    path.write_text("epoch 3 accuracy 71.2\n")
    with pytest.raises(CheckpointError, match=r"BEST\.pth: not a PyTorch checkpoint .*text"):
        read_state_dict(path)


def test_json_encodings(tmp_path):
    data = [{"a": 1}]
    utf16 = tmp_path / "u16.json"
    utf16.write_bytes(json.dumps(data).encode("utf-16"))
    with pytest.raises(DataFormatError, match=r"u16\.json: not UTF-8 JSON .*UTF-16"):
        read_json(utf16)
    bom = tmp_path / "bom.json"
    bom.write_bytes(codecs.BOM_UTF8 + json.dumps(data).encode())
    assert read_json(bom) == data
    config = tmp_path / "bert_config.json"
    config.write_bytes(codecs.BOM_UTF8 + b'{"hidden_size": 64, "num_attention_heads": 4}')
    assert LXRTConfig.from_json_file(config).hidden_size == 64
    config.write_bytes('{"hidden_size": 64}'.encode("utf-16-le"))
    with pytest.raises(ValueError, match=r"bert_config\.json: not UTF-8 JSON"):
        LXRTConfig.from_json_file(config)


@pytest.mark.parametrize("name", ["img_ids.json", "offsets.npy"])
def test_garbled_store_index(tmp_path, name):
    tsv = write_tsv(tmp_path / "g.tsv", _items(6))
    store = open_feature_store(tsv, progress=False)
    target = store.store_dir / name
    raw = bytearray(target.read_bytes())
    for i in range(len(raw) - 24, len(raw)):  # same size, last bytes garbled
        raw[i] ^= 0x5A
    target.write_bytes(bytes(raw))
    with pytest.raises(CorruptStoreError, match=rf"feature store {store_path_for(tsv)} is "
                                                r"corrupt .*delete the directory"):
        open_feature_store(tsv, progress=False)


def test_garbled_manifest_without_tsv_says_delete(tmp_path):
    tsv = write_tsv(tmp_path / "m.tsv", _items(3))
    store = open_feature_store(tsv, progress=False)
    (store.store_dir / "manifest.json").write_text("{garbled")
    open_feature_store(tsv, progress=False)  # the TSV is there: reconverted
    (store.store_dir / "manifest.json").write_text("{garbled")
    tsv.unlink()
    with pytest.raises(FileNotFoundError, match=r"m\.store is incomplete or corrupt: delete it"):
        open_feature_store(tsv, progress=False)


def test_tsv_with_nul_tail(tmp_path):
    tsv = tmp_path / "crashed.tsv"
    good = "".join(encode_row(it) + "\n" for it in _items(3))
    tsv.write_bytes(good.encode() + b"\x00" * 100_000)
    with pytest.raises(TSVFormatError, match=r"crashed\.tsv:4: .*NUL bytes") as info:
        convert_tsv_to_store(tsv, tmp_path / "c.store", progress=False)
    assert len(str(info.value)) < 500
