"""Model configuration for LXMERT-S.

The authors build their config from `bert_config.json` inside `bert-base-uncased.tar.gz` plus a
module-level `VISUAL_CONFIG` global set from argparse. Here both live in one explicit dataclass.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from lxrt.jsonfile import read_json


@dataclass
class LXRTConfig:
    # BERT part (values of bert-base-uncased's bert_config.json)
    vocab_size: int = 30522
    hidden_size: int = 768
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1  # the authors' --dropout flag is never read; 0.1 is what ran
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    # LXMERT part. LXMERT-S = 0 language, 5 cross-modality, 0 relation (visual) layers.
    l_layers: int = 0
    x_layers: int = 5
    r_layers: int = 0
    visual_feat_dim: int = 2048
    visual_pos_dim: int = 4
    # Pre-training heads
    num_object_labels: int = 1600
    num_attr_labels: int = 400
    topic_size: int = 30522  # hard-coded 30522 in the authors' code, not vocab_size
    num_qa_labels: int = 9500  # len(all_ans.json), LXMERT's pre-training answer table
    # id of the [CLS] token whose row of the authors' visual-[CLS] table is used
    cls_token_id: int = 101

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act != "gelu":
            raise ValueError(f"hidden_act {self.hidden_act!r}: only the erf 'gelu' is supported")
        for name in ("l_layers", "x_layers", "r_layers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, values: dict, **overrides) -> "LXRTConfig":
        """Build from a BERT-style dict; keys this model does not use are ignored
        (e.g. `num_hidden_layers`, which LXMERT replaces with l/x/r layer counts)."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in known}
        kwargs.update(overrides)
        return cls(**kwargs)

    @classmethod
    def from_json_file(cls, path: str | Path, **overrides) -> "LXRTConfig":
        """Load a BERT-style `bert_config.json` (plus optional LXMERT keys)."""
        path = Path(path)
        try:
            values = read_json(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"config file not found: {path}") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a JSON object of config values")
        return cls.from_dict(values, **overrides)
