"""Retrieval ranks and metrics.

Everything starts from ONE score matrix ``scores [num_captions, num_images]`` (higher = better
match) and ``caption_to_image [num_captions]`` (index of each caption's ground-truth image).
Three protocols are derived from it:

- **Image retrieval** (``image_retrieval_ranks``): each caption ranks all images; the rank is
  the 0-based position of its GT image.
- **Text retrieval, standard** (``text_retrieval_ranks_standard``): each image ranks all
  captions; the rank is the best (smallest) rank among its own captions.
- **Text retrieval, the authors' protocol** (``text_retrieval_ranks_first_caption``): only the
  first caption of each image (first in caption order) is a candidate; each image ranks those
  num_images candidates; the rank is the position of its own first caption.

Ranking rule. The authors rank with ``np.argsort(-score)`` (numpy's default, unstable sort), so
the order of tied scores is implementation-defined (may depend on numpy version / CPU SIMD).

- The conservative on-device path (``method="conservative"``, the default) defines the rank
  as the **number of other (non-positive) candidates scoring at least as high** as the GT: a
  tie counts against the query, so saturated scores (p(match) = 1.0 for many images) cannot
  inflate R@1. For the standard TR protocol it is counted against the best-scoring GT caption;
  the image's other captions are never counted.
- The optimistic path (``method="optimistic"``, also spelled ``"fast"``) counts only
  **strictly greater** scores: a GT tied with k others gets the best rank among them. NaN
  scores never count as greater.
  Without ties both equal the argsort rank exactly; ``tied_positives`` counts the queries
  where they differ (the positive ties with at least one other candidate).
- The faithful path (``method="argsort"``, ``argsort_ranks_numpy``) does exactly what the
  authors' code does: the scores are copied into a float64 numpy array (the authors'
  ``np.zeros((N, M))`` score matrix), and per query row ``np.argsort(-row)`` is taken and the
  position of the GT is looked up.

Metrics (``recall_metrics``), exactly as the authors: ``R@K = 100*sum(rank<K)/N``,
``medr = floor(median(rank) + 1)`` (numpy median: mean of the two middle values for even N),
``meanr = mean(rank) + 1``.

Score functions (``score_from_logits``): ``kind="prob"`` = ``softmax(logits)[..., 1]`` (zero-shot
IR/TR and fine-tuned IR), ``kind="logit"`` = raw ``logits[..., 1]`` (the authors' fine-tuned
TR, ``sent_retrieval.py``). The two rank differently (prob ranks by l1-l0).
"""
from __future__ import annotations

from typing import Dict, Optional, Union

import numpy as np
import torch

__all__ = [
    "score_from_logits",
    "image_retrieval_ranks",
    "text_retrieval_ranks_standard",
    "text_retrieval_ranks_first_caption",
    "first_caption_index",
    "ranks_strict_greater",
    "ranks_at_least",
    "tied_positives",
    "argsort_ranks_numpy",
    "recall_metrics",
    "retrieval_ranks",
    "retrieval_metrics",
]

ArrayLike = Union[torch.Tensor, np.ndarray]

FAST_METHODS = ("conservative", "optimistic", "fast")  # "fast": the old name of optimistic
METHODS = FAST_METHODS + ("argsort",)

# Comparisons materialise a [chunk, num_cols] bool tensor; bound it to ~16M elements.
_DEFAULT_CHUNK_ELEMS = 1 << 24


def score_from_logits(logits: torch.Tensor, kind: str = "prob") -> torch.Tensor:
    """Scores from 2-way match logits ``[..., 2]``.

    ``kind="prob"``: ``softmax(logits, -1)[..., 1]`` = p(match).
    ``kind="logit"``: the raw class-1 logit ``logits[..., 1]``.
    The computation keeps the dtype of ``logits`` (the authors ran float32).
    """
    logits = torch.as_tensor(logits)
    if logits.shape[-1] != 2:
        raise ValueError(f"expected 2-way logits [..., 2], got shape {tuple(logits.shape)}")
    if kind == "prob":
        return torch.softmax(logits, dim=-1)[..., 1]
    if kind == "logit":
        return logits[..., 1]
    raise ValueError(f"unknown score kind {kind!r} (expected 'prob' or 'logit')")


# ----------------------------------------------------------------------------- helpers
def _as_scores(scores: ArrayLike) -> torch.Tensor:
    scores = torch.as_tensor(scores)
    if scores.dim() != 2:
        raise ValueError(f"scores must be 2-D [num_captions, num_images], got {tuple(scores.shape)}")
    return scores


def _as_index(idx: ArrayLike, device) -> torch.Tensor:
    return torch.as_tensor(idx).to(device=device, dtype=torch.long).reshape(-1)


def _chunk_rows(num_cols: int, chunk_size: Optional[int]) -> int:
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        return int(chunk_size)
    return max(1, _DEFAULT_CHUNK_ELEMS // max(1, num_cols))


def _check_caption_to_image(c2i: torch.Tensor, num_captions: int, num_images: int,
                            need_every_image: bool) -> None:
    if c2i.numel() != num_captions:
        raise ValueError(f"caption_to_image has {c2i.numel()} entries, scores have {num_captions} rows")
    if num_captions == 0:
        raise ValueError("no captions")
    if int(c2i.min()) < 0 or int(c2i.max()) >= num_images:
        raise ValueError("caption_to_image holds an index outside [0, num_images)")
    if need_every_image:
        counts = torch.bincount(c2i, minlength=num_images)
        if bool((counts == 0).any()):
            missing = torch.nonzero(counts == 0).flatten()[:10].tolist()
            raise ValueError(f"images without any caption (e.g. {missing}); text retrieval needs "
                             "at least one caption per image")


def first_caption_index(caption_to_image: ArrayLike, num_images: int) -> torch.Tensor:
    """``[num_images]``: index of the first caption (in caption order) of every image."""
    c2i = torch.as_tensor(caption_to_image).to(torch.long).reshape(-1)
    _check_caption_to_image(c2i, c2i.numel(), num_images, need_every_image=True)
    n = c2i.numel()
    first = torch.full((num_images,), n, dtype=torch.long, device=c2i.device)
    return first.scatter_reduce(0, c2i, torch.arange(n, device=c2i.device), reduce="amin")


# ----------------------------------------------------------------------------- fast ranks
def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} (expected one of {', '.join(METHODS)})")


def _beaten(block: torch.Tensor, gt_score: torch.Tensor, conservative: bool) -> torch.Tensor:
    """Bool mask of the candidates that outrank the positive: >= when ties count against the
    query (the caller removes the positive itself), > otherwise."""
    return block >= gt_score if conservative else block > gt_score


def _checked_inputs(scores: ArrayLike, caption_to_image: ArrayLike, method: str,
                    need_every_image: bool):
    """(scores as a float tensor [captions, images], caption -> image index tensor), after
    checking the rank method and the caption-to-image map."""
    _check_method(method)
    scores = _as_scores(scores)
    c2i = _as_index(caption_to_image, scores.device)
    _check_caption_to_image(c2i, scores.shape[0], scores.shape[1], need_every_image)
    return scores, c2i

@torch.no_grad()
def ranks_strict_greater(scores: ArrayLike, gt_index: ArrayLike,
                         chunk_size: Optional[int] = None) -> torch.Tensor:
    """Row-wise ranks: for each query row ``q``, the number of candidates ``c`` with
    ``scores[q, c] > scores[q, gt_index[q]]`` (0-based rank, ties optimistic).
    Rows are processed in chunks; returns int64 on ``scores.device``."""
    return _row_ranks(scores, gt_index, chunk_size, conservative=False)


@torch.no_grad()
def ranks_at_least(scores: ArrayLike, gt_index: ArrayLike,
                   chunk_size: Optional[int] = None) -> torch.Tensor:
    """Row-wise conservative ranks: the number of candidates other than the GT with
    ``scores[q, c] >= scores[q, gt_index[q]]`` (a tie counts against the query)."""
    return _row_ranks(scores, gt_index, chunk_size, conservative=True)


def _row_ranks(scores: ArrayLike, gt_index: ArrayLike, chunk_size: Optional[int],
               conservative: bool) -> torch.Tensor:
    scores = _as_scores(scores)
    gt = _as_index(gt_index, scores.device)
    q, c = scores.shape
    if gt.numel() != q:
        raise ValueError(f"gt_index has {gt.numel()} entries for {q} query rows")
    if q and (int(gt.min()) < 0 or int(gt.max()) >= c):
        raise ValueError("gt_index outside [0, num_candidates)")
    out = torch.empty(q, dtype=torch.long, device=scores.device)
    step = _chunk_rows(c, chunk_size)
    for s in range(0, q, step):
        block = scores[s:s + step]
        gt_score = block.gather(1, gt[s:s + step, None])
        out[s:s + step] = _beaten(block, gt_score, conservative).sum(dim=1) - int(conservative)
    return out


@torch.no_grad()
def image_retrieval_ranks(scores: ArrayLike, caption_to_image: ArrayLike,
                          method: str = "conservative",
                          chunk_size: Optional[int] = None):
    """IR: each caption (row) ranks all images; 0-based rank of its GT image ``[num_captions]``.
    ``method="conservative"``/``"optimistic"``: torch int64 on the scores' device;
    ``"argsort"``: numpy int64."""
    scores, c2i = _checked_inputs(scores, caption_to_image, method, need_every_image=False)
    if method == "argsort":
        return argsort_ranks_numpy(scores, c2i)
    return _row_ranks(scores, c2i, chunk_size, conservative=method == "conservative")


@torch.no_grad()
def text_retrieval_ranks_standard(scores: ArrayLike, caption_to_image: ArrayLike,
                                  method: str = "conservative",
                                  chunk_size: Optional[int] = None):
    """Standard TR: each image ranks all captions; rank = best rank among its own captions
    ``[num_images]``. Every image needs at least one caption."""
    scores, c2i = _checked_inputs(scores, caption_to_image, method, need_every_image=True)
    n_cap, n_img = scores.shape
    if method == "argsort":
        s = _to_numpy_f64(scores).T  # [num_images, num_captions]
        c2i_np = c2i.cpu().numpy()
        positives = c2i_np[None, :] == np.arange(n_img)[:, None]
        return argsort_ranks_numpy(s, positives)
    own = scores.gather(1, c2i[:, None]).squeeze(1)  # score of each caption with its own image
    best = torch.full((n_img,), float("-inf"), dtype=scores.dtype, device=scores.device)
    best = best.scatter_reduce(0, c2i, own, reduce="amax", include_self=True)
    counts = torch.zeros(n_img, dtype=torch.long, device=scores.device)
    images = torch.arange(n_img, device=scores.device)
    step = _chunk_rows(n_img, chunk_size)
    for s in range(0, n_cap, step):
        beaten = _beaten(scores[s:s + step], best[None, :], method == "conservative")
        # the image's own captions never count against it (none can beat its best one)
        beaten &= c2i[s:s + step, None] != images[None, :]
        counts += beaten.sum(dim=0)
    return counts


@torch.no_grad()
def text_retrieval_ranks_first_caption(scores: ArrayLike, caption_to_image: ArrayLike,
                                       method: str = "conservative",
                                       chunk_size: Optional[int] = None):
    """The authors' TR: candidates are the first caption of each image only; each image
    (query) ranks those ``num_images`` candidates; rank of its own first caption
    ``[num_images]``. Every image needs at least one caption."""
    scores, c2i = _checked_inputs(scores, caption_to_image, method, need_every_image=True)
    n_cap, n_img = scores.shape
    first = first_caption_index(c2i, n_img)  # [n_img], candidate k = caption first[k]
    if method == "argsort":
        sub = _to_numpy_f64(scores.index_select(0, first)).T  # [query image j, candidate k]
        return argsort_ranks_numpy(sub, np.arange(n_img))
    img = torch.arange(n_img, device=scores.device)
    gt_score = scores[first, img]  # image j with its own first caption
    counts = torch.zeros(n_img, dtype=torch.long, device=scores.device)
    step = _chunk_rows(n_img, chunk_size)
    for s in range(0, n_img, step):
        block = scores.index_select(0, first[s:s + step])  # candidates k in [s, s+step)
        counts += _beaten(block, gt_score[None, :], method == "conservative").sum(dim=0)
    # conservative: the own first caption (always >= itself) is not a competitor
    return counts - int(method == "conservative")


# ----------------------------------------------------------------------------- faithful ranks
def _to_numpy_f64(scores: ArrayLike) -> np.ndarray:
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu()
        if scores.dtype in (torch.float16, torch.bfloat16):
            scores = scores.float()
        scores = scores.numpy()
    return np.asarray(scores, dtype=np.float64)


def argsort_ranks_numpy(scores: ArrayLike, gt) -> np.ndarray:
    """The authors' ranking, verbatim: for every query row, ``order = np.argsort(-row)`` on the
    float64 scores, and the rank is the position in ``order`` of the GT candidate.

    ``gt`` is either an int array ``[Q]`` (one GT candidate per row) or a boolean mask
    ``[Q, C]`` (several positives; rank = position of the first positive in ``order``, i.e.
    the best rank among them). Returns numpy int64 ``[Q]``. Ties are ordered by numpy's default
    (unstable) argsort, so tied ranks are implementation-defined, as in the authors' code.
    """
    s = _to_numpy_f64(scores)
    if s.ndim != 2:
        raise ValueError(f"scores must be 2-D, got {s.shape}")
    if isinstance(gt, torch.Tensor):
        gt = gt.detach().cpu().numpy()
    gt = np.asarray(gt)
    q = s.shape[0]
    out = np.empty(q, dtype=np.int64)
    if gt.dtype == np.bool_:
        if gt.shape != s.shape:
            raise ValueError("boolean gt mask must have the shape of scores")
        for i in range(q):
            order = np.argsort(-s[i])
            hits = np.nonzero(gt[i][order])[0]
            if hits.size == 0:
                raise ValueError(f"row {i} has no positive candidate")
            out[i] = hits[0]
    else:
        gt = gt.astype(np.int64).reshape(-1)
        if gt.shape[0] != q:
            raise ValueError(f"gt has {gt.shape[0]} entries for {q} query rows")
        for i in range(q):
            order = np.argsort(-s[i])
            out[i] = np.where(order == gt[i])[0][0]
    return out


# ----------------------------------------------------------------------------- metrics
def recall_metrics(ranks: ArrayLike) -> Dict[str, float]:
    """``dict(r1, r5, r10, medr, meanr)`` from 0-based ranks, exactly as the authors."""
    if isinstance(ranks, torch.Tensor):
        ranks = ranks.detach().cpu().numpy()
    r = np.asarray(ranks, dtype=np.float64).reshape(-1)  # the authors' rank_matrix is float64
    if r.size == 0:
        raise ValueError("no ranks")
    n = len(r)
    return {
        "r1": float(100.0 * np.sum(r < 1) / n),
        "r5": float(100.0 * np.sum(r < 5) / n),
        "r10": float(100.0 * np.sum(r < 10) / n),
        "medr": float(np.floor(np.median(r) + 1)),
        "meanr": float(np.mean(r) + 1),
    }


def retrieval_ranks(scores: ArrayLike, caption_to_image: ArrayLike, method: str = "conservative",
                    chunk_size: Optional[int] = None) -> Dict[str, ArrayLike]:
    """All three protocols from one score matrix: keys ``ir``, ``tr_standard``, ``tr_first``."""
    return {
        "ir": image_retrieval_ranks(scores, caption_to_image, method, chunk_size),
        "tr_standard": text_retrieval_ranks_standard(scores, caption_to_image, method, chunk_size),
        "tr_first": text_retrieval_ranks_first_caption(scores, caption_to_image, method, chunk_size),
    }


def retrieval_metrics(scores: ArrayLike, caption_to_image: ArrayLike, method: str = "conservative",
                      chunk_size: Optional[int] = None) -> Dict[str, Dict[str, float]]:
    """``recall_metrics`` for each protocol of ``retrieval_ranks``."""
    ranks = retrieval_ranks(scores, caption_to_image, method, chunk_size)
    return {k: recall_metrics(v) for k, v in ranks.items()}


def tied_positives(scores: ArrayLike, caption_to_image: ArrayLike,
                   chunk_size: Optional[int] = None) -> Dict[str, int]:
    """Per protocol, how many queries have their positive tied with at least one other
    candidate: there the conservative and optimistic ranks differ (and argsort's is
    implementation-defined)."""
    low = retrieval_ranks(scores, caption_to_image, "conservative", chunk_size)
    high = retrieval_ranks(scores, caption_to_image, "optimistic", chunk_size)
    return {k: int((low[k] != high[k]).sum()) for k in low}
