"""tools.make_qa_dataset (own QA data -> the VQA layout), its answer rules (tools.vqa_answers)
and its errors; easy-VQA through the same path; converter -> fine-tune -> predict."""
import csv
import itertools
import json
import random
import re
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from generated import ROOT
from tasks.common.paths import DataRoot
from tasks.qa.data import AnswerTable, load_qa_dataset
from tools import extract_features, make_qa_dataset as mq
from tools.qa_rows import QAFileError, read_rows
from tools.vqa_answers import answer_table, normalize_answer, soft_scores, top_answer

COLOURS = {"red": (230, 20, 20), "blue": (20, 40, 230), "green": (20, 170, 40)}


def draw(path: Path, colour: str, shape: str, size=(48, 40)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", size, (245, 240, 235))
    box = (10, 8, 36, 32)
    d = ImageDraw.Draw(im)
    (d.ellipse if shape == "circle" else d.rectangle)(box, fill=COLOURS[colour])
    im.save(path)


def write_csv(path: Path, header, rows) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def convert(images, questions, root, **kw):
    kw.setdefault("dim", 32)
    return mq.convert(images, questions, root, verbose=False, **kw)


def read(root, name):
    return json.loads((Path(root) / "vqa" / f"{name}.json").read_text(encoding="utf-8"))


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    for i, (colour, shape) in enumerate(itertools.product(COLOURS, ("circle", "square"))):
        draw(folder / f"{i}.png", colour, shape)
    return folder


# ----------------------------------------------------------------------------- answer rules

@pytest.mark.parametrize("raw, expected", [
    ("Red", "red"), ("  The Red one. ", "red 1"), ("T-Shirt", "t shirt"),
    ("Don't know", "don't know"), ("dont know", "don't know"), ("Two", "2"), ("none", "0"),
    ("a dog", "dog"), ("an apple!", "apple"), ("Grey", "gray"), ("2.00", "2.00"),
    ("12:35", "12:35"), ("10,000", "10000"), ("black, white", "black white"),
    ("(yes)", "yes"), ("couldnt've", "couldn't've"), ("Ünïcödé Straße", "ünïcödé straße"),
    ("the", ""), ("?", ""),
])
def test_normalize_answer_by_hand(raw, expected):
    assert normalize_answer(raw) == expected


def test_normalisation_keeps_lxmerts_vqa_answers():
    label2ans = json.loads((ROOT / "data" / "vqa" / "trainval_label2ans.json").read_text())
    assert all(normalize_answer(a) == a for a in label2ans)


def naive_vqa_accuracy(answer, given):
    """VQA's evaluation written out: min(1, matches/3) over each set that leaves one out (all
    the others needed when fewer than 3 are left)."""
    subsets = [given[:i] + given[i + 1:] for i in range(len(given))]
    return sum(min(1.0, s.count(answer) / min(3, len(s))) for s in subsets) / len(subsets)


def test_soft_scores_by_hand_and_against_the_evaluation():
    # VQA's ten answers to "What color is the grass?" and LXMERT's label for it
    # (green 5x, gray 3x, brown 1x, "black, white" 1x)
    given = ["green"] * 5 + ["gray"] * 3 + ["brown", "black white"]
    assert soft_scores(given) == {"green": 1.0, "gray": 0.9, "brown": 0.3, "black white": 0.3}
    assert soft_scores(["a", "a"] + ["b"] * 8)["a"] == 0.6
    # four answers: VQA's rule as it is; a 2x -> (2 * 1/3 + 2 * 2/3) / 4 = 1/2, b, c -> 1/4
    assert soft_scores(["a", "b", "a", "c"]) == {"a": 0.5, "b": 0.25, "c": 0.25}
    # fewer: full credit needs all the other answers; a 2x of 3 -> (2 * 1/2 + 1 * 1) / 3
    assert soft_scores(["a", "a", "b"]) == {"a": 0.666667, "b": 0.333333}
    assert soft_scores(["a", "a"]) == {"a": 1.0} and soft_scores(["a", "b"])["a"] == 0.5
    assert soft_scores(["x"]) == {"x": 1.0}               # one answer: full credit
    rng = random.Random(0)
    for _ in range(100):
        given = [rng.choice("abc") for _ in range(rng.randint(2, 12))]
        for answer, score in soft_scores(given).items():
            assert score == pytest.approx(naive_vqa_accuracy(answer, given), abs=1e-6)
    with pytest.raises(ValueError):
        soft_scores([])


def test_answer_table_and_top_answer():
    assert top_answer(["b", "a", "a", "b"]) == "b"         # first among the most given
    table, counts = answer_table(["x", "y", "y", "z", "z", "w"], max_answers=2)
    assert table == ["y", "z"] and counts == {"x": 1, "y": 2, "z": 2, "w": 1}
    assert answer_table(["x", "y", "y"], max_answers=9, min_count=2)[0] == ["y"]


# ----------------------------------------------------------------------------- the layout

def test_converts_a_csv_with_splits_by_hand(images, tmp_path):
    qa = write_csv(tmp_path / "qa.csv", ["Image", "question", "answers", "split", "notes"], [
        ["0.png", "What color is it?", "Red|red|red|red.|Red", "train", "x"],
        ["1.png", "What  shape?", "Square|box|square|a square", "train", ""],
        ["2.png", "What color is it?", "blue", "train", ""],
        ["3.png", "What color is it?", "blue|teal", "valid", ""],
        ["4.png", "Is it round?", "Yes", "test", ""],
    ])
    manifest = convert(images, qa, tmp_path / "root", max_answers=3)
    train, valid, test = (read(tmp_path / "root", s) for s in ("train", "valid", "test"))
    # table: top answers of train (red, square, blue), most frequent first, ties by name
    assert read(tmp_path / "root", "trainval_label2ans") == ["blue", "red", "square"]
    assert train[0] == {"answer_type": "other", "img_id": "0", "label": {"red": 1.0},
                        "question_id": 0, "sent": "What color is it?"}
    # square 3 of 4 -> (3 * 2/3 + 1 * 1) / 4 = 0.75; box (not in the table) is left out
    assert train[1]["label"] == {"square": 0.75} and train[1]["sent"] == "What shape?"
    # blue 1 of 2 -> (1 * 0 + 1 * 1) / 2; teal is not in the table
    assert valid[0]["label"] == {"blue": 0.5}
    assert test[0]["label"] == {} and test[0]["answer_type"] == "yes/no"
    assert manifest["answers"]["dropped_labels"] == 3       # box, teal, yes
    assert manifest["answers"]["questions_without_table_answer"]["test"] == 1
    assert manifest["splits"]["train"] == {"questions": 3, "images": 3,
                                          "features": "vqa_imgfeat/images.tsv"}
    # the VQA task reads it: split names and feature file from the manifest
    data_root = DataRoot(tmp_path / "root")
    assert data_root.path("vqa", "features", "valid") == \
        tmp_path / "root" / "vqa_imgfeat" / "images.tsv"
    with pytest.raises(ValueError, match="its splits: test, train, valid"):
        data_root.path("vqa", "examples", "nominival")
    assert data_root.path("vqa", "ans2label").parent == tmp_path / "root" / "vqa"
    (tmp_path / "root" / "vqa" / "trainval_label2ans.json").unlink()
    with pytest.raises(FileNotFoundError, match="trainval_label2ans.json not found"):
        AnswerTable.of(data_root, "vqa")                    # never the shipped 3129 answers


def test_split_ratio_is_by_image_and_fixed(images, tmp_path):
    rows = [[f"{i}.png", q, "yes"] for i in range(6) for q in ("q one?", "q two?")]
    qa = write_csv(tmp_path / "qa.csv", ["image", "question", "answer"], rows)
    convert(images, qa, tmp_path / "a", split_ratio="0.5,0.25,0.25", seed=3)
    convert(images, qa, tmp_path / "b", split_ratio="0.5,0.25,0.25", seed=3)
    split_images = {s: {d["img_id"] for d in read(tmp_path / "a", s)}
                    for s in ("train", "valid", "test")}
    assert [len(v) for v in split_images.values()] == [2, 2, 2]
    assert not split_images["train"] & (split_images["valid"] | split_images["test"])
    assert all(read(tmp_path / "a", s) == read(tmp_path / "b", s) for s in split_images)
    with pytest.raises(QAFileError, match="split-ratio"):
        convert(images, qa, tmp_path / "c", split_ratio="0.5,0.6")


def test_duplicates_are_kept_once_and_counted_or_refused(images, tmp_path):
    qa = write_csv(tmp_path / "qa.csv", ["image", "question", "answer"], [
        ["0.png", "What color?", "red"], ["1.png", "What color?", "green"],
        ["0.png", "what   COLOR?", "blue"], ["0.png", "What shape?", "circle"]])
    manifest = convert(images, qa, tmp_path / "root", split_ratio="0.5,0.5")
    data = read(tmp_path / "root", "train") + read(tmp_path / "root", "valid")
    assert sorted(d["question_id"] for d in data) == [0, 1, 3]
    assert manifest["duplicates_dropped"] == 1
    assert manifest["duplicate_examples"] == ["line 4 repeats line 2"]
    with pytest.raises(QAFileError, match=r"qa.csv: 1 duplicate question.*line 4 repeats "
                                          r"line 2"):
        convert(images, qa, tmp_path / "other", split_ratio="0.5,0.5", duplicates="error")


def test_unicode_questions_answers_and_file_names(tmp_path):
    folder = tmp_path / "bilder"
    draw(folder / "café.png", "red", "circle")
    draw(folder / "日本" / "猫.png", "blue", "square")
    qa = tmp_path / "qa.jsonl"
    lines = [{"image": "café.png", "question": "¿De qué color es el círculo? 🔴",
              "answers": [{"answer": "Rojo"}, {"answer": "rojo"}], "split": "train"},
             {"image": "日本/猫.png", "question": "この形は何ですか？", "answer": "四角",
              "split": "train"},
             {"image": "日本/猫.png", "question": "Welche Farbe?", "answer": "Blau",
              "split": "valid"}]
    qa.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n\n",
                  encoding="utf-8")
    convert(folder, qa, tmp_path / "root")
    train = read(tmp_path / "root", "train")
    assert [d["img_id"] for d in train] == ["café", "日本__猫"]
    assert train[0]["sent"] == lines[0]["question"] and train[0]["label"] == {"rojo": 1.0}
    assert train[1]["label"] == {"四角": 1.0}
    from lxrt.tokenization import LXRTTokenizer, find_vocab_file
    tokenizer = LXRTTokenizer(find_vocab_file(), 20)
    dataset = load_qa_dataset(tmp_path / "root", "vqa", "train", tokenizer)
    assert len(dataset) == 2 and dataset[1]["feats"].shape == (36, 32)
    assert dataset[0]["target"].sum() == 1.0


def test_features_are_reused_until_something_changes(images, tmp_path):
    qa = write_csv(tmp_path / "qa.csv", ["image", "question", "answer"],
                   [[f"{i}.png", "What?", "x"] for i in range(4)])
    root = tmp_path / "root"
    convert(images, qa, root, split_ratio="0.5,0.5")
    tsv = root / "vqa_imgfeat" / "images.tsv"
    stamp = tsv.stat().st_mtime_ns
    convert(images, qa, root, split_ratio="0.5,0.5", max_answers=5)
    assert tsv.stat().st_mtime_ns == stamp
    convert(images, qa, root, split_ratio="0.5,0.5", force=True)
    assert tsv.stat().st_mtime_ns != stamp
    stamp = tsv.stat().st_mtime_ns
    manifest = convert(images, qa, root, split_ratio="0.5,0.5", dim=16)
    assert tsv.stat().st_mtime_ns != stamp and manifest["features"]["extractor"]["dim"] == 16
    # a split that a new conversion no longer has is removed with it
    convert(images, write_csv(tmp_path / "b.csv", ["image", "question", "answer", "split"],
                              [["0.png", "What?", "x", "train"],
                               ["1.png", "What?", "x", "dev"]]), root)
    assert sorted(p.name for p in (root / "vqa").glob("*.json")) == [
        "dataset.json", "dev.json", "train.json", "trainval_ans2label.json",
        "trainval_label2ans.json"]


def test_an_interrupted_conversion_is_refused_then_redone(images, tmp_path, monkeypatch):
    qa = write_csv(tmp_path / "qa.csv", ["image", "question", "answer", "split"],
                   [["0.png", "What?", "x", "train"], ["1.png", "What?", "y", "valid"]])
    root = tmp_path / "root"
    write_json = mq._write_json

    def crash_at_valid(path, obj):
        if path.name == "valid.json":
            raise KeyboardInterrupt
        write_json(path, obj)

    monkeypatch.setattr(mq, "_write_json", crash_at_valid)
    with pytest.raises(KeyboardInterrupt):
        convert(images, qa, root)
    with pytest.raises(ValueError, match="did not finish; run python -m tools.make_qa_dataset"):
        DataRoot(root).path("vqa", "examples", "train")
    monkeypatch.setattr(mq, "_write_json", write_json)
    convert(images, qa, root)
    assert DataRoot(root).path("vqa", "examples", "valid") == root / "vqa" / "valid.json"


def test_detector_features_through_the_real_extractor(images, tmp_path, monkeypatch):
    """--detector butd runs tools.extract_features' detector path (a small seeded detector):
    every image gets its regions under its own img_id, the extractor record sits beside the
    TSV, and a failing extractor stops the conversion."""
    from butd import DetectorConfig
    from detector_helpers import random_state, save_pickle_layout
    from tools.convert_detector_weights import main as convert_weights_main

    config = DetectorConfig(stage_blocks=(1, 1, 1), res5_blocks=1, stem_channels=8,
                            res2_channels=8, res2_bottleneck=2, rpn_channels=16, min_size=96,
                            max_size=160)
    source, weights = tmp_path / "frcnn.pkl", tmp_path / "frcnn.safetensors"
    save_pickle_layout(random_state(config, seed=5), source)
    (tmp_path / "micro.json").write_text(config.to_json())
    assert convert_weights_main([str(source), str(weights), "--config",
                                 str(tmp_path / "micro.json")]) == 0

    qa = write_csv(tmp_path / "qa.csv", ["image", "question", "answer", "split"],
                   [["0.png", "What?", "x", "train"], ["1.png", "What?", "y", "valid"]])
    root = tmp_path / "root"
    manifest = convert(images, qa, root, detector="butd", weights=str(weights),
                       extract_args="--device cpu")
    assert manifest["features"]["extractor"]["detector"] == "butd"
    tsv = root / "vqa_imgfeat" / "images.tsv"
    assert sorted(mq.tsv_img_ids(tsv)) == ["0", "1"]
    assert extract_features.read_extractor_settings(
        extract_features.sidecar_path(tsv))["mode"] == "butd"
    assert not list((root / "vqa_imgfeat").glob(".images*"))  # the links are removed

    monkeypatch.setattr(extract_features, "main", lambda argv: 2)
    with pytest.raises(RuntimeError, match="--detector butd .* failed"):
        convert(images, qa, tmp_path / "root2", detector="butd", weights=str(weights))


# ----------------------------------------------------------------------------- errors

def error_of(tmp_path, images, name, content, **kw):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(QAFileError) as err:
        convert(images, path, tmp_path / "root", **kw)
    return str(err.value)


@pytest.mark.parametrize("name, content, expected", [
    ("a.csv", "picture,question,answer\n0.png,What?,red\n",
     r"a.csv: line 1: the CSV header has no column 'image' \(found 'picture', 'question', "
     r"'answer'\); expected columns image, question"),
    ("a.csv", "image,question\n0.png,What?\n", r"line 1: .*no column 'answer' or 'answers'"),
    ("a.csv", "image,question,answer,answers\n", r"line 1: .*both 'answer' and 'answers'"),
    ("a.csv", "", r"a.csv: empty file"),
    ("a.csv", "image,question,answer\n", r"a.csv: no questions"),
    ("a.csv", "image,question,answer\n0.png,What?,red\n1.png,What?,\n",
     r"a.csv: line 3: empty answer"),
    ("a.csv", "image,question,answers\n0.png,What?,red||blue\n",
     r"line 2: empty answer among \['red', '', 'blue'\]"),
    ("a.csv", "image,question,answer\n0.png,What?,The\n",
     r"line 2: answer 'The' is empty after VQA's answer normalisation"),
    ("a.csv", "image,question,answer\n0.png,  ,red\n", r"line 2: empty question"),
    ("a.csv", "image,question,answer\n0.png,What,is,it?,red\n",
     r"line 2: 5 fields, but the header has 3"),
    ("a.csv", 'image,question,answer\n0.png,"What\nis it?",red\n9.png,x,y\n',
     r"1 image\(s\) not found under .*images: line 4: 9.png"),
    ("a.csv", "image,question,answer\n../0.png,What?,red\n", r"line 2: image '../0.png' must"),
    ("a.csv", "image,question,answer,split\n0.png,What?,red,train\n1.png,W?,b,\n",
     r"line 3: no split, while other rows have one"),
    ("a.csv", "image,question,answer,split\n0.png,What?,red,my split\n",
     r"line 2: split 'my split' must be a name"),
    ("a.csv", "image,question,answer,question_id\n0.png,A?,r,7\n1.png,B?,r,7\n",
     r"lines 2 and 3 have the same question_id 7"),
    ("a.csv", "image,question,answer,question_id\n0.png,A?,r,x7\n",
     r"line 2: question_id 'x7' is not a non-negative integer"),
    ("a.csv", b"image,question,answer\n0.png,caf\xe9,red\n",
     r"a.csv: line 2: byte 0xe9 at offset 31 is not UTF-8"),
    ("a.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", r"a.csv: not a text file \(a NUL byte"),
    ("a.txt", "image,question,answer\n", r"a.txt: cannot tell the format"),
    ("a.jsonl", '{"image": "0.png", "question": "What?", "answer": "red"}\n{"image": 1}\n',
     r"a.jsonl: line 2: key 'image' must be a string, got int 1"),
    ("a.jsonl", '{"image": "0.png", "question": "What?", "answers": "red"}\n',
     r"line 1: key 'answers' must be a list of strings"),
    ("a.jsonl", '\n{"image": "0.png", "question": "What?"\n', r"a.jsonl: line 2: not valid JSON"),
    ("a.jsonl", '["0.png", "What?", "red"]\n', r"line 1: expected a JSON object"),
])
def test_bad_input_is_named_by_file_and_line(images, tmp_path, name, content, expected):
    message = error_of(tmp_path, images, name, content)
    assert re.search(expected, message, re.S), message


def test_bad_images_and_roots(images, tmp_path):
    (images / "broken.png").write_bytes(b"not an image at all")
    (images / "empty.jpg").write_bytes(b"")
    for bad in ("broken.png", "empty.jpg"):
        message = error_of(tmp_path, images, "a.csv",
                           f"image,question,answer\n0.png,A?,r\n{bad},B?,r\n")
        assert f"a.csv: line 3: {images / bad} is not a readable image" in message
    # a header that reads and pixels that do not: stopped by the extraction, named by line
    (images / "cut.png").write_bytes((images / "0.png").read_bytes()[:-60])
    message = error_of(tmp_path, images, "a.csv", "image,question,answer,split\n"
                       "0.png,A?,r,train\ncut.png,B?,r,valid\n")
    assert f"a.csv: line 3: {images / 'cut.png'}: cannot read the image" in message
    assert not (tmp_path / "root" / "vqa").exists()
    (tmp_path / "0.png").write_bytes((images / "0.png").read_bytes())
    (tmp_path / "0.jpg").write_bytes((images / "0.png").read_bytes())
    message = error_of(tmp_path, tmp_path, "a.csv", "image,question,answer\n0.png,A?,r\n"
                       "0.jpg,B?,r\n")
    assert "lines 2 and 3: images '0.png' and '0.jpg' would share the img_id '0'" in message
    # a root holding other VQA files is never written into
    lxmert = tmp_path / "lxmert"
    (lxmert / "vqa").mkdir(parents=True)
    (lxmert / "vqa" / "train.json").write_text("[]")
    qa = write_csv(tmp_path / "q.csv", ["image", "question", "answer"], [["0.png", "A?", "r"]])
    with pytest.raises(QAFileError, match="did not write; choose another --dataRoot"):
        mq.convert(images, qa, lxmert, verbose=False)
    assert mq.main([str(images), str(tmp_path / "missing.csv"), "--dataRoot",
                    str(tmp_path / "r")]) == 2


# ----------------------------------------------------------------------------- easy-VQA

def test_easyvqa_converts_through_the_same_path(tmp_path):
    """The easy-VQA package written as a plain CSV (its own folders, its own splits) comes out
    as tools.easyvqa's data: the same answers, one per question, scored 1.0."""
    easy_vqa = pytest.importorskip("easy_vqa")
    train_paths, test_paths = easy_vqa.get_train_image_paths(), easy_vqa.get_test_image_paths()
    image_dir = Path(train_paths[0]).parents[2]                   # .../easy_vqa/data
    rows = []
    for split, (questions, answers, ids), paths in (
            ("train", easy_vqa.get_train_questions(), train_paths),
            ("test", easy_vqa.get_test_questions(), test_paths)):
        for q, a, i in zip(questions, answers, ids):
            if i < 8:
                name = "valid" if split == "train" and i >= 6 else split
                rows.append([Path(paths[i]).relative_to(image_dir).as_posix(), q, a, name])
    qa = write_csv(tmp_path / "easyvqa.csv", ["image", "question", "answer", "split"], rows)
    manifest = convert(image_dir, qa, tmp_path / "root")
    assert set(manifest["splits"]) == {"train", "valid", "test"}
    assert manifest["images"] == 16 and manifest["splits"]["valid"]["images"] == 2
    kept = sum(v["questions"] for v in manifest["splits"].values())
    assert kept + manifest["duplicates_dropped"] == len(rows)
    label2ans = read(tmp_path / "root", "trainval_label2ans")
    assert set(label2ans) <= set(easy_vqa.get_answers())
    train = read(tmp_path / "root", "train")
    assert train[0]["img_id"] == "train__images__0"
    assert all(len(d["label"]) == 1 and list(d["label"].values()) == [1.0] for d in train)
    from lxrt.tokenization import LXRTTokenizer, find_vocab_file
    dataset = load_qa_dataset(tmp_path / "root", "vqa", "valid", LXRTTokenizer(
        find_vocab_file(), 20), answer_table=AnswerTable.of(
        DataRoot(tmp_path / "root"), "vqa"), require_label=True)
    assert len(dataset) == manifest["splits"]["valid"]["questions"]


# ----------------------------------------------------------------------------- end to end

def test_own_csv_to_fine_tune_to_predict(tmp_path, capsys):
    """Converter -> fine-tune (tiny model, from scratch) -> test file -> tools.predict on an
    image file: the predicted answer is the evaluator's."""
    from tasks.vqa.main import main as vqa_main
    from tools import predict
    folder, rng, rows = tmp_path / "photos", random.Random(1), []
    for i in range(18):
        colour, shape = rng.choice(list(COLOURS)), rng.choice(("circle", "square"))
        draw(folder / ("sub" if i % 3 == 0 else "") / f"p{i}.png", colour, shape)
        name = f"sub/p{i}.png" if i % 3 == 0 else f"p{i}.png"
        rows.append([name, "What color is the shape?", f"{colour}|{colour}|dark {colour}"])
        rows.append([name, "What shape is this?", shape.capitalize()])
    qa = write_csv(tmp_path / "mine.csv", ["image", "question", "answers"], rows)
    root = tmp_path / "root"
    assert mq.main([str(folder), str(qa), "--dataRoot", str(root), "--dim", "64"]) == 0
    assert "vqa_finetune.bash GPU_ID|cpu NAME --dataRoot" in capsys.readouterr().out
    config = json.loads((ROOT / "run" / "configs" / "easyvqa_cpu.json").read_text())
    config.update(hidden_size=32, num_attention_heads=2, intermediate_size=64,
                  visual_feat_dim=64)
    (tmp_path / "tiny.json").write_text(json.dumps(config))
    out = tmp_path / "snap"
    flags = ["--dataRoot", str(root), "--modelConfig", str(tmp_path / "tiny.json"),
             "--xlayers", "2", "--device", "cpu", "--numWorkers", "0", "--output", str(out)]
    summary = vqa_main(flags + ["--train", "train", "--valid", "valid", "--fromScratch",
                                "--epochs", "2", "--batchSize", "8", "--lr", "1e-3"])
    assert summary["best"]["questions"] == len(read(root, "valid"))
    vqa_main(flags + ["--train", "", "--valid", "", "--test", "test", "--load",
                      str(out / "BEST")])
    evaluated = {e["question_id"]: e["answer"]
                 for e in json.loads((out / "test_predict.json").read_text())}
    question = read(root, "test")[0]
    image = folder / f"{question['img_id'].replace('__', '/')}.png"
    capsys.readouterr()
    assert predict.main(["--load", str(out / "BEST"), "--image", str(image), "--question",
                         question["sent"], "--topk", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    predicted, _ = result["questions"][0]["answers"][0]
    assert predicted == evaluated[question["question_id"]]
    assert sorted(evaluated) == sorted(d["question_id"] for d in read(root, "test"))
