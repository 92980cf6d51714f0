"""NLVR2 in the task registry."""
from __future__ import annotations

from tasks.common.registry import LXMERT_DOWNLOADS, DataFile, TaskEntry


def build_model(config, task_info):
    from tasks.nlvr2.model import NLVR2Model
    return NLVR2Model(config)


NLVR2 = TaskEntry(
    name="nlvr2", folder="tasks.nlvr2",
    files={
        "examples": DataFile("NLVR2 file for split {split!r}", "{split}.json", ("nlvr2",),
                             "LXMERT README: clone https://github.com/lil-lab/nlvr into "
                             "data/nlvr2/nlvr and run LXMERT's data/nlvr2/"
                             "process_raw_data_scripts/process_dataset.py"),
        "features": DataFile("NLVR2 features for split {split!r}", "{split}_obj36.tsv",
                             ("nlvr2_imgfeat",),
                             LXMERT_DOWNLOADS + "nlvr2_imgfeat/{stem}.zip (unzip into "
                                                "nlvr2_imgfeat/)"),
    },
    build_model=build_model, predict="verify", num_images=2,
    recipes={"nlvr2_finetune": {"load_lxmert": "data/model"},
             "nlvr2_test": {"train": "", "valid": "", "eval_batch_size": 256}},
)

ENTRIES = (NLVR2,)
