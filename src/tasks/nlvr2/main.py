"""NLVR2 fine-tuning and result files: `python -m tasks.nlvr2.main` (or run/nlvr2_*.bash).

    --train train --valid valid --loadLXMERT data/model      fine-tune (8 epochs)
    --test test --load snap/nlvr2/NAME/BEST                  score test (test-P), write
                                                             test_predict.csv
    --test valid --load ...                                  score valid (dev), valid_predict.csv
    --test hidden --load ...                                 hidden_predict.csv, when
                                                             nlvr2/hidden.json and its features
                                                             nlvr2_imgfeat/hidden_obj36.tsv exist

Result files have one `identifier,True|False` line per example, no header (True = the
statement is true). Metrics: accuracy and consistency (share of sentences whose every image
pair is right). `--loadLXMERTQA` is an error here (there is no pre-trained head for the pair
classifier); the authors' code ignored it silently and started from BERT weights.
"""
from __future__ import annotations

import sys

from tasks.common.args import base_parser
from tasks.common.trainer import run_main
from tasks.nlvr2.task import NLVR2Task


def build_parser():
    return base_parser("LXMERT-S NLVR2 fine-tuning and testing", epochs=8)


def main(argv=None) -> dict:
    return run_main(build_parser(), NLVR2Task, argv, __package__)


if __name__ == "__main__":
    main(sys.argv[1:])
