"""Flickr30k retrieval task: exact evaluator, 4-pair training set, entry point end to end.

Runs on the generated data root (tools.make_data, 16 images per split, small model) on CPU."""
import json
import os
import re
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from generated import common_flags
from lxrt.config import LXRTConfig
from lxrt.loading import load_itm_head
from lxrt.tokenization import LXRTTokenizer, find_vocab_file
from tasks.common.features import open_feature_store
from tasks.common.paths import DataRoot
from tasks.retrieval.data import (HardNegatives, RetrievalTrainDataset, SplitLoader,
                                  carve_minival, hard_negative_table, load_flickr_annotations,
                                  split_files)
from tasks.retrieval.evaluate import DeviceSplit, score_captions, score_logits, scoring_order
from tasks.retrieval.main import main
from tasks.retrieval.model import RetrievalModel
from tasks.retrieval.task import pair_loss

IMAGES, DIM, CAPS, VALID = 8, 32, 5, 2
FINAL_RE = re.compile(r"^Final r1:\d+\.\d{3}, r5:\d+\.\d{3}, r10:\d+\.\d{3}, "
                      r"mder:\d+\.\d{3}, meanr:\d+\.\d{3}$")


@pytest.fixture(scope="module")
def root(generated_root_factory):
    return generated_root_factory(images=IMAGES, dim=DIM)


def common(root, out):
    return common_flags(root, out, load_lxmert=False)


@pytest.fixture(scope="module")
def zero_shot(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("zs")
    summary = main(common(root, out) + ["--train", "", "--test", "test", "--pairsPerForward",
                                        "48", "--loadLXMERTQA", str(root / "model")])
    return out, summary


@pytest.fixture(scope="module")
def tokenizer():
    return LXRTTokenizer(find_vocab_file(None), 20)


@pytest.fixture(scope="module")
def loader(root, tokenizer):
    return SplitLoader(DataRoot(root), tokenizer, valid_images=VALID, hold_out_minival=True)


def small_model(root):
    config = LXRTConfig.from_json_file(root / "bert_config.json", l_layers=0, x_layers=5,
                                       r_layers=0)
    return RetrievalModel(config), config


# ------------------------------------------------------------------------------- evaluation
def naive_ranks(scores, c2i):
    """Plain Python loops over the score matrix for the three protocols. Rank = number of
    other candidates scoring at least as high as the ground truth (the evaluator's default,
    conservative rule; equal to the argsort position when the row has no ties)."""
    n_cap, n_img = scores.shape
    s = scores.tolist()
    ir = [sum(1 for j in range(n_img) if j != c2i[c] and s[c][j] >= s[c][c2i[c]])
          for c in range(n_cap)]
    first = [min(c for c in range(n_cap) if c2i[c] == i) for i in range(n_img)]
    tr_std, tr_first = [], []
    for i in range(n_img):
        own = [c for c in range(n_cap) if c2i[c] == i]
        tr_std.append(min(sum(1 for c in range(n_cap) if c2i[c] != i and s[c][i] >= s[o][i])
                          for o in own))
        tr_first.append(sum(1 for k in range(n_img)
                            if k != i and s[first[k]][i] >= s[first[i]][i]))
    return {"ir": ir, "tr_standard": tr_std, "tr_first": tr_first}


def naive_metrics(ranks):
    r = np.asarray(ranks, dtype=np.float64)
    return {"r1": 100.0 * np.sum(r < 1) / len(r), "r5": 100.0 * np.sum(r < 5) / len(r),
            "r10": 100.0 * np.sum(r < 10) / len(r), "medr": float(np.floor(np.median(r) + 1)),
            "meanr": float(np.mean(r) + 1)}


def test_zero_shot_outputs_and_direct_model_calls(root, zero_shot, tokenizer):
    out, summary = zero_shot
    scores = np.load(out / "test_scores.npy")
    logits = np.load(out / "test_logits.npy")
    assert scores.shape == (IMAGES * CAPS, IMAGES) and logits.shape == (IMAGES * CAPS, IMAGES, 2)
    assert summary["test"]["score_function"] == "prob"
    np.testing.assert_allclose(scores, torch.softmax(torch.from_numpy(logits), -1)[..., 1],
                               rtol=0, atol=1e-7)
    # direct calls of the model, loaded the same way, on a few pairs
    model, config = small_model(root)
    load_itm_head(model, root / "model", config)
    model.eval()
    ann = load_flickr_annotations(root / "flickr30k" / "flickr30k_test2014.json")
    store = open_feature_store(root / "flickr30k" / "flickr30k_test2014.tsv")
    flat = [s for caps in ann.captions for s in caps]
    for c, i in [(0, 0), (7, 3), (21, 7), (39, 2), (39, 7)]:
        tok = tokenizer.encode_batch([flat[c]])
        feats, boxes = store[ann.img_paths[i]]
        with torch.no_grad():
            logit = model(torch.from_numpy(tok.input_ids), torch.from_numpy(tok.token_position),
                          torch.from_numpy(tok.input_mask), torch.from_numpy(feats)[None],
                          torch.from_numpy(boxes)[None])
        np.testing.assert_allclose(logits[c, i], logit[0].numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(scores[c, i], torch.softmax(logit, -1)[0, 1].item(),
                                   rtol=1e-5, atol=1e-6)
    # eval.log: a label line before each of the authors' Final lines, 3 protocols x 2 scores
    lines = (out / "eval.log").read_text().splitlines()
    finals = [ln for ln in lines if ln.startswith("Final")]
    assert len(finals) == 6 and all(FINAL_RE.match(ln) for ln in finals)
    assert "ir | score prob" in lines[lines.index(finals[0]) - 1]
    meta = json.loads((out / "test_metrics.json").read_text())
    assert meta["images"] == ann.img_paths
    assert set(meta["all"]) == {"prob", "logit"}
    assert set(meta["primary"]) == {"ir", "tr_standard", "tr_first"}


@pytest.mark.parametrize("fn", ["prob", "logit"])
def test_evaluator_ranks_equal_naive_loop(zero_shot, fn):
    out, _ = zero_shot
    logits = torch.from_numpy(np.load(out / "test_logits.npy"))
    scores = (torch.softmax(logits, -1)[..., 1] if fn == "prob" else logits[..., 1]).numpy()
    c2i = np.repeat(np.arange(IMAGES), CAPS)
    naive = naive_ranks(scores, c2i.tolist())
    saved = np.load(out / "test_ranks.npz")
    meta = json.loads((out / "test_metrics.json").read_text())
    for proto, ranks in naive.items():
        assert saved[f"{fn}_{proto}"].tolist() == ranks, proto
        expected = naive_metrics(ranks)
        for k, v in expected.items():
            assert meta["all"][fn][proto][k] == pytest.approx(v, abs=1e-9), (proto, k)


@pytest.mark.slow
def test_authors_tr_order_with_shuffled_tsv(root, zero_shot, tmp_path):
    """A feature file in another order changes nothing but the TSV-order rank list, which
    then equals the authors' loop (queries in TSV order, first captions in JSON order)."""
    out0, _ = zero_shot
    shuffled = tmp_path / "data"
    shutil.copytree(root, shuffled, ignore=shutil.ignore_patterns("*.store"))
    tsv = shuffled / "flickr30k" / "flickr30k_test2014.tsv"
    lines = tsv.read_bytes().splitlines(keepends=True)
    perm = np.random.default_rng(3).permutation(len(lines))
    tsv.write_bytes(b"".join(lines[i] for i in perm))
    out = tmp_path / "out"
    main(common(shuffled, out) + ["--train", "", "--test", "test", "--pairsPerForward", "48",
                                  "--loadLXMERTQA", str(shuffled / "model"), "--direction",
                                  "text", "--scoreFunction", "logit", "--rankMethod", "argsort"])
    np.testing.assert_allclose(np.load(out / "test_logits.npy"),
                               np.load(out0 / "test_logits.npy"), rtol=1e-5, atol=1e-6)
    scores = np.load(out / "test_scores.npy")  # raw logit[:, 1] selected
    np.testing.assert_array_equal(scores, np.load(out / "test_logits.npy")[..., 1])
    ann = load_flickr_annotations(shuffled / "flickr30k" / "flickr30k_test2014.json")
    tsv_ids = [ln.split(b"\t", 1)[0].decode() for ln in (lines[i] for i in perm)]
    col = {p: i for i, p in enumerate(ann.img_paths)}
    authors = []
    for img in tsv_ids:  # the authors' sent_retrieval loop
        row = np.array([scores[CAPS * k, col[img]] for k in range(IMAGES)])
        authors.append(int(np.where(np.argsort(-row) == col[img])[0][0]))
    saved = np.load(out / "test_ranks.npz")
    assert saved["logit_tr_first_tsv_order"].tolist() == authors
    meta = json.loads((out / "test_metrics.json").read_text())
    assert meta["score_function"] == "logit" and meta["direction"] == "text"
    assert meta["primary"]["tr_first"] == pytest.approx(naive_metrics(authors))


def test_chunk_size_order_and_sharding_do_not_change_scores(root, loader):
    model, config = small_model(root)
    load_itm_head(model, root / "model", config)
    split = loader.split("minival")
    data = DeviceSplit(split, torch.device("cpu"))
    # reference: the plain model on every pair at once, captions in file order, the full
    # padded length, region features (not precomputed visual inputs)
    natural = np.arange(split.num_captions)
    cap = torch.from_numpy(natural).repeat_interleave(split.num_images)
    img = torch.arange(split.num_images).repeat(split.num_captions)
    with torch.no_grad():
        reference = model.eval()(*(data.tokens[k][cap] for k in
                                   ("input_ids", "token_position", "input_mask")),
                                 data.feats[img], data.boxes[img])
    reference = reference.view(split.num_captions, split.num_images, 2)
    assert len(set(data.lengths.tolist())) > 1  # lengths differ, so the order matters
    full = score_logits(model, data, 100_000)
    torch.testing.assert_close(full, reference, rtol=1e-5, atol=1e-6)
    for ppf in (7, 16):
        torch.testing.assert_close(score_logits(model, data, ppf), full, rtol=1e-5, atol=1e-6)
    for world in (2, 3):
        shares = [scoring_order(data.lengths, r, world) for r in range(world)]
        assert sorted(np.concatenate(shares).tolist()) == natural.tolist()
        assert max(len(x) for x in shares) - min(len(x) for x in shares) <= 1
        for share in shares:
            torch.testing.assert_close(score_captions(model, data, share, 9), full[share],
                                       rtol=1e-5, atol=1e-6)


def test_scoring_order_is_longest_first_and_stable():
    lengths = np.array([5, 9, 5, 12, 9, 3])
    assert scoring_order(lengths).tolist() == [3, 1, 4, 0, 2, 5]
    assert scoring_order(lengths, 1, 2).tolist() == [1, 0, 5]


# ------------------------------------------------------------------------------- training data
def test_minival_is_held_out(loader):
    train, minival = loader.split("train"), loader.split("minival")
    assert minival.num_images == VALID and train.num_images == IMAGES - VALID
    assert not set(train.img_paths) & set(minival.img_paths)
    np.testing.assert_array_equal(carve_minival(IMAGES, VALID), carve_minival(IMAGES, VALID))
    with pytest.raises(FileNotFoundError, match="minival"):
        split_files(loader.root, "valid")


def _draw_all(ds, epochs):
    for epoch in range(epochs):
        for index in range(len(ds)):
            yield index, ds.sample(index, epoch)


def test_hard_negative_sampler_never_returns_positive(loader):
    split = loader.split("train")
    real = loader.hard_negatives()
    ds = RetrievalTrainDataset(split, real, seed=1)
    cand, counts = ds.hard_cand, ds.hard_count
    train_pos = set(range(split.num_images))
    for index, (caps, imgs, target) in _draw_all(ds, 30):
        g = int(split.caption_to_image[index])
        assert target == [1, 0, 0, 0] and caps[:2] == [index, index]
        assert imgs == [g, imgs[1], g, g] and imgs[1] != g and imgs[1] in train_pos
        hard_img = int(split.caption_to_image[caps[2]])
        assert hard_img != g
        if counts[g]:
            assert hard_img in cand[g, :counts[g]].tolist()
        assert int(split.caption_to_image[caps[3]]) != g
    # a hostile pool: the image itself in many columns and held-out (minival) images
    n = len(real.train_image_list)
    pool = np.zeros((n, 6), dtype=np.int64)
    minival_rows = [real.index_of()[i] for i in loader.split("minival").image_ids]
    for r in range(n):
        pool[r] = [r, r, minival_rows[0], r, (r + 1) % n, r]
    hostile = HardNegatives(real.path, real.train_image_list, pool)
    ds = RetrievalTrainDataset(split, hostile, seed=2)
    for index, (caps, imgs, _) in _draw_all(ds, 30):
        g = int(split.caption_to_image[index])
        assert int(split.caption_to_image[caps[2]]) != g
    table, counts = hard_negative_table(split, hostile)
    assert counts.max() <= 1  # only column 4 survives, when it is a training image


def test_samples_do_not_depend_on_workers(loader):
    split = loader.split("train")
    ds = RetrievalTrainDataset(split, loader.hard_negatives(), seed=9595)

    def collect(workers, epoch):
        ds.set_epoch(epoch)
        order = list(range(len(ds)))[::-1]
        dl = DataLoader(ds, batch_size=8, sampler=order, num_workers=workers)
        batches = list(dl)
        return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}

    a, b = collect(0, 1), collect(2, 1)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    c = collect(0, 2)
    assert not torch.equal(a["caption_index"], c["caption_index"])  # epochs differ
    # resume-exact: one item is a function of (seed, epoch, index) only
    assert ds.sample(5, 1) == ds.sample(5, 1)
    item = ds[3]
    assert item["feats"].shape == (4, 36, DIM) and item["input_ids"].shape == (4, 20)


def test_pair_loss_is_twice_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(128, 2)
    target = torch.randint(0, 2, (128,))
    probs = torch.softmax(logits, -1)
    onehot = torch.nn.functional.one_hot(target, 2).float()
    ref = torch.nn.BCELoss()(probs, onehot) * 2
    torch.testing.assert_close(pair_loss(logits, target), ref)
    torch.testing.assert_close(pair_loss(logits, target),
                               2 * torch.nn.functional.cross_entropy(logits, target))


# ------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_finetune_then_test(root, zero_shot, tmp_path, monkeypatch):
    epochs_seen = []
    original = RetrievalTrainDataset.set_epoch

    def record(self, epoch):
        epochs_seen.append(epoch)
        original(self, epoch)

    monkeypatch.setattr(RetrievalTrainDataset, "set_epoch", record)
    ft = common(root, tmp_path / "ft") + [
        "--train", "train", "--valid", "minival", "--validImages", str(VALID), "--epochs", "2",
        "--batchSize", "8", "--lr", "1e-4", "--pairsPerForward", "64",
        "--loadLXMERTQA", str(root / "model")]
    out = tmp_path / "ft"
    summary = main(ft)
    assert epochs_seen == [0, 1]  # negatives are seeded per epoch
    for name in ("BEST.pth", "LAST.pth", "log.log", "metrics.jsonl", "resume.pth"):
        assert (out / name).is_file(), name
    record_ = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert record_["valid"]["split"] == "minival"
    assert record_["valid"]["num_images"] == VALID
    assert record_["valid"]["num_captions"] == VALID * CAPS
    assert 0 <= record_["best"] <= 1
    assert summary["best"]["split"] == "minival"
    log = (out / "log.log").read_text()
    assert "Epoch 1: Valid" in log and "Epoch 1: Best" in log

    # interrupted mid-epoch 1 (3 steps per epoch) and resumed: the same final weights
    out2 = tmp_path / "ft2"
    args2 = [a if a != str(out) else str(out2) for a in ft]
    assert main(args2 + ["--stopAfterSteps", "4"]).get("best") is None
    main(args2 + ["--resume"])
    a = torch.load(out / "LAST.pth", weights_only=True)
    b = torch.load(out2 / "LAST.pth", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    test_out = tmp_path / "test"
    res = main(common(root, test_out) + ["--train", "", "--test", "test", "--load",
                                         str(out / "LAST"), "--direction", "text",
                                         "--scoreFunction", "logit"])
    assert res["test"]["score_function"] == "logit"
    logits = np.load(test_out / "test_logits.npy")
    assert not np.allclose(logits, np.load(zero_shot[0] / "test_logits.npy"))
    scores = np.load(test_out / "test_scores.npy")
    np.testing.assert_array_equal(scores, logits[..., 1])
    assert os.path.getsize(test_out / "eval.log") > 0


# ------------------------------------------------------------------------ scoring mode
def _evaluate(model, split, **kwargs):
    from tasks.common import distributed
    from tasks.retrieval.evaluate import EvalOptions, evaluate_split
    options = EvalOptions(device=torch.device("cpu"), dist=distributed.DistInfo(),
                          pairs_per_forward=64, score_function="prob", direction="both",
                          **kwargs)
    return evaluate_split(model, split, options)


@pytest.mark.slow
def test_authors_scoring_reports_mean_and_spread_of_train_mode_runs(root, loader):
    """--authorsScoring 2: two train-mode (dropout) scorings with different seeds that differ,
    the reported metrics are their mean; the default (eval mode) is deterministic."""
    model, config = small_model(root)
    load_itm_head(model, root / "model", config)
    model.eval()
    split = loader.split("test")
    eval_a, _, logits_a = _evaluate(model, split)
    eval_b, _, logits_b = _evaluate(model, split)
    torch.testing.assert_close(logits_a, logits_b, rtol=0, atol=0)
    assert eval_a["primary"] == eval_b["primary"] and "authors_scoring" not in eval_a
    assert not model.training  # eval mode leaves the model as it found it

    metrics, report, logits = _evaluate(model, split, authors_scoring=2, seed=11)
    assert not model.training
    spread = metrics["authors_scoring"]["spread"]
    assert metrics["authors_scoring"]["seeds"] == [11, 12]
    runs = {(fn, p, k): v["runs"] for fn, by_fn in spread.items() for p, by_p in by_fn.items()
            for k, v in by_p.items()}
    assert any(a != b for a, b in runs.values())  # dropout made the two runs differ
    for (fn, p, k), values in runs.items():
        assert len(values) == 2
        assert metrics["all"][fn][p][k] == pytest.approx(np.mean(values), abs=1e-12)
        s = spread[fn][p][k]
        assert s["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
        assert (s["min"], s["max"]) == (min(values), max(values))
    assert not torch.equal(logits, logits_a)  # train mode really scored with dropout
    # the same seed gives the same runs: the spread is reproducible
    again, _, _ = _evaluate(model, split, authors_scoring=2, seed=11)
    assert again["authors_scoring"]["spread"] == spread


@pytest.mark.slow
def test_authors_scoring_flag_end_to_end(root, tmp_path):
    summary = main(common(root, tmp_path) + [
        "--train", "", "--test", "test", "--pairsPerForward", "64",
        "--loadLXMERTQA", str(root / "model"), "--authorsScoring", "2"])
    test = summary["test"]
    assert test["authors_scoring"]["runs"] == 2 and test["scoring_mode"].startswith("train")
    assert set(test["tied_positives"]["prob"]) == {"ir", "tr_standard", "tr_first"}
    log = (tmp_path / "eval.log").read_text()
    assert "over 2 runs (mean ± std [min, max]): R@1" in log and "# tied positives" in log
    with pytest.raises(SystemExit, match="--authorsScoring -1"):
        main(common(root, tmp_path) + ["--train", "", "--authorsScoring", "-1"])
    with pytest.raises(SystemExit, match="--authorsScoring 2 scores the --test split"):
        main(common(root, tmp_path) + ["--train", "", "--authorsScoring", "2"])


def test_eval_options_come_from_the_flags(root, tmp_path):
    """One EvalOptions per evaluation: --evalPrecision overrides the run's precision, its
    autocast is that precision's, and --authorsScoring applies to the --test split only."""
    import contextlib

    from tasks.common import distributed
    from tasks.common.evaluation import EvalContext
    from tasks.retrieval.main import build_parser
    from tasks.retrieval.task import RetrievalTask
    args = build_parser().parse_args(common(root, tmp_path) + [
        "--test", "test", "--valid", "minival", "--evalPrecision", "bf16", "--scoreFunction",
        "logit", "--direction", "image", "--rankMethod", "argsort", "--authorsScoring", "3",
        "--pairsPerForward", "12", "--seed", "7"])
    ctx = EvalContext(device=torch.device("cpu"), autocast=contextlib.nullcontext,
                      dist=distributed.DistInfo(), is_main=True, progress=False,
                      output=tmp_path, run_batches=None)
    task = RetrievalTask(args)
    test = task.eval_options(ctx, "test")
    assert (test.precision, test.score_function, test.direction, test.rank_method,
            test.pairs_per_forward, test.authors_scoring, test.seed) == (
        "bf16", "logit", "image", "argsort", 12, 3, 7)
    with test.autocast():
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    assert task.eval_options(ctx, "minival").authors_scoring == 0
    args.eval_precision = None
    assert task.eval_options(ctx, "test").precision == "fp32"
    assert task.eval_options(ctx, "test").autocast is contextlib.nullcontext
