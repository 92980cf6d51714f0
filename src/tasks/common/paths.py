"""Where every data file lives: one data root, laid out as LXMERT's download instructions produce it.

The default root is `data/` (relative to the working directory), overridable by the `root`
argument or the `LXRT_DATA_ROOT` environment variable. Every file is looked up in a list of
candidate paths and the first that exists wins:

1. the LXMERT layout under the root (`vqa/`, `mscoco_imgfeat/`, `gqa/`, `vg_gqa_imgfeat/`,
   `nlvr2/`, `nlvr2_imgfeat/`, `flickr30k/`, `lxmert/`),
2. the paths the LXMERT-S scripts hard-code (docs/authors_code.md, "Data locations"):
   `lxmert_data/...` and `image_retrieval/...` inside the root, and `lxmert_data/...` next
   to it (the authors keep `lxmert_data/` at the repository top level, beside `data/`),
3. for the answer tables shipped with this repository (`data/{vqa,gqa,lxmert}/...`), the shipped
   copy, so that a root without them still works.

A missing file raises `DataFileNotFoundError`, which lists every path tried and where the file
is downloaded from. `data/README.md` documents the layout.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

ENV_VAR = "LXRT_DATA_ROOT"
DEFAULT_ROOT = "data"

# this repository's data/ (answer tables are shipped there)
REPO_DATA = Path(__file__).resolve().parents[3] / "data"

# VQA: question split -> MS COCO feature file stem (vqa_data.py SPLIT2NAME)
VQA_SPLIT2NAME = {
    "train": "train2014",
    "valid": "val2014",
    "minival": "val2014",
    "nominival": "val2014",
    "test": "test2015",
}
# easy-VQA: the valid questions use the train images
EASYVQA_SPLIT2NAME = {"train": "train", "valid": "train", "test": "test"}
# train_<P>pct: the questions of P% of the train images (tools.easyvqa --pretraining)
EASYVQA_FEW_LABEL_SPLIT = re.compile(r"train_[0-9.]+pct")

QA_TASKS = ("vqa", "gqa", "easyvqa")

_LXMERT = "LXMERT README (https://github.com/airsplay/lxmert), " \
          "e.g. nlp.cs.unc.edu/data/lxmert_data/"
SOURCES = {
    "vqa_json": _LXMERT + "vqa/{name}",
    "vqa_features": _LXMERT + "mscoco_imgfeat/{stem}.zip (unzip into mscoco_imgfeat/)",
    "vqa_answers": "shipped with this repository in data/vqa/ (LXMERT's 3129-answer tables); "
                   "also " + _LXMERT + "vqa/{name}",
    "gqa_json": _LXMERT + "gqa/{name}",
    "gqa_features": _LXMERT + "vg_gqa_imgfeat/{stem}.zip (unzip into vg_gqa_imgfeat/)",
    "gqa_answers": "shipped with this repository in data/gqa/ (LXMERT's 1842-answer tables); "
                   "also " + _LXMERT + "gqa/{name}",
    "nlvr2_json": "LXMERT README: clone https://github.com/lil-lab/nlvr into data/nlvr2/nlvr and "
                  "run LXMERT's data/nlvr2/process_raw_data_scripts/process_dataset.py",
    "nlvr2_features": _LXMERT + "nlvr2_imgfeat/{stem}.zip (unzip into nlvr2_imgfeat/)",
    "flickr_annotations": "Flickr30k (Karpathy split) annotations as distributed with ViLBERT "
                          "(facebookresearch/vilbert-multi-task data), as a JSON list of "
                          "{{img_path, sentences}} (LXMERT-S README)",
    "flickr_features": "no public download: extract bottom-up-attention Faster R-CNN features "
                       "(36 boxes) for the Flickr30k images (http://shannon.cs.illinois.edu/"
                       "DenotationGraph/) into LXMERT's TSV format (tools.extract_features)",
    "hard_negatives": "ViLBERT multi-task data (https://github.com/facebookresearch/"
                      "vilbert-multi-task, datasets/flickr30k/hard_negative.pkl)",
    "all_answers": "shipped with this repository in data/lxmert/all_ans.json; also "
                   + _LXMERT + "lxmert/all_ans.json",
    "easyvqa_json": "python -m tools.easyvqa (converts the easy-VQA dataset)",
    "easyvqa_features": "python -m tools.easyvqa (extracts features for the easy-VQA images)",
    "easyvqa_answers": "python -m tools.easyvqa",
    "own_qa": "python -m tools.make_qa_dataset (docs/own_qa_data.md)",
}
# A data root converted by tools.make_qa_dataset holds vqa/dataset.json, naming its splits and
# their feature file; the VQA task then reads those instead of LXMERT's split names.
QA_DATASET_MANIFEST = "dataset.json"


class DataFileNotFoundError(FileNotFoundError):
    """A data file is in none of its candidate paths."""

    def __init__(self, what: str, tried: list[Path], source: str | None = None):
        self.what = what
        self.tried = list(tried)
        self.source = source
        lines = [f"{what} not found. Tried:"]
        lines += [f"  {p}" for p in self.tried]
        if source:
            lines.append(f"Download: {source}")
        lines.append(f"(set the data root with --dataRoot or {ENV_VAR}; see data/README.md)")
        super().__init__("\n".join(lines))


def _dedupe(paths):
    out, seen = [], set()
    for p in paths:
        key = os.path.normpath(str(p))
        if key not in seen:
            seen.add(key)
            out.append(Path(p))
    return out


class DataRoot:
    """One data root. Every method returns an existing `Path` or raises
    `DataFileNotFoundError`; `candidates(...)`-style lists are exposed for diagnostics."""

    def __init__(self, root: str | os.PathLike | None = None):
        if root is None:
            root = os.environ.get(ENV_VAR) or DEFAULT_ROOT
        self.root = Path(root)

    def __repr__(self):
        return f"DataRoot({str(self.root)!r})"

    # ------------------------------------------------------------------ generic lookup
    def _dirs(self, *names: str, top_level: bool = True) -> list[Path]:
        """Candidate directories for `names`: each name under the root, then under
        root/lxmert_data, then (top_level) under root/../lxmert_data."""
        dirs = [self.root / n for n in names]
        dirs += [self.root / "lxmert_data" / n for n in names]
        if top_level:
            dirs += [self.root.parent / "lxmert_data" / n for n in names]
        return dirs

    @staticmethod
    def find(what: str, candidates, source: str | None = None) -> Path:
        """First existing path of `candidates`, else `DataFileNotFoundError`."""
        candidates = _dedupe(candidates)
        for p in candidates:
            if p.is_file():
                return p
        raise DataFileNotFoundError(what, candidates, source)

    def _lookup(self, what, dirs, filename, source_key, shipped: Path | None = None, **fmt):
        cands = [d / filename for d in dirs]
        if shipped is not None:
            cands.append(shipped)
        return self.find(what, cands, SOURCES[source_key].format(name=filename, **fmt))

    # ------------------------------------------------------------------ VQA
    def vqa_dataset(self) -> dict | None:
        """The manifest of a data set made by tools.make_qa_dataset (`vqa/dataset.json`), or
        None for LXMERT's VQA layout."""
        path = self.root / "vqa" / QA_DATASET_MANIFEST
        if not path.is_file():
            return None
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise ValueError(f"{path}: not valid JSON ({err}); convert again with "
                             f"{SOURCES['own_qa']}") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("splits"), dict):
            raise ValueError(f"{path}: expected an object with 'splits'; convert again with "
                             f"{SOURCES['own_qa']}")
        if manifest.get("complete") is False:
            raise ValueError(f"{path}: the conversion into {self.root} did not finish; run "
                             f"{SOURCES['own_qa']} again")
        return manifest

    def _dataset_split(self, manifest: dict, split: str) -> dict:
        entry = manifest["splits"].get(split)
        if not isinstance(entry, dict) or not isinstance(entry.get("features"), str):
            raise ValueError(
                f"split {split!r} is not in the data set at {self.root} (made by "
                f"tools.make_qa_dataset; its splits: {', '.join(manifest['splits'])}): name "
                f"them with --train/--valid/--test, e.g. --train train --valid valid")
        return entry

    def vqa_json(self, split: str) -> Path:
        manifest = self.vqa_dataset()
        if manifest is not None:
            self._dataset_split(manifest, split)
            return self.find(f"question file for split {split!r}",
                             [self.root / "vqa" / f"{split}.json"], SOURCES["own_qa"])
        return self._lookup(f"VQA question file for split {split!r}", self._dirs("vqa"),
                            f"{split}.json", "vqa_json")

    def vqa_features(self, split: str) -> Path:
        manifest = self.vqa_dataset()
        if manifest is not None:
            features = self._dataset_split(manifest, split)["features"]
            return self.find(f"features of split {split!r}", [self.root / features],
                             SOURCES["own_qa"])
        stem = self.vqa_feature_name(split)
        return self._lookup(f"VQA (MS COCO) features for split {split!r}",
                            self._dirs("mscoco_imgfeat"), f"{stem}_obj36.tsv", "vqa_features",
                            stem=f"{stem}_obj36")

    @staticmethod
    def vqa_feature_name(split: str) -> str:
        try:
            return VQA_SPLIT2NAME[split]
        except KeyError:
            raise ValueError(f"unknown VQA split {split!r}; known: "
                             f"{sorted(VQA_SPLIT2NAME)}") from None

    # ------------------------------------------------------------------ GQA
    def gqa_json(self, split: str) -> Path:
        return self._lookup(f"GQA question file for split {split!r}", self._dirs("gqa"),
                            f"{split}.json", "gqa_json")

    @staticmethod
    def gqa_feature_file(split: str) -> str:
        """testdev -> gqa_testdev_obj36.tsv; everything else (incl. submit) -> vg_gqa_obj36.tsv."""
        return "gqa_testdev_obj36.tsv" if split == "testdev" else "vg_gqa_obj36.tsv"

    def gqa_features(self, split: str) -> Path:
        fname = self.gqa_feature_file(split)
        return self._lookup(f"GQA features for split {split!r}",
                            self._dirs("vg_gqa_imgfeat", "gqa_imgfeat"), fname, "gqa_features",
                            stem=fname[:-4])

    # ------------------------------------------------------------------ easy-VQA
    def easyvqa_json(self, split: str) -> Path:
        return self._lookup(f"easy-VQA question file for split {split!r}",
                            [self.root / "easyvqa"], f"{split}.json", "easyvqa_json")

    def easyvqa_features(self, split: str) -> Path:
        if EASYVQA_FEW_LABEL_SPLIT.fullmatch(split):
            stem = "train"
        elif split in EASYVQA_SPLIT2NAME:
            stem = EASYVQA_SPLIT2NAME[split]
        else:
            raise ValueError(f"unknown easy-VQA split {split!r}; known: "
                             f"{sorted(EASYVQA_SPLIT2NAME)} and train_<P>pct")
        return self._lookup(f"easy-VQA features for split {split!r}",
                            [self.root / "easyvqa_imgfeat"], f"{stem}_obj36.tsv",
                            "easyvqa_features")

    # ------------------------------------------------------------------ VQA-like dispatch
    def qa_json(self, task: str, split: str) -> Path:
        return getattr(self, f"{self._qa_task(task)}_json")(split)

    def qa_features(self, task: str, split: str) -> Path:
        return getattr(self, f"{self._qa_task(task)}_features")(split)

    @staticmethod
    def _qa_task(task: str) -> str:
        if task not in QA_TASKS:
            raise ValueError(f"unknown QA task {task!r}; known: {QA_TASKS}")
        return task

    def answer_tables(self, task: str) -> tuple[Path, Path]:
        """(trainval_ans2label.json, trainval_label2ans.json) of a VQA-like task."""
        task = self._qa_task(task)
        # a converted root's own table only, never the shipped one in its place
        own = task == "easyvqa" or (task == "vqa" and self.vqa_dataset() is not None)
        dirs = [self.root / task] if own else self._dirs(task)
        out = []
        for name in ("trainval_ans2label.json", "trainval_label2ans.json"):
            shipped = None if own else REPO_DATA / task / name
            out.append(self._lookup(f"{task.upper()} answer table {name}", dirs, name,
                                    f"{task}_answers", shipped=shipped))
        return out[0], out[1]

    # ------------------------------------------------------------------ NLVR2
    def nlvr2_json(self, split: str) -> Path:
        return self._lookup(f"NLVR2 file for split {split!r}", self._dirs("nlvr2"),
                            f"{split}.json", "nlvr2_json")

    def nlvr2_features(self, split: str) -> Path:
        return self._lookup(f"NLVR2 features for split {split!r}", self._dirs("nlvr2_imgfeat"),
                            f"{split}_obj36.tsv", "nlvr2_features", stem=f"{split}_obj36")

    # ------------------------------------------------------------------ Flickr30k
    @staticmethod
    def flickr_split_name(split: str) -> str:
        """'train' -> train2014; every other split (valid included) -> test2014, as the
        authors (image_retrieval_data.py:38-41)."""
        return "train2014" if split == "train" else "test2014"

    def _flickr_dirs(self) -> list[Path]:
        return _dedupe([self.root / "flickr30k", self.root / "image_retrieval",
                        *self._dirs("flickr30k")])

    def flickr_annotations(self, split: str) -> Path:
        fname = f"flickr30k_{self.flickr_split_name(split)}.json"
        return self._lookup(f"Flickr30k annotations for split {split!r}", self._flickr_dirs(),
                            fname, "flickr_annotations")

    def flickr_features(self, split: str) -> Path:
        fname = f"flickr30k_{self.flickr_split_name(split)}.tsv"
        return self._lookup(f"Flickr30k features for split {split!r}", self._flickr_dirs(),
                            fname, "flickr_features")

    def hard_negatives(self) -> Path:
        return self._lookup("Flickr30k hard-negative pool hard_negative.pkl",
                            self._flickr_dirs(), "hard_negative.pkl", "hard_negatives")

    # ------------------------------------------------------------------ pre-training files
    def all_answers(self) -> Path:
        return self._lookup("LXMERT pre-training answer list all_ans.json", self._dirs("lxmert"),
                            "all_ans.json", "all_answers",
                            shipped=REPO_DATA / "lxmert" / "all_ans.json")

