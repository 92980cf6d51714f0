"""Does pre-training help when labels are few? The easy-VQA experiments, end to end on real
images without downloads (launchers: run/easyvqa_pretrain.bash, run/easyvqa_ablation.bash).

    python -m tools.easyvqa_pretrain proof DEVICES NAME [options] [flags for every run]
    python -m tools.easyvqa_pretrain ablation DEVICES NAME [options] [flags for every run]

DEVICES: a GPU id, a list of GPU ids (DDP) or cpu, as every launcher. Each experiment
1. converts easy-VQA and writes the pre-training corpus from its TRAIN images only (captions
   composed from each image's shape and colour, its questions with their answers) and the
   few-label splits easyvqa/train_<P>pct.json (the questions of P% of the train images);
2. runs its pre-training stages (run/configs/easyvqa/*.json), each from the previous stage's
   LAST weights; a stage another arm already ran is not run again;
3. for each P in --percents and each seed in --seeds fine-tunes every arm with the same flags,
   seed and number of steps (the encoder only: --loadLXMERT), and scores the last weights on
   the test split (no model selection);
4. prints the table (means, standard deviations and each seed, by question kind) and writes
   it to snap/easyvqa_pretrain/NAME/results.md and results.json.

Experiments:
  proof     scratch; captions (MSP token -> phrase -> sentence on the captions: no answer
            seen); qa (then a QA stage on the pre-training images' questions, unless --no-qa)
  ablation  captions only, the same pre-training steps and data for every arm: scratch;
            lxmert (LXMERT's single-stage recipe: MLM, masked regions, ITM); msp (token ->
            phrase -> sentence); msp without each of its new tasks in turn: no_ifrs, no_titp,
            no_itm_hs, no_tits (--arms picks some)

On the CPU the small model of run/configs/easyvqa_cpu.json (2 cross-modality layers) is
used with every core (set OMP_NUM_THREADS=1 on a machine shared with other jobs). A finished
stage (stage_done) or fine-tuning run (test_done) is not run again, so a stopped experiment
continues where it stopped. LXRT_DRY_RUN=1 prints the commands instead of running them.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tools import easyvqa_report

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "run" / "configs"
DEVICES_RE = re.compile(r"^(cpu|[0-9]+(,[0-9]+)*)$")


@dataclass(frozen=True)
class Stage:
    """One pre-training run: its folder under RUN/pretrain/, its config under run/configs/,
    and for an ablation the tasks it keeps (--tasks; None: the config's)."""
    folder: str
    config: str
    epochs: dict  # setting -> epochs
    tasks: Optional[str] = None


@dataclass(frozen=True)
class Setting:
    """What one kind of machine runs: the model, the images read, the pre-training flags, and
    the fine-tuning recipe (optimizer steps at batch `finetune` --batchSize)."""
    model: tuple
    limit: tuple
    pretrain: tuple
    finetune: tuple
    finetune_steps: int


SETTINGS = {
    "cpu": Setting(model=("--modelConfig", str(CONFIGS / "easyvqa_cpu.json"), "--llayers", "0",
                          "--xlayers", "2", "--rlayers", "0", "--numWorkers", "0"),
                   limit=("--imageLimit", "1600"),
                   pretrain=("--batchSize", "64", "--lr", "5e-4", "--visualLosses", "feat"),
                   finetune=("--batchSize", "32", "--lr", "1e-4"), finetune_steps=300),
    "gpu": Setting(model=("--llayers", "0", "--xlayers", "5", "--rlayers", "0",
                          "--numWorkers", "4"),
                   limit=(),
                   pretrain=("--batchSize", "256", "--lr", "1e-4", "--visualLosses", "feat"),
                   finetune=("--batchSize", "32", "--lr", "1e-4"), finetune_steps=1500),
}

# the stages; epochs per setting (CPU: about 100 steps of 64 per epoch on the captions)
TOKEN = Stage("token", "easyvqa/token_captions.json", {"cpu": 3, "gpu": 10})
PHRASE = Stage("phrase", "msp/phrase.json", {"cpu": 2, "gpu": 10})
SENTENCE = Stage("sentence", "easyvqa/sentence_captions.json", {"cpu": 6, "gpu": 20})
QA = Stage("qa", "easyvqa/sentence_qa.json", {"cpu": 3, "gpu": 10})


@dataclass
class Experiment:
    """Arms: name -> the chain of stages whose last weights it fine-tunes from ([]:
    scratch)."""
    name: str
    arms: dict = field(default_factory=dict)
    seeds: str = "9595,1"


def proof(with_qa: bool = True) -> Experiment:
    arms = {"scratch": [], "captions": [TOKEN, PHRASE, SENTENCE]}
    if with_qa:
        arms["qa"] = [TOKEN, PHRASE, SENTENCE, QA]
    return Experiment("proof", arms)


EXPERIMENTS = {"proof": proof}


# ---- running -------------------------------------------------------------------------------

def shell(function: str, *args: str) -> None:
    """Run a function of the launchers' shell library (run/common.sh, run/pretrain_stage.sh):
    the one place that knows how to start a run on the CPU, one GPU or several (torchrun),
    and that prints instead under LXRT_DRY_RUN."""
    script = ('source "$0/run/common.sh"; source "$0/run/pretrain_stage.sh"; '
              f'{function} "$@"')
    subprocess.run(["bash", "-c", script, str(REPO), *args], check=True)


def dry_run() -> bool:
    return bool(os.environ.get("LXRT_DRY_RUN"))


@dataclass
class Plan:
    """One experiment on one machine: where it writes and what every run gets."""
    experiment: Experiment
    devices: str
    run_dir: Path
    data_root: str
    percents: list
    seeds: list
    extra: list  # flags for every run

    @property
    def setting(self) -> Setting:
        return SETTINGS["cpu" if self.devices == "cpu" else "gpu"]

    def stage_dir(self, stage: Stage) -> Path:
        return self.run_dir / "pretrain" / stage.folder

    def pretrain(self) -> None:
        """Every arm's stages in order; a stage shared with an earlier arm runs once."""
        done: set = set()
        for chain in self.experiment.arms.values():
            init: list = []
            for stage in chain:
                output = self.stage_dir(stage)
                if stage.folder not in done:
                    self.run_stage(stage, output, init)
                    done.add(stage.folder)
                init = ["--init", f"{output}/LAST"]

    def run_stage(self, stage: Stage, output: Path, init: list) -> None:
        if (output / "stage_done").is_file():
            print(f"stage {stage.folder} already finished in {output}", flush=True)
            return
        s = self.setting
        key = "cpu" if self.devices == "cpu" else "gpu"
        tasks = ["--tasks", stage.tasks] if stage.tasks else []
        shell("pretrain_stage", self.devices, str(output), "--stage", str(CONFIGS / stage.config),
              "--dataRoot", self.data_root, "--train", "easyvqa_train", "--valid",
              "easyvqa_minival", *init, *s.model, *s.pretrain, *s.limit, *tasks,
              "--epochs", str(stage.epochs[key]), *self.extra)
        if not dry_run():
            (output / "stage_done").touch()

    def weights_of(self, arm: str) -> list:
        """The encoder only: the pre-training answer head was trained with a softmax over
        9,500 answers, which gives all 13 easy-VQA answers large logits; the sigmoid loss of
        fine-tuning then starts near 60 instead of 7 and its first steps wreck the encoder."""
        chain = self.experiment.arms[arm]
        if not chain:
            return ["--fromScratch"]
        return ["--loadLXMERT", f"{self.stage_dir(chain[-1])}/LAST"]

    def finetune_epochs(self, split: str) -> int:
        """The same number of optimizer steps for every fraction: epochs from the question
        count."""
        questions = len(json.loads(Path(self.data_root, "easyvqa", f"{split}.json").read_text()))
        batch = int(self.setting.finetune[self.setting.finetune.index("--batchSize") + 1])
        return max(1, round(self.setting.finetune_steps * batch / questions))

    def finetune(self) -> None:
        s = self.setting
        for percent in self.percents:
            split = f"train_{percent}pct"
            epochs = self.finetune_epochs(split)
            for seed in self.seeds:
                for arm in self.experiment.arms:
                    output = self.run_dir / "finetune" / f"{split}_{arm}_seed{seed}"
                    if (output / "test_done").is_file():
                        continue
                    output.mkdir(parents=True, exist_ok=True)
                    common = ["--task", "easyvqa", "--dataRoot", self.data_root]
                    shell("launch", self.devices, "tasks.vqa.main", *common, "--train", split,
                          "--valid", "", *self.weights_of(arm), "--optim", "bert", *s.model,
                          *s.finetune, "--epochs", str(epochs), "--seed", seed,
                          "--output", str(output), *self.extra)
                    shell("launch", self.devices, "tasks.vqa.main", *common, "--train", "",
                          "--valid", "", "--test", "test", "--load", f"{output}/LAST",
                          *s.model, "--output", str(output), *self.extra)
                    if not dry_run():
                        (output / "test_done").touch()

    def report(self, pretrain_seconds: int, started: float) -> None:
        easyvqa_report.main([str(self.run_dir), "--percents", ",".join(self.percents),
                             "--seeds", ",".join(self.seeds),
                             "--arms", ",".join(self.experiment.arms),
                             "--test-json", f"{self.data_root}/easyvqa/test.json",
                             "--pretrain-seconds", str(pretrain_seconds),
                             "--total-seconds", str(int(time.time() - started))])


# ---- command line --------------------------------------------------------------------------

def usage_problem(devices: str, name: str) -> Optional[str]:
    """What is wrong with the DEVICES and NAME arguments (None: nothing)."""
    if not DEVICES_RE.match(devices):
        return (f"first argument must be a GPU id (0), a list of GPU ids (0,1,2,3) or cpu; "
                f"got '{devices}'")
    if not name or name.startswith("-"):
        return f"second argument must be the experiment name; got '{name}'"
    if "/" in name or name in (".", ".."):
        return (f"experiment name '{name}' must be a plain directory name under "
                f"snap/easyvqa_pretrain/ (no '/', '.' or '..')")
    return None


def parse(argv: list) -> tuple[argparse.Namespace, list]:
    ap = argparse.ArgumentParser(prog="python -m tools.easyvqa_pretrain", allow_abbrev=False,
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("experiment", choices=sorted(EXPERIMENTS))
    ap.add_argument("devices", help="a GPU id, a list of GPU ids or cpu")
    ap.add_argument("name", help="the run folder: snap/easyvqa_pretrain/NAME")
    ap.add_argument("--percents", default=os.environ.get("EASYVQA_PERCENTS", "1,5"),
                    help="few-label percentages to fine-tune on (env EASYVQA_PERCENTS)")
    ap.add_argument("--seeds", default=os.environ.get("EASYVQA_SEEDS"),
                    help="comma-separated fine-tuning seeds (env EASYVQA_SEEDS; default "
                         "9595,1)")
    ap.add_argument("--no-qa", dest="qa", action="store_false",
                    default=os.environ.get("EASYVQA_PRETRAIN_QA", "1") != "0",
                    help="proof: without the QA stage and arm (env EASYVQA_PRETRAIN_QA=0)")
    args, extra = ap.parse_known_args(argv)
    problem = usage_problem(args.devices, args.name)
    if problem:
        ap.error(problem)
    return args, extra


def items(text: str) -> list:
    return [p.strip() for p in text.split(",") if p.strip()]


def main(argv: Optional[list] = None) -> int:
    args, extra = parse(sys.argv[1:] if argv is None else argv)
    experiment = EXPERIMENTS[args.experiment](args.qa)
    plan = Plan(experiment, args.devices, Path("snap", "easyvqa_pretrain", args.name),
                os.environ.get("LXRT_DATA_ROOT", "data"), items(args.percents),
                items(args.seeds or experiment.seeds), extra)
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    convert = os.environ.get("EASYVQA_CONVERT_FLAGS", "").split()
    subprocess.run([sys.executable, "-m", "tools.easyvqa", "--data-root", plan.data_root,
                    "--pretraining", "--few-label-percents", ",".join(plan.percents), *convert],
                   check=True)
    plan.pretrain()
    pretrain_seconds = int(time.time() - started)
    plan.finetune()
    if not dry_run():
        plan.report(pretrain_seconds, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
