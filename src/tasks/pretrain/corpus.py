"""LXMERT's pre-training corpus, flattened once into compact numpy arrays.

The JSON files (`data/lxmert/<name>.json`) hold a list of images
`{"img_id": str, "sentf": {source: [sentence, ...]}, "labelf": {source: [{answer: score}]}}`;
`labelf[source]` is aligned with `sentf[source]` for the QA sources. One example is one
(image, sentence) pair. Instead of a list of millions of Python dicts (copied into every
DataLoader worker as reference counts touch them), the corpus is a handful of arrays:
every sentence tokenized once (pieces + word-level positions, concatenated, with offsets),
its image and source, and the QA answers (ids into LXMERT's 9,500-answer table, normalised
as the fine-tuning answer surgery does, answers outside the table dropped). The arrays are
saved next to the data as .npy files (no pickle), memory-mapped by every process and
worker, and reused while the inputs are unchanged.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from lxrt.loading import convert_answer
from tasks.common.readers import DataFormatError, read_json
from tasks.common.store_folder import pid_alive

log = logging.getLogger(__name__)

CACHE_VERSION = 2
TOKENIZE_CHUNK = 65536


class CorpusFormatError(ValueError):
    pass


def _fail(path, index, record, message):
    img = record.get("img_id") if isinstance(record, dict) else None
    raise CorpusFormatError(f"{path}: record {index}" + (f" (img_id {img!r})" if img else "")
                            + f": {message}")


def check_record(path, index: int, record) -> None:
    """Raise a CorpusFormatError naming the file, record and key unless `record` is
    {"img_id": str, "sentf": {src: [str]}, "labelf": {src: [{str: number}]}} with each
    labelf list as long as its sentf list."""
    if not isinstance(record, dict):
        _fail(path, index, record, f"expected an object, got {type(record).__name__}")
    for key in ("img_id", "sentf", "labelf"):
        if key not in record:
            _fail(path, index, record, f"missing key {key!r}")
    if not isinstance(record["img_id"], str):
        _fail(path, index, record, "key 'img_id': expected a string")
    sentf, labelf = record["sentf"], record["labelf"]
    if not isinstance(sentf, dict) or not isinstance(labelf, dict):
        _fail(path, index, record, "keys 'sentf' and 'labelf' must be objects {source: list}")
    for source, sents in sentf.items():
        if not isinstance(sents, list) or not all(isinstance(s, str) for s in sents):
            _fail(path, index, record, f"key 'sentf.{source}': expected a list of strings")
    for source, labels in labelf.items():
        if source not in sentf:
            _fail(path, index, record, f"key 'labelf.{source}': no sentf.{source} to align with")
        if not isinstance(labels, list) or len(labels) != len(sentf[source]):
            _fail(path, index, record, f"key 'labelf.{source}': expected a list of "
                                       f"{len(sentf[source])} answer dicts (one per sentence)")
        for label in labels:
            if not isinstance(label, dict) or not all(
                    isinstance(a, str) and isinstance(v, (int, float)) and math.isfinite(v)
                    and v >= 0 for a, v in label.items()):
                _fail(path, index, record, f"key 'labelf.{source}': expected "
                                           f"{{answer: score}} objects with finite scores "
                                           f">= 0, got {label!r}")


def read_corpus_json(path) -> list[dict]:
    path = Path(path)
    try:
        data = read_json(path)
    except DataFormatError as err:
        raise CorpusFormatError(str(err)) from None
    except FileNotFoundError:
        raise FileNotFoundError(f"pre-training corpus not found: {path} (LXMERT's "
                                f"data/lxmert/<name>.json)") from None
    if not isinstance(data, list):
        raise CorpusFormatError(f"{path}: expected a list of image records")
    for i, record in enumerate(data):
        check_record(path, i, record)
    return data


@dataclass
class Corpus:
    """Flattened sentences; arrays indexed by sentence s or image i."""
    sources: list          # source names (mscoco, vg, vqa, ...); sent_source indexes it
    qa_sources: list       # the ones with answers
    img_ids: np.ndarray    # [I] str
    img_store: np.ndarray  # [I] int8: which feature store
    img_row: np.ndarray    # [I] int32: row in that store
    img_sent: np.ndarray   # [I+1] int64: sentences of image i are img_sent[i]:img_sent[i+1]
    img_captions: np.ndarray  # [I] int64: the caption sentences end here (captions first)
    sent_image: np.ndarray    # [S] int32
    sent_source: np.ndarray   # [S] int8
    piece_offsets: np.ndarray  # [S+1] int64
    piece_ids: np.ndarray      # [P] int32 word pieces, truncated, no [CLS]/[SEP]
    piece_pos: np.ndarray      # [P] int16 word-level position ids (unmasked sentence)
    label_offsets: np.ndarray  # [S+1] int64
    label_ans: np.ndarray      # [A] int32 answer ids
    label_score: np.ndarray    # [A] float32

    ARRAYS = ("img_ids", "img_store", "img_row", "img_sent", "img_captions", "sent_image",
              "sent_source", "piece_offsets", "piece_ids", "piece_pos", "label_offsets",
              "label_ans", "label_score")

    @property
    def num_sentences(self) -> int:
        return len(self.sent_image)

    @property
    def num_images(self) -> int:
        return len(self.img_ids)

    def pieces(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.piece_offsets[s], self.piece_offsets[s + 1]
        return self.piece_ids[a:b], self.piece_pos[a:b]

    def answers(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.label_offsets[s], self.label_offsets[s + 1]
        return self.label_ans[a:b], self.label_score[a:b]

    def is_qa(self, s: int) -> bool:
        return self.sources[self.sent_source[s]] in self.qa_sources

    def check(self, where, num_answers: int, vocab_size: int, store_rows: Sequence[int]) -> None:
        """Raise CorpusFormatError naming `where` and the array unless the arrays agree:
        lengths, offsets that start at 0, never decrease and end at their array's length,
        and every id in range (images, sources, stores and rows, answers, word pieces).
        A cache damaged in place (e.g. zeroed offsets) is caught here, not as an IndexError
        or silently wrong text in a DataLoader worker."""
        def fail(message):
            raise CorpusFormatError(f"corpus cache {where}: {message}")
        images, sentences = len(self.img_ids), len(self.sent_image)
        for name, length in (("img_store", images), ("img_row", images),
                             ("img_captions", images), ("img_sent", images + 1),
                             ("sent_source", sentences), ("piece_offsets", sentences + 1),
                             ("label_offsets", sentences + 1),
                             ("piece_pos", len(self.piece_ids)),
                             ("label_score", len(self.label_ans))):
            if len(getattr(self, name)) != length:
                fail(f"{name}.npy has {len(getattr(self, name))} entries, expected {length}")
        for name, total in (("img_sent", sentences), ("piece_offsets", len(self.piece_ids)),
                            ("label_offsets", len(self.label_ans))):
            offsets = np.asarray(getattr(self, name))
            if offsets[0] != 0 or offsets[-1] != total or np.any(np.diff(offsets) < 0):
                fail(f"{name}.npy is not a non-decreasing run of offsets from 0 to {total}")
        for name, high in (("sent_image", images), ("sent_source", len(self.sources)),
                           ("img_store", len(store_rows)), ("label_ans", num_answers),
                           ("piece_ids", vocab_size)):
            values = np.asarray(getattr(self, name))
            if values.size and (values.min() < 0 or values.max() >= high):
                fail(f"{name}.npy holds ids outside [0, {high}) (from {values.min()} to "
                     f"{values.max()})")
        for store, rows in enumerate(store_rows):
            in_store = np.asarray(self.img_row)[np.asarray(self.img_store) == store]
            if in_store.size and (in_store.min() < 0 or in_store.max() >= rows):
                fail(f"img_row.npy points past the {rows} rows of feature store {store}")

    def save(self, path: Path) -> None:
        """A directory of .npy files (no pickle) plus meta.json, written under a temporary
        name and renamed, so a reader never sees half of it. A damaged cache at `path` (one
        that `cached` could not use) is replaced; when another process saved first, its copy
        is kept."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for key in self.ARRAYS:
            np.save(tmp / f"{key}.npy", getattr(self, key))
        (tmp / "meta.json").write_text(json.dumps(
            {"version": CACHE_VERSION, "sources": self.sources, "qa_sources": self.qa_sources}))
        try:
            os.replace(tmp, path)
        except OSError as err:
            if not _is_cache_dir(path):
                shutil.rmtree(tmp, ignore_errors=True)
                raise OSError(err.errno, f"{path} exists and is not a corpus cache (no "
                                         f"meta.json); left as it is") from None
            old = path.with_name(f".{path.name}.{os.getpid()}.old.tmp")
            os.replace(path, old)  # the damaged cache (or a concurrent save's: equal)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, path: Path) -> "Corpus":
        """Memory-mapped: every process and DataLoader worker shares one page cache."""
        meta = json.loads((path / "meta.json").read_text())
        arrays = {k: np.load(path / f"{k}.npy", mmap_mode="r", allow_pickle=False)
                  for k in cls.ARRAYS}
        return cls(meta["sources"], meta["qa_sources"], **arrays)


class _Builder:
    def __init__(self, answer_ids: dict):
        self.answer_ids = answer_ids
        self.sources: list[str] = []
        self.qa_sources: set[str] = set()
        self.sentences: list[str] = []
        self.sent_image: list[int] = []
        self.sent_source: list[int] = []
        self.label_counts: list[int] = []
        self.label_ans: list[int] = []
        self.label_score: list[float] = []
        self.img_sent = [0]
        self.img_captions: list[int] = []
        self.dropped_answers = 0

    def source_id(self, name: str) -> int:
        if name not in self.sources:
            self.sources.append(name)
        return self.sources.index(name)

    def add_image(self, image: int, record: dict) -> None:
        sentf, labelf = record["sentf"], record["labelf"]
        captions = [s for s in sentf if s not in labelf]
        for source in captions + [s for s in sentf if s in labelf]:
            labels = labelf.get(source)
            if labels is not None:
                self.qa_sources.add(source)
            sid = self.source_id(source)
            for k, sent in enumerate(sentf[source]):
                self.sentences.append(sent)
                self.sent_image.append(image)
                self.sent_source.append(sid)
                self.add_label(labels[k] if labels is not None else {})
        n_captions = sum(len(sentf[s]) for s in captions)
        self.img_captions.append(self.img_sent[-1] + n_captions)
        self.img_sent.append(len(self.sentences))

    def add_label(self, label: dict) -> None:
        kept = lxmert_label(label, self.answer_ids)
        self.dropped_answers += len(label) - len(kept)
        self.label_counts.append(len(kept))
        self.label_ans.extend(kept)
        self.label_score.extend(float(v) for v in kept.values())


def lxmert_label(label: dict, answer_ids: dict) -> dict:
    """{answer id: score} as LXMERT rewrites a label in place: each answer normalised in
    turn; one outside the table is dropped; a renamed one replaces any entry of its new name
    (so of "two": 0.6 and "2": 0.3 the score of "two" is kept), it is not added to it."""
    out = dict(label)
    for ans in list(label):
        new = convert_answer(ans)
        if new not in answer_ids:
            out.pop(ans)
        elif new != ans:
            out[new] = out.pop(ans)
    return {answer_ids[a]: score for a, score in out.items()}


def tokenize_flat(tokenizer, sentences: Sequence[str]):
    """(offsets [S+1], piece ids, positions) of every sentence, without [CLS]/[SEP]."""
    lengths, ids, pos = [], [], []
    for start in range(0, len(sentences), TOKENIZE_CHUNK):
        batch = tokenizer.encode_batch([s.strip() for s in sentences[start:start + TOKENIZE_CHUNK]])
        n = batch.input_mask.sum(1) - 2
        inner = np.zeros_like(batch.input_mask, dtype=bool)
        inner[:, 1:] = np.arange(1, batch.input_mask.shape[1])[None, :] <= n[:, None]
        lengths.append(n)
        ids.append(batch.input_ids[inner].astype(np.int32))
        pos.append(batch.token_position[inner].astype(np.int16))
    lengths = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    cat = (lambda a, t: np.concatenate(a) if a else np.zeros(0, dtype=t))
    return offsets, cat(ids, np.int32), cat(pos, np.int16)


def build_corpus(records: list[dict], locate, tokenizer, answers: Sequence[str],
                 what: str = "corpus") -> Corpus:
    """Flatten `records` (already checked) into a Corpus. `locate(img_id)` -> (store, row) or
    None for images without loaded features (dropped, as LXMERT does, and counted)."""
    builder = _Builder({a: i for i, a in enumerate(answers)})
    img_ids, img_store, img_row = [], [], []
    seen: dict = {}
    missing = 0
    for record in records:
        where = locate(record["img_id"])
        if where is None:
            missing += 1
            continue
        if record["img_id"] in seen:  # the same image in two files: one image entry each
            log.warning("%s: img_id %s appears more than once", what, record["img_id"])
        seen[record["img_id"]] = len(img_ids)
        builder.add_image(len(img_ids), record)
        img_ids.append(record["img_id"])
        img_store.append(where[0])
        img_row.append(where[1])
    if missing:
        log.info("%s: %d of %d images have no loaded features and are left out", what,
                 missing, len(records))
    if builder.dropped_answers:
        log.info("%s: %d answers outside the %d-answer table dropped", what,
                 builder.dropped_answers, len(answers))
    offsets, ids, pos = tokenize_flat(tokenizer, builder.sentences)
    counts = np.asarray(builder.label_counts, dtype=np.int64)
    return Corpus(
        sources=builder.sources, qa_sources=sorted(builder.qa_sources),
        img_ids=np.asarray(img_ids, dtype=str), img_store=np.asarray(img_store, dtype=np.int8),
        img_row=np.asarray(img_row, dtype=np.int32),
        img_sent=np.asarray(builder.img_sent, dtype=np.int64),
        img_captions=np.asarray(builder.img_captions, dtype=np.int64),
        sent_image=np.asarray(builder.sent_image, dtype=np.int32),
        sent_source=np.asarray(builder.sent_source, dtype=np.int8),
        piece_offsets=offsets, piece_ids=ids, piece_pos=pos,
        label_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        label_ans=np.asarray(builder.label_ans, dtype=np.int32),
        label_score=np.asarray(builder.label_score, dtype=np.float32))


def cache_key(files: Sequence[Path], extra: dict) -> str:
    """Changes when any input file (size, mtime) or setting changes."""
    parts = []
    for f in files:
        st = Path(f).stat()
        parts.append([str(Path(f).resolve()), st.st_size, st.st_mtime_ns])
    blob = json.dumps({"v": CACHE_VERSION, "files": parts, **extra}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _is_cache_dir(path: Path) -> bool:
    """A folder holding only what `Corpus.save` writes (its arrays and meta.json)."""
    names = {f"{key}.npy" for key in Corpus.ARRAYS} | {"meta.json"}
    try:
        return path.is_dir() and all(p.is_file() and p.name in names for p in path.iterdir())
    except OSError:
        return False


def remove_dead_temporaries(folder: Path, prefix: str) -> None:
    """Remove what a killed build left next to its cache: `.<prefix>.<pid>.*tmp*` files and
    folders of dead processes (folders only when they hold nothing but cache files)."""
    for p in Path(folder).glob(f".{prefix}.*"):
        parts = p.name[len(prefix) + 2:].split(".")
        if len(parts) < 2 or not parts[0].isdigit() or "tmp" not in parts[1:]:
            continue
        if pid_alive(int(parts[0])):
            continue
        if p.is_dir() and not p.is_symlink():
            if _is_cache_dir(p):
                shutil.rmtree(p, ignore_errors=True)
                log.info("removed %s, left by an interrupted build", p)
        elif p.is_file():
            p.unlink(missing_ok=True)


def cached(path: Optional[Path], build, what: str, check=None):
    """Load the Corpus at `path` (and `check(corpus)` it), or build and save it (atomically;
    any process may). A damaged cache is rebuilt and replaced."""
    if path is not None:
        remove_dead_temporaries(path.parent, path.name)
    if path is not None and (path / "meta.json").is_file():
        try:
            corpus = Corpus.load(path)
            if check is not None:
                check(corpus)
            log.info("%s: flattened index from %s", what, path)
            return corpus
        except (OSError, ValueError, KeyError, IndexError) as err:
            log.warning("%s: unusable cache %s (%s); rebuilding it", what, path, err)
    corpus = build()
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            corpus.save(path)
            log.info("%s: flattened index saved to %s", what, path)
        except OSError as err:
            log.warning("%s: cannot save the index cache %s (%s); it is rebuilt next time",
                        what, path, err)
    return corpus
