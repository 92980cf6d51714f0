"""tools.predict, tools.extract_features and --load under abuse: answer tables and vocabularies
changed after training, old runs, pre-training checkpoints, binary or huge question files, bad
devices and unreadable images."""
import contextlib
import json
import shutil

import pytest
from PIL import Image, ImageDraw

from generated import common_flags
from lxrt.tokenization import VOCAB_FILENAME, find_vocab_file
from tasks.vqa.main import main as vqa_main
from tools import extract_features, predict
from tools.extract_features import extract_to_tsv
from tools.image_files import BadImageError
from tools.predictor import Predictor, PredictorError

TRAIN = ["--train", "train", "--valid", "minival", "--batchSize", "16", "--lr", "1e-3",
         "--epochs", "1"]


@pytest.fixture(scope="module")
def run(small_root, tmp_path_factory):
    """(data root with its own vocabulary file, run folder) of a 1-epoch VQA run."""
    root = tmp_path_factory.mktemp("predict_rel") / "data"
    shutil.copytree(small_root, root, ignore=shutil.ignore_patterns("*.store", ".*"))
    shutil.copy(find_vocab_file(None), root / VOCAB_FILENAME)
    out = root.parent / "run"
    vqa_main(common_flags(root, out) + TRAIN)
    return root, out


@contextlib.contextmanager
def edited(path, edit):
    """`path` changed by `edit(text) -> text` for the block, then put back."""
    original = path.read_bytes()
    path.write_text(edit(original.decode()))
    try:
        yield path
    finally:
        path.write_bytes(original)


def _tables(root):
    return root / "vqa" / "trainval_ans2label.json", root / "vqa" / "trainval_label2ans.json"


@contextlib.contextmanager
def answer_table(root, change):
    """The run's answer table replaced by `change(label2ans) -> label2ans` for the block."""
    ans2label, label2ans = _tables(root)
    def new_list(text):
        return json.dumps(change(json.loads(text)))
    with edited(label2ans, new_list), edited(ans2label, lambda _: json.dumps(
            {a: i for i, a in enumerate(json.loads(label2ans.read_text()))})):
        yield


def _first_question(root):
    q = json.loads((root / "vqa" / "test.json").read_text())[0]
    return q, root / "mscoco_imgfeat" / "test2015_obj36.tsv"


def _top_answers(run_dir, root):
    predictor = Predictor.from_run(run_dir / "BEST")
    q, features = _first_question(root)
    image = predictor.image_from_features(features, q["img_id"])
    return predictor.answer(image, [q["sent"], "what color is it?"], topk=3)


def _without(run_dir, dest, *keys):
    """A copy of the run whose run_info.json lacks task_info `keys` (a run of an earlier
    version)."""
    dest.mkdir()
    shutil.copy(run_dir / "BEST.pth", dest / "BEST.pth")
    info = json.loads((run_dir / "run_info.json").read_text())
    for key in keys:
        info["task_info"].pop(key)
    (dest / "run_info.json").write_text(json.dumps(info))
    return dest


# ---- failure 3: the answers and the vocabulary the model was trained with --------------------

def test_an_answer_added_to_the_table_after_training_does_not_rename_answers(run):
    root, out = run
    before = _top_answers(out, root)
    with answer_table(root, lambda answers: ["zebra"] + answers):
        assert _top_answers(out, root) == before


def test_a_test_run_refuses_a_changed_answer_table_and_keeps_the_run_info(run):
    root, out = run
    info = (out / "run_info.json").read_bytes()
    flags = common_flags(root, out) + ["--train", "", "--valid", "", "--test", "test",
                                       "--load", str(out / "BEST")]
    with answer_table(root, lambda answers: ["zebra"] + answers):
        with pytest.raises(SystemExit, match=r"answer table differs: label 0 was 'yes' in "
                                             r"training, is 'zebra' now"):
            vqa_main(flags)
    with answer_table(root, lambda answers: answers[:-1]):  # one entry short
        with pytest.raises(SystemExit, match=r"answer table differs: 14 answers in training, "
                                             r"13 now"):
            vqa_main(flags)
    assert (out / "run_info.json").read_bytes() == info


def _swap_two_words(text):
    lines = text.split("\n")
    lines[2000], lines[2001] = lines[2001], lines[2000]
    return "\n".join(lines)


def test_a_reordered_vocabulary_is_refused(run, capsys):
    root, out = run
    with edited(root / VOCAB_FILENAME, _swap_two_words):
        with pytest.raises(PredictorError, match=rf"{VOCAB_FILENAME} is not the vocabulary the "
                                                 r"model was trained with"):
            Predictor.from_run(out / "BEST")
        with pytest.raises(SystemExit, match=r"the vocabulary differs"):
            vqa_main(common_flags(root, out.parent / "test") + [
                "--train", "", "--valid", "", "--test", "test", "--load", str(out / "BEST")])


def test_runs_made_before_the_records_still_load(run, tmp_path, caplog):
    """Without the answer list the table the run names is read, and only its length can be
    checked: one entry short is refused by name, the same length is used with a warning."""
    root, out = run
    before = _top_answers(out, root)
    old = _without(out, tmp_path / "old", "answers", "answers_sha1", "vocab_sha1")
    assert _top_answers(old, root) == before
    assert "records no answer list" in caplog.text
    with answer_table(root, lambda answers: answers[:-1]):
        with pytest.raises(PredictorError, match=r"trainval_label2ans\.json has 13 answers but "
                                                 r"the model was trained with 14"):
            Predictor.from_run(old / "BEST")


def test_a_pretraining_checkpoint_gets_a_clear_message(run, tmp_path, capsys):
    _, out = run
    folder = tmp_path / "pretrain"
    folder.mkdir()
    shutil.copy(out / "BEST.pth", folder / "LAST_LXRT.pth")
    info = json.loads((out / "run_info.json").read_text())
    info["task_info"] = {}  # as pre-training runs recorded before
    info["args"]["stage"] = "run/configs/msp/token.json"
    (folder / "run_info.json").write_text(json.dumps(info))
    code = predict.main(["--load", str(folder / "LAST_LXRT"), "--question", "what?"])
    err = capsys.readouterr().err
    assert code == 2 and "is a pre-training checkpoint" in err and "--loadLXMERT" in err


# ---- tools.predict's other inputs ------------------------------------------------------------

def test_binary_questions_file_and_bad_device(run, tmp_path, capsys):
    root, out = run
    q, features = _first_question(root)
    base = ["--load", str(out / "BEST"), "--features", str(features), "--imgId", q["img_id"]]
    binary = tmp_path / "questions.bin"
    binary.write_bytes(b"what\x00\xff\xfe colour?\n")
    assert predict.main(base + ["--questions", str(binary)]) == 2
    assert "questions.bin: not a UTF-8 text file" in capsys.readouterr().err
    assert predict.main(base + ["--question", "what?", "--device", "tpu"]) == 2
    assert "--device tpu: not a device name" in capsys.readouterr().err


def test_many_questions_go_through_the_model_in_batches(run, tmp_path):
    root, out = run
    predictor = Predictor.from_run(out / "BEST")
    q, features = _first_question(root)
    image = predictor.image_from_features(features, q["img_id"])
    sizes = []
    hook = predictor.model.register_forward_pre_hook(
        lambda module, inputs: sizes.append(inputs[0].shape[0]))
    try:
        questions = [q["sent"], "what color is it?", "is there a dog?"] * 200
        scores = predictor.answer_scores(image, questions, batch_size=256)
    finally:
        hook.remove()
    assert sizes == [256, 256, 88] and scores.shape[0] == 600
    single = predictor.answer_scores(image, questions[:3])
    assert (scores[:3] - single).abs().max() < 1e-5


# ---- unreadable images ---------------------------------------------------------------------------

def _images(folder, count=3):
    folder.mkdir()
    for k in range(count):
        im = Image.new("RGB", (48, 36), (240, 240, 240))
        ImageDraw.Draw(im).ellipse((8, 4, 30, 30), fill=(40 * k, 0, 200))
        im.save(folder / f"img{k}.png")
    return folder


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_extraction_skips_or_stops_on_a_bad_image_naming_it(tmp_path, capsys):
    images = _images(tmp_path / "images")
    _truncate(images / "img1.png")
    out = tmp_path / "feats.tsv"
    assert extract_features.main([str(images), str(out), "--dim", "32", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "img1.png: cannot read the image" in captured.err
    assert "skipped 1 unreadable image(s)" in captured.out
    assert [line.split("\t")[0] for line in out.read_text().splitlines()] == ["img0", "img2"]
    assert extract_features.main([str(images), str(tmp_path / "stop.tsv"), "--dim", "32",
                                  "--bad-images", "stop", "--quiet"]) == 1
    assert "img1.png: cannot read the image" in capsys.readouterr().err
    assert not (tmp_path / "stop.tsv").exists()
    with pytest.raises(SystemExit) as usage:
        extract_features.main([str(images), str(tmp_path / "x.tsv"), "--dim", "0"])
    assert usage.value.code == 2 and "--dim 0: expected an integer >= 1" in \
        capsys.readouterr().err


def test_predict_image_names_a_truncated_file(run, tmp_path):
    _, out = run
    predictor = Predictor.from_run(out / "BEST")
    images = _images(tmp_path / "images", 2)
    tsv = tmp_path / "imgs_obj36.tsv"
    dim = predictor.model.lxrt_encoder.config.visual_feat_dim
    extract_to_tsv({p.stem: str(p) for p in sorted(images.iterdir())}, tsv, dim=dim)
    local = Predictor(predictor.model, {**predictor.task_info, "feature_files": [str(tsv)]},
                      predictor.tokenizer, predictor.device, predictor.checkpoint)
    _truncate(images / "img1.png")
    with pytest.raises(BadImageError, match=r"img1\.png: cannot read the image"):
        local.image_from_file(images / "img1.png")
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (3, 3)).save(tiny)
    with pytest.raises(BadImageError, match=r"tiny\.png: the image .* smaller than the 6x6"):
        local.image_from_file(tiny)
