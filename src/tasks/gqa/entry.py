"""GQA in the task registry (its code is `tasks.qa`, shared with VQA)."""
from __future__ import annotations

from tasks.common.registry import LXMERT_DOWNLOADS, DataFile, TaskEntry
from tasks.qa.data import answer_table_files
from tasks.qa.model import model_from_run_info


def gqa_features(split: str) -> str:
    """testdev -> gqa_testdev_obj36.tsv; every other split (submit too) -> vg_gqa_obj36.tsv."""
    return "gqa_testdev_obj36.tsv" if split == "testdev" else "vg_gqa_obj36.tsv"


GQA = TaskEntry(
    name="gqa", folder="tasks.gqa", shares=("qa",),
    files={
        "examples": DataFile("GQA question file for split {split!r}", "{split}.json", ("gqa",),
                             LXMERT_DOWNLOADS + "gqa/{name}"),
        "features": DataFile("GQA features for split {split!r}", gqa_features,
                             ("vg_gqa_imgfeat", "gqa_imgfeat"),
                             LXMERT_DOWNLOADS + "vg_gqa_imgfeat/{stem}.zip (unzip into "
                                                "vg_gqa_imgfeat/)"),
        **answer_table_files("GQA", ("gqa",), "shipped with this repository in data/gqa/ "
                             "(LXMERT's 1842-answer tables); also " + LXMERT_DOWNLOADS
                             + "gqa/{name}", shipped="gqa"),
    },
    whole_splits=("testdev",),  # as the authors: every testdev image, so scores compare
    build_model=model_from_run_info, predict="answers",
    recipes={"gqa_finetune": {"train": "train,valid", "valid": "testdev",
                              "load_lxmert": "data/model"},
             "gqa_test": {"train": "", "valid": "", "eval_batch_size": 256}},
)

ENTRIES = (GQA,)
