"""Flickr30k image and text retrieval: `python -m tasks.retrieval.main` (or run/*retrieval*.bash).

    --test test --loadLXMERTQA data/model                    zero-shot (pre-trained ITM head)
    --train train --valid minival --loadLXMERTQA data/model  fine-tune (8 epochs, 4 pairs/caption)
    --test test --load snap/retrieval/NAME/LAST              evaluate a fine-tuned model

Every evaluation scores all captions x all images once and reports image retrieval, text
retrieval (standard protocol) and text retrieval (the authors' first-caption protocol), each
for both score functions; --scoreFunction picks the one that is selected (eval.log first,
<split>_scores.npy, validation score) and --direction which protocols make the validation score.
"""
from __future__ import annotations

import logging
import sys

from tasks.common.args import add_flag, base_parser
from tasks.common.settings import parse_settings
from tasks.common.trainer import run_task
from tasks.retrieval.data import DEFAULT_VALID_IMAGES
from tasks.retrieval.evaluate import SCORE_FUNCTIONS
from tasks.retrieval.task import RetrievalTask

log = logging.getLogger(__name__)


def build_parser():
    parser = base_parser("LXMERT-S Flickr30k image/text retrieval", epochs=8)
    parser.set_defaults(valid="minival")
    g = parser.add_argument_group("retrieval")
    add_flag(g, "--direction", default="both", choices=["image", "text", "both"],
             help="which protocols make the validation score: image (IR), text (standard TR) or "
                  "both; every evaluation reports all protocols anyway")
    add_flag(g, "--scoreFunction", dest="score_function", default="prob", choices=SCORE_FUNCTIONS,
             help="prob = softmax(logits)[:,1] (zero-shot, fine-tuned IR); logit = raw logits[:,1] "
                  "(the authors' fine-tuned text retrieval); both are reported")
    add_flag(g, "--pairsPerForward", dest="pairs_per_forward", type=int, default=None,
             help="(caption, image) pairs per forward in evaluation "
                  "(default 4096 on GPU, 256 on CPU)")
    add_flag(g, "--validImages", dest="valid_images", type=int, default=DEFAULT_VALID_IMAGES,
             help="images of the `minival` split carved from the train images "
                  "(held out of training)")
    add_flag(g, "--rankMethod", dest="rank_method", default="conservative",
             choices=["conservative", "optimistic", "argsort"],
             help="conservative: a candidate tied with the positive counts against the query; "
                  "optimistic: only strictly greater scores count; argsort: the authors' "
                  "np.argsort(-row) per query on the CPU (ties in numpy's order). All three agree "
                  "without ties; every result reports how many positives are tied")
    add_flag(g, "--authorsScoring", dest="authors_scoring", type=int, default=0, metavar="N",
             help="score the --test split N times in train mode (dropout on, seeds "
                  "SEED..SEED+N-1), as the authors' test loops did, and report the mean and "
                  "spread of each R@K (default 0: eval mode, deterministic)")
    add_flag(g, "--evalPrecision", dest="eval_precision", default=None,
             choices=["fp32", "bf16", "fp16"], help="evaluation precision (default: --precision)")
    g.add_argument("--zeroShot", "--zero-shot", "--zero_shot", dest="zero_shot",
                   action="store_true",
                   help="accepted for compatibility with the authors' scripts; no effect "
                        "(the score function is --scoreFunction)")
    return parser


def main(argv=None) -> dict:
    settings = parse_settings(build_parser(), argv, __package__)
    args = settings.args
    if args.authors_scoring and not args.test:
        raise SystemExit(f"--authorsScoring {args.authors_scoring} scores the --test split: "
                         "give --test SPLIT (validation always runs in eval mode)")
    if args.zero_shot:
        log.info("--zeroShot has no effect: the score function is --scoreFunction %s",
                 args.score_function)
    return run_task(args, RetrievalTask(args), argv, settings)


if __name__ == "__main__":
    main(sys.argv[1:])
