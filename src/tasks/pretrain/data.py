"""Pre-training data: corpus files and features, and the dataset that samples each example.

Everything random about an example (ITM negative, masks, replacement tokens and features,
phrase, answer) is drawn in `__getitem__` from a generator seeded by (seed, epoch, index):
an example does not depend on the worker that builds it or on the number of workers, and
`--resume` reproduces the same examples.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from tasks.common.paths import DataRoot
from tasks.common.readers import check_feature_dim, open_stores, split_list
from tasks.common.task_dataset import TaskDataset
from tasks.pretrain import text
from tasks.pretrain.corpus import (Corpus, build_corpus, cache_key, cached, read_corpus_json,
                                  remove_dead_temporaries)
from tasks.pretrain.stage import StageConfig

log = logging.getLogger(__name__)

MAX_NEGATIVE_DRAWS = 1000  # ITM negative draws before a corpus is declared too uniform

# corpus name -> the (task, split) whose feature file holds its images
CORPUS_FEATURES = {
    "mscoco_train": ("vqa", "train"),
    "mscoco_nominival": ("vqa", "nominival"),
    "mscoco_minival": ("vqa", "minival"),
    "vgnococo": ("gqa", "train"),
    "easyvqa_train": ("easyvqa", "train"),
    "easyvqa_minival": ("easyvqa", "train"),
}


def corpus_json(root: DataRoot, name: str) -> Path:
    return root.path("pretrain", "corpus", name)


def corpus_features(root: DataRoot, name: str) -> Path:
    if name not in CORPUS_FEATURES:
        raise ValueError(f"corpus {name!r} has no known feature file; known corpora: "
                         f"{sorted(CORPUS_FEATURES)}")
    task, split = CORPUS_FEATURES[name]
    return root.path(task, "features", split)


@dataclass
class CorpusData:
    corpus: Corpus
    stores: list
    cache_dir: Optional[Path]
    key: str


def load_corpus(root: DataRoot, names: str, tokenizer, answers, topk: Optional[int] = None,
                cache_dir=None, feature_cache=None, fp16: bool = False) -> CorpusData:
    """Read corpus files `names` (comma-separated) and their features, flattened once.
    `topk`: only the first K images of each feature file (--tiny, --fast, minival)."""
    names_list = split_list(names)
    if not names_list:
        raise ValueError("no pre-training corpus given")
    jsons = [corpus_json(root, n) for n in names_list]
    tsvs = [corpus_features(root, n) for n in names_list]
    stores = open_stores([(t, topk) for t in tsvs], cache_dir=feature_cache, fp16=fp16)
    distinct = list(dict.fromkeys(str(t) for t in tsvs))
    store_of_file = [distinct.index(str(t)) for t in tsvs]
    what = f"corpus {','.join(names_list)}"
    key = cache_key(jsons, {"stores": [str(s.store_dir) for s in stores],
                            "rows": [s.num_rows for s in stores],
                            "vocab": str(tokenizer.vocab_file),
                            "max_len": tokenizer.max_seq_length,
                            "answers": len(answers), "answers_head": list(answers[:5])})
    cache_dir = Path(cache_dir) if cache_dir else jsons[0].parent / "pretrain_index"

    def build() -> Corpus:
        records, owners = [], []
        for k, path in enumerate(jsons):
            data = read_corpus_json(path)
            log.info("%s: %d images", path, len(data))
            records += data
            owners += [store_of_file[k]] * len(data)
        lookup = {}  # img_id -> (store, row), in the feature file of its own corpus file
        for record, owner in zip(records, owners):
            if record["img_id"] in stores[owner]:
                lookup[record["img_id"]] = (owner, stores[owner].index_of(record["img_id"]))
        return build_corpus(records, lookup.get, tokenizer, answers, what)

    rows = [s.num_rows for s in stores]
    path = cache_dir / f"corpus-{key}"
    corpus = cached(path, build, what, check=lambda c: c.check(path, len(answers),
                                                                len(tokenizer.vocab), rows))
    log.info("%s: %d images, %d sentences (%s)", what, corpus.num_images,
             corpus.num_sentences, ", ".join(corpus.sources))
    return CorpusData(corpus, stores, cache_dir, key)


def select_sentences(corpus: Corpus, sources: Optional[list]) -> np.ndarray:
    """Indices of the sentences whose source is in `sources` (None: all). Two group names:
    "captions" (every source without answers) and "questions" (every QA source)."""
    if sources is None:
        return np.arange(corpus.num_sentences, dtype=np.int64)
    names = set(sources)
    if "captions" in names:
        names |= {s for s in corpus.sources if s not in corpus.qa_sources}
    if "questions" in names:
        names |= set(corpus.qa_sources)
    unknown = [s for s in sources if s not in corpus.sources and s not in GROUPS]
    if unknown:
        log.info("sentence sources %s are not in this corpus (it has %s)", unknown,
                 corpus.sources)
    ids = [i for i, name in enumerate(corpus.sources) if name in names]
    return np.flatnonzero(np.isin(corpus.sent_source, ids)).astype(np.int64)


GROUPS = ("captions", "questions")


def phrase_table(data: CorpusData, sentences: np.ndarray, vocab: "Vocab",
                 chunker: Optional[text.NounChunker] = None):
    """Noun-chunk piece spans of `sentences` -> (offsets [S+1] over all corpus sentences,
    bounds [M, 2] int16 piece indices). Cached next to the corpus index."""
    corpus = data.corpus
    chunker = chunker or text.NounChunker()
    which = hashlib.sha1(np.ascontiguousarray(sentences, dtype=np.int64).tobytes()).hexdigest()[:8]
    path = data.cache_dir / f"phrases-{data.key}-{which}-{chunker.name.replace(':', '_')}.npz"
    remove_dead_temporaries(path.parent, path.name)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                offsets, bounds = z["offsets"], z["bounds"]
            if phrases_fit(offsets, bounds, corpus):
                return offsets, bounds
            log.warning("noun chunks: %s does not fit the corpus; recomputing", path)
        except (OSError, ValueError, KeyError) as err:
            log.warning("noun chunks: %s is unreadable (%s); recomputing", path, err)
    wanted = np.zeros(corpus.num_sentences, dtype=bool)
    wanted[sentences] = True
    counts = np.zeros(corpus.num_sentences, dtype=np.int64)
    parts = []  # one [n, 2] array per batch of sentences
    todo = np.flatnonzero(wanted)
    for start in range(0, len(todo), 8192):
        batch = todo[start:start + 8192]
        words, starts = [], []
        for s in batch:
            ids, _ = corpus.pieces(int(s))
            words.append(text.words_of(ids, vocab.continuation, vocab.id_to_token))
            starts.append(list(text.word_starts(ids, vocab.continuation)) + [len(ids)])
        spans_of = chunker(words)
        for s, spans in zip(batch, spans_of):
            counts[s] = len(spans)
        parts.append(np.asarray([(st[a], st[b]) for spans, st in zip(spans_of, starts)
                                 for a, b in spans], dtype=np.int16).reshape(-1, 2))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    bounds = np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int16)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, offsets=offsets, bounds=bounds)
        tmp.replace(path)
    except OSError as err:
        log.warning("cannot cache noun chunks at %s (%s)", path, err)
    log.info("noun chunks: %d phrases in %d sentences (%s)", len(bounds), len(todo),
             chunker.name)
    return offsets, bounds


def phrases_fit(offsets: np.ndarray, bounds: np.ndarray, corpus: Corpus) -> bool:
    """A cached noun-chunk table that can be read without an IndexError: offsets from 0 to
    the number of spans, never decreasing, and each span a non-empty range of pieces."""
    if offsets.shape != (corpus.num_sentences + 1,) or bounds.ndim != 2 or \
            bounds.shape[1] != 2 or offsets[0] != 0 or offsets[-1] != len(bounds) or \
            np.any(np.diff(offsets) < 0):
        return False
    return bool(len(bounds) == 0 or ((bounds[:, 0] >= 0) & (bounds[:, 0] < bounds[:, 1])).all())


@dataclass
class Vocab:
    """What sampling needs of the tokenizer."""
    size: int
    mask_id: int
    cls_id: int
    sep_id: int
    id_to_token: dict
    continuation: np.ndarray  # bool per id: a '##' piece

    @classmethod
    def of(cls, tokenizer) -> "Vocab":
        size = len(tokenizer.vocab)
        return cls(size, tokenizer.vocab[text.MASK_TOKEN], tokenizer.cls_id, tokenizer.sep_id,
                   tokenizer.ids_to_tokens, text.continuation_table(tokenizer.ids_to_tokens, size))


class PretrainDataset(TaskDataset):
    """One item per selected sentence (`sentences`, indices into `corpus`): its image and
    text with every pre-training label of `stage`. Items are dicts of tensors."""

    def __init__(self, data: CorpusData, stage: StageConfig, vocab: Vocab, seed: int,
                 sentences: Optional[np.ndarray] = None, max_seq_length: int = 20,
                 neighbors: Optional[np.ndarray] = None, phrases=None,
                 fixed_epoch: Optional[int] = None):
        self.corpus, self.stores = data.corpus, data.stores
        self.stage, self.vocab, self.seed = stage, vocab, seed
        self.sentences = (select_sentences(self.corpus, stage.sentence_sources)
                          if sentences is None else np.asarray(sentences, dtype=np.int64))
        if len(self.sentences) == 0:
            raise ValueError(f"stage {stage.name!r}: no sentences of sources "
                             f"{stage.sentence_sources} in the corpus ({self.corpus.sources})")
        self.max_len = max_seq_length
        self.neighbors, self.phrases = neighbors, phrases
        if stage.has("itm_hs") and neighbors is None:
            raise ValueError("itm_hs needs the nearest-image table")
        if stage.text_unit == "phrase" and phrases is None:
            raise ValueError("the phrase text unit needs the noun-chunk table")
        if stage.has("itm") and len(np.unique(self.corpus.sent_image[self.sentences])) < 2:
            raise ValueError("ITM needs sentences of at least two images")
        self.num_boxes = self._num_boxes()
        self.epoch = 0 if fixed_epoch is None else fixed_epoch
        self.fixed_epoch = fixed_epoch
        # where replacement region features come from: LXMERT takes them from the training
        # set, for validation too (set by the task)
        self.feature_pool: "PretrainDataset" = self

    def _num_boxes(self) -> int:
        counts = {s.num_boxes for s in self.stores}
        if len(counts) != 1 or None in counts:
            raise ValueError(f"pre-training needs the same number of regions in every image; "
                             f"feature stores have {sorted(map(str, counts))}")
        return counts.pop()

    def set_epoch(self, epoch: int) -> None:
        if self.fixed_epoch is None:
            self.epoch = epoch

    def fingerprint(self) -> str:
        """sha1 of the selected sentences, their lengths in word pieces and the images."""
        c = self.corpus
        h = hashlib.sha1(np.ascontiguousarray(self.sentences).tobytes())
        h.update(np.ascontiguousarray(c.piece_offsets).tobytes())
        h.update("\n".join(map(str, c.img_ids)).encode("utf-8"))
        return h.hexdigest()

    def __len__(self) -> int:
        return len(self.sentences)

    def generator(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    # ---- text ----------------------------------------------------------------------------
    def random_negative(self, image: int, rng) -> int:
        """A sentence of another image, uniform over the selected sentences (re-drawn until
        the image differs, as LXMERT; with `negatives_unlike_captions` also until the text
        differs from each of the image's captions)."""
        check_text = self.stage.negatives_unlike_captions
        for _ in range(MAX_NEGATIVE_DRAWS):
            s = int(self.sentences[rng.integers(len(self.sentences))])
            if self.corpus.sent_image[s] != image and not (
                    check_text and self.reads_as_caption_of(image, s)):
                return s
        raise ValueError(f"no ITM negative for image {self.corpus.img_ids[image]!r} in "
                         f"{MAX_NEGATIVE_DRAWS} draws: (nearly) every selected sentence "
                         f"belongs to it or repeats one of its captions")

    def reads_as_caption_of(self, image: int, s: int) -> bool:
        """True when sentence `s` has the word pieces of one of `image`'s captions."""
        c = self.corpus
        ids = c.pieces(s)[0]
        return any(np.array_equal(ids, c.pieces(t)[0])
                   for t in range(int(c.img_sent[image]), int(c.img_captions[image])))

    def hard_negative(self, image: int, positive: int, rng) -> int:
        """A caption of one of the k nearest images (any sentence if it has no caption). A
        near image often has a caption word for word the positive's or another of the
        image's captions (easy-VQA: the same shape or colour); such a caption is no
        negative, so a random negative replaces it."""
        c = self.corpus
        near = int(self.neighbors[image, rng.integers(self.neighbors.shape[1])])
        lo, hi = int(c.img_sent[near]), int(c.img_captions[near])
        if hi <= lo:
            hi = int(c.img_sent[near + 1])
        if hi <= lo or near == image:
            return self.random_negative(image, rng)
        chosen = int(rng.integers(lo, hi))
        if (np.array_equal(c.pieces(chosen)[0], c.pieces(positive)[0])
                or self.reads_as_caption_of(image, chosen)):
            return self.random_negative(image, rng)
        return chosen

    def text_of(self, s: int, rng) -> tuple[np.ndarray, np.ndarray]:
        """The text of sentence `s` in the stage's unit: the sentence, its content words
        (token; the whole sentence when it has none), or a noun chunk (phrase)."""
        ids, pos = self.corpus.pieces(s)
        st = self.stage
        if st.text_unit == "token":
            words = text.content_words(ids, self.vocab.continuation, self.vocab.id_to_token)
            if words is not None:
                ids, pos = words
        elif st.text_unit == "phrase" and rng.random() < st.phrase_prob:
            offsets, bounds = self.phrases
            a, b = int(offsets[s]), int(offsets[s + 1])
            if b > a:
                lo, hi = (int(x) for x in bounds[rng.integers(a, b)])
                ids, pos = ids[lo:hi], pos[lo:hi] - pos[lo] + text.FIRST_WORD_POSITION
        return np.asarray(ids, dtype=np.int64), np.asarray(pos, dtype=np.int64)

    def mask_text(self, ids, pos, rng):
        st, v = self.stage, self.vocab
        if not st.has("mlm"):
            return ids, np.full(len(ids), text.IGNORE, dtype=np.int64)
        if st.masking == "span":
            return text.mask_spans(ids, self.vocab.continuation, rng, st.word_mask_rate, v.mask_id, v.size,
                                st.span_geometric_p, st.span_min, st.span_max)
        return text.mask_pieces(ids, rng, st.word_mask_rate, v.mask_id, v.size)

    def pad(self, ids, pos, labels) -> dict:
        n, width = len(ids), self.max_len
        out = {"input_ids": np.zeros(width, np.int64), "token_position": np.zeros(width, np.int64),
               "input_mask": np.zeros(width, np.int64),
               "masked_lm_labels": np.full(width, text.IGNORE, np.int64)}
        out["input_ids"][: n + 2] = [self.vocab.cls_id, *ids, self.vocab.sep_id]
        out["token_position"][: n + 2] = [text.SPECIAL_POSITION, *pos, text.SPECIAL_POSITION]
        out["input_mask"][: n + 2] = 1
        out["masked_lm_labels"][1: n + 1] = labels
        return out

    def topic_ids(self, ids) -> np.ndarray:
        """Content piece ids of the (unmasked) text, padded with -1 to max_len."""
        out = np.full(self.max_len, text.IGNORE, dtype=np.int64)
        if self.stage.has("topic"):
            content = text.content_piece_ids(ids, self.vocab.continuation, self.vocab.id_to_token)
            out[: len(content)] = content
        return out

    # ---- image ---------------------------------------------------------------------------
    def image_row(self, image: int):
        c = self.corpus
        store = self.stores[int(c.img_store[image])]
        row = store.get_row(int(c.img_row[image]))
        if row.num_boxes != self.num_boxes:
            raise ValueError(f"img_id {row.img_id}: {row.num_boxes} regions, expected "
                             f"{self.num_boxes}")
        return row

    def random_region_feature(self, rng) -> np.ndarray:
        """The feature of a random region of the image of a random training example."""
        pool = self.feature_pool
        c = pool.corpus
        image = int(c.sent_image[pool.sentences[rng.integers(len(pool.sentences))]])
        feats, _ = pool.stores[int(c.img_store[image])].row(int(c.img_row[image]))
        return feats[rng.integers(len(feats))]

    def visual(self, image: int, rng) -> dict:
        row, st = self.image_row(image), self.stage
        feats = row.features.astype(np.float32, copy=False)  # get_row returned a copy
        boxes = row.boxes.astype(np.float32)
        boxes[:, (0, 2)] /= row.img_w
        boxes[:, (1, 3)] /= row.img_h
        n = len(feats)
        masked, feat_mask = feats.copy(), np.zeros(n, dtype=np.float32)
        if st.has("obj"):
            chosen = rng.random(n) < st.obj_mask_rate
            action = rng.random(n)
            masked[chosen & (action < 0.8)] = 0.0
            for i in np.flatnonzero(chosen & (action >= 0.8) & (action < 0.9)):
                masked[i] = self.random_region_feature(rng)
            feat_mask[chosen] = 1.0
        swapped = np.zeros(n, dtype=bool)
        if st.has("ifrs") and n > 1:
            swapped = (rng.random(n) < st.ifrs_rate) & (feat_mask == 0)
            for i in np.flatnonzero(swapped):
                j = int(rng.integers(n - 1))
                masked[i] = feats[j + (j >= i)]
            feat_mask[swapped] = 1.0
        # LXMERT weights obj/attr CE by the detector's confidence on every region; with IFRS
        # alone the labels count only at the swapped regions.
        where = 1.0 if st.has("obj") else swapped.astype(np.float32)
        return {"feats": masked, "boxes": boxes, "feat": feats, "feat_mask": feat_mask,
                "obj": row.objects_id.astype(np.int64),
                "obj_conf": row.objects_conf.astype(np.float32) * where,
                "attr": row.attrs_id.astype(np.int64),
                "attr_conf": row.attrs_conf.astype(np.float32) * where}

    # ---- item ----------------------------------------------------------------------------
    def __getitem__(self, index: int) -> dict:
        rng = self.generator(index)
        st, c = self.stage, self.corpus
        s = int(self.sentences[index])
        image = int(c.sent_image[s])
        matched, text_s = 1, s
        if st.has("itm") and rng.random() < st.itm_negative_rate:
            matched = 0
            hard = st.has("itm_hs") and rng.random() < st.hard_negative_fraction
            text_s = (self.hard_negative(image, s, rng) if hard
                      else self.random_negative(image, rng))
        ids, pos = self.text_of(text_s, rng)
        # the topic of a mismatched pair: the image's own sentence (the one the negative
        # replaced), or the shown text (`mismatched_topic`)
        if matched or st.mismatched_topic == "text":
            topic = self.topic_ids(ids)
        else:
            topic = self.topic_ids(c.pieces(s)[0])
        masked_ids, labels = self.mask_text(ids, pos, rng)
        item = self.pad(masked_ids, pos, labels)
        item.update(self.visual(image, rng))
        ans = text.IGNORE
        if st.has("qa") and matched and c.is_qa(s):
            ans = text.sample_answer(*c.answers(s), rng)
        item.update(index=index, text_sentence=text_s, topic_ids=topic, matched_label=matched,
                    ans=ans)
        return {k: torch.as_tensor(v) for k, v in item.items()}
