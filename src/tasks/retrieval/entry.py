"""Flickr30k image and text retrieval in the task registry."""
from __future__ import annotations

from tasks.common.registry import DataFile, TaskEntry


def flickr_file(split: str, extension: str) -> str:
    """'train' -> flickr30k_train2014; every other split (valid included) -> test2014, as the
    authors (image_retrieval_data.py:38-41)."""
    return f"flickr30k_{'train2014' if split == 'train' else 'test2014'}.{extension}"


def build_model(config, task_info):
    from tasks.retrieval.model import RetrievalModel
    return RetrievalModel(config)


FLICKR_DIRS = ("flickr30k", "image_retrieval")
# every launcher ranks with the pre-trained ITM head or a fine-tuned model; image retrieval
# selects p(match), text retrieval after fine-tuning the raw logit (the authors' choices)
_IMAGE = {"direction": "image"}
_TEXT = {"direction": "text", "score_function": "logit"}
_TEST = {"train": "", "valid": "", "test": "test"}
_PRETRAINED = {"load_lxmert_qa": "data/model"}

RETRIEVAL = TaskEntry(
    name="retrieval", folder="tasks.retrieval",
    files={
        "annotations": DataFile(
            "Flickr30k annotations for split {split!r}", lambda s: flickr_file(s, "json"),
            FLICKR_DIRS, "Flickr30k (Karpathy split) annotations as distributed with ViLBERT "
                         "(facebookresearch/vilbert-multi-task data), as a JSON list of "
                         "{{img_path, sentences}} (LXMERT-S README)"),
        "features": DataFile(
            "Flickr30k features for split {split!r}", lambda s: flickr_file(s, "tsv"),
            FLICKR_DIRS, "no public download: extract bottom-up-attention Faster R-CNN features "
                         "(36 boxes) for the Flickr30k images (http://shannon.cs.illinois.edu/"
                         "DenotationGraph/) into LXMERT's TSV format (tools.extract_features)"),
        "hard_negatives": DataFile(
            "Flickr30k hard-negative pool hard_negative.pkl", "hard_negative.pkl", FLICKR_DIRS,
            "ViLBERT multi-task data (https://github.com/facebookresearch/vilbert-multi-task, "
            "datasets/flickr30k/hard_negative.pkl)"),
    },
    build_model=build_model, predict="rank",
    recipes={"image_retrieval_finetune": {**_PRETRAINED, **_IMAGE},
             "sent_retrieval_finetune": {**_PRETRAINED, **_TEXT},
             "image_retrieval_test": {**_TEST, **_IMAGE},
             "sent_retrieval_test": {**_TEST, **_TEXT},
             "image_retrieval_zero_shot": {**_TEST, **_PRETRAINED, **_IMAGE},
             "sent_retrieval_zero_shot": {**_TEST, **_PRETRAINED, "direction": "text"}},
)

ENTRIES = (RETRIEVAL,)
