"""Parity with the authors' LXMERT-S code on fixed inputs (tests/fixtures/io.pt), fp32 eval."""
import pytest
import torch

from lxrt.loading import from_authors_layout, load_itm_head, load_lxmert_qa, \
    load_pretrained_encoder, read_state_dict, strip_module_prefixes
from lxrt.modeling import LXRTPretraining
from parity_utils import ATOL, CHECKPOINT, fixture_io, fixture_labels, fixture_meta, max_diff, \
    model_inputs, small_config
from tasks.qa.model import QAModel
from tasks.retrieval.model import RetrievalModel

ROOT_ANSWERS = CHECKPOINT.parents[2] / "data" / "lxmert" / "all_ans.json"


@pytest.fixture(scope="module")
def pretraining():
    config = small_config()
    model = LXRTPretraining(config).eval()
    state = from_authors_layout(strip_module_prefixes(read_state_dict(CHECKPOINT)), config)
    model.load_state_dict(state, strict=True)
    return model


@pytest.fixture(scope="module")
def outputs(pretraining):
    ids, pos, mask, feats, boxes = model_inputs()
    with torch.no_grad():
        bert = pretraining.bert(ids, pos, mask, feats, boxes, output_hidden_states=True)
        heads = pretraining(ids, pos, mask, feats, boxes, labels=fixture_labels())
    return bert, heads


def test_embeddings_and_visual_input(pretraining):
    io = fixture_io()
    ids, pos, mask, feats, boxes = model_inputs()
    bert = pretraining.bert
    with torch.no_grad():
        assert max_diff(bert.embeddings(ids, pos), io["out.embedding_output"]) < ATOL
        cls_feats, cls_boxes = bert.prepend_visual_cls(feats, boxes)
        assert max_diff(cls_feats[:, 0], io["out.visual_cls_feat"]) < ATOL
        assert max_diff(cls_boxes, io["out.visn_fc_input_boxes"]) == 0
        assert max_diff(bert.encoder.visn_fc(cls_feats, cls_boxes), io["out.visn_fc_output"]) < ATOL


def test_every_cross_layer(outputs):
    io = fixture_io()
    bert, _ = outputs
    for i in range(5):  # hidden_states[0] is the embedding / visual-encoder output
        assert max_diff(bert.lang_hidden_states[i + 1], io[f"out.x_layer{i}.lang"]) < ATOL
        assert max_diff(bert.visn_hidden_states[i + 1], io[f"out.x_layer{i}.visn"]) < ATOL
    assert max_diff(bert.lang_feats, io["out.lang_feats"]) < ATOL
    assert max_diff(bert.visn_feats, io["out.visn_feats_with_cls"]) < ATOL
    assert max_diff(bert.visn_feats[:, 1:], io["out.visn_feats"]) < ATOL


def test_poolers(outputs):
    io = fixture_io()
    bert, _ = outputs
    for name in ("pooled_lang", "pooled_visn", "pooled_output"):
        assert max_diff(getattr(bert, name), io[f"out.{name}"]) < ATOL


def test_pretraining_heads(outputs):
    io = fixture_io()
    _, heads = outputs
    assert max_diff(heads.mlm_scores, io["out.mlm_scores"]) < ATOL
    assert max_diff(heads.topic_scores, io["out.topic_scores"]) < ATOL
    assert max_diff(heads.itm_logits, io["out.itm_logits"]) < ATOL
    assert max_diff(heads.answer_scores, io["out.answer_scores"]) < ATOL
    for key in ("obj", "attr", "feat"):
        assert max_diff(heads.obj_predictions[key], io[f"out.obj_predict.{key}"]) < ATOL


def test_losses_and_accuracies(outputs):
    io = fixture_io()
    _, heads = outputs
    assert max_diff(heads.losses, io["loss.per_task"]) < ATOL
    assert max_diff(heads.total_loss, io["loss.total"]) < ATOL
    assert max_diff(heads.accuracies, io["acc.per_task"]) < ATOL


def _vqa_model_with_fixture_head(prefix):
    io = fixture_io()
    model = QAModel(small_config(), num_answers=16).eval()
    head = {k[len(prefix):]: v for k, v in io.items() if k.startswith(prefix)}
    model.logit_fc.load_state_dict(head, strict=True)
    return model


def test_vqa_load_lxmert_path():
    """--loadLXMERT: encoder from the pre-training checkpoint, then the VQA head and loss."""
    io = fixture_io()
    model = _vqa_model_with_fixture_head("vqa.logit_fc.")
    report = load_pretrained_encoder(model.lxrt_encoder, CHECKPOINT)
    assert any(k.startswith("answer_head.") for k in report.ignored)
    with torch.no_grad():
        pooled = model.lxrt_encoder(*model_inputs())
        logits = model(*model_inputs())
    assert max_diff(pooled, io["vqa.pooled_output"]) < ATOL
    assert max_diff(logits, io["vqa.logits"]) < ATOL
    target = io["vqa.target"]
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target) * target.shape[1]
    assert max_diff(loss, io["vqa.loss"]) < ATOL


def test_qa_surgery_path():
    """--loadLXMERTQA for VQA: answer rows re-ordered through the answer normalisation."""
    io = fixture_io()
    meta = fixture_meta()
    torch.manual_seed(0)
    model = QAModel(small_config(), num_answers=16).eval()
    # the surgery copies logit_fc.0/2 and rows of .3; keys start from the fixture's initial head
    model.logit_fc.load_state_dict(
        {k[len("vqa.logit_fc."):]: v for k, v in io.items() if k.startswith("vqa.logit_fc.")})
    load_lxmert_qa(model, CHECKPOINT, meta["vqa_label2ans"], ROOT_ANSWERS)
    for key, value in model.logit_fc.state_dict().items():
        assert max_diff(value, io[f"vqaqa.logit_fc.{key}"]) < ATOL, key
    with torch.no_grad():
        assert max_diff(model(*model_inputs()), io["vqaqa.logits"]) < ATOL


def test_retrieval_zero_shot_path():
    io = fixture_io()
    model = RetrievalModel(small_config()).eval()
    load_itm_head(model, CHECKPOINT)
    with torch.no_grad():
        logits = model(*model_inputs())
    assert max_diff(logits, io["retrieval.image_model_logits_zero_shot"]) < ATOL
    assert max_diff(logits.softmax(-1), io["retrieval.image_model_probs_finetune_mode"]) < ATOL
    assert max_diff(logits, io["out.itm_logits"]) < ATOL
