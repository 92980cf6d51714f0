"""Convert the easy-VQA dataset (PyPI package ``easy_vqa``) to the LXMERT VQA data layout.

    python -m tools.easyvqa [--data-root data] [--grid 6] [--dim 2048] [--force]
                            [--limit-images N] [--valid-fraction 0.1]

Writes, under the data root:

* ``easyvqa/{train,valid,test}.json``: lists of VQA datums (docs/authors_code.md, "VQA")
  ``{"answer_type", "img_id", "label": {answer: 1.0}, "question_id", "question_type", "sent"}``.
  ``img_id`` is ``easyvqa_train_<id>`` / ``easyvqa_test_<id>``; ``answer_type`` is ``"yes/no"``
  or ``"other"``; ``question_type`` is the question's leading words before the first colour or
  shape word (at most 4 words, e.g. ``"what color is the"``, ``"is there not a"``);
  ``question_id`` is the index in the package's train list, or 1,000,000 + the index in its test
  list (unique across splits).  ``valid`` holds the questions of a fixed-seed 10% of the train
  *images* (no image is shared with ``train``); ``test`` keeps its labels.
* ``easyvqa/trainval_ans2label.json`` (dict) and ``trainval_label2ans.json`` (list): the 13
  answers in ``easy_vqa.get_answers()`` order.
* ``easyvqa_imgfeat/train_obj36.tsv`` (train + valid images) and ``test_obj36.tsv``: grid
  region features from :mod:`tools.extract_features` (the TSV name keeps ``obj36`` whatever the
  grid), each with its ``*.extractor.npz`` record (settings and the standardisation fitted on
  the train images) from which ``tools.predict --image`` describes new images the same way.
* with ``--pretraining``: ``lxmert/easyvqa_{train,minival}.json``, a pre-training corpus in
  LXMERT's format (``{"img_id", "sentf": {"easyvqa_caption": [...], "easyvqa": [...]},
  "labelf": {"easyvqa": [{answer: 1.0}, ...]}}``) built from the *train* split only: a few
  short captions composed from each image's shape and colour (read off its answered
  questions) and its questions as a QA source. ``valid`` and ``test`` images never enter it;
  a fixed 5% of the train images form ``easyvqa_minival`` (the validation loss). Also
  ``easyvqa/train_<P>pct.json`` for each ``--few-label-percents`` P (default 1, 5, 10): the
  questions of P% of the train images, for fine-tuning on few labels after pre-training. The
  images come from one fixed shuffle of the train images, so the 1% set lies inside the 5%
  set, and so on.
* ``easyvqa/done.json``: a marker with the settings, counts and file sizes, written last.  When it
  matches the requested settings and every file is present with its recorded size, the command
  does nothing (``--force`` converts again).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

from tools.extract_features import extract_to_tsv, fit_standardizer, sidecar_path

MARKER_VERSION = 3  # 2: standardised features; 3: extractor records next to the TSVs
SPLIT_SEED = 9595
TEST_QID_OFFSET = 1_000_000
YES_NO = {"yes", "no"}


def _easy_vqa():
    try:
        import easy_vqa
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RuntimeError("tools.easyvqa needs the PyPI package easy-vqa "
                           "(pip install easy-vqa)") from e
    return easy_vqa


def question_type(sent: str, stop_words: set[str], max_words: int = 4) -> str:
    words = sent.lower().rstrip("?").split()
    out = []
    for w in words:
        if w in stop_words or len(out) == max_words:
            break
        out.append(w)
    return " ".join(out) if out else (words[0] if words else "")


def answer_type(answer: str) -> str:
    return "yes/no" if answer in YES_NO else "other"


def img_id(split: str, image_id) -> str:
    return f"easyvqa_{split}_{image_id}"


def split_train_images(image_ids, valid_fraction: float = 0.1,
                       seed: int = SPLIT_SEED) -> tuple[list, list]:
    """Deterministic split of train image ids into (train, valid), both sorted."""
    ids = sorted(set(image_ids))
    n_valid = 0
    if len(ids) >= 2 and valid_fraction > 0:
        n_valid = min(len(ids) - 1, max(1, round(valid_fraction * len(ids))))
    shuffled = list(ids)
    random.Random(seed).shuffle(shuffled)
    valid = set(shuffled[:n_valid])
    return [i for i in ids if i not in valid], [i for i in ids if i in valid]


def _datums(split: str, questions, answers, image_ids, keep: set, stop_words: set,
            qid_offset: int) -> list[dict]:
    out = []
    for k, (q, a, i) in enumerate(zip(questions, answers, image_ids)):
        if i not in keep:
            continue
        out.append({"answer_type": answer_type(a), "img_id": img_id(split, i),
                    "label": {a: 1.0}, "question_id": qid_offset + k,
                    "question_type": question_type(q, stop_words), "sent": q})
    return out


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def _paths(data_root: Path) -> dict[str, Path]:
    qa, feat = data_root / "easyvqa", data_root / "easyvqa_imgfeat"
    return {
        "train": qa / "train.json", "valid": qa / "valid.json", "test": qa / "test.json",
        "ans2label": qa / "trainval_ans2label.json", "label2ans": qa / "trainval_label2ans.json",
        "train_tsv": feat / "train_obj36.tsv", "test_tsv": feat / "test_obj36.tsv",
        "train_extractor": sidecar_path(feat / "train_obj36.tsv"),
        "test_extractor": sidecar_path(feat / "test_obj36.tsv"),
        "marker": qa / "done.json",
    }


def _settings(grid, dim, projection, limit_images, valid_fraction) -> dict:
    return {"version": MARKER_VERSION, "grid": grid, "dim": dim, "projection": projection,
            "limit_images": limit_images, "valid_fraction": valid_fraction,
            "seed": SPLIT_SEED}


def is_complete(data_root="data", grid: int = 6, dim: int = 2048, projection: str = "auto",
                limit_images: int | None = None, valid_fraction: float = 0.1) -> dict | None:
    """The marker's contents when the outputs exist, are complete and match the settings."""
    data_root = Path(data_root)
    paths = _paths(data_root)
    try:
        marker = json.loads(paths["marker"].read_text())
    except (OSError, ValueError):
        return None
    if marker.get("settings") != _settings(grid, dim, projection, limit_images, valid_fraction):
        return None
    for rel, size in marker.get("files", {}).items():
        p = data_root / rel
        if not p.is_file() or p.stat().st_size != size:
            return None
    if set(marker.get("files", {})) != {str(p.relative_to(data_root)) for k, p in paths.items()
                                        if k != "marker"}:
        return None
    return marker


def convert(data_root="data", grid: int = 6, dim: int = 2048, force: bool = False,
            limit_images: int | None = None, valid_fraction: float = 0.1,
            projection: str = "auto", verbose: bool = True) -> dict:
    """Convert (unless already complete) and return the marker dict (settings, counts, files)."""
    data_root = Path(data_root)
    log = print if verbose else (lambda *a, **k: None)
    if not force:
        marker = is_complete(data_root, grid, dim, projection, limit_images, valid_fraction)
        if marker is not None:
            log(f"easy-VQA already converted under {data_root} (use --force to redo): "
                f"{marker['counts']}")
            return marker
    t0 = time.time()
    ev = _easy_vqa()
    paths = _paths(data_root)
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    if paths["marker"].exists():
        paths["marker"].unlink()

    answers = list(ev.get_answers())
    stop_words = set(answers) - YES_NO     # question_type stops at colour/shape words
    tr_q, tr_a, tr_i = ev.get_train_questions()
    te_q, te_a, te_i = ev.get_test_questions()
    tr_paths, te_paths = ev.get_train_image_paths(), ev.get_test_image_paths()

    tr_images = sorted(set(tr_i) & set(tr_paths))
    te_images = sorted(set(te_i) & set(te_paths))
    if limit_images is not None:
        tr_images, te_images = tr_images[:limit_images], te_images[:limit_images]
    train_ids, valid_ids = split_train_images(tr_images, valid_fraction)

    splits = {
        "train": _datums("train", tr_q, tr_a, tr_i, set(train_ids), stop_words, 0),
        "valid": _datums("train", tr_q, tr_a, tr_i, set(valid_ids), stop_words, 0),
        "test": _datums("test", te_q, te_a, te_i, set(te_images), stop_words, TEST_QID_OFFSET),
    }
    if len(tr_q) >= TEST_QID_OFFSET:
        raise RuntimeError("question ids would collide: too many train questions")
    unknown = {a for d in splits.values() for x in d for a in x["label"]} - set(answers)
    if unknown:
        raise RuntimeError(f"answers missing from easy_vqa.get_answers(): {sorted(unknown)}")

    log(f"extracting features: {len(tr_images)} train+valid images, {len(te_images)} test "
        f"images (grid {grid}, dim {dim})")
    # one standardisation for every split, fitted on training images only
    scale = fit_standardizer([tr_paths[i] for i in train_ids], grid)
    st_tr = extract_to_tsv({img_id("train", i): tr_paths[i] for i in tr_images},
                           paths["train_tsv"], grid, dim, projection=projection,
                           standardize=scale, bad_images="stop")  # every question needs its image
    st_te = extract_to_tsv({img_id("test", i): te_paths[i] for i in te_images},
                           paths["test_tsv"], grid, dim, projection=projection,
                           standardize=scale, bad_images="stop")

    for name, data in splits.items():
        _write_json(paths[name], data)
    _write_json(paths["ans2label"], {a: k for k, a in enumerate(answers)})
    _write_json(paths["label2ans"], answers)

    counts = {
        "train_questions": len(splits["train"]), "valid_questions": len(splits["valid"]),
        "test_questions": len(splits["test"]), "train_images": len(train_ids),
        "valid_images": len(valid_ids), "test_images": len(te_images),
        "answers": len(answers),
    }
    marker = {
        "settings": _settings(grid, dim, projection, limit_images, valid_fraction),
        "counts": counts,
        "feature_seconds": round(st_tr["seconds"] + st_te["seconds"], 2),
        "raw_feature_dim": st_tr["raw_dim"],
        "files": {str(p.relative_to(data_root)): p.stat().st_size
                  for k, p in paths.items() if k != "marker"},
    }
    _write_json(paths["marker"], marker)
    log(f"easy-VQA converted under {data_root} in {time.time() - t0:.1f}s "
        f"(features {marker['feature_seconds']:.1f}s): {counts}")
    return marker


SHAPES = ("circle", "rectangle", "triangle")
# Captions name both facts, or one of them: easy-VQA's yes/no questions ask about one ("Is
# there a red shape?", "Is a circle present?"), so ITM on captions that name only the colour
# or only the shape teaches the partial match those questions need.
CAPTION_TEMPLATES = ("A {colour} {shape}.", "There is a {colour} {shape} in the image.",
                     "The image shows one {colour} {shape} on a plain background.")
COLOUR_TEMPLATES = ("A {colour} shape.", "There is a {colour} shape in the image.")
SHAPE_TEMPLATES = ("A {shape}.", "There is a {shape} in the image.")
PRETRAIN_MINIVAL_FRACTION = 0.05


def best_answer(label: dict):
    """The highest-scored answer of a datum's label dict (None when it is empty)."""
    return max(label, key=label.get) if label else None


def image_facts(datums: list[dict]) -> dict[str, dict]:
    """img_id -> {"shape", "colour"} from the answers of its open (non yes/no) questions."""
    facts: dict[str, dict] = {}
    for d in datums:
        answer = best_answer(d["label"])
        if answer is None or answer in YES_NO:
            continue
        key = "shape" if answer in SHAPES else "colour"
        facts.setdefault(d["img_id"], {})[key] = answer
    return facts


def captions(fact: dict) -> list[str]:
    """The captions of one image: each template whose facts are known."""
    colour, shape = fact.get("colour"), fact.get("shape")
    out = []
    if colour and shape:
        out += [t.format(colour=colour, shape=shape) for t in CAPTION_TEMPLATES]
    if colour:
        out += [t.format(colour=colour) for t in COLOUR_TEMPLATES]
    if shape:
        out += [t.format(shape=shape) for t in SHAPE_TEMPLATES]
    return out


def pretraining_records(train: list[dict]) -> list[dict]:
    """LXMERT pre-training records, one per image of the (train-split) datums given."""
    facts = image_facts(train)
    by_image: dict[str, list[dict]] = {}
    for d in train:
        by_image.setdefault(d["img_id"], []).append(d)
    return [{"img_id": img,
             "sentf": {"easyvqa_caption": captions(facts.get(img, {})),
                       "easyvqa": [d["sent"] for d in ds]},
             "labelf": {"easyvqa": [dict(d["label"]) for d in ds]}}
            for img, ds in sorted(by_image.items())]


def few_label_images(image_ids, percent: float, seed: int = SPLIT_SEED) -> set:
    """The first `percent`% (at least one) of the image ids in one fixed shuffle: the sets
    of smaller percentages lie inside those of larger ones."""
    order = sorted(set(image_ids))
    random.Random(seed).shuffle(order)
    return set(order[:max(1, round(len(order) * percent / 100))])


def write_pretraining_corpus(data_root="data", verbose: bool = True,
                             few_label_percents=(1, 5, 10)) -> dict:
    """lxmert/easyvqa_{train,minival}.json from easyvqa/train.json (never valid or test), and
    easyvqa/train_<P>pct.json with the questions of P% of the train images."""
    data_root = Path(data_root)
    train = json.loads(_paths(data_root)["train"].read_text())
    counts = {}
    for percent in few_label_percents:
        chosen = few_label_images([d["img_id"] for d in train], percent)
        _write_json(data_root / "easyvqa" / f"train_{percent:g}pct.json",
                    [d for d in train if d["img_id"] in chosen])
        counts[f"train_{percent:g}pct_images"] = len(chosen)
    records = pretraining_records(train)
    held_out = set(split_train_images([r["img_id"] for r in records],
                                      PRETRAIN_MINIVAL_FRACTION)[1])
    out = data_root / "lxmert"
    out.mkdir(parents=True, exist_ok=True)
    parts = {"easyvqa_train": [r for r in records if r["img_id"] not in held_out],
             "easyvqa_minival": [r for r in records if r["img_id"] in held_out]}
    for name, part in parts.items():
        _write_json(out / f"{name}.json", part)
    counts.update({name: len(part) for name, part in parts.items()})
    if verbose:
        print(f"easy-VQA pre-training corpus under {out}: {counts} images (train split only)")
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.easyvqa",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--grid", type=int, default=6)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--projection", choices=["auto", "pad", "random"], default="auto")
    ap.add_argument("--valid-fraction", type=float, default=0.1,
                    help="fraction of train images held out as the valid split")
    ap.add_argument("--limit-images", type=int, default=None,
                    help="use only the first N images (by id) of each package split (tests)")
    ap.add_argument("--force", action="store_true", help="convert even if outputs are complete")
    ap.add_argument("--pretraining", action="store_true",
                    help="also write the pre-training corpus lxmert/easyvqa_{train,minival}.json "
                         "(train images only)")
    ap.add_argument("--few-label-percents", default="1,5,10",
                    help="with --pretraining: comma-separated percentages P of the train "
                         "images whose questions form easyvqa/train_<P>pct.json")
    args = ap.parse_args(argv)
    convert(args.data_root, args.grid, args.dim, args.force, args.limit_images,
            args.valid_fraction, args.projection)
    if args.pretraining:
        percents = [float(p) for p in args.few_label_percents.split(",") if p.strip()]
        if not percents or not all(0 < p <= 100 for p in percents):
            ap.error(f"--few-label-percents {args.few_label_percents}: expected "
                     f"comma-separated percentages in (0, 100]")
        write_pretraining_corpus(args.data_root, few_label_percents=percents)
    return 0


if __name__ == "__main__":
    sys.exit(main())
