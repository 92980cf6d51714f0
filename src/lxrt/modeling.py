"""LXMERT-S: the LXMERT encoder with 0 language, 5 cross-modality and 0 visual layers.

Read top to bottom: embeddings -> attention blocks -> layers -> encoder -> poolers -> model ->
pre-training heads. Module and parameter names follow the authors' checkpoints
(`bert.encoder.x_layers.0.visual_attention.att.query.weight`, ...), so their state dicts load
without renaming; names that exist only for that compatibility say so in a comment.

Numerics follow the authors' code (docs/authors_code.md, "Cross-modality layers" and
"Dropout, GeLU and LayerNorm"): post-LN everywhere, erf GeLU, LayerNorm
eps 1e-12, additive language mask (1-m)*-10000, no visual mask, a learned visual [CLS] in front
of the regions with box [0,0,1,1], and a pooled output that is the product of two poolers.

One deliberate difference: the authors keep a vocab x 2048 table (`bert.word_embeddings`, 62.5 M
parameters) and only ever read the [CLS] row. We store that one row (`bert.visual_cls_feat`);
`lxrt.loading` converts between both layouts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from lxrt.config import LXRTConfig
from lxrt.pretrained import PretrainedModel

# The authors' mask value; exp(-10000) underflows to 0 in fp32/bf16/fp16 alike.
MASK_VALUE = -10000.0
VISUAL_LOSS_WEIGHT = 1 / 0.15  # authors' visual_loss_config weight for obj, attr and feat


def gelu(x: torch.Tensor) -> torch.Tensor:
    """The erf GeLU of the authors (the tanh approximation differs detectably)."""
    return F.gelu(x, approximate="none")


class GeLU(nn.Module):
    def forward(self, x):
        return gelu(x)


def extended_attention_mask(mask: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """[B, L] 0/1 mask -> additive [B, 1, 1, L] mask in the compute dtype (None stays None)."""
    if mask is None:
        return None
    return ((1.0 - mask[:, None, None, :].to(dtype)) * MASK_VALUE).to(dtype)


def init_bert_weights(module: nn.Module, initializer_range: float = 0.02) -> None:
    """The authors' `init_bert_weights`: N(0, range) for Linear/Embedding weights (padding row
    included), zero Linear biases, LayerNorm weight 1 and bias 0. Use with `model.apply`."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        module.weight.data.normal_(mean=0.0, std=initializer_range)
    elif isinstance(module, nn.LayerNorm):
        module.bias.data.zero_()
        module.weight.data.fill_(1.0)
    if isinstance(module, nn.Linear) and module.bias is not None:
        module.bias.data.zero_()
    if isinstance(module, LXRTModel):
        module.visual_cls_feat.data.normal_(mean=0.0, std=initializer_range)


# ----------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------

@dataclass
class LXRTModelOutput:
    lang_feats: torch.Tensor          # [B, L, H]
    visn_feats: torch.Tensor          # [B, 1 + O, H], visual [CLS] first
    pooled_output: torch.Tensor       # [B, H] = pooled_lang * pooled_visn
    pooled_lang: torch.Tensor         # [B, H]
    pooled_visn: torch.Tensor         # [B, H]
    # with output_hidden_states: embedding output then the output of every layer
    lang_hidden_states: Optional[tuple] = None
    visn_hidden_states: Optional[tuple] = None
    # with output_attentions: one dict per layer of [B, heads, Lq, Lk] probability maps
    attentions: Optional[tuple] = None


@dataclass
class LXRTPretrainingOutput:
    mlm_scores: torch.Tensor          # [B, L, vocab], or [N, vocab] (mlm_positions)
    topic_scores: torch.Tensor        # [B, 30522], LayerNorm output used as BCE logits
    itm_logits: torch.Tensor          # [B, 2], index 1 = matched
    obj_predictions: dict             # key -> [B, O, n_key]
    answer_scores: torch.Tensor       # [B, num_qa_labels]
    pooled_output: torch.Tensor
    total_loss: Optional[torch.Tensor] = None
    losses: Optional[torch.Tensor] = None       # [1, 7]: mlm, topic, matched, obj, attr, feat, qa
    accuracies: Optional[torch.Tensor] = None   # [1, 5]: mlm, topic, itm, obj, attr


# ----------------------------------------------------------------------------------------------
# Embeddings
# ----------------------------------------------------------------------------------------------

class BertEmbeddings(nn.Module):
    """word + position + token type, LayerNorm, dropout. Position ids are the authors'
    word-level ids, supplied from outside (never an arange)."""

    def __init__(self, config: LXRTConfig):
        super().__init__()
        # padding_idx=0 on all three tables: row 0 never gets a gradient [KEEP].
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(
            config.max_position_embeddings, config.hidden_size, padding_idx=0)
        self.token_type_embeddings = nn.Embedding(
            config.type_vocab_size, config.hidden_size, padding_idx=0)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_position, token_type_ids=None):
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        emb = (self.word_embeddings(input_ids) + self.position_embeddings(token_position)
               + self.token_type_embeddings(token_type_ids))
        return self.dropout(self.LayerNorm(emb))


class VisualFeatEncoder(nn.Module):
    """(LN(fc(features)) + LN(fc(boxes))) / 2, then dropout."""

    def __init__(self, config: LXRTConfig):
        super().__init__()
        self.visn_fc = nn.Linear(config.visual_feat_dim, config.hidden_size)
        self.visn_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.box_fc = nn.Linear(config.visual_pos_dim, config.hidden_size)
        self.box_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, feats, boxes):
        x = self.visn_layer_norm(self.visn_fc(feats))
        y = self.box_layer_norm(self.box_fc(boxes))
        return self.dropout((x + y) / 2)


# ----------------------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------------------

class BertAttention(nn.Module):
    """Multi-head attention, queries from `hidden`, keys/values from `context`.

    Two implementations with one set of weights: `F.scaled_dot_product_attention` (default, lets
    PyTorch pick flash / memory-efficient kernels) and an eager softmax(QK^T/sqrt(d)+mask)V that
    also returns the attention maps. Both agree in fp32 (tests/test_modeling.py).
    """

    def __init__(self, config: LXRTConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def _heads(self, x):  # [B, L, H] -> [B, heads, L, d]
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def project(self, x):
        """Q, K and V of the same tokens with one matmul (the three Linear modules keep the
        checkpoint's names; their weights are concatenated on the fly)."""
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])
        bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])
        q, k, v = F.linear(x, weight, bias).chunk(3, dim=-1)
        return self._heads(q), self._heads(k), self._heads(v)

    def attend(self, q, k, v, mask=None, output_attentions=False):
        """softmax(QK^T / sqrt(d) + mask) V over [B, heads, L, d] inputs -> ([B, Lq, H], probs)."""
        probs = None
        if output_attentions:
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
            if mask is not None:
                scores = scores + mask
            probs = scores.softmax(dim=-1)
            out = torch.matmul(self.dropout(probs), v)
        else:
            p = self.dropout.p if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        b, _, n, _ = out.shape
        return out.transpose(1, 2).reshape(b, n, -1), probs

    def forward(self, hidden, context, mask=None, output_attentions=False):
        if context is hidden:  # self-attention: one fused projection
            q, k, v = self.project(hidden)
        else:
            q = self._heads(self.query(hidden))
            k = self._heads(self.key(context))
            v = self._heads(self.value(context))
        return self.attend(q, k, v, mask, output_attentions)


class BertAttOutput(nn.Module):
    """LN(dropout(dense(x)) + residual)."""

    def __init__(self, config: LXRTConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden, residual):
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class BertCrossattLayer(nn.Module):
    def __init__(self, config: LXRTConfig):
        super().__init__()
        self.att = BertAttention(config)
        self.output = BertAttOutput(config)

    def forward(self, hidden, context, context_mask=None, output_attentions=False):
        att, probs = self.att(hidden, context, context_mask, output_attentions)
        return self.output(att, hidden), probs

    def forward_pair(self, lang, visn, lang_mask=None, visn_mask=None, output_attentions=False):
        """Both directions at once (lang attends to visn, visn to lang). The weights are shared,
        so the Q/K/V projections and the output block run once on the concatenated tokens
        instead of twice per stream: the same arithmetic in fewer, larger kernels."""
        n = lang.shape[1]
        both = torch.cat([lang, visn], 1)
        q, k, v = self.att.project(both)
        lang_att, lang_probs = self.att.attend(q[:, :, :n], k[:, :, n:], v[:, :, n:], visn_mask,
                                               output_attentions)
        visn_att, visn_probs = self.att.attend(q[:, :, n:], k[:, :, :n], v[:, :, :n], lang_mask,
                                               output_attentions)
        out = self.output(torch.cat([lang_att, visn_att], 1), both)
        return out[:, :n], out[:, n:], lang_probs, visn_probs


class BertSelfattLayer(nn.Module):
    def __init__(self, config: LXRTConfig):
        super().__init__()
        self.self = BertAttention(config)  # the name `self` comes from the checkpoint keys
        self.output = BertAttOutput(config)

    def forward(self, hidden, mask=None, output_attentions=False):
        att, probs = self.self(hidden, hidden, mask, output_attentions)
        return self.output(att, hidden), probs


class BertIntermediate(nn.Module):
    def __init__(self, config: LXRTConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, hidden):
        return gelu(self.dense(hidden))


class BertOutput(nn.Module):
    def __init__(self, config: LXRTConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden, residual):
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------

class BertLayer(nn.Module):
    """Single-modality layer (language `layer.*` and visual `r_layers.*`); unused by LXMERT-S
    (0 of each) but kept so any l/r counts work as in the authors' code."""

    def __init__(self, config: LXRTConfig):
        super().__init__()
        self.attention = BertSelfattLayer(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, hidden, mask=None, output_attentions=False):
        att, probs = self.attention(hidden, mask, output_attentions)
        return self.output(self.intermediate(att), att), probs


class LXRTXLayer(nn.Module):
    """Cross-modality layer: parallel cross-attention with ONE shared module for both directions,
    then separate self-attention and FFN per stream (all post-LN)."""

    def __init__(self, config: LXRTConfig):
        super().__init__()
        self.visual_attention = BertCrossattLayer(config)  # shared by lang->visn and visn->lang
        self.lang_self_att = BertSelfattLayer(config)
        self.visn_self_att = BertSelfattLayer(config)
        self.lang_inter = BertIntermediate(config)
        self.lang_output = BertOutput(config)
        self.visn_inter = BertIntermediate(config)
        self.visn_output = BertOutput(config)

    def forward(self, lang, lang_mask, visn, visn_mask, output_attentions=False):
        # Both directions read the layer's inputs (parallel, not sequential).
        lang_x, visn_x, lang_x_probs, visn_x_probs = self.visual_attention.forward_pair(
            lang, visn, lang_mask, visn_mask, output_attentions)
        lang_s, lang_s_probs = self.lang_self_att(lang_x, lang_mask, output_attentions)
        visn_s, visn_s_probs = self.visn_self_att(visn_x, visn_mask, output_attentions)
        lang_out = self.lang_output(self.lang_inter(lang_s), lang_s)
        visn_out = self.visn_output(self.visn_inter(visn_s), visn_s)
        probs = None
        if output_attentions:
            probs = {"lang_cross": lang_x_probs, "visn_cross": visn_x_probs,
                     "lang_self": lang_s_probs, "visn_self": visn_s_probs}
        return lang_out, visn_out, probs


class LXRTEncoderLayers(nn.Module):
    """The authors' `bert.encoder`: visual embedding, l-layers, r-layers, x-layers."""

    def __init__(self, config: LXRTConfig):
        super().__init__()
        self.visn_fc = VisualFeatEncoder(config)
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.l_layers))
        self.x_layers = nn.ModuleList(LXRTXLayer(config) for _ in range(config.x_layers))
        self.r_layers = nn.ModuleList(BertLayer(config) for _ in range(config.r_layers))

    def forward(self, lang, lang_mask, visn_feats, visn_boxes, visn_mask=None,
                output_attentions=False, output_hidden_states=False, visual_embeds=None):
        """`visual_embeds` (optional): `visn_fc(visn_feats, visn_boxes)` computed beforehand,
        which then replaces the feature inputs (retrieval embeds each image once)."""
        visn = self.visn_fc(visn_feats, visn_boxes) if visual_embeds is None else visual_embeds
        lang_states, visn_states, attentions = [lang], [visn], []
        for layer in self.layer:
            lang, probs = layer(lang, lang_mask, output_attentions)
            lang_states.append(lang)
            attentions.append({"lang_self": probs})
        for layer in self.r_layers:
            visn, probs = layer(visn, visn_mask, output_attentions)
            visn_states.append(visn)
            attentions.append({"visn_self": probs})
        for layer in self.x_layers:
            lang, visn, probs = layer(lang, lang_mask, visn, visn_mask, output_attentions)
            lang_states.append(lang)
            visn_states.append(visn)
            attentions.append(probs)
        return (lang, visn,
                tuple(lang_states) if output_hidden_states else None,
                tuple(visn_states) if output_hidden_states else None,
                tuple(attentions) if output_attentions else None)


class BertPooler(nn.Module):
    """tanh(dense(first token)); `pooler` reads the text [CLS], `pooler_f` the visual [CLS]."""

    def __init__(self, config: LXRTConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden):
        return torch.tanh(self.dense(hidden[:, 0]))


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------

class LXRTModel(nn.Module):
    """The authors' `bert` module: text embeddings, encoder, two poolers, visual [CLS]."""

    def __init__(self, config: LXRTConfig):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = LXRTEncoderLayers(config)
        self.pooler = BertPooler(config)
        self.pooler_f = BertPooler(config)
        # The one row of the authors' `bert.word_embeddings` [vocab, 2048] table that is read
        # (row input_ids[:, 0] == [CLS]). lxrt.loading maps between the two layouts.
        self.visual_cls_feat = nn.Parameter(torch.zeros(config.visual_feat_dim))

    def prepend_visual_cls(self, feats, boxes):
        """[B, O, D], [B, O, 4] -> [B, 1+O, D], [B, 1+O, 4] with the [CLS] box [0, 0, 1, 1]."""
        b = feats.shape[0]
        cls_feat = self.visual_cls_feat.to(feats.dtype).expand(b, 1, -1)
        cls_box = boxes.new_tensor([0.0, 0.0, 1.0, 1.0]).expand(b, 1, 4)
        return torch.cat([cls_feat, feats], 1), torch.cat([cls_box, boxes], 1)

    def embed_visual(self, visual_feats, visual_pos) -> torch.Tensor:
        """Regions [B, O, D] and boxes [B, O, 4] -> the visual stream's input [B, 1+O, H]
        (visual [CLS] prepended). It depends on the image alone, so an evaluation that pairs
        each image with many sentences can compute it once per image and pass
        `visual_embeds=` to `forward` (exact in eval mode, where dropout is off)."""
        return self.encoder.visn_fc(*self.prepend_visual_cls(visual_feats, visual_pos))

    def forward(self, input_ids, token_position, attention_mask, visual_feats, visual_pos,
                token_type_ids=None, visual_attention_mask=None, output_attentions=False,
                output_hidden_states=False, visual_embeds=None) -> LXRTModelOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        lang = self.embeddings(input_ids, token_position, token_type_ids)
        feats = boxes = None
        if visual_embeds is None:
            feats, boxes = self.prepend_visual_cls(visual_feats, visual_pos)
        visual_length = feats.shape[1] if visual_embeds is None else visual_embeds.shape[1]
        if visual_attention_mask is not None and visual_attention_mask.shape[1] != visual_length:
            raise ValueError(
                f"visual_attention_mask has length {visual_attention_mask.shape[1]}, expected "
                f"{visual_length} (regions + visual [CLS]) or None")
        lang_mask = extended_attention_mask(attention_mask, lang.dtype)
        visn_mask = extended_attention_mask(visual_attention_mask, lang.dtype)
        lang, visn, lang_states, visn_states, attentions = self.encoder(
            lang, lang_mask, feats, boxes, visn_mask, output_attentions, output_hidden_states,
            visual_embeds)
        pooled_lang = self.pooler(lang)
        pooled_visn = self.pooler_f(visn)
        return LXRTModelOutput(lang, visn, pooled_lang * pooled_visn, pooled_lang, pooled_visn,
                               lang_states, visn_states, attentions)


class LXRTFeatureExtraction(nn.Module):
    """Holds `bert`; exists for the authors' key layout (`lxrt_encoder.model.bert.*`)."""

    def __init__(self, config: LXRTConfig):
        super().__init__()
        self.bert = LXRTModel(config)

    def forward(self, *args, **kwargs) -> LXRTModelOutput:
        return self.bert(*args, **kwargs)


class LXRTEncoder(nn.Module, PretrainedModel):
    """What task models hold as `self.lxrt_encoder`: ids + regions -> pooled output [B, H]."""
    intended_use = ("The encoder alone: a question or caption and an image's region features "
                    "in, the pooled joint vector out. Start a task from it (`--loadLXMERT "
                    "FOLDER`) or read its features.")
    limitations = ("No task head: it answers nothing by itself. Region features must come "
                   "from the extractor the encoder was trained with.")

    def __init__(self, config: LXRTConfig):
        super().__init__()
        self.config = config
        self.model = LXRTFeatureExtraction(config)  # `model.` exists for the authors' key names
        self.model.apply(lambda m: init_bert_weights(m, config.initializer_range))

    @property
    def bert(self) -> LXRTModel:
        return self.model.bert

    @property
    def dim(self) -> int:
        return self.config.hidden_size

    def forward(self, input_ids, token_position, attention_mask, feats, boxes,
                visual_embeds=None) -> torch.Tensor:
        return self.model.bert(input_ids, token_position, attention_mask, feats, boxes,
                               visual_embeds=visual_embeds).pooled_output


class AnswerHead(nn.Sequential):
    """The authors' `logit_fc`: Linear -> GeLU -> LayerNorm -> Linear (keys 0.*, 2.*, 3.*)."""

    def __init__(self, in_dim: int, hid_dim: int, num_answers: int, eps: float = 1e-12):
        super().__init__(nn.Linear(in_dim, hid_dim), GeLU(), nn.LayerNorm(hid_dim, eps=eps),
                         nn.Linear(hid_dim, num_answers))


# ----------------------------------------------------------------------------------------------
# Pre-training heads
# ----------------------------------------------------------------------------------------------

class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config: LXRTConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden):
        return self.LayerNorm(gelu(self.dense(hidden)))


class BertLMPredictionHead(nn.Module):
    """MLM head; `decoder.weight` is tied to the word embeddings."""

    def __init__(self, config: LXRTConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.decoder.weight = word_embeddings.weight
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden):
        return self.decoder(self.transform(hidden)) + self.bias


class BertPreTrainingHeads(nn.Module):
    """The authors' `cls`: MLM, ITM (`seq_relationship`) and topic (`seq_relationship_new` +
    `LayerNorm`, 30522 wide, LayerNorm output used directly as logits)."""

    def __init__(self, config: LXRTConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.predictions = BertLMPredictionHead(config, word_embeddings)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)
        self.seq_relationship_new = nn.Linear(config.hidden_size, config.topic_size)
        self.LayerNorm = nn.LayerNorm(config.topic_size, eps=config.layer_norm_eps)

    def forward(self, lang_feats, pooled):
        mlm = self.predictions(lang_feats)
        itm = self.seq_relationship(pooled)
        topic = self.LayerNorm(gelu(self.seq_relationship_new(pooled)))
        return mlm, itm, topic


class BertVisualObjHead(nn.Module):
    """Object/attribute/feature prediction from region states times the pooled output
    (LXMERT-S multiplies by pooled; LXMERT does not)."""

    def __init__(self, config: LXRTConfig, visual_losses=("obj", "attr", "feat")):
        super().__init__()
        sizes = {"obj": config.num_object_labels, "attr": config.num_attr_labels,
                 "feat": config.visual_feat_dim}
        unknown = set(visual_losses) - set(sizes)
        if unknown or not visual_losses:
            raise ValueError(f"visual_losses must be a non-empty subset of {sorted(sizes)}, "
                             f"got {visual_losses}")
        self.visual_losses = tuple(visual_losses)
        self.transform = BertPredictionHeadTransform(config)
        self.decoder_dict = nn.ModuleDict(
            {k: nn.Linear(config.hidden_size, sizes[k]) for k in self.visual_losses})

    def forward(self, visn_feats, pooled):
        t = self.transform(visn_feats) * pooled[:, None, :]
        return {k: self.decoder_dict[k](t) for k in self.visual_losses}


class BertVisualAnswerHead(nn.Module):
    def __init__(self, config: LXRTConfig, num_answers: int):
        super().__init__()
        h = config.hidden_size
        self.logit_fc = AnswerHead(h, 2 * h, num_answers, config.layer_norm_eps)

    def forward(self, pooled):
        return self.logit_fc(pooled)


class LXRTPretraining(nn.Module, PretrainedModel):
    """The authors' pre-training model with every head (MLM, topic, ITM, obj/attr/feat, QA)."""
    intended_use = ("The pre-trained model with every pre-training head: fine-tune a task from "
                    "it (`--loadLXMERT FOLDER`, or `--loadLXMERTQA FOLDER` to start the "
                    "VQA/GQA answer head or the retrieval head from its QA and matching heads), "
                    "continue pre-training (`--init FOLDER`), or score image-text matching.")
    limitations = ("Not fine-tuned for any task. Region features must come from the extractor "
                   "it was pre-trained with (36 bottom-up-attention regions for LXMERT's data).")

    def __init__(self, config: LXRTConfig, visual_losses=("obj", "attr", "feat")):
        super().__init__()
        self.config = config
        self.bert = LXRTModel(config)
        self.cls = BertPreTrainingHeads(config, self.bert.embeddings.word_embeddings)
        self.obj_predict_head = BertVisualObjHead(config, visual_losses)
        self.answer_head = BertVisualAnswerHead(config, config.num_qa_labels)
        self.apply(lambda m: init_bert_weights(m, config.initializer_range))

    def pretrained_args(self) -> dict:
        return {"visual_losses": list(self.obj_predict_head.visual_losses)}

    def forward(self, input_ids, token_position, attention_mask, visual_feats, visual_pos,
                token_type_ids=None, labels: Optional[dict] = None,
                mlm_positions: Optional[torch.Tensor] = None) -> LXRTPretrainingOutput:
        """`mlm_positions` (bool [B, L], optional): score the vocabulary only at these
        positions; `mlm_scores` is then [N, vocab] in row-major order of the True entries, and
        `labels["masked_lm_labels"]` must be the matching [N] labels. The MLM loss and
        accuracy read only labelled positions, so passing the labelled ones changes nothing
        but the work (the vocabulary-wide scores are most of a small model's cost)."""
        out = self.bert(input_ids, token_position, attention_mask, visual_feats, visual_pos,
                        token_type_ids)
        pooled = out.pooled_output
        lang = out.lang_feats if mlm_positions is None else out.lang_feats[mlm_positions]
        mlm, itm, topic = self.cls(lang, pooled)
        obj = self.obj_predict_head(out.visn_feats[:, 1:], pooled)  # drop the visual [CLS]
        answers = self.answer_head(pooled)
        result = LXRTPretrainingOutput(mlm, topic, itm, obj, answers, pooled)
        if labels is not None:
            result.total_loss, result.losses, result.accuracies = self.losses(result, labels)
        return result

    def losses(self, out: LXRTPretrainingOutput, labels: dict):
        """The authors' losses, in their order: mlm, topic, matched, obj, attr, feat, qa.

        `labels`: masked_lm_labels [B,L] (-1 ignored), topic_multi_hot [B,30522],
        matched_label [B] (-1 ignored), obj/attr [B,O] with obj_conf/attr_conf [B,O],
        feat [B,O,D] with feat_mask [B,O], ans [B] (-1 ignored).
        """
        ce = nn.CrossEntropyLoss(ignore_index=-1)
        vocab = out.mlm_scores.shape[-1]
        mlm_labels = labels["masked_lm_labels"]
        losses = [
            ce(out.mlm_scores.reshape(-1, vocab), mlm_labels.reshape(-1)),
            F.binary_cross_entropy_with_logits(out.topic_scores, labels["topic_multi_hot"].float()),
            ce(out.itm_logits.reshape(-1, 2), labels["matched_label"].reshape(-1)),
        ]
        conf_keys = {"obj": ("obj", "obj_conf"), "attr": ("attr", "attr_conf"),
                     "feat": ("feat", "feat_mask")}
        for key in ("obj", "attr", "feat"):
            if key not in out.obj_predictions:
                continue
            pred = out.obj_predictions[key]
            target, conf = (labels[k] for k in conf_keys[key])
            if key == "feat":
                per_region = F.smooth_l1_loss(pred, target, reduction="none").mean(-1)
            else:
                per_region = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1),
                                             ignore_index=-1, reduction="none")
            losses.append((per_region.reshape(-1) * conf.reshape(-1)).mean() * VISUAL_LOSS_WEIGHT)
        losses.append(ce(out.answer_scores, labels["ans"].reshape(-1)))
        losses = torch.stack(losses)
        return losses.sum(), losses[None], self.accuracies(out, labels)[None]

    @staticmethod
    def accuracies(out: LXRTPretrainingOutput, labels: dict) -> torch.Tensor:
        """argmax accuracies over the labelled positions: mlm, topic, itm, obj, attr (0 when a
        batch has no such labels; the authors crash there)."""
        def masked_acc(scores, target):
            keep = target != -1
            if not keep.any():
                return scores.new_zeros(())
            return (scores.argmax(-1)[keep] == target[keep]).float().mean()

        with torch.no_grad():
            topic_hit = out.topic_scores + labels["topic_multi_hot"].float()  # raw LN output, as the authors
            topic_acc = ((topic_hit > 1.5) | (topic_hit < 0.5)).float().mean()
            accs = [masked_acc(out.mlm_scores, labels["masked_lm_labels"]), topic_acc,
                    masked_acc(out.itm_logits, labels["matched_label"])]
            for key in ("obj", "attr"):
                if key in out.obj_predictions:
                    accs.append(masked_acc(out.obj_predictions[key], labels[key]))
                else:
                    accs.append(out.itm_logits.new_zeros(()))
        return torch.stack(accs).detach()
