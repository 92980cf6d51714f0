"""Model folders (lxrt.folder, lxrt.pretrained, tools.export): round trips bit for bit, the
authors' layout both ways, strict refusals by name, and every loader that reads a folder."""
import json
import shutil

import pytest
import torch

from generated import ROOT, common_flags
from lxrt.folder import CONFIG_NAME, WEIGHTS_NAME, FolderError
from lxrt.loading import load_pretrained_encoder, to_authors_layout
from lxrt.modeling import LXRTEncoder, LXRTPretraining
from lxrt.tokenization import find_vocab_file
from tasks.nlvr2.model import NLVR2Model
from tasks.qa.model import QAModel
from tasks.retrieval.model import RetrievalModel
from tasks.vqa.main import main as vqa_main
from tiny_model import tiny_config, tiny_inputs
from tools import export, predict
from tools.predictor import Predictor

VOCAB = find_vocab_file(None)


def _random(model):
    """Every weight random (a fresh model has zero biases and unit LayerNorms)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def _outputs(model, config):
    ids, pos, mask, feats, boxes = tiny_inputs(config)
    with torch.no_grad():
        if isinstance(model, NLVR2Model):
            return model(ids, pos, mask, torch.stack([feats, feats.flip(0)], 1),
                         torch.stack([boxes, boxes.flip(0)], 1))
        if isinstance(model, LXRTPretraining):
            out = model(ids, pos, mask, feats, boxes)
            return torch.cat([out.mlm_scores.flatten(), out.topic_scores.flatten(),
                              out.answer_scores.flatten(), out.obj_predictions["feat"].flatten()])
        return model(ids, pos, mask, feats, boxes)


@pytest.mark.parametrize("build", [
    lambda c: QAModel(c, 5), lambda c: NLVR2Model(c), lambda c: RetrievalModel(c),
    lambda c: LXRTEncoder(c), lambda c: LXRTPretraining(c)],
    ids=["qa", "nlvr2", "retrieval", "encoder", "pretraining"])
def test_model_to_folder_to_model_gives_identical_outputs(tmp_path, build):
    config = tiny_config(x_layers=2)
    model = _random(build(config))
    labels = list("abcde") if isinstance(model, QAModel) else None
    model.save_pretrained(tmp_path / "m", VOCAB, task="t", labels=labels)
    again = type(model).from_pretrained(tmp_path / "m").eval()
    assert torch.equal(_outputs(model, config), _outputs(again, config))
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "README.md", "config.json", "model.safetensors", "vocab.txt"]
    saved = json.loads((tmp_path / "m" / CONFIG_NAME).read_text())
    assert saved["architecture"] == type(model).__name__ and saved["model_config"]["x_layers"] == 2
    assert saved["labels"] == (labels or (list(model.default_labels)
                                          if getattr(model, "default_labels", None) else None))


def test_tied_weights_are_stored_once_and_stay_tied(tmp_path):
    from safetensors.torch import load_file
    model = _random(LXRTPretraining(tiny_config()))
    model.save_pretrained(tmp_path / "m", VOCAB)
    stored = load_file(tmp_path / "m" / WEIGHTS_NAME)
    assert "cls.predictions.decoder.weight" not in stored
    again = LXRTPretraining.from_pretrained(tmp_path / "m")
    assert again.cls.predictions.decoder.weight is again.bert.embeddings.word_embeddings.weight


def _authors_pretraining_state(config):
    """An authors'-layout pre-training checkpoint: their vocab x D visual-[CLS] table with every
    row random (only [CLS] is read), the MLM decoder a stored copy of the word embeddings."""
    state = to_authors_layout(_random(LXRTPretraining(config)).state_dict(), config)
    state["bert.word_embeddings.weight"] = torch.randn(config.vocab_size, config.visual_feat_dim)
    return {f"module.{k}": v.clone() for k, v in state.items()}


def test_authors_checkpoint_to_folder_and_back_is_bit_identical(tmp_path):
    config = tiny_config()
    (tmp_path / "bert_config.json").write_text(json.dumps(vars(config)))
    original = _authors_pretraining_state(config)
    torch.save(original, tmp_path / "mode_LXRT.bin")
    argv = [str(tmp_path / "mode_LXRT.bin"), str(tmp_path / "folder"), "--fromAuthors",
            "--modelConfig", str(tmp_path / "bert_config.json")]
    assert export.main(argv) == 0
    assert export.main([str(tmp_path / "folder"), str(tmp_path / "back.pth"), "--toAuthors"]) == 0
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    assert "`authors_unused.safetensors` keeps" in (tmp_path / "folder" / "README.md").read_text()
    stripped = {k[len("module."):]: v for k, v in original.items()}
    assert sorted(back) == sorted(stripped)
    for key, value in stripped.items():
        assert back[key].dtype == value.dtype and torch.equal(back[key], value), key
    # and the folder is a pre-training model that --loadLXMERT / --init read
    encoder = LXRTEncoder(config)
    load_pretrained_encoder(encoder, tmp_path / "folder")
    assert torch.equal(encoder.bert.visual_cls_feat, stripped["bert.word_embeddings.weight"][101])


def test_tied_copies_that_differ_are_refused(tmp_path):
    config = tiny_config()
    state = _authors_pretraining_state(config)
    state["module.cls.predictions.decoder.weight"] += 1
    torch.save(state, tmp_path / "mode_LXRT.bin")
    with pytest.raises(FolderError, match="cls.predictions.decoder.weight should be tied"):
        export.export_authors(tmp_path / "mode_LXRT.bin", tmp_path / "f", config)


# ---------------------------------------------------------------------------------------------
# Refusals, each by name
# ---------------------------------------------------------------------------------------------

@pytest.fixture()
def qa_folder(tmp_path):
    model = _random(QAModel(tiny_config(), 5))
    return model.save_pretrained(tmp_path / "qa", VOCAB, task="vqa", labels=list("abcde"))


def _edit_weights(folder, edit):
    from safetensors.torch import load_file, save_file
    state = load_file(folder / WEIGHTS_NAME)
    edit(state)
    save_file(state, folder / WEIGHTS_NAME)


def _edit_config(folder, edit):
    values = json.loads((folder / CONFIG_NAME).read_text())
    edit(values)
    (folder / CONFIG_NAME).write_text(json.dumps(values))


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("logit_fc.3.bias"), r"missing keys \(1\): logit_fc.3.bias"),
    (lambda s: s.update(extra=torch.zeros(2)), r"unexpected keys \(1\): extra"),
    (lambda s: s.update({"logit_fc.3.bias": torch.zeros(7)}),
     r"shape mismatch for logit_fc.3.bias: expected \[5\], found \[7\]"),
])
def test_weights_that_do_not_fit_are_refused_by_name(qa_folder, edit, message):
    _edit_weights(qa_folder, edit)
    with pytest.raises(FolderError, match=message):
        QAModel.from_pretrained(qa_folder)


def test_config_that_disagrees_with_the_weights_is_refused(qa_folder):
    _edit_config(qa_folder, lambda v: v["model_config"].update(intermediate_size=48))
    with pytest.raises(FolderError, match=r"shape mismatch for lxrt_encoder.model.bert.encoder."
                                          r"x_layers.0.lang_inter.dense.bias: expected \[48\], "
                                          r"found \[64\](.|\n)*and 10 more shape mismatches"):
        QAModel.from_pretrained(qa_folder)
    _edit_config(qa_folder, lambda v: v["model_args"].update(num_answers=6))
    with pytest.raises(FolderError, match="logit_fc.3.weight: expected \\[6, 64\\]"):
        QAModel.from_pretrained(qa_folder)


@pytest.mark.parametrize("edit, message", [
    (lambda v: v.update(format_version=9), "format_version 9"),
    (lambda v: v.update(surprise=1), r"unknown keys \['surprise'\]"),
    (lambda v: v["model_config"].pop("x_layers"), r"model_config lacks \['x_layers'\]"),
    (lambda v: v["model_config"].update(hidden_sise=3), r"unknown keys \['hidden_sise'\]"),
    (lambda v: v.update(architecture="NLVR2Model"), "holds a NLVR2Model, not a QAModel"),
])
def test_bad_config_json_is_refused_by_key(qa_folder, edit, message):
    _edit_config(qa_folder, edit)
    with pytest.raises(FolderError, match=message):
        QAModel.from_pretrained(qa_folder)


def test_loading_into_a_different_model_names_what_differs(qa_folder):
    from lxrt.pretrained import load_folder_into
    with pytest.raises(FolderError, match=r"x_layers 5 \(the model: 2\)"):
        load_folder_into(QAModel(tiny_config(x_layers=2), 5), qa_folder)
    with pytest.raises(FolderError, match="holds a QAModel; the model being loaded is a"):
        load_folder_into(NLVR2Model(tiny_config()), qa_folder)
    with pytest.raises(FolderError, match="labels differ .* first difference at 2: 'c' vs 'x'"):
        load_folder_into(QAModel(tiny_config(), 5), qa_folder, labels=list("abxde"))


def test_truncated_weights_and_unfinished_writes(qa_folder, tmp_path):
    data = (qa_folder / WEIGHTS_NAME).read_bytes()
    (qa_folder / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(FolderError, match="model.safetensors: cannot read as safetensors"):
        QAModel.from_pretrained(qa_folder)
    model = QAModel(tiny_config(), 5)
    with pytest.raises(FolderError, match="exists; choose a new folder"):
        model.save_pretrained(qa_folder, VOCAB, labels=list("abcde"))
    with pytest.raises(ValueError, match="2 labels for a QAModel with 5"):
        model.save_pretrained(tmp_path / "new", VOCAB, labels=["a", "b"])
    assert not (tmp_path / "new").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------------------------------------
# A run exported, and every reader of a folder
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(small_root, tmp_path_factory):
    """(root, run, test run, exported folder) of a 1-epoch VQA run on the small root."""
    base = tmp_path_factory.mktemp("export")
    run, test = base / "run", base / "test"
    vqa_main(common_flags(small_root, run) + ["--train", "train", "--valid", "minival",
                                              "--batchSize", "16", "--epochs", "1"])
    vqa_main(common_flags(small_root, test) + ["--train", "", "--valid", "", "--test", "test",
                                               "--load", str(run / "BEST")])
    folder = base / "folder"
    assert export.main([str(run), str(folder), "--testRun", str(test)]) == 0
    return small_root, run, test, folder


@pytest.mark.slow
def test_exported_folder_card_and_config(exported):
    _, run, test, folder = exported
    config = json.loads((folder / CONFIG_NAME).read_text())
    answers = json.loads((exported[0] / "vqa" / "trainval_label2ans.json").read_text())
    assert config["task"] == "vqa" and config["labels"] == answers
    card = (folder / "README.md").read_text()
    valid = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["valid"]
    assert f"accuracy {valid['accuracy']:.4g}" in card and "- test test: split test" in card
    assert "--train train --valid minival --batchSize 16" in card
    for heading in ("Intended use", "Limitations", "Training data", "Recipe", "Results",
                    "Command", "How to load"):
        assert f"## {heading}" in card, heading
    assert "authors_unused" not in card and not (folder / "authors_unused.safetensors").exists()


def test_load_folder_predicts_as_the_checkpoint(exported, tmp_path, capsys):
    root, run, test, folder = exported
    out = tmp_path / "from_folder"
    vqa_main(common_flags(root, out) + ["--train", "", "--valid", "", "--test", "test",
                                        "--load", str(folder)])
    assert (out / "test_predict.json").read_text() == (test / "test_predict.json").read_text()
    argv = ["--features", str(root / "mscoco_imgfeat" / "test2015_obj36.tsv"), "--imgId",
            json.loads((root / "vqa" / "test.json").read_text())[0]["img_id"], "--question",
            "what is it?", "--json"]
    answers = []
    for load in (run / "BEST", folder):
        assert predict.main(["--load", str(load)] + argv) == 0
        answers.append(json.loads(capsys.readouterr().out)["questions"])
    assert answers[0] == answers[1]


def test_folder_as_an_encoder_start_and_the_labels_check(exported, tmp_path):
    root, run, _, folder = exported
    model = QAModel.from_pretrained(folder)
    encoder = LXRTEncoder(model.lxrt_encoder.config)
    report = load_pretrained_encoder(encoder, folder)  # --loadLXMERT FOLDER
    assert report.ignored == []  # the answer head is set aside by the folder reader
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, model.lxrt_encoder.state_dict()[key]), key
    test = ["--train", "", "--valid", "", "--test", "test"]
    changed = tmp_path / "changed"
    shutil.copytree(folder, changed)
    _edit_config(changed, lambda v: v.update(labels=list(reversed(v["labels"]))))
    with pytest.raises(SystemExit, match="answer table differs: label 0 was"):
        vqa_main(common_flags(root, tmp_path / "x") + test + ["--load", str(changed)])
    assert not (tmp_path / "x").exists()  # refused before anything was written
    from lxrt.pretrained import load_folder_into  # and the loader checks them too
    with pytest.raises(FolderError, match="labels differ from this run's"):
        load_folder_into(QAModel.from_pretrained(folder), changed,
                         labels=model.folder_config.labels)
    other_vocab = tmp_path / "other_vocab"
    shutil.copytree(folder, other_vocab)
    with open(other_vocab / "vocab.txt", "a") as handle:
        handle.write("newword\n")
    for flag in ("--load", "--loadLXMERT"):
        with pytest.raises(SystemExit, match="the vocabulary differs"):
            vqa_main(common_flags(root, tmp_path / "y", load_lxmert=False) + test +
                     [flag, str(other_vocab)])


def test_export_errors_name_the_run(exported, tmp_path, capsys):
    _, run, _, folder = exported
    assert export.main([str(tmp_path), str(tmp_path / "o")]) == 2
    assert "run_info.json: missing" in capsys.readouterr().err
    assert export.main([str(run), str(folder)]) == 2
    assert "exists; choose a new folder" in capsys.readouterr().err
    assert export.main([str(run), str(tmp_path / "o"), "--checkpoint", "NOPE"]) == 2
    assert "NOPE.pth: no such checkpoint" in capsys.readouterr().err


def test_predictor_reads_a_folder_directly(exported):
    folder = exported[3]
    p = Predictor.from_run(folder)
    assert p.task == "vqa" and p.labels == json.loads((folder / CONFIG_NAME).read_text())["labels"]


def test_authors_finetuned_checkpoint_to_folder_and_back(exported, tmp_path):
    """A fine-tuned model in the authors' layout (their table, DataParallel prefixes) goes
    through a run's task description to a folder and back to the same tensors."""
    _, run, _, _ = exported
    config = QAModel.from_pretrained(exported[3]).lxrt_encoder.config
    state = to_authors_layout(torch.load(run / "BEST.pth", weights_only=True), config)
    table = "lxrt_encoder.model.bert.word_embeddings.weight"
    state[table] = torch.randn(config.vocab_size, config.visual_feat_dim)
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "theirs.pth")
    folder, back = tmp_path / "folder", tmp_path / "back.pth"
    assert export.main([str(run), str(folder), "--checkpoint", str(tmp_path / "theirs.pth")]) == 0
    assert export.main([str(folder), str(back), "--toAuthors"]) == 0
    restored = torch.load(back, weights_only=True)
    assert sorted(restored) == sorted(state)
    assert all(torch.equal(restored[k], v) for k, v in state.items())


@pytest.mark.slow
def test_pretraining_run_exports_and_every_pretrained_flag_reads_it(small_root, tmp_path):
    from lxrt.loading import load_lxmert_qa
    from tasks.pretrain.main import main as pretrain_main
    from tasks.pretrain.model import load_full
    out, folder = tmp_path / "token", tmp_path / "folder"
    pretrain_main(["--stage", str(ROOT / "run" / "configs" / "msp" / "token.json"),
                   *common_flags(small_root, out, load_lxmert=False), "--train",
                   "mscoco_nominival", "--valid", "mscoco_minival", "--batchSize", "8",
                   "--epochs", "1"])
    assert export.main([str(out), str(folder)]) == 0  # its BEST_EVAL_LOSS_LXRT.pth
    assert json.loads((folder / CONFIG_NAME).read_text())["task"] == "pretrain"
    config = LXRTPretraining.from_pretrained(folder).config
    from_file, from_folder = LXRTPretraining(config), LXRTPretraining(config)
    load_full(from_file, out / "BEST_EVAL_LOSS")            # --init FILE
    load_full(from_folder, folder)                          # --init FOLDER
    for key, value in from_file.state_dict().items():
        assert torch.equal(value, from_folder.state_dict()[key]), key
    answers = json.loads((small_root / "vqa" / "trainval_label2ans.json").read_text())
    heads = []
    for source in (out / "BEST_EVAL_LOSS", folder):         # --loadLXMERTQA FILE / FOLDER
        model = QAModel(config, len(answers))
        load_lxmert_qa(model, source, answers, small_root / "lxmert" / "all_ans.json")
        heads.append(model.logit_fc.state_dict())
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])
