"""VQA fine-tuning and test-server files: `python -m tasks.vqa.main` (or run/vqa_*.bash).

    --train train,nominival --valid minival --loadLXMERT data/model   fine-tune (6 epochs)
    --test test --load snap/vqa/NAME/BEST                              write test_predict.json
    --test minival --load ...                                          score minival
    --dataRoot ROOT --train train --valid valid    a root made by tools.make_qa_dataset
"""
from __future__ import annotations

import sys

from tasks.common.args import base_parser
from tasks.qa.task import EASYVQA_SPEC, VQA_SPEC, QATask
from tasks.common.trainer import run_main


def build_parser():
    parser = base_parser("LXMERT-S VQA fine-tuning and testing", epochs=6)
    parser.add_argument("--task", default="vqa", choices=["vqa", "easyvqa"],
                        help="data layout: LXMERT's VQA files, or the converted easy-VQA set")
    return parser


def make_task(args) -> QATask:
    return QATask(args, EASYVQA_SPEC if args.task == "easyvqa" else VQA_SPEC)


def main(argv=None) -> dict:
    return run_main(build_parser(), make_task, argv, __package__)


if __name__ == "__main__":
    main(sys.argv[1:])
