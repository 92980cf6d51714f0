"""The toy task on the shared skeleton: only its reader and its result file."""
from tasks.common.readers import read_records
from tasks.common.task import ClassifierTask
from tasks.common.task_dataset import ImageTextDataset
from toy_task.entry import CLASSES


class ToyTask(ClassifierTask):
    name = "toy"
    class_names = CLASSES

    def load_dataset(self, splits, tiny, fast, require_label):
        def build(data, stores, name, subset, num_boxes):
            return ImageTextDataset(data, stores, self.tokenizer, name, subset, num_boxes,
                                    classes=(0, 1))
        return self.load_splits(splits, lambda path: read_records(path, "questions",
                                                                  ("img_id", "sent", "label")),
                                build, tiny, fast)

    def write_results(self, ctx, result, split):
        return self.write_json_lines(ctx, f"{split}_predict.jsonl", [
            {"question_id": d["question_id"], "prediction": CLASSES[int(p)]}
            for d, p in zip(self.dataset(split).data, result.predictions)])
