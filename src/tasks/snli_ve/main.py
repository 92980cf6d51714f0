"""SNLI-VE fine-tuning and predictions: `python -m tasks.snli_ve.main` (or run/snli_ve_*.bash).

    --recipe snli_ve_finetune                            train, validate on dev (4 epochs)
    --test test --load snap/snli_ve/NAME/BEST            accuracy per class, test_predict.jsonl
"""
import sys

from tasks.common.args import base_parser
from tasks.common.trainer import run_main
from tasks.snli_ve.task import SNLIVETask


def build_parser():
    parser = base_parser("LXMERT-S SNLI-VE (visual entailment) fine-tuning and testing",
                         epochs=4)
    parser.set_defaults(valid="dev")
    return parser


def main(argv=None) -> dict:
    return run_main(build_parser(), SNLIVETask, argv, __package__)


if __name__ == "__main__":
    main(sys.argv[1:])
