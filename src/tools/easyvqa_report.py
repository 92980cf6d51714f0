"""The table of run/easyvqa_pretrain.bash: easy-VQA test accuracy after fine-tuning on few
labels, from the pre-trained encoder and from scratch.

    python -m tools.easyvqa_report snap/easyvqa_pretrain/NAME --percents 1,5
        [--pretrain-seconds S] [--total-seconds S]

Reads RUN/finetune/train_<P>pct_{pretrained,scratch}/ (the test record of metrics.jsonl and
the step count of resume.pth) and RUN/pretrain/<stage>/ (the last epoch's figures), prints
the table and writes it to RUN/results.md and RUN/results.json with the date and machine.
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

STAGES = ("token", "phrase", "sentence")


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


def report(run: Path, percents: list[str], pretrain_seconds=None, total_seconds=None) -> dict:
    rows = []
    for percent in percents:
        arms = {start: finetune_result(run / "finetune" / f"train_{percent}pct_{start}")
                for start in ("pretrained", "scratch")}
        rows.append({"percent": percent, **arms,
                     "gain": round(arms["pretrained"]["accuracy"] - arms["scratch"]["accuracy"], 2)})
    stages = {s: stage_summary(run / "pretrain" / s) for s in STAGES
              if (run / "pretrain" / s / "metrics.jsonl").is_file()}
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(), "rows": rows, "pretrain": stages,
            "pretrain_seconds": pretrain_seconds, "total_seconds": total_seconds}


def markdown(result: dict) -> str:
    lines = ["| labelled train questions | steps | from scratch | pre-trained | gain |",
             "|---|---|---|---|---|"]
    for row in result["rows"]:
        scratch, pre = row["scratch"], row["pretrained"]
        lines.append(f"| {row['percent']}% of the images | {pre['steps']} | "
                     f"{scratch['accuracy']:.2f} | {pre['accuracy']:.2f} | "
                     f"{row['gain']:+.2f} |")
    lines.append("")
    lines.append(f"easy-VQA test accuracy (%, {result['rows'][0]['scratch']['questions']} "
                 f"questions), last weights; {result['date']}; {result['machine']}.")
    if result["pretrain_seconds"] is not None:
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
    ap.add_argument("--pretrain-seconds", type=int, default=None)
    ap.add_argument("--total-seconds", type=int, default=None)
    args = ap.parse_args(argv)
    percents = [p.strip() for p in args.percents.split(",") if p.strip()]
    result = report(args.run, percents, args.pretrain_seconds, args.total_seconds)
    text = markdown(result)
    (args.run / "results.md").write_text(text)
    (args.run / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
