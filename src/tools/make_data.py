"""Write a small generated data root in exactly the formats of the real one, for every task.

    python -m tools.make_data OUT_ROOT [--images N] [--dim 2048] [--seed 0]
                              [--answers small|full] [--small-model]

The data are learnable: every image has latent attributes (a colour, an object and a size).
Each attribute value has a template vector that is added to 12 of the image's 36 region
features, and every question, answer, NLVR2 statement and caption is derived from these
attributes, so a small model learns the tasks in a short run.

Written (layout of data/README.md; N = --images images per feature file):
  vqa/{train,nominival,minival,test}.json + trainval_{ans2label,label2ans}.json
  mscoco_imgfeat/{train2014,val2014,test2015}_obj36.tsv
  gqa/{train,valid,testdev,submit}.json + trainval_*.json
  vg_gqa_imgfeat/{vg_gqa_obj36,gqa_testdev_obj36}.tsv
  nlvr2/{train,valid,test}.json, nlvr2_imgfeat/{train,valid,test}_obj36.tsv
  flickr30k/flickr30k_{train,test}2014.{json,tsv}, flickr30k/hard_negative.pkl
  lxmert/all_ans.json (copy of this repository's)
  lxmert/{mscoco_train,mscoco_nominival,mscoco_minival,vgnococo}.json: LXMERT's pre-training
  corpus format on the same images (captions from the attributes, the questions as QA)
  the files of every registered task whose registry entry has a `generate` function, which
  gets the images written here (`GeneratedImages`: ids and latent attributes per feature file)
  with --small-model: bert_config.json (a small LXMERT-S) and model_LXRT.pth, a randomly
  initialised pre-trained checkpoint in the authors' key layout with a `module.` prefix
  (its visual-[CLS] table is vocab x dim: about 250 MB for dim 2048, so use a small --dim
  for quick tests).

`--answers small` (default) writes 14-answer tables; `--answers full` copies the shipped
3129 (VQA) and 1842 (GQA) tables, which contain every generated answer.
"""
from __future__ import annotations

import argparse
import json
import pickle
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.common import registry
from tasks.common.tsv_format import ImageFeatures, encode_row

REPO_DATA = Path(__file__).resolve().parents[2] / "data"

COLORS = ["red", "blue", "green", "yellow"]
OBJECTS = ["ball", "box", "cup", "dog"]
SIZES = ["small", "large"]
# every generated answer, plus a few that are never right (all in the real VQA/GQA tables)
SMALL_ANSWERS = ["yes", "no"] + COLORS + OBJECTS + ["white", "black", "car", "tree"]
NUM_BOXES = 36
SIGNAL_REGIONS = 12  # regions per attribute that carry its template (3 x 12 = all 36)
SIGNAL_SCALE = 3.0


@dataclass
class GeneratedImages:
    """The images tools.make_data wrote, for the tasks that write their own files on them (a
    registry entry's `generate(images, root, summary)`): for each feature file (its path under
    the root) its images as (img_id, attributes), the attributes being indices into `colors`,
    `objects` and `sizes`; `rng` is the generator's, so a seed gives the same files."""
    files: dict
    rng: np.random.Generator
    colors: tuple = tuple(COLORS)
    objects: tuple = tuple(OBJECTS)
    sizes: tuple = tuple(SIZES)

    def words(self, attrs: dict) -> tuple[str, str, str]:
        """(colour, object, size) of an image's attributes."""
        return (self.colors[attrs["color"]], self.objects[attrs["object"]],
                self.sizes[attrs["size"]])


class _Generator:
    def __init__(self, dim: int, seed: int, num_boxes: int = NUM_BOXES):
        self.dim = dim
        self.num_boxes = num_boxes
        self.rng = np.random.default_rng(seed)
        trng = np.random.default_rng(seed + 7919)
        # one template vector per attribute value
        self.templates = {
            "color": trng.standard_normal((len(COLORS), dim)).astype(np.float32),
            "object": trng.standard_normal((len(OBJECTS), dim)).astype(np.float32),
            "size": trng.standard_normal((len(SIZES), dim)).astype(np.float32),
        }

    def attributes(self, n: int) -> list[dict]:
        """Latent attributes of n images, balanced over colour x object."""
        rng = self.rng
        combos = [(c, o) for c in range(len(COLORS)) for o in range(len(OBJECTS))]
        picks = [combos[i % len(combos)] for i in range(n)]
        order = rng.permutation(n)
        return [{"color": picks[j][0], "object": picks[j][1],
                 "size": int(rng.integers(len(SIZES)))} for j in order]

    def image(self, img_id: str, attrs: dict) -> ImageFeatures:
        rng, n, d = self.rng, self.num_boxes, self.dim
        feats = rng.random((n, d), dtype=np.float32) * 0.5
        regions = rng.permutation(n)
        start = 0
        for key in ("color", "object", "size"):
            rows = regions[start:start + SIGNAL_REGIONS]
            start += SIGNAL_REGIONS
            feats[rows] += SIGNAL_SCALE * self.templates[key][attrs[key]]
        w, h = int(rng.integers(320, 641)), int(rng.integers(240, 481))
        x1 = rng.random(n) * (w * 0.7)
        y1 = rng.random(n) * (h * 0.7)
        x2 = x1 + 1 + rng.random(n) * (w - 1 - x1)
        y2 = y1 + 1 + rng.random(n) * (h - 1 - y1)
        boxes = np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)
        return ImageFeatures(
            img_id=img_id, img_h=h, img_w=w,
            objects_id=rng.integers(0, 1600, n).astype(np.int64),
            objects_conf=rng.random(n, dtype=np.float32),
            attrs_id=rng.integers(0, 400, n).astype(np.int64),
            attrs_conf=rng.random(n, dtype=np.float32),
            boxes=boxes, features=feats)

    def write_tsv(self, path: Path, img_ids: list[str], attrs: list[dict]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="ascii", newline="\n") as f:
            for img_id, a in zip(img_ids, attrs):
                f.write(encode_row(self.image(img_id, a)))
                f.write("\n")


def _dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f)


def _color(a): return COLORS[a["color"]]
def _obj(a): return OBJECTS[a["object"]]
def _size(a): return SIZES[a["size"]]


def _questions(rng, a: dict) -> list[tuple[str, str, str, str]]:
    """(sent, answer, answer_type, question_type) for one image: colour, object, and a
    balanced pair of yes/no questions."""
    other_c = COLORS[(a["color"] + 1 + int(rng.integers(len(COLORS) - 1))) % len(COLORS)]
    other_o = OBJECTS[(a["object"] + 1 + int(rng.integers(len(OBJECTS) - 1))) % len(OBJECTS)]
    false_pair = (other_c, _obj(a)) if rng.random() < 0.5 else (_color(a), other_o)
    return [
        (f"What color is the {_obj(a)}?", _color(a), "other", "what color is the"),
        (f"What is the {_color(a)} object?", _obj(a), "other", "what is the"),
        (f"Is there a {_color(a)} {_obj(a)}?", "yes", "yes/no", "is there a"),
        (f"Is there a {false_pair[0]} {false_pair[1]}?", "no", "yes/no", "is there a"),
    ]


def _vqa_label(rng, answer: str) -> dict:
    """VQA-style soft scores: mostly a clear answer, sometimes a minority alternative."""
    label = {answer: 1.0}
    if rng.random() < 0.2:
        pool = COLORS if answer in COLORS else OBJECTS if answer in OBJECTS else ["yes", "no"]
        alt = pool[(pool.index(answer) + 1) % len(pool)]
        label = {answer: 0.9, alt: 0.3}
    return label


def _write_answer_tables(dir_: Path, task: str, answers: str) -> int:
    dir_.mkdir(parents=True, exist_ok=True)
    if answers == "full":
        for name in ("trainval_ans2label.json", "trainval_label2ans.json"):
            shutil.copyfile(REPO_DATA / task / name, dir_ / name)
        return len(json.loads((dir_ / "trainval_label2ans.json").read_text()))
    _dump(dir_ / "trainval_ans2label.json", {a: i for i, a in enumerate(SMALL_ANSWERS)})
    _dump(dir_ / "trainval_label2ans.json", list(SMALL_ANSWERS))
    return len(SMALL_ANSWERS)


def _make_vqa(gen: _Generator, root: Path, n: int, answers: str, summary: dict) -> dict:
    rng = gen.rng
    summary["vqa answers"] = _write_answer_tables(root / "vqa", "vqa", answers)
    feat_dir = root / "mscoco_imgfeat"
    bases = {"train2014": 1, "val2014": 100001, "test2015": 200001}
    images = {}
    for name, base in bases.items():
        ids = [f"COCO_{name}_{base + 7 * i:012d}" for i in range(n)]
        attrs = gen.attributes(n)
        gen.write_tsv(feat_dir / f"{name}_obj36.tsv", ids, attrs)
        images[name] = list(zip(ids, attrs))

    def questions(imgs, labelled):
        out = []
        for img_id, a in imgs:
            coco_id = int(img_id.rsplit("_", 1)[1])
            for q, (sent, ans, atype, qtype) in enumerate(_questions(rng, a)):
                datum = {"answer_type": atype, "img_id": img_id,
                         "question_id": coco_id * 1000 + q, "question_type": qtype,
                         "sent": sent}
                if labelled:
                    datum["label"] = _vqa_label(rng, ans)
                out.append(datum)
        return out

    half = max(1, n // 2)
    splits = {
        "train": questions(images["train2014"], True),
        "minival": questions(images["val2014"][:half], True),
        "nominival": questions(images["val2014"][half:], True),
        "test": questions(images["test2015"], False),
    }
    for split, data in splits.items():
        _dump(root / "vqa" / f"{split}.json", data)
        summary[f"vqa/{split}.json"] = len(data)
    return images


def _make_gqa(gen: _Generator, root: Path, n: int, answers: str, summary: dict) -> list:
    rng = gen.rng
    summary["gqa answers"] = _write_answer_tables(root / "gqa", "gqa", answers)
    feat_dir = root / "vg_gqa_imgfeat"
    vg_ids = [str(2300000 + 3 * i) for i in range(n)]
    vg_attrs = gen.attributes(n)
    gen.write_tsv(feat_dir / "vg_gqa_obj36.tsv", vg_ids, vg_attrs)
    td_ids = [f"n{161000 + 5 * i}" for i in range(n)]
    td_attrs = gen.attributes(n)
    gen.write_tsv(feat_dir / "gqa_testdev_obj36.tsv", td_ids, td_attrs)

    counter = [1000000]

    def questions(ids, attrs, labelled):
        out = []
        for img_id, a in zip(ids, attrs):
            for sent, ans, _, _ in _questions(rng, a):
                counter[0] += 1
                datum = {"img_id": img_id, "question_id": f"{counter[0]:08d}", "sent": sent}
                if labelled:
                    datum["label"] = {ans: 1.0}
                out.append(datum)
        return out

    cut = max(1, (3 * n) // 4)
    splits = {
        "train": questions(vg_ids[:cut], vg_attrs[:cut], True),
        "valid": questions(vg_ids[cut:], vg_attrs[cut:], True),
        "testdev": questions(td_ids, td_attrs, True),
        "submit": questions(vg_ids, vg_attrs, False),
    }
    for split, data in splits.items():
        _dump(root / "gqa" / f"{split}.json", data)
        summary[f"gqa/{split}.json"] = len(data)
    return list(zip(vg_ids, vg_attrs))


def _nlvr2_statement(a0: dict, a1: dict, kind: int, value: int) -> tuple[str, int]:
    if kind == 0:
        c = COLORS[value]
        return (f"Both images contain a {c} object.",
                int(a0["color"] == value and a1["color"] == value))
    o = OBJECTS[value]
    return (f"Exactly one image shows a {o}.",
            int((a0["object"] == value) != (a1["object"] == value)))


def _make_nlvr2(gen: _Generator, root: Path, n: int, summary: dict) -> None:
    rng = gen.rng
    prefixes = {"train": "train", "valid": "dev", "test": "test1"}
    for split, prefix in prefixes.items():
        ids = [f"{prefix}-{i // 2}-0-img{i % 2}" for i in range(n)]
        attrs = gen.attributes(n)
        gen.write_tsv(root / "nlvr2_imgfeat" / f"{split}_obj36.tsv", ids, attrs)
        data = []
        for group in range(max(1, n // 2)):
            kind = group % 2
            value = int(rng.integers(len(COLORS) if kind == 0 else len(OBJECTS)))
            # 4 image pairs per statement, 2 true and 2 false where the pool allows
            want = [1, 1, 0, 0]
            for pair, target in enumerate(want):
                for _ in range(200):
                    i0, i1 = (int(x) for x in rng.choice(n, size=2, replace=False))
                    sent, label = _nlvr2_statement(attrs[i0], attrs[i1], kind, value)
                    if label == target:
                        break
                data.append({"identifier": f"{prefix}-{group}-{pair}-0",
                             "img0": ids[i0], "img1": ids[i1], "label": label,
                             "sent": sent, "uid": f"nlvr2_{split}_{len(data)}"})
        _dump(root / "nlvr2" / f"{split}.json", data)
        summary[f"nlvr2/{split}.json"] = len(data)


CAPTION_TEMPLATES = [
    "A {s} {c} {o} in the picture.",
    "There is a {s} {c} {o}.",
    "The image shows a {o} that is {c} and {s}.",
    "A photo of one {s} {c} {o}.",
    "A {c} {o}, rather {s}, against a plain background.",
]


def _make_flickr(gen: _Generator, root: Path, n: int, summary: dict) -> dict:
    """The Flickr30k files; returns {feature file: [(img_id, attributes)]}."""
    rng = gen.rng
    written = {}
    out = root / "flickr30k"
    ids: list[int] = []
    seen: set[int] = set()
    while len(ids) < 2 * n:  # distinct Flickr-like ids
        x = int(rng.integers(1_000_000, 5_000_000_000))
        if x not in seen:
            seen.add(x)
            ids.append(x)
    for k, split in enumerate(("train2014", "test2014")):
        img_ids = [int(x) for x in ids[k * n:(k + 1) * n]]
        paths = [f"{i}.jpg" for i in img_ids]
        attrs = gen.attributes(n)
        gen.write_tsv(out / f"flickr30k_{split}.tsv", paths, attrs)
        written[f"flickr30k/flickr30k_{split}.tsv"] = list(zip(paths, attrs))
        ann = [{"img_path": p,
                "sentences": [t.format(s=_size(a), c=_color(a), o=_obj(a))
                              for t in CAPTION_TEMPLATES]}
               for p, a in zip(paths, attrs)]
        _dump(out / f"flickr30k_{split}.json", ann)
        summary[f"flickr30k/flickr30k_{split}.json"] = len(ann)
        if split == "train2014":
            _write_hard_negatives(rng, out / "hard_negative.pkl", img_ids, attrs)
            summary["flickr30k/hard_negative.pkl"] = len(img_ids)
    return written


def _pretrain_record(rng, img_id: str, a: dict, caption_source: str, qa_source: str) -> dict:
    """One image of LXMERT's pre-training JSON: captions, plus questions with soft labels."""
    captions = [t.format(s=_size(a), c=_color(a), o=_obj(a)) for t in CAPTION_TEMPLATES]
    questions = _questions(rng, a)
    return {"img_id": img_id,
            "sentf": {caption_source: captions, qa_source: [q[0] for q in questions]},
            "labelf": {qa_source: [_vqa_label(rng, q[1]) for q in questions]}}


def _make_lxmert(rng, root: Path, coco: dict, vg: list, summary: dict) -> None:
    """lxmert/{mscoco_train,mscoco_nominival,mscoco_minival,vgnococo}.json on the images of
    the VQA and GQA feature files (minival/nominival split val2014 as VQA does)."""
    half = max(1, len(coco["val2014"]) // 2)
    corpora = {
        "mscoco_train": [(i, a, "mscoco", "vqa") for i, a in coco["train2014"]],
        "mscoco_minival": [(i, a, "mscoco", "vqa") for i, a in coco["val2014"][:half]],
        "mscoco_nominival": [(i, a, "mscoco", "vqa") for i, a in coco["val2014"][half:]],
        "vgnococo": [(i, a, "vg", "gqa") for i, a in vg],
    }
    for name, images in corpora.items():
        data = [_pretrain_record(rng, *image) for image in images]
        _dump(root / "lxmert" / f"{name}.json", data)
        summary[f"lxmert/{name}.json"] = len(data)


def _write_hard_negatives(rng, path: Path, img_ids: list[int], attrs: list[dict],
                          pool_size: int = 8) -> None:
    """Pool row i = [i, then the most similar other images]; column 0 is the image itself."""
    n = len(img_ids)
    k = min(pool_size, n)
    key = np.array([[a["color"], a["object"], a["size"]] for a in attrs])
    pool = np.zeros((n, k), dtype=np.int64)
    for i in range(n):
        sim = (key == key[i]).sum(axis=1).astype(np.float64) + rng.random(n) * 0.5
        sim[i] = -np.inf
        others = np.argsort(-sim, kind="stable")[:k - 1]
        pool[i, 0] = i
        pool[i, 1:] = others
    with open(path, "wb") as f:
        pickle.dump({"train_image_list": list(img_ids), "train_hard_pool": pool}, f)


def small_config_dict(dim: int, num_qa_labels: int) -> dict:
    """A BERT-style config of a small LXMERT-S (0/5/0 layers, hidden 64)."""
    return {
        "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "hidden_size": 64, "initializer_range": 0.02, "intermediate_size": 128,
        "max_position_embeddings": 512, "num_attention_heads": 4, "num_hidden_layers": 12,
        "type_vocab_size": 2, "vocab_size": 30522,
        "l_layers": 0, "x_layers": 5, "r_layers": 0,
        "visual_feat_dim": dim, "visual_pos_dim": 4, "num_qa_labels": num_qa_labels,
    }


def write_small_model(root: Path, dim: int, seed: int) -> Path:
    """bert_config.json + model_LXRT.pth (authors' layout, `module.` prefix)."""
    import torch

    from lxrt.config import LXRTConfig
    from lxrt.loading import to_authors_layout
    from lxrt.modeling import LXRTPretraining

    num_qa = len(json.loads((root / "lxmert" / "all_ans.json").read_text()))
    cfg_dict = small_config_dict(dim, num_qa)
    _dump(root / "bert_config.json", cfg_dict)
    config = LXRTConfig.from_json_file(root / "bert_config.json")
    torch.manual_seed(seed)
    model = LXRTPretraining(config)
    state = to_authors_layout(model.state_dict(), config)
    state = {f"module.{k}": v.detach() for k, v in state.items()}
    path = root / "model_LXRT.pth"
    torch.save(state, path)
    return path


def make_data(out_root, images: int = 64, dim: int = 2048, seed: int = 0,
              small_model: bool = False, answers: str = "small") -> dict:
    """Write the generated data root; returns a summary (file -> number of entries)."""
    if images < 8:
        raise ValueError(f"--images must be at least 8, got {images}")
    if dim < 1:
        raise ValueError(f"--dim must be positive, got {dim}")
    if answers not in ("small", "full"):
        raise ValueError(f"--answers must be 'small' or 'full', got {answers!r}")
    root = Path(out_root)
    root.mkdir(parents=True, exist_ok=True)
    gen = _Generator(dim, seed)
    summary: dict = {}
    coco = _make_vqa(gen, root, images, answers, summary)
    vg = _make_gqa(gen, root, images, answers, summary)
    _make_nlvr2(gen, root, images, summary)
    flickr = _make_flickr(gen, root, images, summary)
    (root / "lxmert").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO_DATA / "lxmert" / "all_ans.json", root / "lxmert" / "all_ans.json")
    summary["lxmert/all_ans.json"] = "copied"
    _make_lxmert(gen.rng, root, coco, vg, summary)
    written = GeneratedImages({**{f"mscoco_imgfeat/{name}_obj36.tsv": imgs
                                  for name, imgs in coco.items()},
                               "vg_gqa_imgfeat/vg_gqa_obj36.tsv": vg, **flickr}, gen.rng)
    for entry in registry.entries().values():
        if entry.generate is not None:
            entry.generate(written, root, summary)
    if small_model:
        summary["model_LXRT.pth"] = str(write_small_model(root, dim, seed))
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.make_data",
        description="Write a small generated data root (all tasks, real formats, learnable).")
    parser.add_argument("out_root", help="directory to write (created if missing)")
    parser.add_argument("--images", type=int, default=64,
                        help="images per feature file (default 64, at least 8)")
    parser.add_argument("--dim", type=int, default=2048, help="region feature size (2048)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--answers", choices=("small", "full"), default="small",
                        help="small answer tables (default) or copies of the real VQA/GQA ones")
    parser.add_argument("--small-model", action="store_true",
                        help="also write bert_config.json and model_LXRT.pth for a small "
                             "LXMERT-S (needs the lxrt package; use a small --dim for speed)")
    args = parser.parse_args(argv)
    start = time.time()
    try:
        summary = make_data(args.out_root, images=args.images, dim=args.dim, seed=args.seed,
                            small_model=args.small_model, answers=args.answers)
    except ValueError as err:
        parser.error(str(err))
    for key, value in summary.items():
        print(f"{key}: {value}")
    print(f"wrote {args.out_root} in {time.time() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
