"""Text-side sampling for pre-training: word-piece and span masking, noun chunks, topics.

Every function works on one example's arrays with an explicit `numpy.random.Generator`, so a
dataset item is a pure function of (seed, epoch, index).

Conventions: a sentence is its word pieces without [CLS]/[SEP] (`ids`). A word is BERT's
basic token: a piece that is not a '##' continuation plus the continuations after it
(`continuation[id]` says which vocabulary entries are continuations), so punctuation is a
word of its own. Position ids are never changed by masking: a masked piece keeps the
position id of its word in the unmasked sentence.
"""
from __future__ import annotations

import logging
import string
from typing import Optional

import numpy as np

# position ids of a sentence's first word and of [CLS]/[SEP] (used by the dataset)
from lxrt.tokenization import FIRST_WORD_TAG as FIRST_WORD_POSITION  # noqa: F401
from lxrt.tokenization import SPECIAL_POSITION  # noqa: F401

log = logging.getLogger(__name__)

IGNORE = -1
MASK_TOKEN = "[MASK]"

# English stop words for the topic tasks: function words that say nothing about the image.
STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further
had has have having he her here hers herself him himself his how i if in into is it its itself
just me more most my myself no nor not now of off on once only or other our ours ourselves out
over own same she should so some such than that the their theirs them themselves then there
these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours yourself yourselves s t d ll m re ve
""".split())

# Noun-chunk rules (the fallback chunker): words that may open a chunk, and words that end one.
DETERMINERS = frozenset("""
a an the this that these those some any each every another his her its their my our your
one two three four five six seven eight nine ten several many few both no
""".split())
CHUNK_BREAKS = (STOP_WORDS - DETERMINERS) | frozenset("""
is are was were be been being has have had do does did can could will would sits sitting
stands standing holding holds looking looks riding rides walking walks next while near
shows show shown
""".split())


def is_punctuation(word: str) -> bool:
    return bool(word) and all(ch in string.punctuation for ch in word)


# ---- words ----------------------------------------------------------------------------------

def continuation_table(id_to_token: dict, size: int) -> np.ndarray:
    """bool [size]: which vocabulary ids are '##' continuation pieces."""
    table = np.zeros(size, dtype=bool)
    for i, token in id_to_token.items():
        if token.startswith("##") and i < size:
            table[i] = True
    return table


def word_starts(ids: np.ndarray, continuation: np.ndarray) -> np.ndarray:
    """Index of the first piece of each word."""
    if len(ids) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = ~continuation[ids]
    starts[0] = True
    return np.flatnonzero(starts)


def words_of(ids: np.ndarray, continuation: np.ndarray, id_to_token) -> list[str]:
    """The words of a sentence, rebuilt from its pieces ('##' continuations joined)."""
    starts = list(word_starts(ids, continuation)) + [len(ids)]
    out = []
    for s, e in zip(starts[:-1], starts[1:]):
        pieces = [id_to_token[int(i)] for i in ids[s:e]]
        out.append("".join(p[2:] if p.startswith("##") else p for p in pieces))
    return out


def content_word_spans(ids: np.ndarray, continuation: np.ndarray,
                       id_to_token) -> list[tuple[int, int]]:
    """(start, end) piece spans of the content words: not a stop word, not punctuation."""
    starts = list(word_starts(ids, continuation)) + [len(ids)]
    words = words_of(ids, continuation, id_to_token)
    return [(int(s), int(e)) for word, s, e in zip(words, starts[:-1], starts[1:])
            if word not in STOP_WORDS and not is_punctuation(word)]


def content_piece_ids(ids: np.ndarray, continuation: np.ndarray, id_to_token) -> np.ndarray:
    """The distinct piece ids of the content words (not a stop word, not punctuation)."""
    keep = [int(i) for s, e in content_word_spans(ids, continuation, id_to_token)
            for i in ids[s:e]]
    return np.unique(np.asarray(keep, dtype=np.int64))


def content_words(ids: np.ndarray, continuation: np.ndarray,
                  id_to_token) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """The token text unit: the sentence's content words alone, in order, each word with its
    own position id from FIRST_WORD_POSITION ("A man riding a horse." -> "man riding horse",
    positions 2, 3, 4; a word's pieces share its position). -> (piece ids, position ids), or
    None for a sentence without content words."""
    spans = content_word_spans(ids, continuation, id_to_token)
    if not spans:
        return None
    kept = np.concatenate([np.asarray(ids[s:e], dtype=np.int64) for s, e in spans])
    pos = np.concatenate([np.full(e - s, FIRST_WORD_POSITION + k, dtype=np.int64)
                          for k, (s, e) in enumerate(spans)])
    return kept, pos


# ---- masking ----------------------------------------------------------------------------------

def replace_pieces(ids: np.ndarray, chosen: np.ndarray, rng: np.random.Generator,
                   mask_id: int, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """BERT's 80/10/10 on the pieces where `chosen`: -> (new ids, labels)."""
    out = ids.copy()
    labels = np.where(chosen, ids, IGNORE)
    action = rng.random(len(ids))
    out[chosen & (action < 0.8)] = mask_id
    swap = chosen & (action >= 0.8) & (action < 0.9)
    out[swap] = rng.integers(0, vocab_size, int(swap.sum()))
    return out, labels


def mask_pieces(ids: np.ndarray, rng: np.random.Generator, rate: float, mask_id: int,
                vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """LXMERT's MLM: each piece chosen with probability `rate`, then 80/10/10."""
    chosen = rng.random(len(ids)) < rate
    return replace_pieces(ids, chosen, rng, mask_id, vocab_size)


def span_length(rng: np.random.Generator, p: float, lo: int, hi: int) -> int:
    """A SpanBERT span length: geometric(p) on 1, 2, ..., clipped to [lo, hi]."""
    return int(min(max(rng.geometric(p), lo), hi))


def sample_span_words(num_words: int, rng: np.random.Generator, rate: float, p: float,
                      lo: int, hi: int) -> np.ndarray:
    """SpanBERT word spans: lengths ~ geometric(p) clipped to [lo, hi] (and to what is left of
    the budget), start uniform, until `rate` of the words is masked (the budget is rounded
    stochastically so the expected rate is exact). -> bool per word."""
    chosen = np.zeros(num_words, dtype=bool)
    if num_words == 0:
        return chosen
    target = rate * num_words
    budget = int(target) + int(rng.random() < target - int(target))
    for _ in range(4 * num_words):  # bounded: overlapping spans may add nothing
        left = budget - int(chosen.sum())
        if left <= 0:
            break
        length = min(span_length(rng, p, lo, hi), left, num_words)
        start = int(rng.integers(0, num_words - length + 1))
        chosen[start:start + length] = True
    return chosen


def mask_spans(ids: np.ndarray, continuation: np.ndarray, rng: np.random.Generator, rate: float,
               mask_id: int, vocab_size: int, p: float = 0.2, lo: int = 1,
               hi: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Span masking over whole words; every piece of a chosen word is predicted, and each
    span is [MASK]ed / randomised / kept as a unit (80/10/10)."""
    starts = word_starts(ids, continuation)
    chosen_words = sample_span_words(len(starts), rng, rate, p, lo, hi)
    word_of_piece = np.searchsorted(starts, np.arange(len(ids)), side="right") - 1
    chosen = chosen_words[word_of_piece] if len(ids) else np.zeros(0, dtype=bool)
    out = ids.copy()
    labels = np.where(chosen, ids, IGNORE)
    # one action per span (a maximal run of chosen words)
    run_start = chosen & np.concatenate([[True], ~chosen[:-1]]) if len(ids) else chosen
    run_id = np.cumsum(run_start) - 1
    actions = rng.random(max(int(run_start.sum()), 1))
    action = np.where(chosen, actions[np.clip(run_id, 0, None)], 1.0)
    out[chosen & (action < 0.8)] = mask_id
    swap = chosen & (action >= 0.8) & (action < 0.9)
    out[swap] = rng.integers(0, vocab_size, int(swap.sum()))
    return out, labels


# ---- noun chunks ----------------------------------------------------------------------------

def rule_noun_chunks(words: list[str]) -> list[tuple[int, int]]:
    """(start, end) word spans of noun chunks by a small rule set: a chunk is an optional
    determiner followed by words that are neither stop words, common verbs, punctuation, nor
    '-ing'/'-ed' forms (those count as adjectives right after a determiner: "a parked car")."""
    chunks: list[tuple[int, int]] = []
    start = None

    def close(end):
        if start is not None and any(w not in DETERMINERS for w in words[start:end]):
            chunks.append((start, end))

    for i, word in enumerate(words):
        verb_like = len(word) > 4 and (word.endswith("ing") or word.endswith("ed"))
        if word in DETERMINERS:
            close(i)
            start = i
        elif word in CHUNK_BREAKS or is_punctuation(word) or (
                verb_like and not (i > 0 and words[i - 1] in DETERMINERS)):
            close(i)
            start = None
        elif start is None:
            start = i
    close(len(words))
    return chunks


class NounChunker:
    """spaCy's noun chunks when an English model is installed, else `rule_noun_chunks`."""

    def __init__(self, prefer_spacy: bool = True):
        self.nlp = None
        if prefer_spacy:
            self.nlp = self._load_spacy()
        self.name = f"spacy:{self.nlp.meta.get('name', '?')}" if self.nlp else "rules"
        log.info("noun chunks: %s", "spaCy model " + self.name if self.nlp else
                 "rule-based chunker (no spaCy English model installed)")

    @staticmethod
    def _load_spacy():
        try:
            import spacy
        except ImportError:
            return None
        for model in ("en_core_web_sm", "en_core_web_md", "en_core_web_lg"):
            try:
                return spacy.load(model, disable=["ner", "lemmatizer"])
            except (OSError, ValueError):
                continue
        return None

    def __call__(self, sentences: list[list[str]]) -> list[list[tuple[int, int]]]:
        if self.nlp is None:
            return [rule_noun_chunks(words) for words in sentences]
        out = []
        for words, doc in zip(sentences, self.nlp.pipe([" ".join(w) for w in sentences],
                                                       batch_size=1024)):
            out.append(self._spans_to_words(words, doc))
        return out

    @staticmethod
    def _spans_to_words(words: list[str], doc) -> list[tuple[int, int]]:
        """spaCy char spans -> word spans of our words (joined by single spaces)."""
        starts = np.cumsum([0] + [len(w) + 1 for w in words])
        spans = []
        for chunk in doc.noun_chunks:
            s = int(np.searchsorted(starts, chunk.start_char, side="right") - 1)
            e = int(np.searchsorted(starts, chunk.end_char, side="left"))
            if e > s:
                spans.append((s, e))
        return spans


# ---- answers ----------------------------------------------------------------------------------

def sample_answer(answers: np.ndarray, scores: np.ndarray, rng: np.random.Generator) -> int:
    """An answer drawn in proportion to its score (the single one when there is one); -1
    when there is none."""
    if len(answers) == 0:
        return IGNORE
    if len(answers) == 1:
        return int(answers[0])
    total = float(scores.sum())
    p = scores / total if total > 0 else np.full(len(scores), 1.0 / len(scores))
    return int(answers[rng.choice(len(answers), p=p)])
