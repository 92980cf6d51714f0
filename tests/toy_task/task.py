"""The toy task on the shared skeleton: only its reader, loss, metric and result file."""
import json

import numpy as np
import torch.nn.functional as F

from tasks.common.classifier import ClassifierModel
from tasks.common.readers import read_records
from tasks.common.task import EvalResult, TaskBase
from tasks.common.task_dataset import ImageTextDataset
from toy_task.entry import CLASSES


class ToyDataset(ImageTextDataset):
    def target(self, index):
        return self.data[index]["label"]


class ToyTask(TaskBase):
    name = "toy"

    def build_model(self):
        return ClassifierModel(self.config, len(CLASSES))

    def task_info(self):
        return {"class_names": list(CLASSES)}

    def load_dataset(self, splits, tiny, fast, require_label):
        def build(data, stores, name, subset, num_boxes):
            return ToyDataset(data, stores, self.tokenizer, name, subset, num_boxes)
        return self.load_splits(splits, lambda path: read_records(path, "questions",
                                                                  ("img_id", "sent", "label")),
                                build, tiny, fast)

    def compute_loss(self, model, batch):
        logits = self.logits(model, batch)
        loss = F.cross_entropy(logits.float(), batch["target"])
        return loss, {"hits": (logits.argmax(1) == batch["target"]).sum()}

    def evaluate(self, ctx, model, split):
        dataset, labels = self.predict_labels(ctx, model, split)
        gold = np.array([d["label"] for d in dataset.data])
        accuracy = float((labels == gold).mean())
        return EvalResult(accuracy, {"split": split, "accuracy": accuracy * 100}, labels)

    def write_results(self, ctx, result, split):
        data = self.dataset(split).data
        lines = [json.dumps({"question_id": d["question_id"], "prediction": CLASSES[int(p)]})
                 for d, p in zip(data, result.predictions)]
        return self.write_result_file(ctx, f"{split}_predict.jsonl", "\n".join(lines) + "\n",
                                      len(lines))
