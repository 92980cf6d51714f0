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
            no_itm_hs, no_tits; optional (--arms): token_words (the token stage on the
            captions' content words) and text_topic (TITS of a mismatched pair on the shown
            caption)

On the CPU the small model of run/configs/easyvqa_cpu.json (2 cross-modality layers) is
used with every core (set OMP_NUM_THREADS=1 on a machine shared with other jobs). A finished
stage (stage_done) or fine-tuning run (test_done) is not run again, so a stopped experiment
continues where it stopped. LXRT_DRY_RUN=1 prints the commands instead of running them.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tasks.pretrain.stage import load_stage_config
from tools import easyvqa_report

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "run" / "configs"
DEVICES_RE = re.compile(r"^(cpu|[0-9]+(,[0-9]+)*)$")


@dataclass(frozen=True)
class Stage:
    """One pre-training run: its folder under RUN/pretrain/, its config under run/configs/
    (every setting of the CPU experiment), and for an ablation the tasks it keeps (--tasks;
    None: the config's)."""
    folder: str
    config: str
    tasks: Optional[str] = None


@dataclass(frozen=True)
class Setting:
    """What one kind of machine runs: the model, the images read, the stage settings that
    differ from the configs (`stage_fields` for every stage, `stage_epochs` per config; each
    is passed as a flag only where it differs, and said so), and the fine-tuning recipe
    (`finetune_steps` optimizer steps at batch `finetune_batch`)."""
    model: tuple
    limit: tuple = ()
    stage_fields: dict = field(default_factory=dict)
    stage_epochs: dict = field(default_factory=dict)
    finetune_batch: int = 32
    finetune_lr: str = "1e-4"
    finetune_steps: int = 300


SETTINGS = {
    "cpu": Setting(model=("--modelConfig", str(CONFIGS / "easyvqa_cpu.json"), "--llayers", "0",
                          "--xlayers", "2", "--rlayers", "0", "--numWorkers", "0"),
                   limit=("--imageLimit", "1600")),
    "gpu": Setting(model=("--llayers", "0", "--xlayers", "5", "--rlayers", "0",
                          "--numWorkers", "4"),
                   stage_fields={"batch_size": 256, "lr": 1e-4},
                   stage_epochs={"easyvqa/token_captions.json": 10,
                                 "easyvqa/phrase_captions.json": 10,
                                 "easyvqa/sentence_captions.json": 20,
                                 "easyvqa/sentence_qa.json": 10,
                                 "easyvqa/lxmert_captions.json": 40},
                   finetune_steps=1500),
}
# the stage fields a setting may change, and their flags
FIELD_FLAGS = {"epochs": "--epochs", "batch_size": "--batchSize", "lr": "--lr"}

TOKEN = Stage("token", "easyvqa/token_captions.json")
PHRASE = Stage("phrase", "easyvqa/phrase_captions.json")
SENTENCE = Stage("sentence", "easyvqa/sentence_captions.json")
QA = Stage("qa", "easyvqa/sentence_qa.json")


def setting_flags(setting: Setting, stage: Stage) -> list:
    """The flags that give `stage` the setting's values where they differ from its config;
    each difference is printed."""
    config = load_stage_config(CONFIGS / stage.config)
    wanted = dict(setting.stage_fields)
    if stage.config in setting.stage_epochs:
        wanted["epochs"] = setting.stage_epochs[stage.config]
    flags = []
    for key, value in wanted.items():
        if getattr(config, key) != value:
            print(f"stage {stage.folder}: {key} {value} (its config: {getattr(config, key)})",
                  flush=True)
            flags += [FIELD_FLAGS[key], str(value)]
    return flags


@dataclass
class Experiment:
    """Arms: name -> the chain of stages whose last weights it fine-tunes from ([]:
    scratch)."""
    name: str
    arms: dict = field(default_factory=dict)
    seeds: str = "9595,1"
    optional: tuple = ()  # arms run only when --arms names them


def proof(with_qa: bool = True) -> Experiment:
    arms = {"scratch": [], "captions": [TOKEN, PHRASE, SENTENCE]}
    if with_qa:
        arms["qa"] = [TOKEN, PHRASE, SENTENCE, QA]
    return Experiment("proof", arms)


# the ablation's MSP arms that change one stage: arm -> (its place in token, phrase,
# sentence; the stage run instead). The first four drop one new task each (--tasks keeps the
# others); the optional two undo one of our reconstruction choices (run them with --arms).
VARIANTS = {
    "no_ifrs": (0, Stage("no_ifrs_token", TOKEN.config, "mlm,obj")),
    "no_titp": (1, Stage("no_titp_phrase", PHRASE.config, "mlm,obj")),
    "no_itm_hs": (2, Stage("no_itm_hs_sentence", SENTENCE.config, "mlm,obj,itm,topic")),
    "no_tits": (2, Stage("no_tits_sentence", SENTENCE.config, "mlm,obj,itm,itm_hs")),
    "token_words": (0, Stage("token_words_token", "easyvqa/token_captions_words.json")),
    "text_topic": (2, Stage("text_topic_sentence", "easyvqa/sentence_captions_text_topic.json")),
}
OPTIONAL = ("token_words", "text_topic")
LXMERT = Stage("lxmert", "easyvqa/lxmert_captions.json")


def ablation(with_qa: bool = True) -> Experiment:
    """Captions only, the same steps for every pre-trained arm (LXMERT's single stage has
    the epochs of MSP's three stages together). A stage after a changed one is a new run
    (it starts from other weights): its folder is prefixed with the arm."""
    del with_qa  # the ablation never sees an answer in pre-training
    msp = [TOKEN, PHRASE, SENTENCE]
    arms = {"scratch": [], "lxmert": [LXMERT], "msp": msp}
    for arm, (place, changed) in VARIANTS.items():
        arms[arm] = msp[:place] + [changed] + [
            Stage(f"{arm}_{stage.folder}", stage.config, stage.tasks) for stage in msp[place + 1:]]
    return Experiment("ablation", arms, seeds="9595,1,2", optional=OPTIONAL)


EXPERIMENTS = {"proof": proof, "ablation": ablation}


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
class Job:
    """One pre-training stage, or one fine-tuning and its test: shell calls run in order,
    after the jobs named in `after`; `done` marks it finished (it is not run again)."""
    name: str
    calls: list
    done: Path
    after: list = field(default_factory=list)
    pretraining: bool = False
    rank: int = 0  # with several jobs at a time: the earlier arms' jobs go first

    def run(self) -> None:
        self.done.parent.mkdir(parents=True, exist_ok=True)
        for call in self.calls:
            shell(*call)
        if not dry_run():
            self.done.touch()


def ready_jobs(todo: list, finished: set, names: set, parallel: int) -> list:
    """The jobs of `todo` whose `after` jobs are finished (or not to be run), in the order to
    start them: the list's, or with several at a time the earliest arm's first."""
    ready = [j for j in todo if all(a in finished or a not in names for a in j.after)]
    if parallel > 1:
        ready.sort(key=lambda j: j.rank)  # stable: the list order within an arm
    return ready


def run_jobs(jobs: list, parallel: int = 1) -> float:
    """Run `jobs` in order, or up to `parallel` at a time, each once its `after` jobs are
    done, the ready job of the earliest arm first (so the first arms' results come while the
    later arms pre-train); a failure stops the scheduling (the running ones finish) and is
    raised. Finished jobs are skipped. -> the seconds until the last pre-training job
    ended."""
    started = time.time()
    pretrain_end = started
    todo = []
    for job in jobs:
        if job.done.is_file():
            print(f"{job.name} already finished ({job.done})", flush=True)
        else:
            todo.append(job)
    names = {job.name for job in todo}
    finished: set = set()
    with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
        running: dict = {}
        while todo or running:
            for job in ready_jobs(todo, finished, names, parallel)[:parallel - len(running)]:
                todo.remove(job)
                running[pool.submit(job.run)] = job
            if not running:
                raise RuntimeError(f"jobs waiting for jobs that never run: {todo}")
            done, _ = concurrent.futures.wait(running, return_when="FIRST_COMPLETED")
            for future in done:
                job = running.pop(future)
                future.result()  # raises the job's error
                finished.add(job.name)
                if job.pretraining:
                    pretrain_end = time.time()
    return pretrain_end - started


def resumed(output: Path) -> list:
    """--resume for a run that stopped after writing its resume state (an interrupted
    experiment continues inside the stage or fine-tuning it was in)."""
    return ["--resume"] if (output / "resume.pth").is_file() else []


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

    def write_plan(self) -> None:
        """RUN/plan.json: each arm's stage folders (the report sums their steps), those of
        the arms an earlier call ran in this folder kept."""
        path = self.run_dir / "plan.json"
        arms = json.loads(path.read_text())["arms"] if path.is_file() else {}
        arms.update({arm: [stage.folder for stage in chain]
                     for arm, chain in self.experiment.arms.items()})
        path.write_text(json.dumps(
            {"experiment": self.experiment.name, "devices": self.devices, "arms": arms,
             "percents": self.percents, "seeds": self.seeds, "flags": self.extra},
            indent=2) + "\n")

    def jobs(self) -> list:
        return self.pretrain_jobs() + self.finetune_jobs()

    def pretrain_jobs(self) -> list:
        """Every arm's stages in order, each from the previous one's LAST weights; a stage
        shared with an earlier arm runs once."""
        jobs: dict = {}
        for rank, chain in enumerate(self.experiment.arms.values()):
            previous = None
            for stage in chain:
                if stage.folder not in jobs:
                    jobs[stage.folder] = self.stage_job(stage, previous, rank)
                previous = stage
        return list(jobs.values())

    def stage_job(self, stage: Stage, previous: Optional[Stage], rank: int) -> Job:
        s, output = self.setting, self.stage_dir(stage)
        init = ["--init", f"{self.stage_dir(previous)}/LAST"] if previous else []
        tasks = ["--tasks", stage.tasks] if stage.tasks else []
        call = ("pretrain_stage", self.devices, str(output), "--stage",
                str(CONFIGS / stage.config), "--dataRoot", self.data_root, *init, *s.model,
                *s.limit, *tasks, *setting_flags(s, stage), *self.extra, *resumed(output))
        return Job(f"stage {stage.folder}", [call], output / "stage_done",
                   [f"stage {previous.folder}"] if previous else [], pretraining=True,
                   rank=rank)

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
        s = self.setting
        return max(1, round(s.finetune_steps * s.finetune_batch / questions))

    def finetune_jobs(self) -> list:
        """Per fraction, seed and arm: fine-tune with the same flags, then test the LAST
        weights."""
        s, jobs = self.setting, []
        for percent in self.percents:
            split = f"train_{percent}pct"
            epochs = self.finetune_epochs(split)
            for seed in self.seeds:
                for rank, (arm, chain) in enumerate(self.experiment.arms.items()):
                    output = self.run_dir / "finetune" / f"{split}_{arm}_seed{seed}"
                    common = ("launch", self.devices, "tasks.vqa.main", "--task", "easyvqa",
                              "--dataRoot", self.data_root)
                    train = (*common, "--train", split, "--valid", "", *self.weights_of(arm),
                             "--optim", "bert", *s.model, "--batchSize", str(s.finetune_batch),
                             "--lr", s.finetune_lr, "--epochs", str(epochs), "--seed", seed,
                             "--output", str(output), *self.extra, *resumed(output))
                    test = (*common, "--train", "", "--valid", "", "--test", "test", "--load",
                            f"{output}/LAST", *s.model, "--output", str(output), *self.extra)
                    jobs.append(Job(f"fine-tuning {output.name}", [train, test],
                                    output / "test_done",
                                    [f"stage {chain[-1].folder}"] if chain else [], rank=rank))
        return jobs

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
    ap.add_argument("--arms", default=None,
                    help="comma-separated arms to run (scratch always; default: all of the "
                         "experiment's)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="runs at a time (each once the stage it starts from is done); on "
                         "the CPU give each one thread: OMP_NUM_THREADS=1")
    ap.add_argument("--no-qa", dest="qa", action="store_false",
                    default=os.environ.get("EASYVQA_PRETRAIN_QA", "1") != "0",
                    help="proof: without the QA stage and arm (env EASYVQA_PRETRAIN_QA=0)")
    args, extra = ap.parse_known_args(argv)
    problem = usage_problem(args.devices, args.name)
    if args.jobs < 1:
        problem = f"--jobs {args.jobs}: expected a positive number of runs at a time"
    if problem:
        ap.error(problem)
    return args, extra


def items(text: str) -> list:
    return [p.strip() for p in text.split(",") if p.strip()]


def main(argv: Optional[list] = None) -> int:
    args, extra = parse(sys.argv[1:] if argv is None else argv)
    experiment = EXPERIMENTS[args.experiment](args.qa)
    wanted = [a for a in experiment.arms if a not in experiment.optional]
    if args.arms is not None:
        wanted = ["scratch"] + [a for a in items(args.arms) if a != "scratch"]
        unknown = [a for a in wanted if a not in experiment.arms]
        if unknown:
            raise SystemExit(f"--arms: unknown {unknown}; the {experiment.name} arms are "
                             f"{list(experiment.arms)}")
    experiment.arms = {a: experiment.arms[a] for a in wanted}
    plan = Plan(experiment, args.devices, Path("snap", "easyvqa_pretrain", args.name),
                os.environ.get("LXRT_DATA_ROOT", "data"), items(args.percents),
                items(args.seeds or experiment.seeds), extra)
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    if not dry_run():
        plan.write_plan()
    started = time.time()
    convert = ["-m", "tools.easyvqa", "--data-root", plan.data_root, "--pretraining",
               "--few-label-percents", ",".join(plan.percents),
               *os.environ.get("EASYVQA_CONVERT_FLAGS", "").split()]
    if dry_run():  # the few-label splits must exist already (their sizes set the epochs)
        print("dry run: python " + " ".join(convert), flush=True)
    else:
        subprocess.run([sys.executable, *convert], check=True)
    pretrain_seconds = int(run_jobs(plan.jobs(), args.jobs))
    if not dry_run():
        plan.report(pretrain_seconds, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
