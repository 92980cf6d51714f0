"""Shared helpers for tests that use the authors' parity fixtures (tests/fixtures/)."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch

from lxrt.config import LXRTConfig

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CHECKPOINT = FIXTURES / "checkpoint.pth"
# the authors' own fp32-vs-fp64 deviation is <= 2e-6 (docs/authors_code.md, "Parity fixtures
# and tolerances")
ATOL = 1e-5


def small_config(**overrides) -> LXRTConfig:
    return LXRTConfig.from_json_file(FIXTURES / "small_config.json", **overrides)


@lru_cache(maxsize=1)
def fixture_io() -> dict:
    return torch.load(FIXTURES / "io.pt", weights_only=False)


@lru_cache(maxsize=1)
def fixture_meta() -> dict:
    return json.loads((FIXTURES / "io_summary.json").read_text())["meta"]


def model_inputs() -> tuple:
    io = fixture_io()
    return (io["input.input_ids"], io["input.token_position"], io["input.input_mask"],
            io["input.feats"], io["input.boxes"])


def fixture_labels() -> dict:
    return {k[len("label."):]: v for k, v in fixture_io().items() if k.startswith("label.")}


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.double() - b.double()).abs().max().item()
