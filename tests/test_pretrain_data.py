"""Pre-training data: the flattened corpus, and the statistics of every sampled label."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lxrt.loading import read_pretraining_answers
from lxrt.tokenization import LXRTTokenizer, find_vocab_file
from tasks.common.paths import DataRoot
from tasks.pretrain import neighbors, text
from tasks.pretrain.corpus import CorpusFormatError, lxmert_label, read_corpus_json
from tasks.pretrain.data import (PretrainDataset, Vocab, load_corpus, phrase_table,
                                 select_sentences)
from tasks.pretrain.stage import StageConfig, StageConfigError, load_stage_config

TRAIN = "mscoco_train,mscoco_nominival,vgnococo"
SIGMAS = 5


def within(count: int, n: int, p: float) -> bool:
    """count ~ Binomial(n, p) within SIGMAS standard deviations."""
    return abs(count - n * p) <= SIGMAS * math.sqrt(n * p * (1 - p)) + 1


@pytest.fixture(scope="module")
def setup(small_root):
    root = small_root
    tok = LXRTTokenizer(find_vocab_file(), 20)
    answers = read_pretraining_answers(DataRoot(root).path("pretrain", "answers"))
    data = load_corpus(DataRoot(root), TRAIN, tok, answers)
    return root, tok, answers, data, Vocab.of(tok)


def dataset(setup, seed=0, **fields):
    _, _, _, data, vocab = setup
    stage = StageConfig(**fields).validate()
    sents = select_sentences(data.corpus, stage.sentence_sources)
    nb = (neighbors.load_or_compute(None, data.corpus, data.stores, stage.hard_negative_k)
          if stage.has("itm_hs") else None)
    ph = phrase_table(data, sents, vocab) if stage.text_unit == "phrase" else None
    return PretrainDataset(data, stage, vocab, seed, sents, neighbors=nb, phrases=ph)


# ---- corpus -------------------------------------------------------------------------------

def test_corpus_flattens_every_sentence_and_tokenizes_it_once(setup):
    root, tok, answers, data, _ = setup
    c = data.corpus
    records = sum((json.loads((root / "lxmert" / f"{n}.json").read_text())
                   for n in TRAIN.split(",")), [])
    sentences = [(r["img_id"], s) for r in records for src in r["sentf"] for s in r["sentf"][src]]
    assert c.num_sentences == len(sentences) and c.num_images == len(records)
    for s in range(0, c.num_sentences, 7):
        ids, pos = c.pieces(s)
        img = c.img_ids[c.sent_image[s]]
        texts = [t for i, t in sentences if i == img]
        enc = [tok.encode(t).row(0) for t in texts]
        n = len(ids)
        assert any(np.array_equal(e["input_ids"][1:n + 1], ids)
                   and np.array_equal(e["token_position"][1:n + 1], pos)
                   and e["input_mask"].sum() == n + 2 for e in enc)


def test_corpus_answers_are_normalised_and_unknown_ones_dropped(tmp_path, setup):
    root, tok, answers, _, _ = setup
    rec = {"img_id": "COCO_train2014_000000000001",
           "sentf": {"mscoco": ["a cat"], "vqa": ["how many?", "what?"]},
           "labelf": {"vqa": [{"Two": 0.6, "three.": 0.3}, {"no such answer xyz": 1.0}]}}
    (tmp_path / "lxmert").mkdir()
    for name in ("mscoco_imgfeat",):
        (tmp_path / name).symlink_to(root / name)
    (tmp_path / "lxmert" / "mscoco_train.json").write_text(json.dumps([rec]))
    data = load_corpus(DataRoot(tmp_path), "mscoco_train", tok, answers)
    c = data.corpus
    assert c.num_sentences == 3 and c.sources == ["mscoco", "vqa"]
    got = {answers[a]: float(v) for a, v in zip(*c.answers(1))}
    assert got == pytest.approx({"2": 0.6, "3": 0.3})
    assert len(c.answers(0)[0]) == 0 and len(c.answers(2)[0]) == 0
    assert not c.is_qa(0) and c.is_qa(1)
    table = {a: i for i, a in enumerate(answers)}
    assert lxmert_label({"two": 0.6, "2": 0.3}, table) == {table["2"]: 0.6}
    assert lxmert_label({"2": 0.3, "Two": 0.6, "A dog": 1.0}, table) == {table["2"]: 0.6,
                                                                       table["dog"]: 1.0}
    again = load_corpus(DataRoot(tmp_path), "mscoco_train", tok, answers)  # from the cache
    assert isinstance(again.corpus.piece_ids, np.memmap)  # shared, not a per-process copy
    assert np.array_equal(again.corpus.piece_ids, c.piece_ids)


@pytest.mark.parametrize("record, message", [
    ({"sentf": {}, "labelf": {}}, "missing key 'img_id'"),
    ({"img_id": "x", "sentf": {"vqa": ["q"]}, "labelf": {"vqa": []}}, "labelf.vqa"),
    ({"img_id": "x", "sentf": {"vqa": "q"}, "labelf": {}}, "sentf.vqa"),
    ({"img_id": "x", "sentf": {"vqa": ["q"]}, "labelf": {"vqa": [{"a": "high"}]}}, "labelf.vqa"),
])
def test_bad_corpus_records_name_file_record_and_key(tmp_path, record, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"img_id": "ok", "sentf": {}, "labelf": {}}, record]))
    with pytest.raises(CorpusFormatError, match="bad.json: record 1.*" + message.replace(".", r"\.")):
        read_corpus_json(path)


# ---- MLM ------------------------------------------------------------------------------------

def test_token_masking_rates_and_80_10_10():
    ids = np.arange(1000, 1018)
    chosen = masked = kept = 0
    for seed in range(1000):  # 18,000 pieces
        out, labels = text.mask_pieces(ids, np.random.default_rng(seed), 0.15, 103, 30522)
        sel = labels != text.IGNORE
        assert np.array_equal(labels[sel], ids[sel]) and np.array_equal(out[~sel], ids[~sel])
        chosen += sel.sum()
        masked += (out[sel] == 103).sum()
        kept += (out[sel] == ids[sel]).sum()
    assert within(chosen, 18000, 0.15)
    assert within(masked, chosen, 0.8) and within(kept, chosen, 0.1)
    assert within(chosen - masked - kept, chosen, 0.1)


@pytest.mark.slow
def test_dataset_masks_only_real_pieces_and_keeps_positions(setup):
    ds = dataset(setup, tasks=["mlm", "obj"])
    c = ds.corpus
    chosen = real = 0
    for i in range(len(ds)):
        for epoch in range(30):
            ds.set_epoch(epoch)
            item = ds[i]
            ids, pos = c.pieces(int(ds.sentences[i]))
            n = len(ids)
            labels = item["masked_lm_labels"].numpy()
            assert labels[0] == -1 and (labels[n + 1:] == -1).all()  # [CLS], [SEP], padding
            assert item["input_ids"][0] == ds.vocab.cls_id and item["input_ids"][n + 1] == ds.vocab.sep_id
            assert (item["input_ids"][n + 2:] == 0).all()
            assert np.array_equal(item["token_position"][1:n + 1].numpy(), pos)
            sel = labels[1:n + 1] != -1
            assert np.array_equal(labels[1:n + 1][sel], ids[sel])
            chosen += sel.sum()
            real += n
    assert real >= 10000 and within(chosen, real, 0.15)


def test_span_masking_masks_whole_words_at_the_rate():
    cont = np.zeros(50, dtype=bool)
    cont[[11, 12]] = True           # pieces 11, 12 are '##' continuations
    ids = np.array([1, 2, 11, 3, 4, 12, 5, 6, 7, 8, 9, 10, 13, 14, 15, 16])
    words = len(text.word_starts(ids, cont))
    masked_words = total = 0
    lengths = []
    for seed in range(2000):
        out, labels = text.mask_spans(ids, cont, np.random.default_rng(seed), 0.15, 49, 50)
        sel = labels != -1
        starts = text.word_starts(ids, cont)
        word_sel = sel[starts]
        assert np.array_equal(sel, np.repeat(word_sel, np.diff(list(starts) + [len(ids)])))
        masked_words += word_sel.sum()
        total += words
    assert within(masked_words, total, 0.15)


def test_span_lengths_are_geometric_and_clipped():
    rng = np.random.default_rng(0)
    lengths = np.array([text.span_length(rng, 0.2, 1, 10) for _ in range(20000)])
    assert lengths.min() == 1 and lengths.max() == 10
    mean = (1 - 0.8 ** 10) / 0.2  # E[min(Geometric(0.2), 10)]
    assert abs(lengths.mean() - mean) < 5 * lengths.std() / math.sqrt(len(lengths))
    assert within((lengths == 1).sum(), 20000, 0.2)
    chosen = text.sample_span_words(10_000, rng, 0.15, 0.2, 1, 10)
    assert chosen.sum() == 1500


# ---- objects --------------------------------------------------------------------------------

def test_object_masking_rates_and_80_10_10(setup):
    ds = dataset(setup, tasks=["mlm", "obj"])
    chosen = zero = kept = total = 0
    for i in range(300):  # 10,800 regions
        ds.set_epoch(i // len(ds))
        item = ds[i % len(ds)]
        sel = item["feat_mask"].numpy() > 0
        feats, orig = item["feats"].numpy(), item["feat"].numpy()
        assert np.array_equal(feats[~sel], orig[~sel])
        # LXMERT weights obj/attr by the detector's confidence on every region
        assert (item["obj_conf"].numpy() > 0).all() and (item["attr_conf"].numpy() > 0).all()
        chosen += sel.sum()
        zero += (feats[sel] == 0).all(1).sum()
        kept += (feats[sel] == orig[sel]).all(1).sum()
        total += len(sel)
    assert total >= 10000 and within(chosen, total, 0.15)
    assert within(zero, chosen, 0.8) and within(kept, chosen, 0.1)
    assert within(chosen - zero - kept, chosen, 0.1)


@pytest.mark.slow
def test_ifrs_swaps_features_within_the_image(setup):
    ds = dataset(setup, tasks=["mlm", "ifrs"])
    swapped = total = 0
    for epoch in range(20):
        ds.set_epoch(epoch)
        for i in range(0, len(ds), 5):
            item = ds[i]
            sel = item["feat_mask"].numpy() > 0
            feats, orig = item["feats"].numpy(), item["feat"].numpy()
            for r in np.flatnonzero(sel):  # another region of the same image, box unchanged
                same = [j for j in range(len(orig)) if np.array_equal(orig[j], feats[r])]
                assert same and r not in same
            assert np.array_equal(feats[~sel], orig[~sel])
            assert np.array_equal(item["obj_conf"].numpy() > 0, sel & (item["obj_conf"].numpy() > 0))
            swapped += sel.sum()
            total += len(sel)
    assert within(swapped, total, 0.15)


# ---- ITM, QA, topics ------------------------------------------------------------------------

@pytest.mark.slow
def test_itm_negatives_never_come_from_the_same_image(setup):
    ds = dataset(setup, tasks=["mlm", "obj", "itm", "itm_hs", "qa"])
    c = ds.corpus
    negatives = 0
    for epoch in range(10):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            s, t = int(ds.sentences[i]), int(item["text_sentence"])
            if item["matched_label"] == 0:
                negatives += 1
                assert c.sent_image[t] != c.sent_image[s]
                assert item["ans"] == -1
            else:
                assert t == s
    assert within(negatives, 10 * len(ds), 0.5)


def test_hard_negatives_are_nearer_than_random_ones(setup):
    ds = dataset(setup, tasks=["mlm", "itm", "itm_hs"])
    c = ds.corpus
    pooled = neighbors.mean_pooled(c, ds.stores)
    hard, rand = [], []
    for i in range(len(ds)):
        rng = np.random.default_rng(i)
        image = int(c.sent_image[ds.sentences[i]])
        negative = ds.hard_negative(image, int(ds.sentences[i]), rng)
        hard.append(pooled[image] @ pooled[c.sent_image[negative]])
        rand.append(pooled[image] @ pooled[c.sent_image[ds.random_negative(image, rng)]])
    assert np.mean(hard) > np.mean(rand) + 0.05


def test_a_hard_negative_never_repeats_the_positive_text(setup):
    """Near images may carry a caption identical to the positive one: no negative then."""
    ds = dataset(setup, tasks=["mlm", "itm", "itm_hs"])
    c = ds.corpus
    first = int(ds.sentences[0])
    image = int(c.sent_image[first])
    # every image's nearest neighbour is an image whose captions all read as the positive
    twin = next(i for i in range(c.num_images) if i != image)
    ds.neighbors = np.full_like(ds.neighbors, twin)
    same = [int(t) for t in range(c.img_sent[twin], c.img_captions[twin])]
    assert same, "the generated twin image has captions"
    original = c.pieces

    def pieces(t):  # the twin's captions have the positive's word pieces
        return original(first) if t in same else original(t)
    c.pieces = pieces
    try:
        for seed in range(200):
            negative = ds.hard_negative(image, first, np.random.default_rng(seed))
            assert negative not in same and c.sent_image[negative] != image
    finally:
        del c.pieces


def test_negatives_unlike_captions_never_read_as_one_of_the_images_captions(setup):
    """A caption such as "A red shape." fits every red image: with the stage field set, no
    ITM negative (random or hard) repeats any caption of the positive's image."""
    ds = dataset(setup, tasks=["mlm", "itm", "itm_hs"], negatives_unlike_captions=True)
    c = ds.corpus
    first = int(ds.sentences[0])
    image = int(c.sent_image[first])
    own = [int(t) for t in range(c.img_sent[image], c.img_captions[image])]
    assert len(own) >= 2, "the generated image has several captions"
    others = [int(s) for s in ds.sentences if c.sent_image[s] != image]
    copies = set(others[::2])  # half the other sentences read as the image's second caption
    original = c.pieces

    def pieces(t):
        return original(own[1]) if t in copies else original(t)
    c.pieces = pieces
    try:
        for seed in range(300):
            rng = np.random.default_rng(seed)
            for negative in (ds.random_negative(image, rng), ds.hard_negative(image, first, rng)):
                assert negative not in copies and c.sent_image[negative] != image
        # without the field LXMERT's rule holds: only the image is checked
        ds.stage.negatives_unlike_captions = False
        drawn = {ds.random_negative(image, np.random.default_rng(s)) for s in range(300)}
        assert drawn & copies
    finally:
        del c.pieces
        ds.stage.negatives_unlike_captions = True


def test_a_corpus_without_possible_negatives_is_an_error_not_a_hang(setup):
    ds = dataset(setup, tasks=["mlm", "itm"])
    c = ds.corpus
    image = int(c.sent_image[int(ds.sentences[0])])
    ds.sentences = ds.sentences[c.sent_image[ds.sentences] == image]
    with pytest.raises(ValueError, match="no ITM negative for image"):
        ds.random_negative(image, np.random.default_rng(0))


def test_qa_answers_follow_their_scores():
    answers, scores = np.array([3, 7, 9]), np.array([0.9, 0.3, 0.3], dtype=np.float32)
    draws = [text.sample_answer(answers, scores, np.random.default_rng(s)) for s in range(10000)]
    for a, p in zip(answers, scores / scores.sum()):
        assert within(draws.count(a), 10000, p)
    assert text.sample_answer(np.array([5]), np.array([0.3]), np.random.default_rng(0)) == 5
    assert text.sample_answer(np.zeros(0, int), np.zeros(0), np.random.default_rng(0)) == -1


def test_qa_labels_only_for_matched_qa_sentences(setup):
    ds = dataset(setup, tasks=["mlm", "itm", "qa"])
    c = ds.corpus
    for i in range(len(ds)):
        item, s = ds[i], int(ds.sentences[i])
        if item["ans"] != -1:
            assert c.is_qa(s) and item["matched_label"] == 1
            assert int(item["ans"]) in c.answers(s)[0]
        elif c.is_qa(s) and item["matched_label"] == 1:
            assert len(c.answers(s)[0]) == 0


def test_topic_labels_are_exactly_the_content_pieces(setup):
    _, tok, _, _, vocab = setup
    enc = tok.encode("A man riding a horse on the beach, skateboarding.", return_tokens=True)
    n = int(enc.input_mask[0].sum())
    ids = enc.input_ids[0, 1:n - 1]
    got = set(text.content_piece_ids(ids, vocab.continuation, vocab.id_to_token).tolist())
    want = {tok.vocab[w] for w in ("man", "riding", "horse", "beach")}
    want |= {tok.vocab[p] for p in tok.tokenize("skateboarding")[0]}
    assert got == want
    ds = dataset(setup, tasks=["mlm", "topic"])
    for i in range(0, len(ds), 9):
        item = ds[i]
        ids, _ = ds.corpus.pieces(int(ds.sentences[i]))
        topic = item["topic_ids"].numpy()
        words = [w for w in text.words_of(ids, vocab.continuation, vocab.id_to_token)]
        content = {tok.vocab[p] for w in words if w not in text.STOP_WORDS
                   and not text.is_punctuation(w) for p in tok.tokenize(w)[0]}
        assert set(topic[topic >= 0].tolist()) == content


def test_phrases_are_noun_chunks_with_their_own_positions(setup):
    ds = dataset(setup, tasks=["mlm", "topic"], text_unit="phrase", phrase_prob=1.0,
                 sentence_sources=["captions"])
    assert set(ds.corpus.sources[k] for k in ds.corpus.sent_source[ds.sentences]) == {"mscoco", "vg"}
    shorter = 0
    for i in range(len(ds)):
        item = ds[i]
        n = int(item["input_mask"].sum()) - 2
        full = len(ds.corpus.pieces(int(ds.sentences[i]))[0])
        shorter += n < full
        assert item["token_position"][1] == 2
    assert shorter > len(ds) // 2
    assert text.rule_noun_chunks("a man riding a horse on the beach".split()) == [(0, 2), (3, 5), (6, 8)]


def test_the_token_unit_is_the_content_words_with_their_own_positions(setup):
    """text_unit token: the caption's content words alone (never the function words a
    sentence's grammar gives away), each word one position from 2; sentence keeps all."""
    _, tok, _, _, vocab = setup
    enc = tok.encode("A man riding a horse on the beach, skateboarding.", return_tokens=True)
    n = int(enc.input_mask[0].sum())
    ids = enc.input_ids[0, 1:n - 1]
    got, pos = text.content_words(ids, vocab.continuation, vocab.id_to_token)
    skate = tok.tokenize("skateboarding")[0]
    assert [vocab.id_to_token[int(i)] for i in got] == ["man", "riding", "horse", "beach", *skate]
    assert pos.tolist() == [2, 3, 4, 5] + [6] * len(skate)
    assert text.content_words(ids[:1], vocab.continuation, vocab.id_to_token) is None  # "a"
    token = dataset(setup, tasks=["mlm"], text_unit="token", sentence_sources=["captions"])
    sentence = dataset(setup, tasks=["mlm"], sentence_sources=["captions"])
    shorter = 0
    for i in range(0, len(token), 5):
        a, b = token[i], sentence[i]
        ids, _ = token.corpus.pieces(int(token.sentences[i]))
        words = text.content_words(ids, vocab.continuation, vocab.id_to_token)
        want = words[0] if words is not None else ids
        n = int(a["input_mask"].sum()) - 2
        labels = a["masked_lm_labels"][1:n + 1].numpy()
        assert np.array_equal(np.where(labels >= 0, labels, want), want)  # labels are its pieces
        assert int(b["input_mask"].sum()) - 2 == len(ids)
        shorter += n < len(ids)
    assert shorter > len(range(0, len(token), 5)) // 2


def test_the_topic_of_a_mismatched_pair_is_the_images_own_sentence(setup):
    _, _, _, _, vocab = setup
    for where in ("image", "text"):
        ds = dataset(setup, tasks=["mlm", "itm", "topic"], mismatched_topic=where)
        mismatched = 0
        for i in range(len(ds)):
            item = ds[i]
            shown = int(item["text_sentence"])
            source = shown if item["matched_label"] == 1 or where == "text" \
                else int(ds.sentences[i])
            mismatched += item["matched_label"] == 0
            want = text.content_piece_ids(ds.corpus.pieces(source)[0], vocab.continuation,
                                          vocab.id_to_token)
            topic = item["topic_ids"].numpy()
            assert np.array_equal(np.sort(topic[topic >= 0]), want), (where, i)
        assert mismatched > len(ds) // 4


def test_the_token_stage_reads_whole_captions_only():
    """Captions only (questions name what the image need not show); whole captions, since
    the content-word unit transferred worse in the easy-VQA ablation (its own config)."""
    from pathlib import Path
    base = Path(__file__).resolve().parents[1] / "run" / "configs"
    for path in (base / "msp" / "token.json", base / "easyvqa" / "token_captions.json"):
        stage = load_stage_config(path)
        assert stage.text_unit == "sentence" and stage.sentence_sources == ["captions"], path
    words = load_stage_config(base / "easyvqa" / "token_captions_words.json")
    assert words.text_unit == "token"


# ---- determinism ----------------------------------------------------------------------------

@pytest.mark.slow
def test_items_depend_on_seed_epoch_index_only(setup):
    ds = dataset(setup, seed=3, tasks=["mlm", "obj", "itm", "qa", "topic"])
    ds.set_epoch(2)
    loader = lambda w: torch.utils.data.DataLoader(ds, batch_size=5, num_workers=w)
    a, b = list(loader(0)), list(loader(2))
    for x, y in zip(a, b):
        for key in x:
            assert torch.equal(x[key], y[key]), key
    first = ds[4]
    ds.set_epoch(3)
    assert not all(torch.equal(first[k], ds[4][k]) for k in ("feat_mask", "masked_lm_labels",
                                                            "matched_label"))


# ---- stage configs --------------------------------------------------------------------------

def test_shipped_stage_configs_load(tmp_path):
    from pathlib import Path
    base = Path(__file__).resolve().parents[1] / "run" / "configs"
    stages = {n: load_stage_config(base / "msp" / f"{n}.json") for n in ("token", "phrase", "sentence")}
    assert stages["token"].has("ifrs") and not stages["token"].has("itm")
    assert stages["phrase"].masking == "span" and stages["phrase"].has("topic")
    assert stages["sentence"].has("itm_hs") and stages["sentence"].has("qa")
    lxmert = load_stage_config(base / "lxmert_pretrain.json")
    assert lxmert.weights() == [1, 0, 1, 1, 1, 1, 1]
    paper = load_stage_config(base / "lxmert_pretrain_paper.json")
    assert paper.weights(9) == [1, 0, 1, 1, 1, 1, 0] and paper.weights(10) == lxmert.weights()
    assert not any(s.negatives_unlike_captions for s in (*stages.values(), lxmert))
    easy = {p.stem: load_stage_config(p) for p in (base / "easyvqa").glob("*.json")}
    assert easy["token_captions"].sentence_sources == ["captions"]
    assert easy["sentence_captions"].negatives_unlike_captions
    from tools.easyvqa_pretrain import EXPERIMENTS
    for make in EXPERIMENTS.values():
        for chain in make(True).arms.values():
            assert all(load_stage_config(base / stage.config) for stage in chain)


def test_easyvqa_qa_stage_trains_qa_on_every_example(setup):
    """The easy-VQA proof's QA sentence stage reads the questions only and never pairs a
    question with another image, so every example it draws carries an answer label."""
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "run" / "configs" / "easyvqa" / "sentence_qa.json"
    stage = load_stage_config(path)
    assert stage.has("qa") and not stage.has("itm") and stage.sentence_sources == ["questions"]
    fields = {k: getattr(stage, k) for k in ("tasks", "text_unit", "masking", "sentence_sources")}
    ds = dataset(setup, **fields)
    c = ds.corpus
    assert len(ds) > 0 and all(c.is_qa(int(s)) for s in ds.sentences)
    labelled = [i for i in range(len(ds)) if len(c.answers(int(ds.sentences[i]))[0])]
    assert labelled and all(int(ds[i]["ans"]) != -1 and int(ds[i]["matched_label"]) == 1
                            for i in labelled)


def test_a_task_that_starts_later_has_no_training_weight_before_its_epoch():
    stage = StageConfig(tasks=["mlm", "obj", "itm", "qa"], task_start_epochs={"qa": 10}).validate()
    assert stage.weights(9) == [1, 0, 1, 1, 1, 1, 0] and stage.weights(10) == [1, 0, 1, 1, 1, 1, 1]
    assert stage.weights() == stage.weights(10) and stage.tasks_of_epoch(0) == ["mlm", "obj", "itm"]
    both = StageConfig(tasks=["obj", "ifrs"], task_start_epochs={"ifrs": 1}).validate()
    assert both.weights(0) == both.weights(1)  # obj already trains the region losses


@pytest.mark.parametrize("content, key", [
    ({"tasks": ["mlm", "nsp"]}, "tasks"), ({"text_unit": "word"}, "text_unit"),
    ({"word_mask_rate": 1.5}, "word_mask_rate"), ({"epochs": 0}, "epochs"),
    ({"loss_weights": {"mlm": -1}}, "loss_weights"), ({"tasks": ["itm_hs"]}, "tasks"),
    ({"batchsize": 3}, "batchsize"), ({"negatives_unlike_captions": 1}, "negatives_unlike_captions"),
    ({"task_start_epochs": {"topic": 1}}, "task_start_epochs"),
    ({"task_start_epochs": {"qa": -1}}, "task_start_epochs"),
    ({"mismatched_topic": "caption"}, "mismatched_topic"),
])
def test_bad_stage_configs_name_file_and_key(tmp_path, content, key):
    path = tmp_path / "bad_stage.json"
    path.write_text(json.dumps(content))
    with pytest.raises(StageConfigError, match=f"bad_stage.json.*{key}"):
        load_stage_config(path)


# ---- easy-VQA pre-training corpus -----------------------------------------------------------

def test_easyvqa_corpus_uses_train_images_only(tmp_path):
    from tools.easyvqa import write_pretraining_corpus

    def datums(split, n):
        out = []
        for i in range(n):
            img = f"easyvqa_{'test' if split == 'test' else 'train'}_{i + (1000 if split == 'valid' else 0)}"
            out += [{"img_id": img, "sent": "What color is the shape?", "label": {"teal": 1.0}},
                    {"img_id": img, "sent": "What shape is this?", "label": {"circle": 1.0}},
                    {"img_id": img, "sent": "Is there a red shape?", "label": {"no": 1.0}}]
        return out

    (tmp_path / "easyvqa").mkdir()
    splits = {"train": datums("train", 40), "valid": datums("valid", 5), "test": datums("test", 5)}
    for split, data in splits.items():
        (tmp_path / "easyvqa" / f"{split}.json").write_text(json.dumps(data))
    counts = write_pretraining_corpus(tmp_path, verbose=False)
    train_ids = {d["img_id"] for d in splits["train"]}
    seen = set()
    for name in ("easyvqa_train", "easyvqa_minival"):
        records = read_corpus_json(tmp_path / "lxmert" / f"{name}.json")
        assert len(records) == counts[name] > 0
        ids = {r["img_id"] for r in records}
        assert ids <= train_ids and not ids & seen
        seen |= ids
        r = records[0]
        assert r["sentf"]["easyvqa_caption"] == [
            "A teal circle.", "There is a teal circle in the image.",
            "The image shows one teal circle on a plain background.", "A teal shape.",
            "There is a teal shape in the image.", "A circle.", "There is a circle in the image."]
        assert r["labelf"]["easyvqa"] == [{"teal": 1.0}, {"circle": 1.0}, {"no": 1.0}]
    assert seen == train_ids
    smaller: set = set()
    for percent, images in ((1, 1), (5, 2), (10, 4)):  # of the 40 train images
        few = json.loads((tmp_path / "easyvqa" / f"train_{percent}pct.json").read_text())
        few_ids = {d["img_id"] for d in few}
        assert counts[f"train_{percent}pct_images"] == len(few_ids) == images
        assert smaller <= few_ids <= train_ids and len(few) == 3 * len(few_ids)
        smaller = few_ids
    from tasks.common.paths import DataRoot
    assert DataRoot(tmp_path).path("easyvqa", "examples", "train_5pct").name == "train_5pct.json"


def test_tasks_flag_overrides_the_stage_and_bad_stages_stop_main(tmp_path):
    from tasks.pretrain.main import build_parser, resolve_stage
    settings, stage = resolve_stage(build_parser(), ["--tasks", "mlm,itm"])
    args = settings.args
    assert stage.tasks == ["mlm", "itm"] and args.batch_size == 256 and args.lr == 1e-4
    assert args.epochs == 20 and args.warmup == 0.05 and args.clip_norm == 1.0
    with pytest.raises(SystemExit, match="--tasks.*nsp"):
        resolve_stage(build_parser(), ["--tasks", "mlm,nsp"])
    with pytest.raises(SystemExit, match="missing.json"):
        resolve_stage(build_parser(), ["--stage", str(tmp_path / "missing.json")])


def test_a_stage_configs_warmup_reaches_the_run(tmp_path):
    """The launchers pass no --warmup of their own: the stage config's warmup is the run's,
    unless the command line gives one (defaults < stage config < command line)."""
    import os
    import shlex
    import subprocess
    from pathlib import Path
    from tasks.pretrain.main import build_parser, resolve_stage
    repo = Path(__file__).resolve().parents[1]
    config = tmp_path / "warm.json"
    config.write_text(json.dumps({"tasks": ["mlm"], "warmup": 0.2}))
    env = dict(os.environ, LXRT_DRY_RUN="1")
    done = subprocess.run(["bash", str(repo / "run" / "pretrain.bash"), "cpu", "w", "--stage",
                           str(config)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    argv = shlex.split(done.stdout.split("python -m tasks.pretrain.main", 1)[1])
    assert "--warmup" not in argv
    settings, stage = resolve_stage(build_parser(), argv)
    assert settings.args.warmup == stage.warmup == 0.2
    assert settings.sources["warmup"] == f"stage file {config}"
    settings, stage = resolve_stage(build_parser(), argv + ["--warmup", "0.1"])
    assert settings.args.warmup == stage.warmup == 0.1


def test_visual_losses_flag_keeps_only_the_named_region_losses():
    """Grid features without detector labels (every region object 0, confidence 1) must not
    train the obj/attr losses: their constant targets are met by driving the pooled output
    into tanh saturation, the same vector for every image (the easy-VQA proof's pooler_f
    varied by 4e-5 across images after 48 steps). --visualLosses feat turns them off."""
    from pathlib import Path
    from tasks.pretrain.main import build_parser, resolve_stage
    token = str(Path(__file__).resolve().parents[1] / "run" / "configs" / "msp" / "token.json")
    _, stage = resolve_stage(build_parser(), ["--stage", token])
    assert stage.weights()[3:6] == [1.0, 1.0, 1.0]  # obj, attr, feat
    _, stage = resolve_stage(build_parser(), ["--stage", token, "--visualLosses", "feat"])
    assert stage.weights() == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    for bad in ("feat,box", ","):
        with pytest.raises(SystemExit, match="--visualLosses"):
            resolve_stage(build_parser(), ["--stage", token, "--visualLosses", bad])
    easy = (Path(__file__).resolve().parents[1] / "run" / "configs" / "easyvqa").glob("*.json")
    for path in easy:  # the easy-VQA grid features: only the feature regression trains
        assert load_stage_config(path).weights()[3:5] == [0.0, 0.0], path


def test_validation_replaces_regions_with_training_features(setup):
    from tasks.pretrain.main import build_parser, resolve_stage
    from tasks.pretrain.task import PretrainTask
    root = setup[0]
    settings, stage = resolve_stage(build_parser(), [
        "--dataRoot", str(root), "--modelConfig", str(root / "bert_config.json"), "--train",
        "mscoco_train", "--valid", "mscoco_minival"])
    task = PretrainTask(settings.args, stage)
    train = task.train_dataset()
    valid = task.valid_dataset()
    assert valid.feature_pool is train and valid.fixed_epoch == 0
    train_feats = {train.image_row(int(i)).features.tobytes() for i in
                   np.unique(train.corpus.sent_image)}
    feat = valid.random_region_feature(np.random.default_rng(0))
    assert any(feat.tobytes() in f for f in train_feats)


def test_a_batch_without_mlm_or_qa_labels_gives_finite_loss_and_gradients(setup):
    """Cross-entropy over no labelled item is NaN, and 0 x NaN too: such losses must be left
    out for the batch, not weighted by 0."""
    from tasks.pretrain.main import build_parser, resolve_stage
    from tasks.pretrain.task import PretrainTask
    root = setup[0]
    settings, stage = resolve_stage(build_parser(), [
        "--dataRoot", str(root), "--modelConfig", str(root / "bert_config.json"), "--train",
        "mscoco_train", "--tasks", "mlm,obj,qa"])
    args = settings.args
    task = PretrainTask(args, stage)
    ds = dataset(setup, tasks=["obj"])  # no MLM labels, no answers
    batch = torch.utils.data.default_collate([ds[i] for i in range(6)])
    assert (batch["masked_lm_labels"] == -1).all() and (batch["ans"] == -1).all()
    torch.manual_seed(0)
    model = task.build_model()
    loss, stats = task.compute_loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss) and stats["batches_mlm"] == 0 and stats["batches_qa"] == 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    summary = task.epoch_metrics(stats, 6)
    assert "mlm_loss" not in summary and "qa_loss" not in summary and "obj_loss" in summary


def test_mlm_scored_at_the_labelled_positions_only_gives_the_same_losses(setup):
    """The fast MLM path (vocabulary scores only where a label is) changes no loss and no
    accuracy of LXRTPretraining."""
    from tasks.pretrain.main import build_parser, resolve_stage
    from tasks.pretrain.task import build_labels
    root = setup[0]
    settings, stage = resolve_stage(build_parser(), [
        "--dataRoot", str(root), "--modelConfig", str(root / "bert_config.json"), "--tasks",
        "mlm,obj,itm"])
    args = settings.args
    from tasks.pretrain.task import PretrainTask
    task = PretrainTask(args, stage)
    ds = dataset(setup, tasks=["mlm", "obj", "itm"])
    batch = torch.utils.data.default_collate([ds[i] for i in range(8)])
    torch.manual_seed(0)
    model = task.build_model().eval()
    labels, _, positions = build_labels(batch, task.config.topic_size)
    inputs = [batch[k] for k in ("input_ids", "token_position", "input_mask", "feats", "boxes")]
    fast = model(*inputs, labels=labels, mlm_positions=positions)
    full_labels = dict(labels, masked_lm_labels=torch.where(
        positions, batch["masked_lm_labels"], torch.full_like(batch["masked_lm_labels"], -1)))
    full = model(*inputs, labels=full_labels)
    assert fast.mlm_scores.shape[0] == int(positions.sum()) < full.mlm_scores[..., 0].numel()
    assert torch.allclose(fast.losses, full.losses, atol=1e-5)
    assert torch.allclose(fast.accuracies, full.accuracies)
