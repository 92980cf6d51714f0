"""The toy task's entry point, as any task's: settings, then the shared run."""
from tasks.common.args import base_parser
from tasks.common.settings import parse_settings
from tasks.common.trainer import run_task
from toy_task.task import ToyTask


def build_parser():
    return base_parser("toy task", epochs=2)


def main(argv=None):
    settings = parse_settings(build_parser(), argv, __package__)
    return run_task(settings.args, ToyTask(settings.args), argv, settings)
