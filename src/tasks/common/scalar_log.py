"""Training curves for TensorBoard (`--tensorboard`), written by rank 0 to OUTPUT/tensorboard/.

The trainer calls one object; with the flag off (the default) it is `ScalarLog`, whose calls
do nothing, and TensorBoard is never imported. Tags:

    step/loss, step/lr, step/samples_per_s, step/grad_norm   every --tensorboardEvery optimizer
                                                             steps (x axis: the global step)
    epoch/train_loss, epoch/train_score, epoch/train_<name>  each epoch (x axis: the epoch);
    epoch/valid_<name>, epoch/best                           pre-training's per-task losses and
                                                             accuracies are the train_/valid_
                                                             names of metrics.jsonl

`step/samples_per_s` is measured over the steps since the previous point; `step/grad_norm` is
the global gradient norm before clipping (the value `--clipNorm` compares).
"""
from __future__ import annotations

import math
from pathlib import Path

FOLDER = "tensorboard"


class ScalarLog:
    """What the trainer calls when nothing is logged: every call returns at once."""

    def wants_step(self, global_step: int) -> bool:
        return False

    def log_step(self, global_step: int, loss: float, lr: float, grad_norm: float,
                 samples: int, seconds: float) -> None:
        pass

    def log_epoch(self, record: dict) -> None:
        pass

    def close(self) -> None:
        pass


def epoch_scalars(record: dict) -> dict:
    """The numbers of a metrics.jsonl epoch record, nested dicts flattened with `_`
    (`valid: {accuracy}` -> `valid_accuracy`); strings, None and non-finite values dropped."""
    out = {}
    for key, value in record.items():
        if key == "epoch":
            continue
        if isinstance(value, dict):
            out.update({f"{key}_{k}": v for k, v in epoch_scalars(value).items()})
        elif isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value):
            out[key] = float(value)
    return out


class TensorBoardLog(ScalarLog):
    def __init__(self, folder: Path, every: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise SystemExit("--tensorboard needs the tensorboard package: "
                             "pip install -e '.[tensorboard]'") from None
        self.writer = SummaryWriter(log_dir=str(folder))
        self.every = every
        self._previous = None  # (samples, seconds) of the epoch at the previous point

    def wants_step(self, global_step: int) -> bool:
        return global_step % self.every == 0

    def log_step(self, global_step, loss, lr, grad_norm, samples, seconds) -> None:
        previous = self._previous if self._previous and self._previous[0] < samples else (0, 0.0)
        rate = (samples - previous[0]) / max(seconds - previous[1], 1e-9)
        self._previous = (samples, seconds)
        for name, value in (("loss", loss), ("lr", lr), ("samples_per_s", rate),
                            ("grad_norm", grad_norm)):
            self.writer.add_scalar(f"step/{name}", value, global_step)

    def log_epoch(self, record: dict) -> None:
        for name, value in epoch_scalars(record).items():
            self.writer.add_scalar(f"epoch/{name}", value, record["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def scalar_log(args, output: Path, is_main: bool) -> ScalarLog:
    """The run's logger: TensorBoard on rank 0 with --tensorboard, else one that does nothing."""
    if not (getattr(args, "tensorboard", False) and is_main):
        return ScalarLog()
    return TensorBoardLog(Path(output) / FOLDER, args.tensorboard_every)
