"""VQA and the easy-VQA main job in the task registry (both run through `tasks.vqa.main`)."""
from __future__ import annotations

import json
import re

from tasks.common.registry import LXMERT_DOWNLOADS, DataFile, TaskEntry
from tasks.qa.data import answer_table_files
from tasks.qa.model import model_from_run_info

# question split -> MS COCO feature file (the authors' vqa_data.py SPLIT2NAME)
VQA_SPLIT2NAME = {"train": "train2014", "valid": "val2014", "minival": "val2014",
                  "nominival": "val2014", "test": "test2015"}
# easy-VQA: the valid questions use the train images; train_<P>pct holds the questions of P%
# of the train images (tools.easyvqa --pretraining)
EASYVQA_SPLIT2NAME = {"train": "train", "valid": "train", "test": "test"}
EASYVQA_FEW_LABEL_SPLIT = re.compile(r"train_[0-9.]+pct")


def coco_features(split: str) -> str:
    try:
        return f"{VQA_SPLIT2NAME[split]}_obj36.tsv"
    except KeyError:
        raise ValueError(f"unknown VQA split {split!r}; known: {sorted(VQA_SPLIT2NAME)}") \
            from None


def easyvqa_features(split: str) -> str:
    if EASYVQA_FEW_LABEL_SPLIT.fullmatch(split):
        return "train_obj36.tsv"
    if split not in EASYVQA_SPLIT2NAME:
        raise ValueError(f"unknown easy-VQA split {split!r}; known: "
                         f"{sorted(EASYVQA_SPLIT2NAME)} and train_<P>pct")
    return f"{EASYVQA_SPLIT2NAME[split]}_obj36.tsv"


# A data root converted by tools.make_qa_dataset holds vqa/dataset.json, naming its splits and
# their feature file; the VQA task then reads those instead of LXMERT's split names, and the
# root's own answer table (never the shipped 3129 answers in its place).
QA_DATASET_MANIFEST = "dataset.json"
OWN_QA = "python -m tools.make_qa_dataset (docs/own_qa_data.md)"


def read_dataset_manifest(root) -> dict | None:
    """The manifest of a root made by tools.make_qa_dataset, or None for LXMERT's layout."""
    path = root.root / "vqa" / QA_DATASET_MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); convert again with {OWN_QA}") \
            from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("splits"), dict):
        raise ValueError(f"{path}: expected an object with 'splits'; convert again with {OWN_QA}")
    if manifest.get("complete") is False:
        raise ValueError(f"{path}: the conversion into {root.root} did not finish; run "
                         f"{OWN_QA} again")
    return manifest


def converted_root(root, kind: str, split):
    """Where a root made by tools.make_qa_dataset keeps `kind` (None: LXMERT's layout)."""
    manifest = read_dataset_manifest(root)
    if manifest is None:
        return None
    if kind in ("ans2label", "label2ans"):
        return root.find(f"VQA answer table trainval_{kind}.json",
                         [root.root / "vqa" / f"trainval_{kind}.json"], OWN_QA)
    entry = manifest["splits"].get(split)
    if not isinstance(entry, dict) or not isinstance(entry.get("features"), str):
        raise ValueError(f"split {split!r} is not in the data set at {root.root} (made by "
                         f"tools.make_qa_dataset; its splits: {', '.join(manifest['splits'])}): "
                         f"name them with --train/--valid/--test, e.g. --train train --valid "
                         f"valid")
    if kind == "features":
        return root.find(f"features of split {split!r}", [root.root / entry["features"]],
                         OWN_QA)
    return root.find(f"question file for split {split!r}",
                     [root.root / "vqa" / f"{split}.json"], OWN_QA)


VQA = TaskEntry(
    name="vqa", folder="tasks.vqa", shares=("qa",),
    files={
        "examples": DataFile("VQA question file for split {split!r}", "{split}.json", ("vqa",),
                             LXMERT_DOWNLOADS + "vqa/{name}"),
        "features": DataFile("VQA (MS COCO) features for split {split!r}", coco_features,
                             ("mscoco_imgfeat",),
                             LXMERT_DOWNLOADS + "mscoco_imgfeat/{stem}.zip (unzip into "
                                                "mscoco_imgfeat/)"),
        **answer_table_files("VQA", ("vqa",), "shipped with this repository in data/vqa/ "
                             "(LXMERT's 3129-answer tables); also " + LXMERT_DOWNLOADS
                             + "vqa/{name}", shipped="vqa"),
    },
    tiny_images=200,             # vqa_data.py: --tiny reads 200 images
    split_images={"minival": 5000},  # minival is the first 5000 images of val2014
    build_model=model_from_run_info, predict="answers", own_layout=converted_root,
    recipes={"vqa_finetune": {"train": "train,nominival", "valid": "minival",
                              "load_lxmert": "data/model"},
             "vqa_test": {"train": "", "valid": "", "eval_batch_size": 256}},
)

# the embedded main job: from scratch; on the CPU a small configuration without dropout
# (docs/results.md, "easy-VQA on the CPU"), on a GPU the full LXMERT-S sizes
_EASYVQA = {"task": "easyvqa", "train": "train", "valid": "valid", "from_scratch": True}
EASYVQA = TaskEntry(
    name="easyvqa", folder="tasks.vqa", shares=("qa",),
    files={
        "examples": DataFile("easy-VQA question file for split {split!r}", "{split}.json",
                             ("easyvqa",), "python -m tools.easyvqa (converts the easy-VQA "
                                           "dataset)", lxmert_layout=False),
        "features": DataFile("easy-VQA features for split {split!r}", easyvqa_features,
                             ("easyvqa_imgfeat",), "python -m tools.easyvqa (extracts features "
                                                   "for the easy-VQA images)",
                             lxmert_layout=False),
        **answer_table_files("EASYVQA", ("easyvqa",), "python -m tools.easyvqa",
                             lxmert_layout=False),
    },
    tiny_images=200,
    build_model=model_from_run_info, predict="answers",
    recipes={"easyvqa_cpu": {**_EASYVQA, "model_config": "run/configs/easyvqa_cpu.json",
                             "epochs": 4, "lr": 3e-4, "num_workers": 0},
             "easyvqa_gpu": {**_EASYVQA, "epochs": 6, "lr": 1e-4, "num_workers": 4}},
)

ENTRIES = (VQA, EASYVQA)
