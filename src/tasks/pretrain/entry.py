"""Pre-training in the task registry: its corpus files and LXMERT's answer list (its recipes
are the stage files, run/configs/)."""
from __future__ import annotations

from tasks.common.registry import LXMERT_DOWNLOADS, DataFile, TaskEntry


def build_model(config, task_info):
    """The pre-training model, every head (tools.export writes it as a model folder)."""
    from lxrt.modeling import LXRTPretraining
    return LXRTPretraining(config)


PRETRAIN = TaskEntry(
    name="pretrain", folder="tasks.pretrain",
    files={
        "corpus": DataFile("pre-training corpus {split!r}", "{split}.json", ("lxmert",),
                           LXMERT_DOWNLOADS + "lxmert/{name}"),
        "answers": DataFile("LXMERT pre-training answer list all_ans.json", "all_ans.json",
                            ("lxmert",), "shipped with this repository in data/lxmert/"
                                         "all_ans.json; also " + LXMERT_DOWNLOADS
                                         + "lxmert/all_ans.json",
                            shipped="lxmert/all_ans.json"),
    },
    tiny_images=500,  # LXMERT's --tiny / --fast image counts per feature file
    build_model=build_model,
)

ENTRIES = (PRETRAIN,)
