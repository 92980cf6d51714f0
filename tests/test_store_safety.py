"""The feature store never deletes what it did not create, leaves no lock file behind, and
notices files changed in place (the source TSV, the store's data files, its id list)."""
import json
import os
import shutil

import numpy as np
import pytest

from generated import common_flags
from tasks.common.features import (CorruptStoreError, FeatureStore, open_feature_store,
                                   read_manifest, store_path_for)
from tasks.common.store_folder import MARKER, ForeignFolderError
from tasks.common.tsv_format import encode_row
from tasks.vqa.main import main as vqa_main
from test_features import make_item, write_tsv
from tools import convert_tsv
from tools.predictor import PredictorError, open_features


def _items(n=6, seed=0, d=16):
    rng = np.random.default_rng(seed)
    return [make_item(rng, f"img{i}", n=4, d=d) for i in range(n)]


def _users_folder(path):
    path.mkdir()
    (path / "notes.txt").write_text("my notes")
    return path


def _untouched(folder):
    return sorted(p.name for p in folder.iterdir()) == ["notes.txt"] and \
        (folder / "notes.txt").read_text() == "my notes"


def _leftovers(tsv):
    """Lock files and temporaries beside a TSV's store."""
    return sorted(p.name for p in tsv.parent.iterdir() if p.name.startswith("."))


# ---- failure 2: a folder of the user's at the store's path ---------------------------------------

def test_opening_a_tsv_keeps_a_users_folder_at_the_store_path(tmp_path):
    tsv = write_tsv(tmp_path / "f.tsv", _items())
    folder = _users_folder(store_path_for(tsv))
    with pytest.raises(ForeignFolderError, match=rf"{folder} is a folder this program did not "
                                                 rf"create .*nothing was changed"):
        open_feature_store(tsv, progress=False)
    assert _untouched(folder) and _leftovers(tsv) == []


def test_convert_tsv_keeps_a_users_folder(tmp_path, capsys):
    tsv = write_tsv(tmp_path / "f.tsv", _items())
    default = _users_folder(store_path_for(tsv))
    assert convert_tsv.main([str(tsv), "--quiet"]) == 1
    assert str(default) in capsys.readouterr().err and _untouched(default)
    chosen = _users_folder(tmp_path / "my_data")
    assert convert_tsv.main([str(tsv), "--out", str(chosen), "--quiet", "--force"]) == 1
    assert "did not create" in capsys.readouterr().err and _untouched(chosen)
    assert _leftovers(tsv) == [] and not list(tmp_path.glob(".my_data*"))


def test_predict_features_keeps_a_users_folder(tmp_path):
    tsv = write_tsv(tmp_path / "f.tsv", _items())
    folder = _users_folder(store_path_for(tsv))
    with pytest.raises(ForeignFolderError, match=str(folder)):
        open_features(tsv)
    with pytest.raises(PredictorError, match="not a converted feature store"):
        open_features(folder)
    assert _untouched(folder) and _leftovers(tsv) == []


def test_training_keeps_a_users_folder_at_the_store_path(small_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(small_root, root, ignore=shutil.ignore_patterns("*.store", ".*"))
    folder = _users_folder(store_path_for(root / "mscoco_imgfeat" / "train2014_obj36.tsv"))
    with pytest.raises(ForeignFolderError, match=str(folder)):
        vqa_main(common_flags(root, tmp_path / "out") + ["--train", "train", "--valid", "",
                                                         "--epochs", "1"])
    assert _untouched(folder)


def test_own_stores_are_still_replaced(tmp_path):
    """Half-written (marker, no manifest), stale, and stores written before markers existed
    (a manifest of our format, no marker) are ours: reconverted. An empty folder too."""
    tsv = write_tsv(tmp_path / "f.tsv", _items())
    store = open_feature_store(tsv, progress=False)
    d = store.store_dir
    assert (d / MARKER).is_file()
    (d / "manifest.json").unlink()
    (d / "features.bin").write_bytes(b"half")
    assert len(open_feature_store(tsv, progress=False)) == 6
    (d / MARKER).unlink()  # a store of an earlier version
    os.utime(tsv, ns=(1, 1))  # stale
    assert len(open_feature_store(tsv, progress=False)) == 6 and (d / MARKER).is_file()
    shutil.rmtree(d)
    d.mkdir()
    assert len(open_feature_store(tsv, progress=False)) == 6
    assert _leftovers(tsv) == []


def test_a_failed_conversion_leaves_no_lock_or_temporary(tmp_path):
    text = tmp_path / "README.md"
    text.write_text("# not a feature file\n")
    with pytest.raises(ValueError, match=r"README\.md:1"):
        open_feature_store(text, progress=False)
    assert _leftovers(text) == [] and not store_path_for(text).exists()
    with pytest.raises(ValueError, match=r"README\.md:1"):
        open_features(text)
    assert _leftovers(text) == []


# ---- fingerprints --------------------------------------------------------------------------------

def test_tsv_rewritten_in_place_with_its_mtime_put_back_is_reconverted(tmp_path):
    items = _items()
    tsv = write_tsv(tmp_path / "f.tsv", items)
    first = open_feature_store(tsv, progress=False)
    before = os.stat(tsv)
    other = _items()
    for item in other:  # other features, fixed-size base64: the same number of bytes
        item.features = item.features[::-1].copy()
    text = "".join(encode_row(it) + "\n" for it in other)
    assert len(text) == before.st_size
    tsv.write_text(text)
    os.utime(tsv, ns=(before.st_atime_ns, before.st_mtime_ns))
    again = open_feature_store(tsv, progress=False)
    assert again.manifest["created"] > first.manifest["created"]
    np.testing.assert_array_equal(again["img0"][0], other[0].features)


def test_store_data_file_overwritten_in_place_is_refused(tmp_path):
    tsv = write_tsv(tmp_path / "f.tsv", _items())
    d = open_feature_store(tsv, progress=False).store_dir
    features = d / "features.bin"
    features.write_bytes(bytes(features.stat().st_size))  # zeroed, same size
    with pytest.raises(CorruptStoreError, match=r"features\.bin was changed after the store "
                                                r"was written"):
        open_feature_store(tsv, progress=False)


def test_two_ids_swapped_in_img_ids_are_refused(tmp_path):
    tsv = write_tsv(tmp_path / "f.tsv", _items())
    d = open_feature_store(tsv, progress=False).store_dir
    ids = json.loads((d / "img_ids.json").read_text())
    ids[1], ids[2] = ids[2], ids[1]
    (d / "img_ids.json").write_text(json.dumps(ids))
    with pytest.raises(CorruptStoreError, match=r"img_ids\.json differs from the file the "
                                                r"store was written with"):
        FeatureStore(d)


def test_a_store_without_fingerprints_still_opens(tmp_path):
    """Stores written before fingerprints were recorded are read as before."""
    tsv = write_tsv(tmp_path / "f.tsv", _items())
    d = open_feature_store(tsv, progress=False).store_dir
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["source"].pop("fingerprint")
    for info in manifest["files"].values():
        info.pop("sha1", None)
        info.pop("sampled_sha1", None)
    (d / "manifest.json").write_text(json.dumps(manifest))
    assert read_manifest(d) is not None
    assert len(open_feature_store(tsv, progress=False)) == 6
