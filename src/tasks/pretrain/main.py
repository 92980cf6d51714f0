"""LXMERT-S pre-training: `python -m tasks.pretrain.main` (or run/pretrain.bash).

    --stage run/configs/msp/token.json            one MSP stage (tasks, masking, data, recipe)
    --stage run/configs/lxmert_pretrain.json      LXMERT's recipe (the default without --stage)
    --init snap/pretrain/token/LAST               start from the previous stage's weights
                                                  (every head; fresh optimizer and schedule)

The stage file is the recipe: the epochs, lr, batch size, warmup and corpora it sets come
between the defaults (LXMERT's recipe, `StageConfig`) and the command line, which wins (the
log says when; run_info.json records each value's source). Outputs in --output:
EpochNN_LXRT.pth, LAST_LXRT.pth, BEST_EVAL_LOSS_LXRT.pth (the authors' layout:
`--loadLXMERT OUTPUT/BEST_EVAL_LOSS` in any fine-tuning launcher), metrics.jsonl with each
task's loss and accuracy per epoch, resume.pth for --resume.
"""
from __future__ import annotations

import dataclasses
import logging
import sys

from tasks.common.args import add_flag, base_parser, validate_args
from tasks.common.runtime import setup_logging
from tasks.common.settings import Settings, resolve_settings
from tasks.common.trainer import run_task
from tasks.pretrain.stage import (RECIPE_FIELDS, StageConfig, StageConfigError,
                                  load_stage_config, stage_file_fields)
from tasks.pretrain.task import PretrainTask

log = logging.getLogger(__name__)


def build_parser():
    p = base_parser("LXMERT-S pre-training (LXMERT's recipe or one MSP stage)", epochs=20)
    lxmert = StageConfig()  # LXMERT's recipe: the defaults of the stage settings
    p.set_defaults(**{name: getattr(lxmert, name) for name in RECIPE_FIELDS}, clip_norm=1.0)
    g = p.add_argument_group("pre-training")
    add_flag(g, "--stage", default=None,
             help="stage config JSON (run/configs/msp/{token,phrase,sentence}.json); "
                  "default: LXMERT's recipe")
    add_flag(g, "--init", default=None,
             help="start from these pre-training weights, heads included (P_LXRT.pth or a file); "
                  "the optimizer and schedule start fresh")
    add_flag(g, "--pretrainCache", dest="pretrain_cache", default=None,
             help="where the flattened corpus index, noun chunks and nearest images are cached "
                  "(default: DATA/lxmert/pretrain_index)")
    add_flag(g, "--prepareOnly", dest="prepare_only", action="store_true",
             help="build the caches (corpus index, noun chunks, nearest images) and exit; the "
                  "multi-GPU launchers run this once before starting the processes")
    add_flag(g, "--imageLimit", dest="image_limit", type=int, default=None,
             help="read only the first N images of each feature file (as --tiny/--fast with "
                  "a number of your choice)")
    add_flag(g, "--tasks", default=None,
             help="comma-separated tasks overriding the stage's (mlm,obj,ifrs,itm,itm_hs,qa,topic)")
    add_flag(g, "--visualLosses", dest="visual_losses", default=None,
             help="comma-separated masked-region losses to train (of obj,attr,feat; the others "
                  "get weight 0). Features without detector labels (tools.extract_features, "
                  "easy-VQA: every region labelled object 0, attribute 0, confidence 1) need "
                  "'feat': the constant obj/attr targets are met by pushing the pooled output "
                  "into tanh saturation, which makes it the same for every image")
    return p


VISUAL_LOSSES = ("obj", "attr", "feat")


def apply_visual_losses(stage: StageConfig, spec: str) -> None:
    """--visualLosses: zero the weight of every masked-region loss not named in `spec`."""
    keep = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = [name for name in keep if name not in VISUAL_LOSSES]
    if unknown or not keep:
        raise SystemExit(f"--visualLosses {spec!r}: expected a comma-separated subset of "
                         f"{','.join(VISUAL_LOSSES)}")
    for name in VISUAL_LOSSES:
        if name not in keep:
            stage.loss_weights[name] = 0.0


def resolve_stage(parser, argv) -> tuple[Settings, StageConfig]:
    """The run's settings (defaults, then the stage file's recipe fields, then the command
    line) and its stage, whose recipe fields then hold the run's values."""
    args = parser.parse_args(argv)
    if args.recipe:
        raise SystemExit(f"--recipe {args.recipe}: pre-training reads its recipe from the stage "
                         f"file (--stage FILE)")
    try:
        stage = load_stage_config(args.stage) if args.stage else StageConfig().validate()
        recipe = None
        if args.stage:
            given = stage_file_fields(args.stage)
            recipe = (f"stage file {args.stage}",
                      {name: getattr(stage, name) for name in RECIPE_FIELDS if name in given})
        settings = resolve_settings(parser, argv, recipe=recipe)
        args = validate_args(settings.args)
        stage = dataclasses.replace(stage, **{name: getattr(args, name)
                                              for name in RECIPE_FIELDS})
        if args.tasks:
            stage.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
            stage.validate("--tasks")
        if args.visual_losses:
            apply_visual_losses(stage, args.visual_losses)
            stage.check_trainable("--visualLosses")
    except StageConfigError as err:
        raise SystemExit(str(err)) from None
    for task, start in stage.task_start_epochs.items():
        if start >= args.epochs:
            log.warning("task %s starts in epoch %d (task_start_epochs) but the run has %d "
                        "epochs: it is never trained", task, start, args.epochs)
    return settings, stage


def main(argv=None) -> dict:
    settings, stage = resolve_stage(build_parser(), argv)
    args = settings.args
    if args.image_limit is not None and args.image_limit < 1:
        raise SystemExit(f"--imageLimit {args.image_limit}: expected a positive number of "
                         f"images")
    if args.init and args.load_lxmert:
        raise SystemExit("--init (all weights) and --loadLXMERT (encoder only) exclude each other")
    log.info("stage %s: %s", stage.name, stage.to_dict())
    task = PretrainTask(args, stage)
    if args.prepare_only:
        return prepare(task, args)
    return run_task(args, task, argv, settings)


def prepare(task: PretrainTask, args) -> dict:
    """Build every cache the run will read, in this one process."""
    setup_logging(None, True)
    train = task.train_dataset() if args.train else None
    valid = task.valid_dataset() if args.valid else None
    summary = {"train_examples": len(train) if train is not None else 0,
               "valid_examples": len(valid) if valid is not None else 0}
    log.info("caches ready: %s", summary)
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
