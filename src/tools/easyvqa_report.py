"""The table of the easy-VQA experiments (tools.easyvqa_pretrain): test accuracy after
fine-tuning on few labels, from scratch and from each pre-trained encoder.

    python -m tools.easyvqa_report snap/easyvqa_pretrain/NAME --percents 1,5 --seeds 9595,1
        [--arms scratch,captions,qa] [--test-json data/easyvqa/test.json]
        [--pretrain-seconds S] [--total-seconds S]

Reads RUN/finetune/train_<P>pct_<ARM>_seed<S>/ (the test record of metrics.jsonl, the step
count of resume.pth and, with --test-json, test_predict.json for the accuracy per question
kind), RUN/pretrain/<stage>/ (the last epoch's figures) and RUN/plan.json (the stages of
each arm, for its pre-training steps), prints the table (mean, sample standard deviation and
each seed; a gain is an arm's mean minus the scratch mean) and writes it to RUN/results.md
and RUN/results.json with the date and machine.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

import torch

from tasks.common.run_folder import read_metrics
from tools.easyvqa import SHAPES, YES_NO, best_answer

ARM_NAMES = {"scratch": "from scratch", "captions": "pre-trained on captions",
             "qa": "pre-trained, then QA", "lxmert": "LXMERT, single stage",
             "msp": "MSP, token -> phrase -> sentence", "no_ifrs": "MSP without IFRS",
             "no_titp": "MSP without TITP", "no_itm_hs": "MSP without ITM_HS",
             "no_tits": "MSP without TITS",
             "token_words": "MSP, token stage on content words",
             "text_topic": "MSP, TITS of a mismatched pair on the shown caption"}
KINDS = ("yes/no", "colour", "shape")


def epoch_records(metrics: Path) -> list[dict]:
    """The last record of every epoch over all runs in the folder (a resumed run repeats
    none, a run started again in the same folder replaces the earlier ones)."""
    by_epoch = {r["epoch"]: r for r in read_metrics(metrics, section=None) if "epoch" in r}
    return [by_epoch[k] for k in sorted(by_epoch)]


def finetune_result(folder: Path) -> dict:
    """Test accuracy, questions and optimizer steps of one fine-tuning run."""
    metrics = folder / "metrics.jsonl"
    tests = [r for r in read_metrics(metrics, section=None) if r.get("test") == "test"]
    if not tests:
        raise SystemExit(f"{metrics}: no test record (did the test run finish?)")
    epochs = epoch_records(metrics)
    state = torch.load(folder / "resume.pth", map_location="cpu", weights_only=True)
    return {"accuracy": tests[-1]["accuracy"], "questions": tests[-1]["questions"],
            "steps": int(state["global_step"]), "epochs": len(epochs),
            "train_seconds": round(sum(r["train_seconds"] for r in epochs), 1)}


def stage_summary(folder: Path) -> dict:
    records = epoch_records(folder / "metrics.jsonl")
    last = records[-1]
    state = torch.load(folder / "resume.pth", map_location="cpu", weights_only=True)
    return {"steps": int(state["global_step"]), "epochs": len(records),
            "train_seconds": round(sum(r["train_seconds"] for r in records), 1),
            "samples_per_s": round(last["train_samples_per_s"], 1),
            "valid": {k: round(v, 4) for k, v in last.get("valid", {}).items()},
            "train": {k: round(v, 4) for k, v in last.get("train", {}).items()}}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = os.environ.get("OMP_NUM_THREADS") or torch.get_num_threads()  # the runs' setting
    text = f"{cores} cores, {cpu}, torch {torch.__version__}, {threads} thread(s) per run"
    return text + (f", load average {load[0]:.1f} at the end" if load else "")


def question_kind(answer: str) -> str:
    return "yes/no" if answer in YES_NO else "shape" if answer in SHAPES else "colour"


def gold_answers(test_json: Path) -> dict:
    """question_id -> the best-scored answer of easyvqa/test.json."""
    return {d["question_id"]: best_answer(d["label"]) for d in json.loads(test_json.read_text())}


def accuracy_by_kind(folder: Path, gold: dict) -> dict:
    """Accuracy (%) of test_predict.json per question kind (yes/no, colour, shape)."""
    hits: dict[str, list] = {}
    for p in json.loads((folder / "test_predict.json").read_text()):
        answer = gold[p["question_id"]]
        hits.setdefault(question_kind(answer), []).append(p["answer"] == answer)
    return {k: round(100 * sum(v) / len(v), 2) for k, v in sorted(hits.items())}


def mean_std(values: list) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def arm_result(run: Path, percent: str, arm: str, seeds: list[str], gold) -> dict:
    runs = []
    for seed in seeds:
        folder = run / "finetune" / f"train_{percent}pct_{arm}_seed{seed}"
        result = finetune_result(folder)
        if gold is not None:
            result["by_kind"] = accuracy_by_kind(folder, gold)
        runs.append({"seed": seed, **result})
    mean, std = mean_std([r["accuracy"] for r in runs])
    out = {"accuracy": round(mean, 2), "std": round(std, 2), "runs": runs,
           "steps": runs[0]["steps"], "questions": runs[0]["questions"]}
    if gold is not None:
        out["by_kind"] = {}
        for kind in runs[0]["by_kind"]:
            mean, std = mean_std([r["by_kind"][kind] for r in runs])
            out["by_kind"][kind] = {"mean": round(mean, 2), "std": round(std, 2)}
    return out


def pretraining_steps(run: Path, arms: list[str], stages: dict) -> dict:
    """arm -> optimizer steps of its pre-training stages (RUN/plan.json names them)."""
    plan = run / "plan.json"
    if not plan.is_file():
        return {}
    chains = json.loads(plan.read_text())["arms"]
    return {arm: sum(stages[s]["steps"] for s in chains.get(arm, []) if s in stages)
            for arm in arms}


def report(run: Path, percents: list[str], seeds: list[str], arms: list[str],
           test_json=None, pretrain_seconds=None, total_seconds=None) -> dict:
    if "scratch" not in arms:
        raise SystemExit(f"--arms {','.join(arms)}: the scratch arm is the baseline, name it")
    gold = gold_answers(test_json) if test_json is not None else None
    rows = []
    for percent in percents:
        results = {arm: arm_result(run, percent, arm, seeds, gold) for arm in arms}
        gains = {arm: round(results[arm]["accuracy"] - results["scratch"]["accuracy"], 2)
                 for arm in arms if arm != "scratch"}
        rows.append({"percent": percent, "arms": results, "gains": gains})
    folders = sorted(p.parent for p in (run / "pretrain").glob("*/metrics.jsonl"))
    stages = {f.name: stage_summary(f) for f in folders}
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(), "seeds": seeds, "arms": arms, "rows": rows,
            "pretrain": stages, "pretrain_steps": pretraining_steps(run, arms, stages),
            "pretrain_seconds": pretrain_seconds, "total_seconds": total_seconds}


def _cell(result: dict) -> str:
    if len(result["runs"]) == 1:
        return f"{result['accuracy']:.2f}"
    runs = " / ".join(f"{r['accuracy']:.2f}" for r in result["runs"])
    return f"{result['accuracy']:.2f} ± {result['std']:.2f} ({runs})"


def markdown(result: dict) -> str:
    arms, rows = result["arms"], result["rows"]
    steps = result.get("pretrain_steps") or {}
    head = ["start"] + (["pre-training steps"] if steps else [])
    for row in rows:
        n = row["arms"]["scratch"]["steps"]
        head += [f"{row['percent']}% ({n} steps)", "gain"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm in arms:
        cells = [ARM_NAMES.get(arm, arm)] + ([str(steps.get(arm, 0))] if steps else [])
        for row in rows:
            gain = row["gains"].get(arm)
            cells += [_cell(row["arms"][arm]), "" if gain is None else f"{gain:+.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    first = rows[0]["arms"]["scratch"]
    lines += ["", f"easy-VQA test accuracy (%, {first['questions']} questions) of the last "
                  f"weights: mean ± sample standard deviation over seeds "
                  f"{', '.join(result['seeds'])} (each seed in brackets); {result['date']}; "
                  f"{result['machine']}."]
    if "by_kind" in first:
        kinds = [k for k in KINDS if k in first["by_kind"]]
        head = ["start"] + [f"{row['percent']}%: {k}" for row in rows for k in kinds]
        lines += ["", "By question kind (mean ± standard deviation over the seeds):", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for arm in arms:
            cells = [ARM_NAMES.get(arm, arm)]
            for row in rows:
                by_kind = row["arms"][arm]["by_kind"]
                cells += [f"{by_kind[k]['mean']:.1f} ± {by_kind[k]['std']:.1f}" for k in kinds]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "Each seed by question kind (" + ", ".join(kinds) + "):"]
        for row in rows:
            for arm in arms:
                runs = row["arms"][arm]["runs"]
                lines.append(f"- {row['percent']}%, {ARM_NAMES.get(arm, arm)}: " + "; ".join(
                    f"seed {r['seed']} " + " / ".join(f"{r['by_kind'][k]:.1f}" for k in kinds)
                    for r in runs))
    if result["pretrain_seconds"] is not None:
        lines.append("")
        lines.append(f"Pre-training {result['pretrain_seconds'] / 60:.1f} min, all "
                     f"{(result['total_seconds'] or 0) / 60:.1f} min.")
    for stage, info in result["pretrain"].items():
        lines.append(f"- {stage}: {info['steps']} steps, {info['samples_per_s']} samples/s, "
                     f"valid {json.dumps(info['valid'])}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.easyvqa_report",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--percents", default="1,5")
    ap.add_argument("--seeds", default="9595", help="comma-separated fine-tuning seeds")
    ap.add_argument("--arms", default="scratch,captions,qa",
                    help="comma-separated starts: scratch and the pre-trained encoders")
    ap.add_argument("--test-json", type=Path, default=None,
                    help="easyvqa/test.json: adds the accuracy per question kind")
    ap.add_argument("--pretrain-seconds", type=int, default=None)
    ap.add_argument("--total-seconds", type=int, default=None)
    args = ap.parse_args(argv)
    def items(text):
        return [p.strip() for p in text.split(",") if p.strip()]
    result = report(args.run, items(args.percents), items(args.seeds), items(args.arms),
                    args.test_json, args.pretrain_seconds, args.total_seconds)
    text = markdown(result)
    (args.run / "results.md").write_text(text)
    (args.run / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
