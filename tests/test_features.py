"""Feature store: TSV streaming/validation, conversion, lazy per-worker opening, topk views."""
import base64
import json
import os
import pickle

import numpy as np
import pytest
import torch

from tasks.common.features import (FeatureStore, convert_tsv_to_store, iter_tsv,
                                   open_feature_store, read_manifest, store_path_for)
from tasks.common.store_folder import write_marker
from tasks.common.tsv_format import FIELDNAMES, ImageFeatures, decode_row, encode_row


def make_item(rng, img_id, n=5, d=16, h=None, w=None):
    h = int(rng.integers(50, 800)) if h is None else h
    w = int(rng.integers(50, 800)) if w is None else w
    x1 = rng.uniform(0, w - 1, n).astype(np.float32)
    y1 = rng.uniform(0, h - 1, n).astype(np.float32)
    x2 = np.minimum(x1 + rng.uniform(1, w, n), w).astype(np.float32)
    y2 = np.minimum(y1 + rng.uniform(1, h, n), h).astype(np.float32)
    boxes = np.stack([x1, y1, x2, y2], 1).astype(np.float32)
    boxes[0] = [0, 0, w, h]  # exact edges are allowed
    return ImageFeatures(
        img_id=img_id, img_h=h, img_w=w,
        objects_id=rng.integers(0, 1600, n).astype(np.int64),
        objects_conf=rng.random(n).astype(np.float32),
        attrs_id=rng.integers(0, 400, n).astype(np.int64),
        attrs_conf=rng.random(n).astype(np.float32),
        boxes=boxes,
        features=(rng.standard_normal((n, d)) * 3).astype(np.float32))


def write_tsv(path, items, extra_lines=()):
    with open(path, "w") as f:
        for it in items:
            f.write(encode_row(it) + "\n")
        for line in extra_lines:
            f.write(line + "\n")
    return path


@pytest.fixture
def items():
    rng = np.random.default_rng(0)
    return [make_item(rng, f"COCO_val2014_{i:012d}") for i in range(12)]


@pytest.fixture
def tsv(tmp_path, items):
    return write_tsv(tmp_path / "val2014_obj36.tsv", items)


def authors_decode(path):
    """Independent decode, the authors' load_obj_tsv + dataset normalisation."""
    out = []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            row = dict(zip(FIELDNAMES, line.rstrip("\n").split("\t")))
            h, w, n = int(row["img_h"]), int(row["img_w"]), int(row["num_boxes"])
            dec = {k: np.frombuffer(base64.b64decode(row[k]), dt)
                   for k, dt in [("objects_id", np.int64), ("objects_conf", np.float32),
                                 ("attrs_id", np.int64), ("attrs_conf", np.float32),
                                 ("boxes", np.float32), ("features", np.float32)]}
            boxes = dec["boxes"].reshape(n, 4).copy()
            boxes[:, (0, 2)] /= w
            boxes[:, (1, 3)] /= h
            np.testing.assert_array_less(boxes, 1 + 1e-5)
            np.testing.assert_array_less(-boxes, 0 + 1e-5)
            out.append((row["img_id"], h, w, dec, dec["features"].reshape(n, -1), boxes))
    return out


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# --------------------------------------------------------------------------------------------

def test_round_trip_byte_exact(tsv, tmp_path):
    store = open_feature_store(tsv, progress=False)
    assert store.store_dir == tmp_path / "val2014_obj36.store"
    ref = authors_decode(tsv)
    assert store.img_ids == [r[0] for r in ref] and len(store) == len(ref)
    for i, (img_id, h, w, dec, feats, boxes) in enumerate(ref):
        assert img_id in store and store.index_of(img_id) == i
        f, b = store[img_id]
        assert same_bits(f, feats) and same_bits(b, boxes)
        assert f.flags.writeable and type(f) is np.ndarray  # a copy, not a memmap view
        assert store.image_size(img_id) == (h, w)
        row = store.get_row(i)
        assert row.img_id == img_id and (row.img_h, row.img_w) == (h, w)
        for k in ("objects_id", "objects_conf", "attrs_id", "attrs_conf"):
            assert same_bits(getattr(row, k), dec[k])
        assert same_bits(row.boxes, dec["boxes"].reshape(-1, 4))
        assert same_bits(row.features, feats)
        assert encode_row(row) == encode_row(decode_row(open(tsv).read().splitlines()[i]))
    feats_all, boxes_all = store.dense()
    assert feats_all.shape == (12, 5, 16)
    assert same_bits(np.asarray(boxes_all[3]), ref[3][5])
    assert "nope" not in store
    with pytest.raises(KeyError, match=r"nope.*val2014_obj36\.store|val2014_obj36\.store.*nope"):
        store["nope"]


def test_iter_tsv_streams_and_topk(tsv, items):
    got = list(iter_tsv(tsv))
    assert [g.img_id for g in got] == [it.img_id for it in items]
    for g, it in zip(got, items):
        assert same_bits(g.features, it.features) and same_bits(g.objects_id, it.objects_id)
    assert len(list(iter_tsv(tsv, topk=-1))) == 12
    assert [g.img_id for g in iter_tsv(tsv, topk=4)] == [it.img_id for it in items[:4]]


def test_fp16(tsv, items):
    store = open_feature_store(tsv, fp16=True, progress=False)
    assert store.store_dir.name == "val2014_obj36.fp16.store"
    assert store.manifest["feat_dtype"] == "float16"
    for it in items:
        f, b = store[it.img_id]
        assert f.dtype == np.float32 and f.shape == it.features.shape
        np.testing.assert_allclose(f, it.features, rtol=1e-3, atol=1e-3)
        assert same_bits(b, it.boxes / np.array([it.img_w, it.img_h] * 2, np.float32))
    assert (store.store_dir / "features.bin").stat().st_size == 12 * 5 * 16 * 2


class _DS(torch.utils.data.Dataset):
    def __init__(self, store):
        self.store = store

    def __len__(self):
        return len(self.store)

    def __getitem__(self, i):
        img_id = self.store.img_ids[i]
        f, b = self.store[img_id]
        return {"i": i, "feats": f, "boxes": b, "pid": os.getpid(),
                "opened_pid": self.store._pid}


def test_lazy_open_per_worker(tsv):
    store = open_feature_store(tsv, progress=False)
    assert not store.is_open and store._maps is None
    state = pickle.loads(pickle.dumps(store))
    assert state._maps is None
    loader = torch.utils.data.DataLoader(_DS(store), batch_size=3, num_workers=2,
                                         shuffle=True, generator=torch.Generator().manual_seed(0))
    assert not store.is_open
    seen = {}
    pids = set()
    for batch in loader:
        assert not store.is_open  # the parent never maps anything
        for k, i in enumerate(batch["i"].tolist()):
            seen[i] = (batch["feats"][k].numpy(), batch["boxes"][k].numpy())
            pids.add(batch["pid"][k].item())
            assert batch["opened_pid"][k].item() == batch["pid"][k].item()
    assert not store.is_open
    assert os.getpid() not in pids and len(pids) == 2
    assert sorted(seen) == list(range(len(store)))
    for i, (f, b) in seen.items():
        rf, rb = store.row(i)
        assert same_bits(f, rf) and same_bits(b, rb)
    assert store.is_open and store._pid == os.getpid()
    # an opened store still pickles without its maps
    clone = pickle.loads(pickle.dumps(store))
    assert clone._maps is None and same_bits(clone.row(0)[0], store.row(0)[0])


def _bad_cases(item):
    base = encode_row(item).split("\t")

    def with_field(name, value):
        cols = list(base)
        cols[FIELDNAMES.index(name)] = value
        return "\t".join(cols)

    def b64(a):
        return base64.b64encode(a.tobytes()).decode()

    cases = {
        "too_few_fields": ("\t".join(base[:-1]), "10 tab-separated fields"),
        "too_many_fields": ("\t".join(base + ["x"]), "got 11"),
        "bad_base64": (with_field("features", "!!!abc"), "features is not valid base64"),
        "img_h_not_int": (with_field("img_h", "480.5"), "img_h is not an integer"),
        "img_w_not_int": (with_field("img_w", "wide"), "img_w is not an integer"),
        "num_boxes_not_int": (with_field("num_boxes", "3x"), "num_boxes is not an integer"),
        "num_boxes_wrong": (with_field("num_boxes", "4"), "expected num_boxes"),
        "box_outside": (with_field("boxes", b64(item.boxes + np.float32(item.img_w))),
                        "outside"),
    }
    for name, dt in [("objects_id", np.int64), ("objects_conf", np.float32),
                     ("attrs_id", np.int64), ("attrs_conf", np.float32)]:
        cases[f"{name}_len"] = (with_field(name, b64(getattr(item, name)[:-1].astype(dt))),
                                f"{name} has 4 values, expected num_boxes = 5")
    cases["boxes_len"] = (with_field("boxes", b64(item.boxes[:-1])), "boxes has 16 values")
    cases["features_len"] = (with_field("features", b64(item.features.ravel()[:-3])),
                             "features has 77 values")
    return cases


BAD_NAMES = list(_bad_cases(make_item(np.random.default_rng(1), "x")).keys())


@pytest.mark.parametrize("case", BAD_NAMES)
def test_bad_input_names_file_line_img_id(tmp_path, items, case):
    bad_item = make_item(np.random.default_rng(1), "bad_img_7")
    line, expected = _bad_cases(bad_item)[case]
    path = write_tsv(tmp_path / "bad.tsv", items[:2], extra_lines=["", line])
    with pytest.raises(ValueError) as ei:
        list(iter_tsv(path))
    msg = str(ei.value)
    assert f"{path}:4:" in msg and "'bad_img_7'" in msg and expected in msg, msg
    out = tmp_path / "bad.store"
    with pytest.raises(ValueError, match="bad_img_7"):
        convert_tsv_to_store(path, out, progress=False)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_box_tolerance(tmp_path):
    it = make_item(np.random.default_rng(2), "tol", h=100, w=100)
    it.boxes[1] = [-0.0005, 0, 100.0005, 100]  # within 1e-5 after normalisation
    path = write_tsv(tmp_path / "tol.tsv", [it])
    assert list(iter_tsv(path))[0].img_id == "tol"
    it.boxes[1] = [0, 0, 100.01, 100]
    write_tsv(path, [it])
    with pytest.raises(ValueError, match="outside"):
        list(iter_tsv(path))


def test_missing_file_messages(tmp_path):
    missing = tmp_path / "train2014_obj36.tsv"
    with pytest.raises(FileNotFoundError, match="README") as ei:
        iter_tsv(missing)
    assert "LXMERT" in str(ei.value) and str(missing) in str(ei.value)
    with pytest.raises(FileNotFoundError, match="get them from X"):
        open_feature_store(missing, hint="get them from X")


def test_interrupted_conversion_is_redone(tsv, items):
    store = open_feature_store(tsv, progress=False)
    d = store.store_dir
    created = store.manifest["created"]

    (d / "manifest.json").unlink()  # killed before the marker was written
    assert read_manifest(d) is None
    store = open_feature_store(tsv, progress=False)
    assert store.manifest["created"] > created and len(store) == 12
    created = store.manifest["created"]

    with open(d / "features.bin", "r+b") as f:  # truncated data file
        f.truncate(100)
    assert read_manifest(d) is None
    store = open_feature_store(tsv, progress=False)
    assert store.manifest["created"] > created
    assert same_bits(store[items[-1].img_id][0], items[-1].features)
    created = store.manifest["created"]

    text = (d / "manifest.json").read_text()
    (d / "manifest.json").write_text(text[: len(text) // 2])  # truncated marker
    with pytest.raises(ValueError, match="not a complete feature store"):
        FeatureStore(d)
    store = open_feature_store(tsv, progress=False)
    assert store.manifest["created"] > created and len(store) == 12

    # a temp dir left by a dead converter (it carries the marker) is cleaned up on the next
    # conversion; a folder of that name without the marker is not ours and stays
    stale = d.parent / f".{d.name}.tmp-999999999-deadbeef"
    stale.mkdir()
    (stale / "features.bin").write_bytes(b"x")
    write_marker(stale, tsv)
    foreign = d.parent / f".{d.name}.tmp-999999998-cafecafe"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    convert_tsv_to_store(tsv, d, progress=False)
    assert not stale.exists() and read_manifest(d) is not None
    assert (foreign / "notes.txt").read_text() == "mine"


def test_topk_views(tsv, items):
    full = open_feature_store(tsv, progress=False)
    created = full.manifest["created"]
    for k in (5, 3, 12, 100):
        v = open_feature_store(tsv, topk=k, progress=False)
        assert v.manifest["created"] == created  # a view, not a reconversion
        assert v.img_ids == [it.img_id for it in items[:k]] and len(v) == min(k, 12)
    v = open_feature_store(tsv, topk=3, progress=False)
    assert items[3].img_id not in v
    with pytest.raises(KeyError):
        v[items[3].img_id]
    assert same_bits(v[items[2].img_id][0], items[2].features)
    assert v.dense()[0].shape == (3, 5, 16)
    assert len(open_feature_store(tsv, topk=-1, progress=False)) == 12


def test_partial_store_then_full(tsv, items):
    part = open_feature_store(tsv, topk=4, progress=False)
    assert part.manifest["rows"] == 4 and not part.manifest["complete"]
    again = open_feature_store(tsv, topk=2, progress=False)
    assert again.manifest["created"] == part.manifest["created"] and len(again) == 2
    full = open_feature_store(tsv, progress=False)
    assert full.manifest["complete"] and len(full) == 12
    # topk larger than the file -> store is complete
    d = full.store_dir
    convert_tsv_to_store(tsv, d, topk=50, progress=False)
    assert read_manifest(d)["complete"]
    convert_tsv_to_store(tsv, d, topk=12, progress=False)
    assert read_manifest(d)["complete"]


def test_missing_tsv_uses_store_and_stale_source_reconverts(tsv, items):
    store = open_feature_store(tsv, progress=False)
    created = store.manifest["created"]
    os.utime(tsv, ns=(1, 1))  # source changed -> reconvert
    store = open_feature_store(tsv, progress=False)
    assert store.manifest["created"] > created
    tsv.unlink()
    store = open_feature_store(tsv, progress=False)
    assert len(store) == 12 and same_bits(store[items[0].img_id][0], items[0].features)


def test_cache_dir_and_env(tsv, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    s = open_feature_store(tsv, cache_dir=cache, progress=False)
    assert s.store_dir.parent == cache and s.store_dir.name.startswith("val2014_obj36-")
    monkeypatch.setenv("LXRT_FEATURE_CACHE", str(tmp_path / "envcache"))
    assert store_path_for(tsv).parent == tmp_path / "envcache"


def test_variable_num_boxes_and_duplicates(tmp_path):
    rng = np.random.default_rng(3)
    its = [make_item(rng, "a", n=3), make_item(rng, "b", n=7), make_item(rng, "a", n=2)]
    path = write_tsv(tmp_path / "var.tsv", its)
    s = open_feature_store(path, progress=False)
    assert s.num_boxes is None and s.img_ids == ["a", "b"] and len(s) == 2
    assert s["a"][0].shape == (2, 16) and same_bits(s["a"][0], its[2].features)
    assert s["b"][1].shape == (7, 4)
    with pytest.raises(ValueError, match="different num_boxes"):
        s.dense()


def test_feature_dim_mismatch(tmp_path):
    rng = np.random.default_rng(4)
    path = write_tsv(tmp_path / "dim.tsv", [make_item(rng, "a"), make_item(rng, "b", d=8)])
    with pytest.raises(ValueError, match=r"dim\.tsv:2: img_id 'b'.*feature dim 8"):
        convert_tsv_to_store(path, tmp_path / "dim.store", progress=False)


def test_cli(tsv, tmp_path, capsys):
    from tools.convert_tsv import main
    out = tmp_path / "cli.store"
    assert main([str(tsv), "--out", str(out), "--fp16", "--quiet"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rows"] == 12 and info["feat_dtype"] == "float16"
    assert main([str(tsv), "--out", str(out), "--fp16", "--quiet"]) == 0
    assert "already converted" in capsys.readouterr().out
    assert main([str(tmp_path / "missing.tsv"), "--quiet"]) == 1
    assert "README" in capsys.readouterr().err
