"""Pre-training under abuse: unusable validation splits (found before the first step), stage
configs that cannot train, edited configs and changed data on --resume, and damaged caches."""
from __future__ import annotations

import json

import pytest

from generated import common_flags
from tasks.common.readers import DataFormatError
from tasks.common.trainer import Trainer
from tasks.pretrain.main import main as pretrain_main


def _stage(tmp_path, **fields):
    stage = {"tasks": ["mlm", "itm"], "train": "mscoco_nominival", "valid": "mscoco_minival",
             "epochs": 1, "batch_size": 8, **fields}
    path = tmp_path / "stage.json"
    path.write_text(json.dumps(stage))
    return path


def _flags(root, out, stage, *extra):
    return ["--stage", str(stage), *common_flags(root, out, load_lxmert=False),
            "--pretrainCache", str(out.parent / "cache"), *extra]


@pytest.fixture
def no_training(monkeypatch):
    def trained(*args, **kwargs):
        raise AssertionError("a training step ran before the splits were checked")
    monkeypatch.setattr(Trainer, "_train_step", trained)


# ---- failure 1: every split is checked before the first step --------------------------------

@pytest.mark.parametrize("prepare_only", [False, True], ids=["single-process", "prepareOnly"])
@pytest.mark.parametrize("valid, valid_images, message", [
    # minival's images are the first rows of the feature file: one image, no ITM negative
    ("mscoco_minival", 1, r"pre-training split 'mscoco_minival': ITM needs sentences of at "
                          r"least two images .* it has 1 image with features in .*val2014"),
    # nominival's images come after the first 8 rows: none is read
    ("mscoco_nominival", 8, r"pre-training split 'mscoco_nominival' is empty: none of its "
                            r"images has features in .*val2014.*; only the first 8 images"),
], ids=["itm-one-image", "no-valid-image"])
def test_an_unusable_validation_split_stops_before_the_first_step(
        small_root, tmp_path, no_training, prepare_only, valid, valid_images, message):
    stage = _stage(tmp_path, valid=valid, valid_images=valid_images)
    out = tmp_path / "out"
    extra = ["--prepareOnly"] if prepare_only else []
    with pytest.raises(DataFormatError, match=message):
        pretrain_main(_flags(small_root, out, stage, *extra))
    assert not list(out.glob("*.pth"))


def test_image_limit_one_stops_before_the_first_step(small_root, tmp_path, no_training):
    """Two training corpora give two images; the validation split has one."""
    stage = _stage(tmp_path, train="mscoco_train,vgnococo")
    with pytest.raises(DataFormatError, match=r"'mscoco_minival': ITM needs sentences of at "
                                              r"least two images"):
        pretrain_main(_flags(small_root, tmp_path / "out", stage, "--imageLimit", "1"))
