"""The toy task's registry entry: its questions under DATA/toy/, the generated VQA features."""
from tasks.common.classifier import classifier_from_run_info
from tasks.common.registry import DataFile, TaskEntry

CLASSES = ("no", "yes")


TOY = TaskEntry(
    name="toy", folder="toy_task",
    files={"examples": DataFile("toy file for split {split!r}", "{split}.json", ("toy",),
                                "tests/test_toy_task.py writes it", lxmert_layout=False),
           "features": DataFile("toy features for split {split!r}",
                                lambda split: f"{'train' if split == 'train' else 'val'}"
                                              f"2014_obj36.tsv", ("mscoco_imgfeat",),
                                "python -m tools.make_data", lxmert_layout=False)},
    tiny_images=4, build_model=classifier_from_run_info, predict="classify",
    recipes={"toy_finetune": {"train": "train", "valid": "valid", "lr": 1e-3}},
)

ENTRIES = (TOY,)
