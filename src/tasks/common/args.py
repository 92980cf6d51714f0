"""Command-line flags, parsed only in entry points (`main(argv)`).

The authors' camelCase flags are kept (`--batchSize`, `--loadLXMERT`, `--llayers`, ...), each
with a kebab-case alias; defaults are the LXMERT-S recipe where the authors' run scripts always
override param.py (0/5/0 layers, batch 32, lr 5e-5). `--recipe` puts a launcher's recipe
between the defaults and the command line (`tasks.common.settings`)."""
from __future__ import annotations

import argparse
import logging
import re

log = logging.getLogger(__name__)

# torch.compile modes; "default" is the plain `--compile`
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


# a word boundary inside camelCase: lower/digit -> upper (loadLXMERT), or the last capital of an
# acronym before a capitalised word (LXMERTQa would split as LXMERT-Qa)
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def kebab(flag: str) -> str:
    """`--batchSize` -> `--batch-size`, `--loadLXMERT` -> `--load-lxmert`,
    `--multiGPU` -> `--multi-gpu`, `--fp16Features` -> `--fp16-features`."""
    return _CAMEL_BOUNDARY.sub("-", flag).lower()


def add_flag(parser, flag: str, aliases=(), **kwargs):
    """Add `--camelCase` plus its `--kebab-case` alias when they differ, and any `aliases`
    (for acronym runs the rule cannot split, e.g. `--load-lxmert-qa`)."""
    names = [flag]
    for alias in (kebab(flag), *aliases):
        if alias not in names:
            names.append(alias)
    return parser.add_argument(*names, **kwargs)


def base_parser(description: str, epochs: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    add_flag(p, "--recipe", default=None,
             help="settings between the defaults and the command line: a recipe this entry "
                  "point declares (the launchers', e.g. vqa_finetune) or a JSON file "
                  "{flag: value}; a flag given on the command line wins, and the log says so")
    g = p.add_argument_group("splits")
    add_flag(g, "--train", default="train",
             help="comma-separated training splits ('' = no training)")
    add_flag(g, "--valid", default="valid", help="validation split ('' = none)")
    add_flag(g, "--test", default=None, help="split to predict and write results for")
    g = p.add_argument_group("training (the authors' recipe)")
    add_flag(g, "--batchSize", dest="batch_size", type=int, default=32,
             help="global batch size (split across DDP ranks)")
    add_flag(g, "--evalBatchSize", dest="eval_batch_size", type=int, default=None,
             help="per-process evaluation batch size (default: 4 x batchSize; no numeric effect)")
    add_flag(g, "--optim", default="bert", choices=["bert"], help="BertAdam, as every run script")
    add_flag(g, "--lr", type=float, default=5e-5)
    add_flag(g, "--epochs", type=int, default=epochs)
    add_flag(g, "--warmup", type=float, default=0.1, help="warmup fraction of t_total")
    add_flag(g, "--clipNorm", dest="clip_norm", type=float, default=5.0)
    add_flag(g, "--gradAccum", dest="grad_accum", type=int, default=1,
             help="split each batch into N micro-batches whose gradients are summed before "
                  "one optimizer step (same schedule and effective batch, less memory)")
    add_flag(g, "--seed", type=int, default=9595)
    add_flag(g, "--dropout", type=float, default=None,
             help="ignored, as in the authors' code (dropout is 0.1 from bert_config.json)")
    g = p.add_argument_group("model and weights")
    add_flag(g, "--llayers", type=int, default=0)
    add_flag(g, "--xlayers", type=int, default=5)
    add_flag(g, "--rlayers", type=int, default=0)
    add_flag(g, "--modelConfig", dest="model_config", default=None,
             help="BERT-style bert_config.json with model sizes (default: bert-base-uncased sizes)")
    add_flag(g, "--load", default=None, help="fine-tuned task model: reads LOAD.pth")
    add_flag(g, "--loadLXMERT", dest="load_lxmert", default=None,
             help="pre-trained encoder: P, P_LXRT.pth or the README's data/mode_LXRT.bin")
    add_flag(g, "--loadLXMERTQA", dest="load_lxmert_qa", default=None,
             aliases=("--load-lxmert-qa",),
             help="pre-trained encoder plus its QA (VQA/GQA) or ITM (retrieval) head")
    add_flag(g, "--fromScratch", dest="from_scratch", action="store_true",
             help="random initialisation (the authors' re-init after the BERT load)")
    g = p.add_argument_group("data")
    add_flag(g, "--dataRoot", dest="data_root", default=None,
             help="data root (default: $LXRT_DATA_ROOT or data/)")
    add_flag(g, "--featureCache", dest="feature_cache", default=None,
             help="where converted feature stores go (default: next to each TSV)")
    add_flag(g, "--fp16Features", dest="fp16_features", action="store_true",
             help="store region features as fp16 (half the disk and page cache)")
    add_flag(g, "--tiny", action="store_true", help="load a few hundred images only")
    add_flag(g, "--fast", action="store_true", help="load 5000 images only")
    add_flag(g, "--numWorkers", dest="num_workers", type=int, default=None,
             help="DataLoader workers per process (default: 2 on the CPU; on a GPU enough to keep "
                  "it fed: the process's share of the CPU cores, 2 to 8)")
    g = p.add_argument_group("runtime")
    add_flag(g, "--output", default="snap/test")
    add_flag(g, "--device", default=None, help="cuda, cuda:N or cpu (default: cuda when available)")
    add_flag(g, "--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    add_flag(g, "--compile", nargs="?", const="default", default=None, choices=COMPILE_MODES,
             help="torch.compile the model for training; an optional mode: reduce-overhead adds "
                  "CUDA graphs (for small, launch-bound batches), max-autotune also tunes kernels")
    add_flag(g, "--trimPadding", dest="trim_padding", default=True,
             action=argparse.BooleanOptionalAction,
             help="cut each batch's text to its longest sentence (exact; --no-trimPadding keeps "
                  "the authors' fixed 20 tokens)")
    add_flag(g, "--lengthBuckets", dest="length_buckets", type=int, default=0,
             help="batch sentences of similar length: sort each window of N batches by length, "
                  "then shuffle the batches (0: off, the authors' random batches)")
    add_flag(g, "--resume", action="store_true", help="continue from OUTPUT/resume.pth")
    add_flag(g, "--resumeChangedFlags", dest="resume_changed_flags", action="store_true",
             help="--resume even though run-shaping flags (lr, batch, epochs, ...) changed")
    add_flag(g, "--checkpointEvery", dest="checkpoint_every", type=int, default=0,
             help="also write the resume state every N steps (0: at epoch ends only)")
    add_flag(g, "--stopAfterSteps", dest="stop_after_steps", type=int, default=0,
             help="stop (as if interrupted) after N optimizer steps, resume state written")
    add_flag(g, "--tqdm", action="store_true", help="progress bar (on by default on a terminal)")
    add_flag(g, "--tensorboard", action="store_true",
             help="write TensorBoard curves to OUTPUT/tensorboard (needs the tensorboard extra)")
    add_flag(g, "--tensorboardEvery", dest="tensorboard_every", type=int, default=50,
             help="with --tensorboard: loss, lr, samples/s and gradient norm every N steps")
    add_flag(g, "--multiGPU", dest="multi_gpu", action="store_true",
             help="accepted for compatibility; give several GPU ids to the launcher for DDP")
    return p


# (dest, flag, smallest allowed value, whether the value itself is allowed, what is expected);
# a None value (flag not given, default None) is not checked
_NUMERIC_CHECKS = (
    ("batch_size", "--batchSize", 1, True, "a positive number of examples"),
    ("eval_batch_size", "--evalBatchSize", 1, True, "a positive number of examples"),
    ("lr", "--lr", 0.0, False, "a positive learning rate"),
    ("epochs", "--epochs", 1, True, "at least 1"),
    ("warmup", "--warmup", 0.0, True, "a fraction of the training steps in [0, 1]"),
    ("clip_norm", "--clipNorm", 0.0, False, "a positive gradient norm"),
    ("grad_accum", "--gradAccum", 1, True, "a positive number of micro-batches per step"),
    ("seed", "--seed", 0, True, "an integer in [0, 2**32)"),
    ("llayers", "--llayers", 0, True, "a number of layers, 0 or more"),
    ("xlayers", "--xlayers", 0, True, "a number of layers, 0 or more"),
    ("rlayers", "--rlayers", 0, True, "a number of layers, 0 or more"),
    ("num_workers", "--numWorkers", 0, True, "0 (load in the main process) or more workers"),
    ("length_buckets", "--lengthBuckets", 0, True,
     "0 (off) or a positive number of batches"),
    ("checkpoint_every", "--checkpointEvery", 0, True,
     "0 (at epoch ends only) or a positive number of steps"),
    ("stop_after_steps", "--stopAfterSteps", 0, True, "0 (off) or a positive number of steps"),
    ("tensorboard_every", "--tensorboardEvery", 1, True, "a positive number of steps"),
    ("pairs_per_forward", "--pairsPerForward", 1, True, "a positive number of pairs"),
    ("valid_images", "--validImages", 1, True, "a positive number of images"),
    ("authors_scoring", "--authorsScoring", 0, True,
     "0 (off, eval mode) or a positive number of scoring runs"),
)


def _check_numbers(args: argparse.Namespace) -> None:
    for dest, flag, lowest, inclusive, expected in _NUMERIC_CHECKS:
        value = getattr(args, dest, None)
        if value is None:
            continue
        too_low = value < lowest if inclusive else value <= lowest
        if too_low or value != value or value == float("inf"):  # NaN compares false
            raise SystemExit(f"{flag} {value}: expected {expected}")
    if args.warmup is not None and not args.warmup <= 1.0:  # None: set later (pre-training)
        raise SystemExit(f"--warmup {args.warmup}: expected a fraction of the training steps "
                         f"in [0, 1]")
    if args.seed >= 2 ** 32:
        raise SystemExit(f"--seed {args.seed}: expected an integer in [0, 2**32)")


def validate_args(args: argparse.Namespace) -> argparse.Namespace:
    """Checks every flag's value (a clear message naming the flag and what it expects, exit
    status 1 via SystemExit) and warns about ignored ones."""
    if args.dropout is not None:
        log.warning("--dropout %s is ignored (as in the authors' code); dropout is 0.1",
                    args.dropout)
    _check_numbers(args)
    if not str(args.output).strip():
        raise SystemExit("--output '': expected a directory for the run's files "
                         "(default snap/test)")
    return args


def subset_flags(args: argparse.Namespace, split: str, test_split=None) -> tuple[bool, bool]:
    """(tiny, fast) to load `split` with: both off for the --test split, as the authors (they
    turn --tiny/--fast off before loading the test data), so a test-server file is never
    written for a cut split; the user's flags for every other split. `test_split`: the --test
    split's canonical name when the task renames it (GQA test -> submit)."""
    test_split = test_split or args.test
    if test_split and split == test_split:
        return False, False
    return bool(args.tiny), bool(args.fast)


def warn_if_loaded_whole(args: argparse.Namespace, split: str, tiny: bool, fast: bool) -> None:
    """The log line for a split that `subset_flags` loads whole despite --tiny/--fast."""
    if (args.tiny or args.fast) and not (tiny or fast):
        log.warning("--%s does not apply to the --test split %r: it is loaded whole, as in "
                    "the authors' code", "tiny" if args.tiny else "fast", split)
