"""The toy task's entry point, as any task's: settings, then the shared run."""
from tasks.common.args import base_parser
from tasks.common.trainer import run_main
from toy_task.task import ToyTask


def build_parser():
    return base_parser("toy task", epochs=2)


def main(argv=None):
    return run_main(build_parser(), ToyTask, argv, __package__)
