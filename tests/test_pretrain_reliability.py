"""Pre-training under abuse: unusable validation splits (found before the first step), stage
configs that cannot train, edited configs and changed data on --resume, and damaged caches."""
from __future__ import annotations

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest

from generated import common_flags
from tasks.common.readers import DataFormatError
from tasks.common.trainer import Trainer
from tasks.pretrain.data import phrases_fit
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


# ---- stage configs that cannot train ------------------------------------------------------------

@pytest.mark.parametrize("fields, message", [
    ({"loss_weights": {"mlm": float("nan")}}, r"'loss_weights': mlm: expected a finite number"),
    ({"loss_weights": {"matched": float("inf")}}, r"matched: expected a finite number >= 0"),
    ({"lr": float("inf")}, r"key 'lr': expected a finite positive number, got inf"),
    ({"loss_weights": {"mlm": 0, "matched": 0}}, r"every loss of the tasks .* has weight 0"),
    ({"word_mask_rate": 0, "itm_negative_rate": 0}, r"every task \(mlm, itm\) has weight 0 or "
                                                    r"a rate of 0"),
], ids=["nan-weight", "inf-weight", "inf-lr", "zero-weights", "zero-rates"])
def test_a_stage_that_cannot_train_is_refused_at_load(small_root, tmp_path, fields, message):
    with pytest.raises(SystemExit, match=message):
        pretrain_main(_flags(small_root, tmp_path / "out", _stage(tmp_path, **fields),
                             "--prepareOnly"))


def test_an_idle_task_is_warned_about(small_root, tmp_path, caplog):
    pretrain_main(_flags(small_root, tmp_path / "out", _stage(tmp_path, word_mask_rate=0),
                         "--prepareOnly"))
    assert "task mlm can teach nothing" in caplog.text


def test_a_huge_hard_negative_k_is_cut_to_the_images(small_root, tmp_path, caplog):
    stage = _stage(tmp_path, tasks=["mlm", "itm", "itm_hs"], hard_negative_k=10 ** 9)
    pretrain_main(_flags(small_root, tmp_path / "out", stage, "--prepareOnly"))
    assert "hard_negative_k 1000000000 is more than the 7 other images" in caplog.text
    tables = list((tmp_path / "cache").glob("neighbors-*.npy"))  # training and validation
    assert len(tables) == 2 and all(np.load(t).shape == (8, 7) for t in tables)


# ---- --resume after the stage config was edited in place ---------------------------------------

@pytest.mark.slow
def test_resume_refuses_a_stage_config_edited_in_place(small_root, tmp_path):
    stage, out = _stage(tmp_path), tmp_path / "out"
    pretrain_main(_flags(small_root, out, stage, "--stopAfterSteps", "1"))
    edited = json.loads(stage.read_text())
    edited["word_mask_rate"] = 0.3
    stage.write_text(json.dumps(edited))
    with pytest.raises(SystemExit, match=r"stage_sha1: saved '[0-9a-f]+', now '[0-9a-f]+'"):
        pretrain_main(_flags(small_root, out, stage, "--resume"))


# ---- the corpus cache ---------------------------------------------------------------------------

def _prepare(root, tmp_path, stage):
    pretrain_main(_flags(root, tmp_path / "out", stage, "--prepareOnly"))


@pytest.mark.parametrize("array, damage, message", [
    ("piece_offsets", lambda a: np.zeros_like(a), r"piece_offsets\.npy is not a non-decreasing "
                                                  r"run of offsets"),
    ("label_ans", lambda a: a + 10 ** 6, r"label_ans\.npy holds ids outside \[0, "),
], ids=["zeroed-offsets", "answer-ids"])
def test_a_damaged_corpus_cache_is_named_rebuilt_and_replaced(small_root, tmp_path, caplog,
                                                              array, damage, message):
    stage = _stage(tmp_path, tasks=["mlm", "itm", "qa"])
    _prepare(small_root, tmp_path, stage)
    caches = sorted((tmp_path / "cache").glob("corpus-*"))  # training and validation
    for cache in caches:
        path = cache / f"{array}.npy"
        np.save(path, damage(np.load(path)))
    caplog.clear()
    _prepare(small_root, tmp_path, stage)
    for cache in caches:
        assert re.search(rf"unusable cache {cache} .*{message}", caplog.text)
    caplog.clear()
    _prepare(small_root, tmp_path, stage)  # the rebuilt caches were saved in their place
    assert "unusable cache" not in caplog.text
    assert all(f"flattened index from {cache}" in caplog.text for cache in caches)


def test_a_killed_builds_temporary_folder_is_removed(small_root, tmp_path):
    stage = _stage(tmp_path)
    _prepare(small_root, tmp_path, stage)
    cache = next((tmp_path / "cache").glob("corpus-*"))
    left = cache.with_name(f".{cache.name}.999999999.tmp")
    left.mkdir()
    np.save(left / "piece_ids.npy", np.zeros(3))  # killed in the middle of the save
    foreign = cache.with_name(f".{cache.name}.999999998.tmp")
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    _prepare(small_root, tmp_path, stage)
    assert not left.exists() and (foreign / "notes.txt").read_text() == "mine"


def test_a_damaged_nearest_image_table_is_recomputed(small_root, tmp_path, caplog):
    stage = _stage(tmp_path, tasks=["mlm", "itm", "itm_hs"], hard_negative_k=3)
    _prepare(small_root, tmp_path, stage)
    tables = sorted((tmp_path / "cache").glob("neighbors-*.npy"))
    good = [np.load(t) for t in tables]
    for table in tables:
        np.save(table, np.full_like(np.load(table), 10 ** 6))  # ids of no image
    caplog.clear()
    _prepare(small_root, tmp_path, stage)
    assert caplog.text.count("with image ids below 8; recomputing") == len(tables)
    assert all(np.array_equal(np.load(t), g) for t, g in zip(tables, good))


def test_a_damaged_noun_chunk_table_does_not_fit():
    corpus = SimpleNamespace(num_sentences=2)
    offsets, bounds = np.array([0, 1, 2]), np.array([[0, 2], [1, 3]], dtype=np.int16)
    assert phrases_fit(offsets, bounds, corpus)
    assert not phrases_fit(np.zeros(3, dtype=np.int64), bounds, corpus)  # zeroed offsets
    assert not phrases_fit(np.array([0, 2, 1]), bounds, corpus)
    assert not phrases_fit(offsets, np.array([[0, 2], [3, 3]], dtype=np.int16), corpus)
