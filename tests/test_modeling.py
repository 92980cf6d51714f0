"""Tiny-config model tests: attention paths, masks, shapes of every head, full-size layout."""
import json

import pytest
import torch

from lxrt.config import LXRTConfig
from lxrt.loading import check_and_load, from_authors_layout, load_pretrained_encoder, \
    to_authors_layout
from lxrt.modeling import LXRTEncoder, LXRTModel, LXRTPretraining
from parity_utils import FIXTURES, fixture_labels, model_inputs, small_config
from tiny_model import tiny_config, tiny_inputs


@pytest.mark.parametrize("layers", [(0, 5, 0), (2, 1, 1)])
def test_eager_and_sdpa_agree_in_fp32(layers):
    config = tiny_config(l_layers=layers[0], x_layers=layers[1], r_layers=layers[2])
    torch.manual_seed(0)
    model = LXRTPretraining(config).bert.eval()  # initialised weights, any l/x/r counts
    inputs = tiny_inputs(config)
    with torch.no_grad():
        sdpa = model(*inputs)
        eager = model(*inputs, output_attentions=True)
    for name in ("lang_feats", "visn_feats", "pooled_output"):
        torch.testing.assert_close(getattr(sdpa, name), getattr(eager, name), atol=1e-6, rtol=1e-5)
    assert len(eager.attentions) == sum(layers)
    cross = eager.attentions[-1]["visn_cross"]
    assert cross.shape == (3, config.num_attention_heads, 7, 9)
    # padded language keys get exactly zero attention
    assert cross[2, :, :, 3:].abs().max() == 0
    torch.testing.assert_close(cross.sum(-1), torch.ones_like(cross.sum(-1)))


def test_padding_does_not_change_real_outputs():
    config = tiny_config()
    model = LXRTModel(config).eval()
    ids, pos, mask, feats, boxes = tiny_inputs(config)
    with torch.no_grad():
        full = model(ids, pos, mask, feats, boxes)
        # sample 2 has 3 real tokens; run it alone without any padding
        short = model(ids[2:, :3], pos[2:, :3], mask[2:, :3], feats[2:], boxes[2:])
        # change what sits in the padded positions: real outputs must not move
        ids2, pos2 = ids.clone(), pos.clone()
        ids2[mask == 0] = 7
        pos2[mask == 0] = 3
        noisy = model(ids2, pos2, mask, feats, boxes)
    torch.testing.assert_close(full.lang_feats[2, :3], short.lang_feats[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(full.visn_feats[2], short.visn_feats[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(full.pooled_output, noisy.pooled_output, atol=1e-6, rtol=1e-6)


def test_visual_mask_of_wrong_length_is_a_clear_error():
    config = tiny_config()
    model = LXRTModel(config).eval()
    ids, pos, mask, feats, boxes = tiny_inputs(config)
    with pytest.raises(ValueError, match="visual_attention_mask has length 6, expected 7"):
        model(ids, pos, mask, feats, boxes, visual_attention_mask=torch.ones(3, 6))
    with torch.no_grad():  # an all-ones mask of the right length equals no mask
        a = model(ids, pos, mask, feats, boxes, visual_attention_mask=torch.ones(3, 7))
        b = model(ids, pos, mask, feats, boxes)
    torch.testing.assert_close(a.pooled_output, b.pooled_output)


def test_precomputed_visual_inputs_equal_the_feature_path():
    config = tiny_config()
    model = LXRTModel(config).eval()
    ids, pos, mask, feats, boxes = tiny_inputs(config)
    with torch.no_grad():
        visual = model.embed_visual(feats, boxes)
        assert visual.shape == (3, 7, config.hidden_size)
        a = model(ids, pos, mask, feats, boxes)
        b = model(ids, pos, mask, None, None, visual_embeds=visual)
        # one image row paired with every sentence, as retrieval scoring gathers it
        c = model(ids, pos, mask, None, None, visual_embeds=visual[:1].expand(3, -1, -1))
        d = model(ids, pos, mask, feats[:1].expand(3, -1, -1), boxes[:1].expand(3, -1, -1))
    for x, y in ((a, b), (d, c)):
        torch.testing.assert_close(x.pooled_output, y.pooled_output, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(x.visn_feats, y.visn_feats, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="expected 7"):
        model(ids, pos, mask, None, None, visual_embeds=visual,
              visual_attention_mask=torch.ones(3, 6))


def test_every_head_shape_and_losses_backprop():
    config = tiny_config()
    model = LXRTPretraining(config)
    ids, pos, mask, feats, boxes = tiny_inputs(config)
    b, length, o = 3, 9, 6
    labels = {
        "masked_lm_labels": torch.full((b, length), -1).index_fill_(1, torch.tensor([1]), 5),
        "topic_multi_hot": torch.zeros(b, config.topic_size).index_fill_(1, torch.tensor([2]), 1),
        "matched_label": torch.tensor([1, 0, -1]),
        "obj": torch.randint(0, 7, (b, o)), "obj_conf": torch.rand(b, o),
        "attr": torch.randint(0, 5, (b, o)), "attr_conf": torch.rand(b, o),
        "feat": torch.rand(b, o, config.visual_feat_dim), "feat_mask": torch.ones(b, o),
        "ans": torch.tensor([3, -1, 10]),
    }
    out = model(ids, pos, mask, feats, boxes, labels=labels)
    assert out.mlm_scores.shape == (b, length, config.vocab_size)
    assert out.topic_scores.shape == (b, config.topic_size)
    assert out.itm_logits.shape == (b, 2)
    assert out.obj_predictions["obj"].shape == (b, o, 7)
    assert out.obj_predictions["attr"].shape == (b, o, 5)
    assert out.obj_predictions["feat"].shape == (b, o, config.visual_feat_dim)
    assert out.answer_scores.shape == (b, config.num_qa_labels)
    assert out.losses.shape == (1, 7) and out.accuracies.shape == (1, 5)
    out.total_loss.backward()
    # padding_idx=0: row 0 of position/token-type embeddings never gets a gradient [KEEP]
    # (the word table's row 0 does here, through the tied MLM decoder, as in the authors' model)
    emb = model.bert.embeddings
    for table in (emb.position_embeddings, emb.token_type_embeddings):
        assert table.weight.grad[0].abs().max() == 0
    encoder = LXRTEncoder(config)
    encoder(ids, pos, mask, feats, boxes).sum().backward()
    assert encoder.bert.embeddings.word_embeddings.weight.grad[0].abs().max() == 0
    assert model.bert.visual_cls_feat.grad.abs().max() > 0
    # MLM decoder is tied to the word embeddings
    assert model.cls.predictions.decoder.weight is emb.word_embeddings.weight


def test_batch_without_mlm_labels_does_not_crash():
    """The authors' accuracy code crashes on a batch with no MLM/obj labels [DEFECT]."""
    config = small_config()
    model = LXRTPretraining(config).eval()
    labels = fixture_labels()
    labels["masked_lm_labels"] = torch.full_like(labels["masked_lm_labels"], -1)
    out = model(*model_inputs(), labels=labels)
    assert out.accuracies[0, 0] == 0


def test_masks_in_reduced_precision():
    config = tiny_config()
    model = LXRTModel(config).eval()
    inputs = tiny_inputs(config)
    with torch.no_grad():
        ref = model(*inputs).pooled_output
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(*inputs).pooled_output
    torch.testing.assert_close(low.float(), ref, atol=5e-2, rtol=5e-2)


@pytest.mark.slow
def test_full_size_accepts_the_authors_key_layout():
    """A bert-base LXMERT-S model takes a state dict with exactly the keys and shapes of
    manifest_full.json (values made on the fly), nothing missing, nothing left over."""
    manifest = json.loads((FIXTURES / "manifest_full.json").read_text())
    config = LXRTConfig.from_dict(manifest["config"], **manifest["visual_config"],
                                  num_qa_labels=manifest["num_answers"])
    model = LXRTPretraining(config)
    authors = {k: torch.empty(shape).normal_() for k, shape in manifest["state_dict"].items()}
    authors["cls.predictions.decoder.weight"] = authors["bert.embeddings.word_embeddings.weight"]
    ours = from_authors_layout(authors, config)
    report = check_and_load(model, ours, "manifest")
    assert not report.ignored
    assert set(to_authors_layout(model.state_dict(), config)) == set(manifest["state_dict"])
    torch.testing.assert_close(model.bert.visual_cls_feat,
                               authors["bert.word_embeddings.weight"][101])
    # our parameter count: the authors' minus the 30521 unread rows of the visual-[CLS] table
    n_ours = sum(p.numel() for p in model.parameters())
    assert n_ours == manifest["n_params_unique"] - (config.vocab_size - 1) * 2048
    encoder = LXRTEncoder(config)
    n_bert = sum(p.numel() for p in encoder.parameters())
    assert n_bert == 23837184 + 1580544 + 82698240 + 2 * 590592 + 2048


def test_export_round_trip_loads_in_the_authors_layout(tmp_path):
    config = small_config()
    model = LXRTPretraining(config)
    exported = to_authors_layout(model.state_dict(), config)
    assert exported["bert.word_embeddings.weight"].shape == (config.vocab_size, 2048)
    path = tmp_path / "model_LXRT.pth"
    torch.save({"module." + k: v for k, v in exported.items()}, path)
    encoder = LXRTEncoder(config)
    load_pretrained_encoder(encoder, tmp_path / "model")
    for key, value in model.bert.state_dict().items():
        torch.testing.assert_close(encoder.bert.state_dict()[key], value)


def test_batched_cross_attention_equals_two_separate_calls():
    """The shared cross-attention runs both directions in one pass; it must equal calling the
    module once per direction (the authors' formulation)."""
    config = tiny_config()
    torch.manual_seed(0)
    layer = LXRTPretraining(config).bert.encoder.x_layers[0].visual_attention.eval()
    g = torch.Generator().manual_seed(1)
    lang, visn = torch.randn(2, 9, 32, generator=g), torch.randn(2, 7, 32, generator=g)
    mask = torch.zeros(2, 1, 1, 9)
    mask[1, ..., 5:] = -10000.0
    with torch.no_grad():
        lang_ref, _ = layer(lang, visn, None)
        visn_ref, _ = layer(visn, lang, mask)
        lang_out, visn_out, _, _ = layer.forward_pair(lang, visn, mask, None)
    torch.testing.assert_close(lang_out, lang_ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(visn_out, visn_ref, atol=1e-6, rtol=1e-5)
