"""A run's checkpoint as a model folder that describes itself, and the authors' checkpoint
layouts converted both ways.

    python -m tools.export snap/vqa/NAME OUT [--checkpoint BEST] [--testRun snap/vqa/NAME_test]
    python -m tools.export --fromAuthors data/mode_LXRT.bin OUT [--modelConfig F] [--xlayers 5]
    python -m tools.export --toAuthors OUT OUT_LXRT.pth

The folder (config.json, model.safetensors, vocab.txt, README.md, and the extractor record
when the run's features have one) is read by `--load OUT`, `--loadLXMERT OUT`,
`--loadLXMERTQA OUT`, `--init OUT`, `python -m tools.predict --load OUT` and
`python -m tools.demo --load OUT`.

Runs do not write a folder themselves: BEST.pth changes at every better epoch and a second
copy of the weights each time would double the checkpoint writes, and the model card should
carry the test figures, which come from a later `--test` run (`--testRun`). Export once, when
the model is to be shared.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Optional

from lxrt.config import LXRTConfig
from lxrt.folder import FolderError, is_model_folder
from lxrt.loading import CheckpointError, read_state_dict, resolve_pretrained_path
from lxrt.modeling import LXRTPretraining
from lxrt.pretrained import authors_state_from_folder, folder_from_authors
from lxrt.tokenization import find_vocab_file
from tasks.common.checkpoints import atomic_torch_save
from tasks.common.run_folder import METRICS_NAME, read_metrics
from tools.predictor import EXTRACTOR_RECORD, Predictor, PredictorError


class ExportError(ValueError):
    """A run or file that cannot be exported; the message names it."""


# ---------------------------------------------------------------------------------------------
# The model card's sections, from the run's own records
# ---------------------------------------------------------------------------------------------

def _figures(metrics: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in metrics.items())


def validation_figures(run: Path) -> Optional[str]:
    """The best epoch's validation figures, from the run's metrics.jsonl."""
    path = run / METRICS_NAME
    if not path.is_file():
        return None
    epochs = [r for r in read_metrics(path, section=None) if "epoch" in r]
    if not epochs or epochs[-1].get("best_epoch") is None:
        return None
    best = epochs[-1]["best_epoch"]
    record = [r for r in epochs if r["epoch"] == best][-1]
    return f"best epoch {best} of {len(epochs)}: {_figures(record.get('valid') or {})}"


def test_figures(test_run: Path) -> list[str]:
    path = test_run / METRICS_NAME
    if not path.is_file():
        raise ExportError(f"--testRun {test_run}: no {METRICS_NAME}")
    found = [r for r in read_metrics(path, section=None) if "test" in r]
    if not found:
        raise ExportError(f"--testRun {test_run}: {path} has no test record (run the task with "
                          f"--test SPLIT --load ... --output {test_run})")
    return [f"{r['test']}: {_figures({k: v for k, v in r.items() if k != 'test'})} "
            f"(`{test_run}`)" for r in found]


def run_sections(run: Path, info: dict, test_runs: list) -> dict:
    """Data, recipe, figures and command of the run, for the model card."""
    args, task_info = info.get("args") or {}, info.get("task_info") or {}
    start = next((f"{flag} `{args[key]}`" for key, flag in
                  (("load", "--load"), ("load_lxmert_qa", "--loadLXMERTQA"),
                   ("load_lxmert", "--loadLXMERT"), ("init", "--init")) if args.get(key)),
                 "random weights")
    features = [Path(f).name for f in task_info.get("feature_files", [])]
    data = (f"Task `{task_info.get('task')}`, data root `{args.get('data_root') or 'data/'}`: "
            f"trained on `{args.get('train')}`, validated on `{args.get('valid') or 'none'}`"
            + (f"; region features {', '.join(f'`{f}`' for f in features)}" if features else "")
            + ".")
    epochs = args.get("epochs")
    recipe = (f"{epochs} epoch{'' if epochs == 1 else 's'}, batch {args.get('batch_size')}, lr "
              f"{args.get('lr')}, BertAdam (warmup {args.get('warmup')}, gradient clipping "
              f"{args.get('clip_norm')}), seed {args.get('seed')}, precision "
              f"{args.get('precision')}, started from {start}; {info.get('world_size', 1)} "
              f"process(es) on {info.get('device')}, code at commit "
              f"`{info.get('git_commit') or 'unknown'}`.")
    results = [f"- validation: {validation_figures(run) or 'none recorded'}"]
    results += [f"- test {line}" for t in test_runs for line in test_figures(Path(t))]
    command = f"{info.get('entry_point') or 'python -m tasks.<task>.main'} " \
              f"{shlex.join(str(a) for a in info.get('argv', []))}"
    return {"Training data": data, "Recipe": recipe, "Results": "\n".join(results),
            "Command": f"```bash\n{command.strip()}\n```\n\nExported from `{run}` with "
                       f"`python -m tools.export`."}


# ---------------------------------------------------------------------------------------------
# The three conversions
# ---------------------------------------------------------------------------------------------

def checkpoint_path(run: Path, info: dict, name: Optional[str]) -> Path:
    """`--checkpoint`: a file name in the run (default: the run's BEST file), or a path."""
    if name and Path(name).is_file():
        return Path(name)
    files = info.get("checkpoint_files") or {"best": "BEST.pth"}
    file = name or files["best"]
    path = run / (file if file.endswith(".pth") else f"{file}.pth")
    if not path.is_file():
        raise ExportError(f"{path}: no such checkpoint in the run (its files: "
                          f"{sorted(p.name for p in run.glob('*.pth')) or 'none'})")
    return path


def export_run(run, out, checkpoint: Optional[str] = None, test_runs=(),
               overwrite: bool = False) -> Path:
    run = Path(run)
    info_path = run / "run_info.json"
    if not info_path.is_file():
        raise ExportError(f"{info_path}: missing; RUN is a run's output folder "
                          f"(snap/TASK/NAME) holding run_info.json")
    info = json.loads(info_path.read_text())
    if not info.get("task_info", {}).get("model_config"):
        raise ExportError(f"{info_path}: no task_info.model_config (a run made before runs "
                          f"recorded it)")
    path = checkpoint_path(run, info, checkpoint)
    # the task's model, sizes and labels, with the checkpoint's weights (strictly)
    predictor = Predictor.from_task_info(path, info["task_info"], info_path)
    record = predictor.extractor_record()
    sections = run_sections(run, info, list(test_runs))
    return folder_from_authors(
        predictor.model, read_state_dict(path), out, predictor.tokenizer.vocab_file, str(path),
        task=predictor.task, labels=predictor.labels, card_sections=sections,
        info={"name": f"LXMERT-S {predictor.task} model ({run.name})",
              **({"extractor_record": EXTRACTOR_RECORD} if record else {})},
        extra_files={EXTRACTOR_RECORD: record} if record else None, overwrite=overwrite)


def export_authors(file, out, config: LXRTConfig, vocab_file=None,
                   overwrite: bool = False) -> Path:
    """The authors' pre-trained checkpoint (mode_LXRT.bin, or a *_LXRT.pth of pre-training)
    as the folder of the pre-training model, every head included."""
    file = resolve_pretrained_path(file)
    model = LXRTPretraining(config)
    sections = {"Source": f"Converted from `{file}` (the authors' key layout) with "
                          f"`python -m tools.export --fromAuthors`; `--toAuthors` gives the "
                          f"file back tensor for tensor."}
    return folder_from_authors(model, read_state_dict(file), out,
                               vocab_file or find_vocab_file(None), str(file),
                               task="pretrain", card_sections=sections, overwrite=overwrite,
                               info={"name": f"LXMERT-S pre-trained model ({file.name})"})


def to_authors(folder, out_file) -> Path:
    """A model folder as a .pth in the authors' key layout (loads in their code)."""
    if not is_model_folder(folder):
        raise ExportError(f"--toAuthors {folder}: not a model folder (no config.json)")
    atomic_torch_save(authors_state_from_folder(folder), Path(out_file))
    return Path(out_file)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.export", description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="a run folder (snap/TASK/NAME), --fromAuthors: the authors' "
                                  "checkpoint, --toAuthors: a model folder")
    p.add_argument("out", help="the model folder to write (--toAuthors: the .pth file)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--fromAuthors", "--from-authors", dest="from_authors",
                      action="store_true", help="SOURCE is the authors' pre-trained checkpoint")
    mode.add_argument("--toAuthors", "--to-authors", dest="to_authors", action="store_true",
                      help="write the model folder SOURCE as a .pth in the authors' layout")
    p.add_argument("--checkpoint", help="the run's checkpoint: a name in the run (default: "
                                        "its BEST file) or a path to a .pth")
    p.add_argument("--testRun", "--test-run", dest="test_runs", action="append", default=[],
                   help="a --test run of this checkpoint whose figures the card reports")
    p.add_argument("--modelConfig", "--model-config", dest="model_config",
                   help="--fromAuthors: bert_config.json of the model sizes (default bert-base)")
    for flag, default in (("--llayers", 0), ("--xlayers", 5), ("--rlayers", 0)):
        p.add_argument(flag, type=int, default=default, help="--fromAuthors: layer counts")
    p.add_argument("--vocab", help="--fromAuthors: vocab.txt (default: found as the tasks do)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    return p


def run(args) -> Path:
    if args.to_authors:
        return to_authors(args.source, args.out)
    if args.from_authors:
        layers = dict(l_layers=args.llayers, x_layers=args.xlayers, r_layers=args.rlayers)
        config = (LXRTConfig.from_json_file(args.model_config, **layers) if args.model_config
                  else LXRTConfig(**layers))
        return export_authors(args.source, args.out, config, args.vocab, args.overwrite)
    return export_run(args.source, args.out, args.checkpoint, args.test_runs, args.overwrite)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        written = run(args)
    except (ExportError, PredictorError, FolderError, CheckpointError, FileNotFoundError,
            ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
