"""SNLI-VE in the task registry: its files, model, predict mode, recipes and generated data.

The recipe is LXMERT's fine-tuning recipe: batch 32 and lr 5e-5 (the defaults of every task
here) for 4 epochs (this entry point's default), as LXMERT's VQA script (airsplay/lxmert,
run/vqa_finetune.bash); SNLI-VE's 530k training pairs are about as many as VQA's questions.
"""
import json

from tasks.common.classifier import classifier_from_run_info
from tasks.common.registry import DataFile, TaskEntry

CLASSES = ("entailment", "neutral", "contradiction")


def generate(images, root, summary):
    """For tools.make_data: one hypothesis of each class per Flickr30k image, from its colour
    and object; the train images make `train`, the test images `dev` and `test`."""
    train = images.files["flickr30k/flickr30k_train2014.tsv"]
    test = images.files["flickr30k/flickr30k_test2014.tsv"]
    (root / "snli_ve").mkdir(exist_ok=True)
    for split, chosen in (("train", train), ("dev", test[:len(test) // 2]),
                          ("test", test[len(test) // 2:])):
        lines = []
        for img_id, attrs in chosen:
            colour, thing, _ = images.words(attrs)
            other = images.colors[(attrs["color"] + int(images.rng.integers(1, 4))) % 4]
            for label, hypothesis in (("entailment", f"There is a {colour} {thing}."),
                                      ("neutral", f"The {thing} belongs to a child."),
                                      ("contradiction", f"There is a {other} {thing}.")):
                lines.append(json.dumps({"pairID": f"{img_id}#{label[0]}", "gold_label": label,
                                         "Flickr30K_ID": img_id.split(".")[0],
                                         "sentence2": hypothesis}))
        (root / "snli_ve" / f"snli_ve_{split}.jsonl").write_text("\n".join(lines) + "\n")
        summary[f"snli_ve/snli_ve_{split}.jsonl"] = len(lines)


SNLI_VE = TaskEntry(
    name="snli_ve", folder="tasks.snli_ve",
    files={"examples": DataFile("SNLI-VE file for split {split!r}", "snli_ve_{split}.jsonl",
                                ("snli_ve",), "https://github.com/necla-ml/SNLI-VE (its "
                                "scripts write snli_ve_{{train,dev,test}}.jsonl from SNLI 1.0 "
                                "and Flickr30k); the features are retrieval's Flickr30k TSVs")},
    build_model=classifier_from_run_info, predict="classify", generate=generate,
    recipes={"snli_ve_finetune": {"load_lxmert": "data/model"},
             "snli_ve_test": {"train": "", "valid": "", "eval_batch_size": 256}},
)

ENTRIES = (SNLI_VE,)
