"""Pictures -> detector TSV -> tools.predict: picture decoding (colour order, EXIF, odd modes,
broken and oversized files), the extraction command (skip/stop, resume without duplicates,
settings check) and asking a detector-feature run about a photo, with a small detector."""
from __future__ import annotations

import dataclasses
import io
import json
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from butd import DetectorConfig, convert_weights, prepare_image
from butd.vocab import object_names
from conftest import FIXTURES
from detector_helpers import random_state, save_pickle_layout
from tasks.common.tsv_format import decode_row
from tools import extract_features, predict
from tools.convert_detector_weights import main as convert_main
from tools.detector_features import DetectorExtractor
from tools.image_files import BadImageError, load_rgb

# The VG detector's structure at the width of the small LXMERT model (64-dim regions).
MICRO = DetectorConfig(stage_blocks=(1, 1, 1), res5_blocks=1, stem_channels=8, res2_channels=8,
                       res2_bottleneck=2, rpn_channels=16, min_size=96, max_size=160)
RED = (255, 0, 0)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A safetensors file of seeded weights for MICRO, made by the converter command."""
    folder = tmp_path_factory.mktemp("weights")
    source = folder / "faster_rcnn_from_caffe_attr.pkl"
    save_pickle_layout(random_state(MICRO, seed=11), source)
    config = folder / "micro.json"
    config.write_text(MICRO.to_json())
    target = folder / "butd_micro.safetensors"
    assert convert_main([str(source), str(target), "--config", str(config)]) == 0
    return target


@pytest.fixture(scope="module")
def extractor(weights):
    return DetectorExtractor(weights, "cpu")


def save(image: Image.Image, path, **kwargs):
    image.save(path, **kwargs)
    return path


# ---- decoding ---------------------------------------------------------------------------------

def test_pure_red_is_the_same_through_every_input_path(tmp_path, extractor):
    rgb = Image.new("RGB", (48, 40), RED)
    files = {
        "png": save(rgb, tmp_path / "rgb.png"),
        "rgba": save(Image.new("RGBA", (48, 40), RED + (90,)), tmp_path / "rgba.png"),
        "palette": save(rgb.convert("P"), tmp_path / "palette.png"),
        "cmyk": save(rgb.convert("CMYK"), tmp_path / "cmyk.tif"),
        "bmp": save(rgb, tmp_path / "rgb.bmp"),
    }
    for name, path in files.items():
        assert np.array_equal(load_rgb(path), np.asarray(rgb)), name
    # the detector sees BGR minus the BGR means: red is the third channel
    tensor = prepare_image(np.asarray(rgb), MICRO).tensor
    np.testing.assert_allclose(tensor[:, 0, 0].numpy(), [-102.9801, -115.9465, 255 - 122.7717],
                               rtol=1e-6)
    reference = extractor.describe(np.asarray(rgb), "red").features
    for name, path in files.items():
        np.testing.assert_array_equal(extractor.describe_file(path, name).features, reference)
    blue = extractor.describe(np.asarray(Image.new("RGB", (48, 40), (0, 0, 255))), "blue")
    assert not np.allclose(blue.features, reference)


def test_exif_orientation_gray_and_sixteen_bit(tmp_path):
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste(RED, (0, 0, 20, 20))                        # left half red
    exif = Image.Exif()
    exif[0x0112] = 6                                         # display rotated 90 degrees cw
    upright = load_rgb(save(stored, tmp_path / "phone.png", exif=exif))
    assert upright.shape == (40, 20, 3)                      # portrait once upright
    assert tuple(upright[5, 10]) == RED and tuple(upright[35, 10]) == (0, 0, 255)
    gray = load_rgb(save(Image.new("L", (8, 6), 77), tmp_path / "gray.png"))
    assert gray.shape == (6, 8, 3) and np.all(gray == 77)
    deep = Image.fromarray(np.full((6, 8), 0x1234, np.uint16))
    assert deep.mode.startswith("I")
    assert np.all(load_rgb(save(deep, tmp_path / "deep.png")) == 0x12)   # the high byte
    bits = load_rgb(save(Image.new("1", (8, 6), 1), tmp_path / "bits.png"))
    assert np.all(bits == 255)


def _huge_png(path, width: int, height: int):
    """A small PNG whose header claims width x height (a decompression bomb's calling card)."""
    small = io.BytesIO()
    Image.new("L", (4, 4)).save(small, format="PNG")
    data = bytearray(small.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def test_broken_and_oversized_files_are_refused_by_name(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(BadImageError, match=r"empty.jpg: cannot read the image \(an empty file"):
        load_rgb(empty)
    full = save(Image.effect_noise((64, 64), 40).convert("RGB"), tmp_path / "full.jpg")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full.read_bytes()[:600])
    with pytest.raises(BadImageError, match="cut.jpg: cannot read the image"):
        load_rgb(cut)
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    with pytest.raises(BadImageError, match=r"notes.png: cannot read the image \(not a picture"):
        load_rgb(text)
    bomb = _huge_png(tmp_path / "bomb.png", 30000, 30000)
    with pytest.raises(BadImageError, match=r"bomb.png: refused as a decompression bomb"):
        load_rgb(bomb)                          # Pillow's own limit, before any decoding
    with pytest.raises(BadImageError, match=r"big.png: 25000x3000 = 75,000,000 pixels is over"):
        load_rgb(_huge_png(tmp_path / "big.png", 25000, 3000), max_pixels=50_000_000)
    with pytest.raises(BadImageError, match="over the limit of 100"):
        load_rgb(full, max_pixels=100)


# ---- the extraction command -------------------------------------------------------------------

def _pictures(folder, count: int = 3):
    folder.mkdir()
    rng = np.random.RandomState(0)
    sizes = [(50, 70), (90, 40), (64, 64), (30, 100)]
    for k in range(count):
        h, w = sizes[k % len(sizes)]
        Image.fromarray(rng.randint(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"p{k}.png")
    return folder


def _rows(tsv):
    with open(tsv) as f:
        return [decode_row(line, str(tsv), i) for i, line in enumerate(f, 1)]


def _extract(images, out, weights, *extra):
    return extract_features.main([str(images), str(out), "--detector", "butd", "--weights",
                                  str(weights), "--device", "cpu", "--quiet", *extra])


def test_extraction_writes_lxmert_rows_and_skips_bad_pictures(tmp_path, weights, extractor,
                                                              capsys):
    images = _pictures(tmp_path / "images")
    (images / "zero.jpg").write_bytes(b"")
    out = tmp_path / "feats" / "mine_obj36.tsv"
    assert _extract(images, out, weights) == 0
    stdout, stderr = capsys.readouterr()
    assert "zero.jpg: cannot read the image (an empty file" in stderr
    assert "skipped 1 unreadable image(s)" in stdout
    rows = _rows(out)
    assert [r.img_id for r in rows] == ["p0", "p1", "p2"]
    for row in rows:
        assert row.num_boxes == MICRO.num_regions and row.features.shape[1] == 64
        assert np.all((row.objects_id >= 0) & (row.objects_id < 1600))
        assert np.all((row.attrs_id >= 0) & (row.attrs_id < 400))
        assert np.all((row.objects_conf > 0) & (row.objects_conf <= 1))
        assert np.all(row.boxes[:, 2] <= row.img_w) and np.all(row.boxes[:, 3] <= row.img_h)
    again = extractor.describe_file(images / "p1.png", "p1")
    np.testing.assert_array_equal(again.features, rows[1].features)
    np.testing.assert_array_equal(again.boxes, rows[1].boxes)
    record = extract_features.read_extractor_settings(extract_features.sidecar_path(out))
    assert record["mode"] == "butd" and record["weights"] == str(weights)
    # stop instead of skipping: the bad picture is named, the finished rows are kept
    stop = tmp_path / "stop_obj36.tsv"
    assert _extract(images, stop, weights, "--bad-images", "stop") == 1
    assert "zero.jpg: cannot read the image" in capsys.readouterr().err
    assert len(_rows(stop.with_name(stop.name + ".partial"))) == 3


def test_an_interrupted_extraction_resumes_without_duplicates(tmp_path, weights, capsys):
    images = _pictures(tmp_path / "images", 4)
    out = tmp_path / "resume_obj36.tsv"
    first = tmp_path / "first"
    first.mkdir()
    for k in (0, 1):
        (first / f"p{k}.png").write_bytes((images / f"p{k}.png").read_bytes())
    assert _extract(first, out, weights) == 0
    # as if killed while writing the next row: the finished file reopened, a torn line added
    partial = out.with_name(out.name + ".partial")
    out.rename(partial)
    with open(partial, "a") as f:
        f.write("p2\t50\t70\tAAAA")
    assert _extract(images, out, weights) == 0
    assert "2 were already there" in capsys.readouterr().out
    assert [r.img_id for r in _rows(out)] == ["p0", "p1", "p2", "p3"]
    assert not partial.exists()
    assert _extract(images, out, weights) == 0            # nothing left to do
    assert "wrote 0 images" in capsys.readouterr().out and len(_rows(out)) == 4
    # other weights into the same file are refused
    other = tmp_path / "other.pkl"
    save_pickle_layout(random_state(MICRO, seed=12), other)
    convert_weights(other, tmp_path / "other.safetensors", MICRO)
    assert _extract(images, out, tmp_path / "other.safetensors") == 1
    assert "other settings" in capsys.readouterr().err
    # a second extraction into a TSV being written stops at once
    from tools.detector_features import exclusive
    with exclusive(out):
        assert _extract(images, out, weights) == 1
    assert "another extraction is writing it" in capsys.readouterr().err


def test_oversized_picture_is_counted_not_swallowed(tmp_path, weights, capsys):
    images = _pictures(tmp_path / "images", 2)
    _huge_png(images / "bomb.png", 20000, 20000)
    out = tmp_path / "bomb_obj36.tsv"
    assert _extract(images, out, weights) == 0
    captured = capsys.readouterr()
    assert "bomb.png: refused as a decompression bomb" in captured.err
    assert "skipped 1 unreadable image(s)" in captured.out
    assert [r.img_id for r in _rows(out)] == ["p0", "p1"]


# ---- asking a detector-feature run about a photo ----------------------------------------------

@pytest.fixture(scope="module")
def detector_run(tmp_path_factory, weights):
    """A QA model over 64-dim detector regions (random, untrained: the path is what is tested),
    saved as a run whose features were extracted by the detector."""
    from lxrt.config import LXRTConfig
    from tasks.qa.model import QAModel
    folder = tmp_path_factory.mktemp("detector_run")
    images = _pictures(folder / "images", 2)
    tsv = folder / "train_obj36.tsv"
    assert _extract(images, tsv, weights) == 0
    config = LXRTConfig(vocab_size=256, hidden_size=32, num_attention_heads=4,
                        intermediate_size=64, visual_feat_dim=64, x_layers=2)
    torch.manual_seed(0)
    torch.save(QAModel(config, 3).state_dict(), folder / "BEST.pth")
    answers = ["red", "dog", "two"]
    (folder / "ans2label.json").write_text(json.dumps({a: i for i, a in enumerate(answers)}))
    (folder / "label2ans.json").write_text(json.dumps(answers))
    info = {"task": "vqa", "model_config": dataclasses.asdict(config),
            "vocab_file": str(FIXTURES / "vocab_mini.txt"), "num_answers": 3,
            "ans2label": str(folder / "ans2label.json"),
            "label2ans": str(folder / "label2ans.json"), "feature_files": [str(tsv)]}
    (folder / "run_info.json").write_text(json.dumps({"task_info": info}))
    return folder, images, tsv


def test_predict_describes_a_photo_with_the_detector_and_names_its_boxes(detector_run, tmp_path,
                                                                         capsys):
    folder, images, tsv = detector_run
    photo = images / "p1.png"
    att = tmp_path / "att.png"
    code = predict.main(["--load", str(folder / "BEST"), "--image", str(photo), "--question",
                         "what is it?", "--attention", str(att), "--json"])
    assert code == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out)
    labels = result["attention"]["region_labels"]
    row = _rows(tsv)[1]
    assert len(labels) == row.num_boxes
    assert [label.split()[-1] for label in labels] == [
        object_names()[i].split()[-1] for i in row.objects_id]
    from tools.predictor import Predictor
    predictor = Predictor.from_run(folder / "BEST")
    from_file = predictor.image_from_file(photo)
    from_tsv = predictor.image_from_features(tsv, "p1")
    np.testing.assert_array_equal(from_file.feats, from_tsv.feats)
    np.testing.assert_array_equal(from_file.boxes, from_tsv.boxes)
    assert from_file.labels == from_tsv.labels == labels
    with Image.open(att) as picture:
        assert np.asarray(picture.convert("RGB")).std() > 10


def test_a_run_on_features_made_elsewhere_takes_a_record_by_flag(detector_run, tmp_path, capsys):
    """A run fine-tuned on LXMERT's released TSVs has no extractor record: --extractor names
    the record of a detector extraction instead."""
    folder, images, tsv = detector_run
    run = tmp_path / "released_run"
    run.mkdir()
    (run / "BEST.pth").write_bytes((folder / "BEST.pth").read_bytes())
    info = json.loads((folder / "run_info.json").read_text())
    info["task_info"]["feature_files"] = [str(tmp_path / "train2014_obj36.tsv")]
    (run / "run_info.json").write_text(json.dumps(info))
    base = ["--load", str(run / "BEST"), "--image", str(images / "p0.png"), "--question", "what?"]
    assert predict.main(base) == 2
    assert "--extractor" in capsys.readouterr().err
    record = extract_features.sidecar_path(tsv)
    assert predict.main(base + ["--extractor", str(record), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["image"] == "p0"
