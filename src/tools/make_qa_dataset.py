"""Your own question/answer data set in the VQA layout, in one command.

    python -m tools.make_qa_dataset IMAGES QUESTIONS.csv|.jsonl --dataRoot ROOT
        [--split-ratio 0.8,0.1,0.1] [--seed 9595] [--max-answers 3129] [--min-answer-count 1]
        [--answer-splits train] [--duplicates keep-first|error]
        [--detector grid|butd] [--weights FILE] [--grid 6] [--dim 2048] [--force]

IMAGES is a folder; QUESTIONS names an image (relative to it), a question and one or several
answers per row, optionally a split and a question id (`tools.qa_rows` has the columns).
Writes, under ROOT:

* ``vqa/<split>.json``: LXMERT's VQA question files, ``{"answer_type", "img_id", "label":
  {answer: soft score}, "question_id", "sent"}``, answers normalised and scored as VQA does
  (`tools.vqa_answers`); ``label`` keeps the answers of the answer table only, as LXMERT's.
* ``vqa/trainval_ans2label.json`` and ``trainval_label2ans.json``: the answer table, the top
  answers of the ``--answer-splits`` questions (each question's most given answer counted
  once, as VQA's table), at most ``--max-answers``; the rest are dropped and counted.
* ``vqa_imgfeat/images.tsv``: the images' region features in LXMERT's TSV format, one file for
  every split, with its ``images.extractor.npz`` record (for ``tools.predict --image``):
  grid features by default (standardised on the answer-split images), or a detector through
  ``tools.extract_features --detector NAME --weights FILE``.
* ``vqa/dataset.json``, written last: the splits, their feature file, the counts and the
  settings. With it, ``--dataRoot ROOT`` makes the VQA task read these splits and features
  (``bash run/vqa_finetune.bash GPU NAME --dataRoot ROOT --train train --valid valid``).

Without a split column, images (not questions, so no image is in two splits) are dealt to
train/valid[/test] by ``--split-ratio`` in a fixed-seed shuffle. A question asked twice about
one image (same text up to case and spaces) keeps its first row; the others are dropped and
counted (``--duplicates error`` refuses them). Features are reused when the images and the
extractor settings are unchanged (``--force`` extracts again).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shlex
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tasks.vqa.entry import QA_DATASET_MANIFEST as MANIFEST  # ROOT/vqa/dataset.json
from tools import extract_features
from tools.image_files import BadImageError
from tools.qa_rows import QAFileError, Row, read_rows
from tools.vqa_answers import (answer_table, answer_type, normalize_answer, soft_scores,
                               top_answer)

MADE_BY = "tools.make_qa_dataset"
FEATURES = "vqa_imgfeat/images.tsv"
SPLIT_NAMES = ("train", "valid", "test")
SPLIT_SEED = 9595
VERSION = 1
RESERVED_SPLITS = {"dataset", "trainval_ans2label", "trainval_label2ans"}
SHOWN = 10                         # examples listed in an error or a summary


# ---------------------------------------------------------------------------------- images
def image_id(value: str) -> str:
    """img_id of an image path relative to the image folder: the path without its extension,
    '/' written '__' ("cats/01.jpg" -> "cats__01")."""
    path = PurePosixPath(value)
    return "__".join(path.parent.parts + (path.stem,))


def resolve_images(rows: list[Row], image_dir: Path, qa_path: Path) -> tuple[list[str], dict]:
    """(img_id of each row, {img_id: image file}). Missing, unreadable and ambiguous images
    are errors naming the file's lines."""
    from PIL import Image, UnidentifiedImageError

    if not image_dir.is_dir():
        raise QAFileError(f"{image_dir}: not a folder (the images the questions name)")
    ids, files, first_line, missing = [], {}, {}, []
    for row in rows:
        value = row.image.replace("\\", "/")
        path = PurePosixPath(value)
        if path.is_absolute() or ".." in path.parts or "\t" in value or "\n" in value:
            raise QAFileError(f"{qa_path}: line {row.line}: image {row.image!r} must be a path "
                              f"inside {image_dir}, relative to it")
        img_id = image_id(value)
        file = image_dir / path
        if img_id in files and files[img_id] != file:
            raise QAFileError(f"{qa_path}: lines {first_line[img_id]} and {row.line}: images "
                              f"{files[img_id].name!r} and {path.name!r} would share the "
                              f"img_id {img_id!r}; rename one")
        ids.append(img_id)
        if img_id in files:
            continue
        files[img_id], first_line[img_id] = file, row.line
        if not file.is_file():
            missing.append(f"line {row.line}: {value}")
    if missing:
        raise QAFileError(f"{qa_path}: {len(missing)} image(s) not found under {image_dir}: "
                          + "; ".join(missing[:SHOWN]) + (" ..." if len(missing) > SHOWN else ""))
    for img_id, file in files.items():
        try:
            with Image.open(file) as im:
                im.size  # the header only: cheap, and enough to refuse non-images
        except (UnidentifiedImageError, OSError) as err:
            raise QAFileError(f"{qa_path}: line {first_line[img_id]}: {file} is not a readable "
                              f"image ({err})") from None
    return ids, files


# ---------------------------------------------------------------------------------- splits
def parse_ratio(text: str) -> list[float]:
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        parts = []
    if not 2 <= len(parts) <= 3 or any(not p >= 0 for p in parts) or parts[0] <= 0 \
            or abs(sum(parts) - 1) > 1e-6:
        raise QAFileError(f"--split-ratio {text!r}: expected 2 or 3 fractions for "
                          f"{'/'.join(SPLIT_NAMES)} that sum to 1, e.g. 0.8,0.1,0.1")
    return parts


def split_images(img_ids, ratio: list[float], seed: int = SPLIT_SEED) -> dict[str, str]:
    """{img_id: split}: the images in one fixed-seed shuffle, dealt by `ratio` to train,
    valid[, test]; every split with a positive share gets at least one image."""
    order = sorted(set(img_ids))
    random.Random(seed).shuffle(order)
    sizes = [max(1, round(f * len(order))) if f > 0 else 0 for f in ratio[1:]]
    if len(order) - sum(sizes) < 1:
        raise QAFileError(f"{len(order)} image(s) are too few to split by {ratio} with images "
                          f"in every split; lower the shares or give a split column")
    out, start = {}, len(order) - sum(sizes)
    out.update({i: SPLIT_NAMES[0] for i in order[:start]})
    for name, size in zip(SPLIT_NAMES[1:], sizes):
        out.update({i: name for i in order[start:start + size]})
        start += size
    return out


def row_splits(rows: list[Row], img_ids: list[str], ratio: str | None, seed: int,
               qa_path: Path) -> list[str]:
    given = [r.split for r in rows]
    if all(s is None for s in given):
        try:
            by_image = split_images(img_ids, parse_ratio(ratio or "0.8,0.1,0.1"), seed)
        except QAFileError as err:
            raise QAFileError(f"{qa_path}: {err}") from None
        return [by_image[i] for i in img_ids]
    if ratio is not None:
        raise QAFileError(f"{qa_path}: the file has a split column; --split-ratio applies "
                          f"only to files without one")
    for row in rows:
        if not row.split:
            raise QAFileError(f"{qa_path}: line {row.line}: no split, while other rows have "
                              f"one; give every row a split or none")
        if row.split in RESERVED_SPLITS or row.split.startswith("trainval_"):
            raise QAFileError(f"{qa_path}: line {row.line}: split name {row.split!r} is "
                              f"reserved for the data set's own files; rename it")
    return [r.split for r in rows]


# ---------------------------------------------------------------------------------- rows
def question_key(img_id: str, question: str) -> tuple[str, str]:
    """Two rows ask the same question when image and text agree up to case and spaces."""
    return img_id, " ".join(question.split()).casefold()


def drop_duplicates(rows: list[Row], img_ids: list[str], mode: str,
                    qa_path: Path) -> tuple[list[int], list[str]]:
    """(indices of the rows kept, "line X repeats line Y" for each row dropped)."""
    first: dict[tuple, int] = {}
    kept, dropped = [], []
    for i, (row, img_id) in enumerate(zip(rows, img_ids)):
        key = question_key(img_id, row.question)
        if key in first:
            dropped.append(f"line {row.line} repeats line {rows[first[key]].line}")
            continue
        first[key] = i
        kept.append(i)
    if dropped and mode == "error":
        raise QAFileError(f"{qa_path}: {len(dropped)} duplicate question(s) (same image and "
                          f"question): " + "; ".join(dropped[:SHOWN]))
    return kept, dropped


def question_ids(rows: list[Row], qa_path: Path) -> list[int]:
    """The file's ids (unique) or, without them, each row's position in the file."""
    if rows[0].question_id is None:
        return list(range(len(rows)))
    seen: dict[int, int] = {}
    for row in rows:
        if row.question_id in seen:
            raise QAFileError(f"{qa_path}: lines {seen[row.question_id]} and {row.line} have "
                              f"the same question_id {row.question_id}")
        seen[row.question_id] = row.line
    return [r.question_id for r in rows]


def normalized_answers(row: Row, qa_path: Path) -> list[str]:
    out = []
    for raw in row.answers:
        answer = normalize_answer(raw)
        if not answer:
            raise QAFileError(f"{qa_path}: line {row.line}: answer {raw!r} is empty after VQA's "
                              f"answer normalisation (articles and punctuation are dropped)")
        out.append(answer)
    return out


# ---------------------------------------------------------------------------------- building
def build_questions(rows, img_ids, splits, qids, answers, table_splits, max_answers,
                    min_count, qa_path) -> tuple[dict, list[str], dict]:
    """({split: [datum]}, label2ans, answer statistics)."""
    present = sorted(set(splits))
    missing = [s for s in table_splits if s not in present]
    if missing:
        raise QAFileError(f"{qa_path}: --answer-splits names {missing}, but the file's splits "
                          f"are {present}")
    tops = [top_answer(a) for a in answers]
    label2ans, counts = answer_table((t for t, s in zip(tops, splits) if s in table_splits),
                                     max_answers, min_count)
    if not label2ans:
        raise QAFileError(f"{qa_path}: no answer is the top answer of {min_count}+ questions "
                          f"of {table_splits}: the answer table would be empty")
    table = set(label2ans)
    data: dict[str, list] = {s: [] for s in present}
    dropped_labels, unanswerable = 0, Counter()
    for row, img_id, split, qid, given, top in zip(rows, img_ids, splits, qids, answers, tops):
        scores = soft_scores(given)
        label = {a: s for a, s in scores.items() if a in table}
        dropped_labels += len(scores) - len(label)
        unanswerable[split] += not label
        data[split].append({"answer_type": answer_type(top), "img_id": img_id, "label": label,
                            "question_id": qid, "sent": row.question})
    stats = {"answers": len(label2ans), "top_answers": len(counts),
             "dropped_answers": len(counts) - len(label2ans),
             "dropped_labels": dropped_labels,
             "questions_without_table_answer": {s: unanswerable[s] for s in present}}
    return data, label2ans, stats


# ---------------------------------------------------------------------------------- features
def extractor_settings(detector: str, weights: str | None, extract_args: str, grid: int,
                       dim: int) -> dict:
    if detector == "grid":
        return {"detector": "grid", "grid": grid, "dim": dim}
    return {"detector": detector, "weights": str(Path(weights).resolve()) if weights else "",
            "extract_args": shlex.split(extract_args or "")}


def fingerprint(settings: dict, files: dict, fit_ids: list[str]) -> str:
    """What the features depend on: the extractor, every image file (path, size, mtime) and,
    for grid features, the images the standardisation is fitted on."""
    images = [[i, str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns]
              for i, f in sorted(files.items())]
    blob = json.dumps({"settings": settings, "images": images, "fit": sorted(fit_ids)})
    return hashlib.sha1(blob.encode()).hexdigest()


def extract(files: dict, out_tsv: Path, settings: dict, fit_ids: list[str],
            verbose: bool) -> None:
    """Write the features of `files` ({img_id: image}) to `out_tsv` with its extractor record."""
    if settings["detector"] == "grid":
        scale = extract_features.fit_standardizer([str(files[i]) for i in sorted(fit_ids)],
                                                  settings["grid"])
        extract_features.extract_to_tsv({i: str(f) for i, f in files.items()}, out_tsv,
                                        settings["grid"], settings["dim"], standardize=scale,
                                        progress=verbose, bad_images="stop")
        return
    # a detector: through the extractor's command line, on a folder whose file names are the
    # img_ids (links to the images), so the TSV's ids are ours
    with tempfile.TemporaryDirectory(prefix=".images.", dir=out_tsv.parent) as stage:
        for img_id, file in files.items():
            suffix = file.suffix.lower()
            if suffix not in extract_features.IMAGE_EXTENSIONS:
                suffix = ".png"  # the decoder reads the content, not the name
            os.symlink(file.resolve(), Path(stage) / f"{img_id}{suffix}")
        argv = [stage, str(out_tsv), "--detector", settings["detector"]]
        if settings["weights"]:
            argv += ["--weights", settings["weights"]]
        argv += settings["extract_args"]
        try:
            status = extract_features.main(argv)
        except SystemExit as stop:
            status = stop.code
        if status not in (0, None):
            raise RuntimeError(f"python -m tools.extract_features {shlex.join(argv[1:])} "
                               f"failed (status {status}; its message is above)")
    found = tsv_img_ids(out_tsv)
    if set(found) != set(files):
        lost = sorted(set(files) - set(found))
        raise RuntimeError(f"{out_tsv}: the extractor wrote {len(found)} images, "
                           f"{len(lost)} missing (e.g. {lost[:3]})")


def tsv_img_ids(path: Path) -> list[str]:
    with open(path, "rb") as f:
        return [line.split(b"\t", 1)[0].decode("utf-8") for line in f if line.strip()]


# ---------------------------------------------------------------------------------- writing
def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False)
    os.replace(tmp, path)


def previous_manifest(root: Path) -> dict | None:
    """The manifest of an earlier conversion into `root`; refuses a root whose vqa/ holds
    files this command did not write (LXMERT's VQA files, say)."""
    qa = root / "vqa"
    path = qa / MANIFEST
    if path.is_file():
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            manifest = None
        if isinstance(manifest, dict) and manifest.get("made_by") == MADE_BY:
            return manifest
    if qa.is_dir() and any(qa.glob("*.json")):
        raise QAFileError(f"{qa} holds question files that tools.make_qa_dataset did not "
                          f"write; choose another --dataRoot (an empty or new folder)")
    return None


@dataclass
class Questions:
    """The checked rows of a question file that are kept, each with its image and split."""
    rows: list[Row]
    img_ids: list[str]
    splits: list[str]
    question_ids: list[int]
    answers: list[list[str]]     # normalised
    files: dict                  # img_id -> image file, of the rows kept
    duplicates: list[str]        # "line X repeats line Y" of each row dropped


def read_questions(image_dir: Path, qa_path: Path, fmt: str, answer_separator: str,
                   split_ratio: str | None, seed: int, duplicates: str) -> Questions:
    rows = read_rows(qa_path, fmt, answer_separator)
    img_ids, files = resolve_images(rows, image_dir, qa_path)
    qids = question_ids(rows, qa_path)
    answers = [normalized_answers(r, qa_path) for r in rows]
    splits = row_splits(rows, img_ids, split_ratio, seed, qa_path)
    kept, dropped = drop_duplicates(rows, img_ids, duplicates, qa_path)
    pick = lambda seq: [seq[i] for i in kept]  # noqa: E731
    img_ids = pick(img_ids)
    return Questions(pick(rows), img_ids, pick(splits), pick(qids), pick(answers),
                     {i: files[i] for i in sorted(set(img_ids))}, dropped)


def features_up_to_date(previous: dict | None, out_tsv: Path, key: str) -> bool:
    old = (previous or {}).get("features", {})
    return (old.get("fingerprint") == key and out_tsv.is_file()
            and out_tsv.stat().st_size == old.get("size")
            and extract_features.sidecar_path(out_tsv).is_file())


def write_questions(qa_dir: Path, previous: dict | None, data: dict, label2ans: list) -> None:
    """The question files and the answer table. The manifest is marked incomplete first: a
    root caught half-written is refused by the VQA task and converted again by this command."""
    qa_dir.mkdir(parents=True, exist_ok=True)
    _write_json(qa_dir / MANIFEST, {"made_by": MADE_BY, "complete": False,
                                    "splits": (previous or {}).get("splits", {})})
    for split in set((previous or {}).get("splits", {})) - set(data):
        (qa_dir / f"{split}.json").unlink(missing_ok=True)
    for split, datums in data.items():
        _write_json(qa_dir / f"{split}.json", datums)
    _write_json(qa_dir / "trainval_ans2label.json", {a: i for i, a in enumerate(label2ans)})
    _write_json(qa_dir / "trainval_label2ans.json", label2ans)


def convert(image_dir, qa_file, data_root, *, split_ratio: str | None = None,
            seed: int = SPLIT_SEED, max_answers: int = 3129, min_answer_count: int = 1,
            answer_splits: str = "train", duplicates: str = "keep-first",
            detector: str = "grid", weights: str | None = None, extract_args: str = "",
            grid: int = 6, dim: int = 2048, fmt: str = "auto", answer_separator: str = "|",
            force: bool = False, verbose: bool = True) -> dict:
    """Convert and return the manifest (also written to ROOT/vqa/dataset.json)."""
    log = print if verbose else (lambda *a, **k: None)
    image_dir, qa_path, root = Path(image_dir), Path(qa_file), Path(data_root)
    settings = extractor_settings(detector, weights, extract_args, grid, dim)
    if detector != "grid" and weights and not Path(weights).is_file():
        raise QAFileError(f"--weights {weights}: no such file")
    previous = previous_manifest(root)
    q = read_questions(image_dir, qa_path, fmt, answer_separator, split_ratio, seed,
                       duplicates)
    table_splits = [s for s in answer_splits.split(",") if s]
    data, label2ans, answer_stats = build_questions(
        q.rows, q.img_ids, q.splits, q.question_ids, q.answers, table_splits, max_answers,
        min_answer_count, qa_path)

    # features first (the long part): nothing else is written if they fail
    out_tsv = root / FEATURES
    out_tsv.parent.mkdir(parents=True, exist_ok=True)
    fit_ids = sorted({i for i, s in zip(q.img_ids, q.splits) if s in table_splits})
    key = fingerprint(settings, q.files, fit_ids if detector == "grid" else [])
    if not force and features_up_to_date(previous, out_tsv, key):
        log(f"features of {len(q.files)} images up to date in {out_tsv} (--force extracts "
            f"again)")
    else:
        log(f"extracting {detector} features of {len(q.files)} images -> {out_tsv}")
        try:
            extract(q.files, out_tsv, settings, fit_ids, verbose)
        except BadImageError as err:  # its header read, its pixels did not: name the row
            line = next((q.rows[k].line for k, i in enumerate(q.img_ids)
                         if str(err).startswith(str(q.files[i]))), None)
            where = f"line {line}: " if line else ""
            raise QAFileError(f"{qa_path}: {where}{err}") from None

    write_questions(root / "vqa", previous, data, label2ans)
    images_per_split = Counter(split for _, split in set(zip(q.img_ids, q.splits)))
    manifest = {
        "made_by": MADE_BY, "version": VERSION, "complete": True,
        "source": {"questions": str(qa_path.resolve()), "images": str(image_dir.resolve())},
        "splits": {s: {"questions": len(d), "images": images_per_split[s],
                       "features": FEATURES} for s, d in data.items()},
        "answers": {**answer_stats, "answer_splits": table_splits},
        "duplicates_dropped": len(q.duplicates), "duplicate_examples": q.duplicates[:SHOWN],
        "images": len(q.files),
        "features": {"file": FEATURES, "extractor": settings, "fingerprint": key,
                     "size": out_tsv.stat().st_size},
        "settings": {"split_ratio": split_ratio, "seed": seed, "max_answers": max_answers,
                     "min_answer_count": min_answer_count, "duplicates": duplicates},
    }
    _write_json(root / "vqa" / MANIFEST, manifest)
    log(summary(manifest, root))
    return manifest


def summary(manifest: dict, root: Path) -> str:
    splits = ", ".join(f"{s} {v['questions']} questions / {v['images']} images"
                       for s, v in manifest["splits"].items())
    a = manifest["answers"]
    lines = [f"wrote {root}/vqa: {splits}",
             f"answer table: {a['answers']} answers (top answers of {'+'.join(a['answer_splits'])}"
             f"); {a['dropped_answers']} rarer answers dropped, {a['dropped_labels']} answer "
             f"labels left out; questions with no answer in the table: "
             f"{a['questions_without_table_answer']}"]
    if manifest["duplicates_dropped"]:
        lines.append(f"{manifest['duplicates_dropped']} duplicate questions dropped (the first "
                     f"row kept): {'; '.join(manifest['duplicate_examples'])}")
    names = list(manifest["splits"])
    train = "train" if "train" in names else names[0]
    valid = next((s for s in ("valid", "minival") if s in names), "")
    lines.append(f"train: bash run/vqa_finetune.bash GPU_ID|cpu NAME --dataRoot {root} "
                 f"--train {train} --valid {valid or chr(39) * 2}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.make_qa_dataset",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("images", help="folder of the images the questions name")
    ap.add_argument("questions", help="CSV or JSONL of image, question, answer(s)[, split]")
    ap.add_argument("--dataRoot", "--data-root", dest="data_root", required=True,
                    help="where the VQA layout is written (a new or earlier-converted folder)")
    ap.add_argument("--format", choices=["auto", "csv", "jsonl"], default="auto")
    ap.add_argument("--answer-separator", default="|",
                    help="separates several answers in a CSV 'answers' column (default '|')")
    ap.add_argument("--split-ratio", default=None,
                    help="without a split column: train,valid[,test] shares of the images "
                         "(default 0.8,0.1,0.1)")
    ap.add_argument("--seed", type=int, default=SPLIT_SEED, help="seed of the image split")
    ap.add_argument("--max-answers", type=int, default=3129,
                    help="answer table size (VQA's: 3129)")
    ap.add_argument("--min-answer-count", type=int, default=1,
                    help="keep answers that are the top answer of at least this many questions")
    ap.add_argument("--answer-splits", default="train",
                    help="comma-separated splits whose answers make the answer table")
    ap.add_argument("--duplicates", choices=["keep-first", "error"], default="keep-first",
                    help="a question asked twice about one image: keep the first row and "
                         "count the others (default), or stop")
    ap.add_argument("--detector", default="grid",
                    help="grid (default, no weights) or a detector of tools.extract_features "
                         "(butd, with --weights)")
    ap.add_argument("--weights", default=None, help="the detector's weights file")
    ap.add_argument("--extract-args", default="",
                    help="more flags for tools.extract_features with a detector, e.g. "
                         "'--device cuda'")
    ap.add_argument("--grid", type=int, default=6, help="grid features: grid x grid regions")
    ap.add_argument("--dim", type=int, default=2048, help="grid features: feature size")
    ap.add_argument("--force", action="store_true", help="extract the features again")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    for flag, value, low in (("--max-answers", args.max_answers, 1),
                             ("--min-answer-count", args.min_answer_count, 1),
                             ("--grid", args.grid, 1), ("--dim", args.dim, 1)):
        if value < low:
            ap.error(f"{flag} {value}: expected at least {low}")
    try:
        convert(args.images, args.questions, args.data_root, split_ratio=args.split_ratio,
                seed=args.seed, max_answers=args.max_answers,
                min_answer_count=args.min_answer_count, answer_splits=args.answer_splits,
                duplicates=args.duplicates, detector=args.detector, weights=args.weights,
                extract_args=args.extract_args, grid=args.grid, dim=args.dim, fmt=args.format,
                answer_separator=args.answer_separator, force=args.force,
                verbose=not args.quiet)
    except QAFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
