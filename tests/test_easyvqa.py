"""tools.extract_features (grid region features -> LXMERT TSV) and tools.easyvqa (converter)."""
import base64
import csv
import json
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tools import easyvqa, extract_features as ef

csv.field_size_limit(sys.maxsize)


def read_tsv(path):
    """Decode the TSV independently of tasks.common (base64 + np.frombuffer)."""
    rows = []
    with open(path, newline="") as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            assert len(cols) == 10
            n = int(cols[7])

            def arr(s, dt, shape):
                return np.frombuffer(base64.b64decode(s), dtype=dt).reshape(shape)

            rows.append({
                "img_id": cols[0], "img_h": int(cols[1]), "img_w": int(cols[2]),
                "objects_id": arr(cols[3], np.int64, (n,)),
                "objects_conf": arr(cols[4], np.float32, (n,)),
                "attrs_id": arr(cols[5], np.int64, (n,)),
                "attrs_conf": arr(cols[6], np.float32, (n,)),
                "num_boxes": n,
                "boxes": arr(cols[8], np.float32, (n, 4)),
                "features": arr(cols[9], np.float32, (n, -1)),
            })
    return rows


def check_rows(rows, dim, n_boxes=36):
    for r in rows:
        h, w = r["img_h"], r["img_w"]
        assert r["num_boxes"] == n_boxes
        assert r["features"].shape == (n_boxes, dim)
        assert np.isfinite(r["features"]).all()
        b = r["boxes"]
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
        assert (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        # the grid tiles the image exactly
        assert np.isclose(((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).sum(), h * w)
        assert (r["objects_id"] == 0).all() and (r["attrs_id"] == 0).all()
        assert (r["objects_conf"] == 1).all() and (r["attrs_conf"] == 1).all()


def draw(path, shape="square", color=(255, 0, 0), size=64, bg=(250, 240, 235), box=None):
    im = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(im)
    x1, y1, x2, y2 = box or (14, 14, 50, 50)
    if shape == "square":
        d.rectangle((x1, y1, x2, y2), fill=color)
    elif shape == "circle":
        d.ellipse((x1, y1, x2, y2), fill=color)
    elif shape == "triangle":
        d.polygon([((x1 + x2) / 2, y1), (x2, y2), (x1, y2)], fill=color)
    im.save(path)
    return str(path)


def rel_diff(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b)))


# ----------------------------------------------------------------------------- extractor

def test_extractor_tsv_roundtrip_and_determinism(tmp_path):
    imgs = {}
    for k, (shape, color) in enumerate([("square", (255, 0, 0)), ("circle", (0, 0, 255)),
                                        ("triangle", (0, 128, 0)), ("circle", (255, 255, 0))]):
        imgs[f"im{k}"] = draw(tmp_path / f"im{k}.png", shape, color)
    # a larger, non-square image: down-scaled for the descriptor, boxes stay in its pixels
    big = Image.new("RGB", (300, 200), (240, 240, 250))
    ImageDraw.Draw(big).ellipse((50, 40, 180, 170), fill=(0, 128, 128))
    big.save(tmp_path / "big.jpg")
    imgs["big"] = str(tmp_path / "big.jpg")

    out1, out2 = tmp_path / "a.tsv", tmp_path / "b.tsv"
    st = ef.extract_to_tsv(imgs, out1, grid=6, dim=2048, max_side=128)
    ef.extract_to_tsv(imgs, out2, grid=6, dim=2048, max_side=128, batch_size=2, num_workers=1)
    assert st["images"] == 5 and st["num_boxes"] == 36
    assert out1.read_bytes() == out2.read_bytes()            # deterministic, batch-independent
    rows = read_tsv(out1)
    assert [r["img_id"] for r in rows] == list(imgs)
    check_rows(rows, 2048)
    big_row = rows[-1]
    assert (big_row["img_h"], big_row["img_w"]) == (200, 300)
    assert big_row["boxes"][:, 2].max() == 300 and big_row["boxes"][:, 3].max() == 200
    # zero-padding beyond the raw descriptor
    assert (rows[0]["features"][:, ef.raw_dim():] == 0).all()
    assert np.abs(rows[0]["features"][:, :ef.raw_dim()]).sum() > 0
    # no temp files left behind
    assert sorted(p.name for p in tmp_path.glob("*.tsv*")) == ["a.tsv", "b.tsv"]

    # the TSV also reads back through the project's own row type
    from tasks.common.tsv_format import ImageFeatures, encode_row
    r = rows[0]
    again = encode_row(ImageFeatures(r["img_id"], r["img_h"], r["img_w"], r["objects_id"],
                                     r["objects_conf"], r["attrs_id"], r["attrs_conf"],
                                     r["boxes"], r["features"]))
    assert again == out1.read_text().split("\n")[0]


def test_extractor_grid_and_random_projection(tmp_path):
    imgs = {f"x{k}": draw(tmp_path / f"x{k}.png", "circle", (255, 0, 0),
                          box=(5 + k, 5, 40 + k, 40)) for k in range(3)}
    a, b = tmp_path / "a.tsv", tmp_path / "b.tsv"
    st = ef.extract_to_tsv(imgs, a, grid=3, dim=128)            # 474 raw > 128 -> projection
    ef.extract_to_tsv(imgs, b, grid=3, dim=128, batch_size=1)
    assert st["num_boxes"] == 9
    assert a.read_bytes() == b.read_bytes()
    rows = read_tsv(a)
    check_rows(rows, 128, n_boxes=9)
    assert rows[0]["boxes"].tolist()[0] == [0, 0, 21, 21]
    with pytest.raises(ValueError):
        ef.FeatureMapper(ef.raw_dim(), 128, "pad")


def test_features_carry_colour_and_shape(tmp_path):
    def feats(shape, color, box=None):
        p = draw(tmp_path / f"{shape}_{color}_{box}.png", shape, color, box=box)
        arr = np.asarray(Image.open(p).convert("RGB"))
        return ef.describe_batch(arr[None])[0]                   # [36, raw]

    red_sq, blue_sq = feats("square", (255, 0, 0)), feats("square", (0, 0, 255))
    red_ci, red_tr = feats("circle", (255, 0, 0)), feats("triangle", (255, 0, 0))
    assert rel_diff(red_sq, blue_sq) > 0.2
    assert rel_diff(red_sq, red_ci) > 0.05
    assert rel_diff(red_sq, red_tr) > 0.1
    assert rel_diff(red_ci, red_tr) > 0.1
    # the context (whole-image) part alone separates the shapes, whatever the region
    ctx = slice(ef.region_raw_dim(), None)
    assert rel_diff(red_sq[0, ctx], red_ci[0, ctx]) > 0.05
    # shape code: a moved/resized circle of another colour stays closer to a circle than to
    # a square or a triangle (colour-free, translation/scale-free part of the context)
    other = feats("circle", (0, 128, 0), box=(4, 20, 34, 50))
    code = slice(ef.raw_dim() - ef.MASK_GRID ** 2 * 2 - 3 * ef.THUMB_GRID ** 2 - 2,
                 ef.raw_dim() - ef.MASK_GRID ** 2 - 3 * ef.THUMB_GRID ** 2)
    d = {name: np.linalg.norm(other[0, code] - f[0, code])
         for name, f in [("circle", red_ci), ("square", red_sq), ("triangle", red_tr)]}
    assert min(d, key=d.get) == "circle", d


def test_extract_features_cli(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(3):
        draw(folder / f"pic_{k}.png", "triangle", (165, 42, 42))
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out" / "feat.tsv"
    assert ef.main([str(folder), str(out), "--grid", "6", "--dim", "512",
                    "--ids-from-filename", "--quiet"]) == 0
    rows = read_tsv(out)
    assert [r["img_id"] for r in rows] == ["pic_0", "pic_1", "pic_2"]
    check_rows(rows, 512)
    assert ef.main([str(folder / "*.png"), str(out), "--id-prefix", "p_", "--quiet"]) == 0
    assert [r["img_id"] for r in read_tsv(out)] == ["p_pic_0", "p_pic_1", "p_pic_2"]


def test_backbone_needs_torchvision_and_weights(tmp_path):
    img = {"a": draw(tmp_path / "a.png")}
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="torchvision"):
            ef.extract_to_tsv(img, tmp_path / "x.tsv", backbone="resnet50",
                              weights=str(tmp_path / "w.pth"))
    else:
        with pytest.raises(FileNotFoundError):
            ef.extract_to_tsv(img, tmp_path / "x.tsv", backbone="resnet50",
                              weights=str(tmp_path / "missing.pth"))
    assert not (tmp_path / "x.tsv").exists()


# ----------------------------------------------------------------------------- converter

def test_easyvqa_converter_subset(tmp_path, capsys):
    easy_vqa = pytest.importorskip("easy_vqa")
    root = tmp_path / "data"
    n = 20
    assert easyvqa.main(["--data-root", str(root), "--limit-images", str(n)]) == 0
    out = capsys.readouterr().out
    assert "train_questions" in out

    qa = root / "easyvqa"
    answers = easy_vqa.get_answers()
    label2ans = json.loads((qa / "trainval_label2ans.json").read_text())
    ans2label = json.loads((qa / "trainval_ans2label.json").read_text())
    assert label2ans == list(answers) and len(label2ans) == 13
    assert ans2label == {a: i for i, a in enumerate(answers)}

    splits = {s: json.loads((qa / f"{s}.json").read_text()) for s in ("train", "valid", "test")}
    imgs = {s: {d["img_id"] for d in data} for s, data in splits.items()}
    assert all(len(d) > 0 for d in splits.values())
    assert len(imgs["train"]) + len(imgs["valid"]) == n and len(imgs["test"]) == n
    assert len(imgs["valid"]) == 2                                # 10% of the images
    assert not imgs["train"] & imgs["valid"]                      # split by image, no leak
    assert all(i.startswith("easyvqa_train_") for i in imgs["train"] | imgs["valid"])
    assert all(i.startswith("easyvqa_test_") for i in imgs["test"])
    qids = [d["question_id"] for data in splits.values() for d in data]
    assert all(type(q) is int for q in qids) and len(set(qids)) == len(qids)
    for data in splits.values():
        for d in data:
            assert set(d) == {"answer_type", "img_id", "label", "question_id",
                              "question_type", "sent"}
            assert len(d["label"]) == 1 and all(a in ans2label for a in d["label"])
            assert list(d["label"].values()) == [1.0]
            ans = next(iter(d["label"]))
            assert d["answer_type"] == ("yes/no" if ans in ("yes", "no") else "other")
            assert d["question_type"] and d["sent"].lower().startswith(d["question_type"])
    # questions of those images all kept, with their package answers
    q, a, ids = easy_vqa.get_test_questions()
    first = sorted(set(ids))[:n]
    assert len(splits["test"]) == sum(i in first for i in ids)
    d0 = splits["test"][0]
    k = d0["question_id"] - easyvqa.TEST_QID_OFFSET
    assert d0["sent"] == q[k] and d0["label"] == {a[k]: 1.0}
    assert d0["img_id"] == f"easyvqa_test_{ids[k]}"

    feat = root / "easyvqa_imgfeat"
    tr_rows, te_rows = read_tsv(feat / "train_obj36.tsv"), read_tsv(feat / "test_obj36.tsv")
    assert {r["img_id"] for r in tr_rows} == imgs["train"] | imgs["valid"]
    assert {r["img_id"] for r in te_rows} == imgs["test"]
    assert len(tr_rows) == n and len(te_rows) == n
    check_rows(tr_rows + te_rows, 2048)
    assert all((r["img_h"], r["img_w"]) == (64, 64) for r in tr_rows)

    # complete -> no-op; the marker records the counts
    marker = json.loads((qa / "done.json").read_text())
    assert marker["counts"]["test_images"] == n and marker["counts"]["answers"] == 13
    mtime = (feat / "train_obj36.tsv").stat().st_mtime_ns
    assert easyvqa.main(["--data-root", str(root), "--limit-images", str(n)]) == 0
    assert "already converted" in capsys.readouterr().out
    assert (feat / "train_obj36.tsv").stat().st_mtime_ns == mtime
    # other settings or a damaged file -> not complete
    assert easyvqa.is_complete(root, limit_images=n) is not None
    assert easyvqa.is_complete(root, limit_images=n, dim=1024) is None
    with open(feat / "test_obj36.tsv", "r+b") as f:
        f.truncate(100)
    assert easyvqa.is_complete(root, limit_images=n) is None


def test_easyvqa_split_is_deterministic():
    ids = list(range(50))
    tr1, va1 = easyvqa.split_train_images(ids)
    tr2, va2 = easyvqa.split_train_images(list(reversed(ids)))
    assert (tr1, va1) == (tr2, va2) and len(va1) == 5 and not set(tr1) & set(va1)
    assert easyvqa.question_type("what color is the circle?",
                                 {"circle", "red"}) == "what color is the"
    assert easyvqa.question_type("is there not a red shape?", {"circle", "red"}) == \
        "is there not a"


def test_standardised_features_are_centred_and_scaled(tmp_path):
    paths = []
    for i, (shape, color) in enumerate([("square", (255, 0, 0)), ("circle", (0, 0, 255)),
                                        ("triangle", (0, 128, 0)), ("circle", (255, 255, 0))]):
        paths.append(str(draw(tmp_path / f"{i}.png", shape, color)))
    mean, std = ef.fit_standardizer(paths)
    assert mean.shape == std.shape == (ef.raw_dim(),) and (std > 0).all()
    raw = np.concatenate([ef.describe_batch(np.asarray(Image.open(p).convert("RGB"))[None])[0]
                          for p in paths])
    z = ef.HandcraftedExtractor(dim=ef.raw_dim(), standardize=(mean, std))(
        [np.asarray(Image.open(p).convert("RGB")) for p in paths])
    z = np.concatenate(z)
    np.testing.assert_allclose(z, (raw - mean) / std, rtol=1e-5, atol=1e-5)
    varying = raw.std(0) > 1e-6
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-3)
    np.testing.assert_allclose(z.std(0)[varying], 1, rtol=1e-3)
