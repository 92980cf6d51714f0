"""butd.weights: both released layouts (small synthetic files with the real key names) load
strictly; everything else is refused with a message naming the file and the key."""
from __future__ import annotations

import dataclasses
import functools
import os
import pickle

import numpy as np
import pytest
import torch

from butd.config import VG_CONFIG
from butd.weights import (ANCHOR_KEY, WeightsError, config_for, convert_weights,
                          load_detector, read_weights)
from detector_helpers import TINY_CONFIG, hf_layout, random_state, save_pickle_layout

# smaller still than TINY_CONFIG: loading does not depend on the sizes
SMALL = dataclasses.replace(TINY_CONFIG, stage_blocks=(1, 1, 1), res5_blocks=1,
                            num_classes=20, num_attributes=6)
NO_ATTRIBUTES = dataclasses.replace(SMALL, num_attributes=0)


@functools.lru_cache(maxsize=None)
def _state(attributes: bool = True) -> dict:
    return random_state(SMALL if attributes else NO_ATTRIBUTES, seed=3)


def state(attributes: bool = True) -> dict:
    return dict(_state(attributes))


def assert_loaded(model, expected: dict) -> None:
    loaded = model.state_dict()
    assert set(loaded) == set(expected)
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key


def test_pickle_layout_loads_strictly(tmp_path):
    path = tmp_path / "faster_rcnn_from_caffe_attr.pkl"
    save_pickle_layout(state(), path)
    model, info = load_detector(path, SMALL)
    assert_loaded(model, state())
    assert info.layout == "pickle" and info.config.has_attributes and not info.dropped
    assert not model.training


def test_hugging_face_layout_loads_strictly(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    torch.save(hf_layout(state(), SMALL), path)
    model, info = load_detector(path, SMALL)
    assert_loaded(model, state())
    assert info.layout == "torch"
    assert ANCHOR_KEY in info.dropped
    assert sum(k.endswith("num_batches_tracked") for k in info.dropped) > 10


def test_model_without_attributes(tmp_path):
    path = tmp_path / "faster_rcnn_from_caffe.pkl"
    save_pickle_layout(state(attributes=False), path)
    model, info = load_detector(path, NO_ATTRIBUTES)
    assert not info.config.has_attributes and not hasattr(model.roi_heads.box_predictor,
                                                          "fc_attr")
    # given the attribute model's settings, the missing head is named
    with pytest.raises(WeightsError, match="missing keys: .*attr_score"):
        load_detector(path, SMALL)
    # without settings, a file lacking the whole head is read as the VG model without it
    assert config_for(state(attributes=False), {}, None, "x") == dataclasses.replace(
        VG_CONFIG, num_attributes=0)
    assert config_for(state(), {}, None, "x") == VG_CONFIG


@pytest.mark.parametrize("damage,message", [
    ("missing", "missing keys: backbone.res3.0.conv2.weight"),
    ("extra", "unexpected keys .*roi_heads.box_predictor.extra_head.weight"),
    ("shape", r"roi_heads.box_predictor.cls_score.weight: shape \(22, 256\) in the file, "
              r"the model expects \(21, 256\)"),
    ("nan", "backbone.stem.conv1.weight: holds NaN"),
    ("one_statistic", "missing keys: backbone.res2.0.conv1.norm.running_var"),
    ("anchors", "cell_anchors.0: the file's anchors"),
    ("integer", "backbone.res4.0.conv1.weight: dtype torch.int64"),
])
def test_damaged_files_are_refused_naming_the_key(tmp_path, damage, message):
    values = hf_layout(state(), SMALL)
    if damage == "missing":
        del values["backbone.res3.0.conv2.weight"]
    elif damage == "extra":
        values["roi_heads.box_predictor.extra_head.weight"] = torch.zeros(3)
    elif damage == "shape":
        values["roi_heads.box_predictor.cls_score.weight"] = torch.zeros(22, 256)
    elif damage == "nan":
        values["backbone.stem.conv1.weight"] = values["backbone.stem.conv1.weight"].clone()
        values["backbone.stem.conv1.weight"][0, 0, 0, 0] = float("nan")
    elif damage == "one_statistic":
        del values["backbone.res2.0.conv1.norm.running_var"]
    elif damage == "anchors":
        values[ANCHOR_KEY] = values[ANCHOR_KEY] * 2
    elif damage == "integer":
        values["backbone.res4.0.conv1.weight"] = values["backbone.res4.0.conv1.weight"].long()
    path = tmp_path / "pytorch_model.bin"
    torch.save(values, path)
    with pytest.raises(WeightsError, match=message) as err:
        load_detector(path, SMALL)
    assert str(path) in str(err.value)


def test_files_without_running_statistics_use_the_identity(tmp_path):
    values = {k: v for k, v in state().items() if "running_" not in k}
    path = tmp_path / "caffe2_style.pkl"
    save_pickle_layout(values, path)
    model, info = load_detector(path, SMALL)
    assert len(info.identity_norms) == sum(k.endswith("running_var") for k in state())
    norm = model.backbone.stem.conv1.norm
    assert norm.running_mean.abs().sum() == 0 and torch.equal(norm.running_var,
                                                             torch.ones_like(norm.running_var))


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_carrying_code_is_refused_unrun(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "faster_rcnn_from_caffe_attr.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"backbone.stem.conv1.weight": _RunsCode(str(marker))}}, f)
    with pytest.raises(WeightsError, match=r"asks for (io|builtins)\.open.*refused"):
        load_detector(path, SMALL)
    assert not marker.exists()
    torch_path = tmp_path / "pytorch_model.bin"
    with open(torch_path, "wb") as f:
        torch.save({"backbone.stem.conv1.weight": _RunsCode(str(marker))}, f)
    with pytest.raises(WeightsError, match="weights_only=True"):
        load_detector(torch_path, SMALL)
    assert not marker.exists()


def test_unreadable_files_are_named(tmp_path):
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError, match="empty.pkl: empty file"):
        read_weights(empty)
    truncated = tmp_path / "cut.pkl"
    save_pickle_layout(state(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:5000])
    with pytest.raises(WeightsError, match="cut.pkl: not a readable pickle"):
        read_weights(truncated)
    with pytest.raises(FileNotFoundError, match="nope.pkl"):
        read_weights(tmp_path / "nope.pkl")
    objects = tmp_path / "objects.pkl"
    with open(objects, "wb") as f:
        pickle.dump({"model": {"a": np.array([1, "x"], dtype=object)}}, f)
    with pytest.raises(WeightsError, match="entry 'a' is ndarray of objects"):
        read_weights(objects)


def test_conversion_to_safetensors_keeps_every_tensor_and_the_settings(tmp_path):
    source = tmp_path / "faster_rcnn_from_caffe_attr.pkl"
    values = {k: v for k, v in state().items() if "running_" not in k}
    save_pickle_layout(values, source)
    target = tmp_path / "out" / "butd.safetensors"
    info = convert_weights(source, target, SMALL)
    assert info.identity_norms and target.is_file()
    assert not [p for p in os.listdir(target.parent) if ".tmp" in p]
    model, loaded = load_detector(target)              # settings from the file's metadata
    assert loaded.config == SMALL and loaded.layout == "safetensors"
    assert not loaded.identity_norms                   # written out explicitly
    original, _ = load_detector(source, SMALL)
    assert_loaded(model, original.state_dict())
