"""SNLI-VE on the classification skeleton: its JSON-lines reader and its predictions file (the
loss, accuracy per class and model are `ClassifierTask`'s)."""
from tasks.common.readers import DataFormatError, read_json_lines
from tasks.common.task import ClassifierTask
from tasks.common.task_dataset import ImageTextDataset
from tasks.snli_ve.entry import CLASSES


def load_snli_ve_split(path, require_label: bool = False) -> list[dict]:
    """One snli_ve_<split>.jsonl; errors name the file, the example and the key."""
    data = read_json_lines(path, "examples", ("Flickr30K_ID", "sentence2"))
    for n, d in enumerate(data):
        where = f"{path}: example {n} (pairID {d.get('pairID')!r})"
        if not (isinstance(d["Flickr30K_ID"], str) and isinstance(d["sentence2"], str)):
            raise DataFormatError(f"{where}: keys 'Flickr30K_ID' and 'sentence2' must be "
                                  f"strings")
        if d.get("gold_label") not in CLASSES and ("gold_label" in d or require_label):
            raise DataFormatError(f"{where}: key 'gold_label' must be one of {list(CLASSES)} "
                                  f"(a validation split must be labelled), got "
                                  f"{d.get('gold_label')!r}")
        d["img_id"] = f"{d['Flickr30K_ID']}.jpg"  # the Flickr30k feature files' img_id
    return data


class SNLIVETask(ClassifierTask):
    name = "snli_ve"
    class_names = CLASSES

    def load_dataset(self, splits, tiny, fast, require_label):
        def build(data, stores, name, subset, num_boxes):
            return ImageTextDataset(data, stores, self.tokenizer, name, subset, num_boxes,
                                    text_key="sentence2", id_key="pairID",
                                    label_key="gold_label", classes=CLASSES)

        def flickr30k(split):  # every split's images are among the Flickr30k feature files
            return [self.root.path("retrieval", "features", part) for part in ("train", "test")]

        return self.load_splits(splits, lambda path: load_snli_ve_split(path, require_label),
                                build, tiny, fast, feature_files=flickr30k, what="examples")

    def write_results(self, ctx, result, split):
        """<split>_predict.jsonl: each example's ids and hypothesis with its predicted class."""
        keys = ("pairID", "Flickr30K_ID", "sentence2")
        return self.write_json_lines(ctx, f"{split}_predict.jsonl", [
            {**{k: d[k] for k in keys if k in d}, "prediction": CLASSES[int(p)]}
            for d, p in zip(self.dataset(split).data, result.predictions)])
