"""GQA fine-tuning and test-server files: `python -m tasks.gqa.main` (or run/gqa_*.bash).

    --train train,valid --valid testdev --loadLXMERT data/model    fine-tune (5 epochs)
    --test submit --load snap/gqa/NAME/BEST                         write submit_predict.json
    --test test   (the authors' README spelling; same as submit)
    --test testdev --load ...                                       score testdev, write
                                                                    testdev_predict.json

The model, loss (BCE x 1842, or `--mceLoss`: CE on argmax(target) x 1842), evaluator and
writer are VQA's (`tasks.qa.task.QATask`); `GQA_SPEC` holds what differs: string question
ids, `[{"questionId": str, "prediction": str}]` result files, and the `test` -> `submit`
alias. Answers outside the 1842-answer table are left out of the targets, as the authors.
"""
from __future__ import annotations

import sys

from tasks.common.args import add_flag, base_parser
from tasks.qa.task import GQA_SPEC, QATask
from tasks.common.trainer import run_main


def build_parser():
    parser = base_parser("LXMERT-S GQA fine-tuning and testing", epochs=5)
    g = parser.add_argument_group("GQA")
    add_flag(g, "--mceLoss", dest="mce_loss", action="store_true",
             help="cross-entropy on the argmax of the soft target (x answers) instead of BCE; an "
                  "all-zero target counts as answer 0, as in the authors' code")
    return parser


def main(argv=None) -> dict:
    return run_main(build_parser(), lambda args: QATask(args, GQA_SPEC), argv, __package__)


if __name__ == "__main__":
    main(sys.argv[1:])
