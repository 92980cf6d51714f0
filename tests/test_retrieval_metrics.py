import json

import numpy as np
import pytest
import torch

from conftest import FIXTURES
from tasks.retrieval.metrics import (
    argsort_ranks_numpy,
    first_caption_index,
    image_retrieval_ranks,
    ranks_strict_greater,
    tied_positives,
    recall_metrics,
    retrieval_metrics,
    retrieval_ranks,
    score_from_logits,
    text_retrieval_ranks_first_caption,
    text_retrieval_ranks_standard,
)

KINDS = {"softmax_p1": "prob", "raw_logit1": "logit"}


@pytest.fixture(scope="module")
def case():
    data = torch.load(FIXTURES / "retrieval_metrics_case.pt", weights_only=False)
    meta = json.loads((FIXTURES / "retrieval_metrics_case.json").read_text())
    return data, meta


@pytest.mark.parametrize("name", sorted(KINDS))
@pytest.mark.parametrize("chunk_size", [None, 7])
def test_fixture_fast_path(case, name, chunk_size):
    data, meta = case
    scores = score_from_logits(data["logits"], KINDS[name])
    assert scores.shape == (meta["n_queries"], meta["n_candidates"])
    ref = meta["results"][name]
    ranks = ranks_strict_greater(scores, data["gt_index"], chunk_size=chunk_size)
    assert ranks.tolist() == ref["ranks_0based"]
    # the same through the IR protocol (queries = captions, candidates = images)
    ranks_ir = image_retrieval_ranks(scores, data["gt_index"], chunk_size=chunk_size)
    assert ranks_ir.tolist() == ref["ranks_0based"]
    assert recall_metrics(ranks) == ref["metrics"]


@pytest.mark.parametrize("name", sorted(KINDS))
def test_fixture_argsort_path(case, name):
    data, meta = case
    scores = score_from_logits(data["logits"], KINDS[name])
    ref = meta["results"][name]
    ranks = argsort_ranks_numpy(scores, data["gt_index"])
    assert ranks.tolist() == ref["ranks_0based"]
    assert recall_metrics(ranks) == ref["metrics"]
    assert image_retrieval_ranks(scores, data["gt_index"], method="argsort").tolist() == ref["ranks_0based"]


def test_fixture_score_functions_rank_differently(case):
    data, meta = case
    a = meta["results"]["softmax_p1"]["ranks_0based"]
    b = meta["results"]["raw_logit1"]["ranks_0based"]
    assert sum(x != y for x, y in zip(a, b)) == 34
    logits = data["logits"]
    torch.testing.assert_close(score_from_logits(logits, "prob"), torch.softmax(logits, -1)[..., 1], atol=0, rtol=0)
    assert torch.equal(score_from_logits(logits, "logit"), logits[..., 1])
    with pytest.raises(ValueError):
        score_from_logits(logits, "nope")


# ------------------------------------------------------------------ naive references (loops)
def naive_ir(s, c2i):
    n_cap, n_img = len(s), len(s[0])
    out = []
    for i in range(n_cap):
        g = s[i][c2i[i]]
        out.append(sum(1 for j in range(n_img) if s[i][j] > g))
    return out


def naive_tr_standard(s, c2i):
    n_cap, n_img = len(s), len(s[0])
    out = []
    for j in range(n_img):
        best = None
        for i in range(n_cap):
            if c2i[i] != j:
                continue
            r = sum(1 for i2 in range(n_cap) if s[i2][j] > s[i][j])
            best = r if best is None else min(best, r)
        out.append(best)
    return out


def naive_tr_first(s, c2i):
    n_cap, n_img = len(s), len(s[0])
    first = []
    for j in range(n_img):
        first.append(min(i for i in range(n_cap) if c2i[i] == j))
    out = []
    for j in range(n_img):
        g = s[first[j]][j]
        out.append(sum(1 for k in range(n_img) if s[first[k]][j] > g))
    return out


def _random_case(seed, n_img=23, levels=6):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 5, size=n_img)  # 1..4 captions per image
    c2i = np.repeat(np.arange(n_img), counts)
    rng.shuffle(c2i)  # captions not grouped by image: "first" is the first in caption order
    scores = rng.integers(0, levels, size=(len(c2i), n_img)).astype(np.float32)  # many ties
    return scores, c2i


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunk_size", [None, 1, 5])
def test_fast_path_equals_naive_with_ties(seed, chunk_size):
    s, c2i = _random_case(seed)
    st = torch.from_numpy(s)
    ct = torch.from_numpy(c2i)
    sl = s.tolist()
    cl = c2i.tolist()
    assert image_retrieval_ranks(st, ct, "optimistic", chunk_size).tolist() == naive_ir(sl, cl)
    assert text_retrieval_ranks_standard(st, ct, chunk_size=chunk_size, method="optimistic").tolist() == naive_tr_standard(sl, cl)
    assert text_retrieval_ranks_first_caption(st, ct, chunk_size=chunk_size, method="optimistic").tolist() == naive_tr_first(sl, cl)
    r = retrieval_ranks(st, ct, "optimistic", chunk_size)
    assert r["ir"].tolist() == naive_ir(sl, cl)
    assert r["tr_standard"].tolist() == naive_tr_standard(sl, cl)
    assert r["tr_first"].tolist() == naive_tr_first(sl, cl)
    m = retrieval_metrics(st, ct, "optimistic", chunk_size)
    assert m["ir"] == recall_metrics(naive_ir(sl, cl))


@pytest.mark.parametrize("seed", [0, 1])
def test_argsort_path_with_ties_is_within_tie_bounds(seed):
    s, c2i = _random_case(seed)
    st, ct = torch.from_numpy(s), torch.from_numpy(c2i)
    fast = retrieval_ranks(st, ct, "optimistic")
    slow = retrieval_ranks(st, ct, method="argsort")
    # pessimistic bound: count >= instead of >, minus the GT itself
    pess = retrieval_ranks(-st, ct, "optimistic")  # (-s > -g) <=> s < g ; #(s >= g) - 1 = C - 1 - #(s < g)
    n_img = s.shape[1]
    n_cap = s.shape[0]
    upper_ir = (n_img - 1) - pess["ir"]
    upper_first = (n_img - 1) - pess["tr_first"]
    assert ((slow["ir"] >= fast["ir"].numpy()) & (slow["ir"] <= upper_ir.numpy())).all()
    assert ((slow["tr_first"] >= fast["tr_first"].numpy()) & (slow["tr_first"] <= upper_first.numpy())).all()
    assert (slow["tr_standard"] >= fast["tr_standard"].numpy()).all()
    assert (slow["tr_standard"] <= n_cap - 1).all()
    # the conservative default is that upper bound, and bounds argsort for every protocol
    conservative = retrieval_ranks(st, ct)
    assert conservative["ir"].tolist() == upper_ir.tolist()
    assert conservative["tr_first"].tolist() == upper_first.tolist()
    assert (slow["tr_standard"] <= conservative["tr_standard"].numpy()).all()
    # the case really has ties that move ranks (otherwise this test would be vacuous)
    assert any((slow[k] != fast[k].numpy()).any() for k in fast)


def test_argsort_path_equals_fast_path_without_ties():
    gen = torch.Generator().manual_seed(3)
    n_img = 31
    counts = torch.randint(1, 6, (n_img,), generator=gen)
    c2i = torch.repeat_interleave(torch.arange(n_img), counts)
    c2i = c2i[torch.randperm(len(c2i), generator=gen)]
    scores = torch.randn(len(c2i), n_img, generator=gen)
    fast = retrieval_ranks(scores, c2i, chunk_size=4)
    slow = retrieval_ranks(scores, c2i, method="argsort")
    for k in fast:
        assert fast[k].tolist() == slow[k].tolist(), k
    sl, cl = scores.tolist(), c2i.tolist()
    assert slow["tr_standard"].tolist() == naive_tr_standard(sl, cl)


def test_first_caption_index_and_errors():
    c2i = torch.tensor([2, 0, 2, 1, 0])
    assert first_caption_index(c2i, 3).tolist() == [1, 3, 0]
    with pytest.raises(ValueError):
        first_caption_index(torch.tensor([0, 0, 2]), 3)  # image 1 has no caption
    with pytest.raises(ValueError):
        text_retrieval_ranks_standard(torch.zeros(3, 3), torch.tensor([0, 0, 2]))
    with pytest.raises(ValueError):
        image_retrieval_ranks(torch.zeros(3, 3), torch.tensor([0, 0]))
    # IR does not need every image to have a caption (extra distractor images are fine)
    assert image_retrieval_ranks(torch.tensor([[0.1, 0.9, 0.5]]), torch.tensor([0])).tolist() == [2]


def test_recall_metrics_hand_computed():
    # even count: median of (0,1,3,10) = 2.0 -> medr = floor(3.0) = 3 ; mean = 3.5 -> meanr 4.5
    m = recall_metrics([0, 3, 10, 1])
    assert m == {"r1": 25.0, "r5": 75.0, "r10": 75.0, "medr": 3.0, "meanr": 4.5}
    # even count with a half median: median(0, 1) = 0.5 -> floor(1.5) = 1 ; mean 0.5 -> 1.5
    m = recall_metrics(torch.tensor([1, 0]))
    assert m == {"r1": 50.0, "r5": 100.0, "r10": 100.0, "medr": 1.0, "meanr": 1.5}
    # even count, middle values 4 and 7: median 5.5 -> floor(6.5) = 6
    m = recall_metrics(np.array([7, 0, 4, 20]))
    assert m["medr"] == 6.0 and m["meanr"] == 8.75
    # odd count: median(0, 4, 7) = 4 -> medr 5 ; mean 11/3 -> meanr 14/3
    m = recall_metrics([4, 0, 7])
    assert m["medr"] == 5.0
    assert m["meanr"] == pytest.approx(14 / 3)
    assert m["r1"] == pytest.approx(100 / 3)
    assert m["r5"] == pytest.approx(200 / 3)
    assert m["r10"] == 100.0
    assert all(isinstance(v, float) for v in m.values())


# ------------------------------------------------------------------ ties (hand-computed)
# captions 0, 1 show image 0; captions 2, 3 image 1. Caption 0 ties between both images,
# caption 2 too; image 1's best own caption (0.7) ties with caption 1 (a negative).
TIED = torch.tensor([[0.9, 0.9],
                     [0.8, 0.7],
                     [0.7, 0.7],
                     [0.2, 0.6]])
TIED_C2I = torch.tensor([0, 0, 1, 1])


def test_conservative_default_counts_ties_against_the_query():
    ranks = retrieval_ranks(TIED, TIED_C2I)
    assert ranks["ir"].tolist() == [1, 0, 1, 0]
    assert ranks["tr_standard"].tolist() == [0, 2]  # image 1: caption 0 (0.9), caption 1 (tie)
    assert ranks["tr_first"].tolist() == [0, 1]
    optimistic = retrieval_ranks(TIED, TIED_C2I, "optimistic")
    assert optimistic["ir"].tolist() == [0, 0, 0, 0]
    assert optimistic["tr_standard"].tolist() == [0, 1]
    assert retrieval_ranks(TIED, TIED_C2I, "fast")["ir"].tolist() == [0, 0, 0, 0]
    metrics = retrieval_metrics(TIED, TIED_C2I)
    assert metrics["ir"]["r1"] == 50.0 and metrics["tr_standard"]["r1"] == 50.0
    assert retrieval_metrics(TIED, TIED_C2I, "optimistic")["ir"]["r1"] == 100.0
    assert tied_positives(TIED, TIED_C2I) == {"ir": 2, "tr_standard": 1, "tr_first": 0}
    with pytest.raises(ValueError, match="unknown method 'best'"):
        retrieval_ranks(TIED, TIED_C2I, "best")


def test_saturated_scores_give_no_recall_at_one():
    """p(match) = 1.0 everywhere: every positive is tied with every image."""
    ones = torch.ones(3, 3)
    c2i = torch.arange(3)
    ranks = retrieval_ranks(ones, c2i)
    assert {k: v.tolist() for k, v in ranks.items()} == {
        "ir": [2, 2, 2], "tr_standard": [2, 2, 2], "tr_first": [2, 2, 2]}
    assert retrieval_metrics(ones, c2i)["ir"] == {"r1": 0.0, "r5": 100.0, "r10": 100.0,
                                                  "medr": 3.0, "meanr": 3.0}
    assert tied_positives(ones, c2i) == {"ir": 3, "tr_standard": 3, "tr_first": 3}


def test_report_and_log_carry_the_tie_counts():
    from types import SimpleNamespace
    from tasks.retrieval.evaluate import (EvalOptions, eval_log_lines, retrieval_report,
                                          summary_metrics)
    logits = torch.stack([torch.zeros_like(TIED), TIED], dim=-1)  # logit[:, 1] = TIED
    split = SimpleNamespace(caption_to_image=TIED_C2I.numpy(), name="hand", num_images=2,
                            num_captions=4)
    report = retrieval_report(logits, split, "logit")
    assert report["metrics"]["logit"]["ir"]["r1"] == 50.0
    options = EvalOptions(score_function="logit", direction="both", rank_method="conservative",
                          pairs_per_forward=8, precision="fp32")
    metrics = summary_metrics(report, split, options, seconds=1.0)
    assert metrics["tied_positives"]["logit"] == {"ir": 2, "tr_standard": 1, "tr_first": 0}
    assert metrics["tied_positives"]["prob"] == {"ir": 2, "tr_standard": 1, "tr_first": 0}
    assert "# tied positives, score logit: ir 2, tr_standard 1, tr_first 0" in eval_log_lines(
        metrics)
