"""Training curves of one or more runs as one PNG.

    python -m tools.plot_metrics snap/easyvqa/A [snap/easyvqa/B ...] -o curves.png

Reads each run's `metrics.jsonl`: the records with an `epoch` (test records and run-start
markers are skipped; when the file holds several runs, each opening with a `run_start` record
or restarting at epoch 0, the last one is plotted). Left: the training loss per epoch, and the
per-task losses of pre-training runs (`train_losses: {"mlm": ..., "itm": ...}`) dashed. Right:
the validation score per epoch (`valid.accuracy`, or the first numeric validation metric).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tasks.common.readers import json_objects

SCORE_KEYS = ("accuracy", "score")


def read_epochs(run_dir: str | Path) -> list[dict]:
    """The epoch records of the last run section of RUN_DIR/metrics.jsonl."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (a run folder holds metrics.jsonl)")
    sections: list[list[dict]] = [[]]
    for _, record in json_objects(path, path.read_text().splitlines(), "an epoch record",
                                  error=ValueError):
        if "run_start" in record:
            sections.append([])
        elif "epoch" in record:
            if record["epoch"] == 0 and sections[-1]:
                sections.append([])   # a new run appended without a marker
            sections[-1].append(record)
    epochs = next((s for s in reversed(sections) if s), [])
    if not epochs:
        raise ValueError(f"{path}: no epoch records to plot")
    return epochs


def valid_score(record: dict):
    valid = record.get("valid")
    if not isinstance(valid, dict):
        return None, None
    for key in SCORE_KEYS:
        if isinstance(valid.get(key), (int, float)):
            return key, valid[key]
    for key, value in valid.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) \
                and key not in ("questions", "examples", "images"):
            return key, value
    return None, None


def plot_runs(run_dirs, out, labels=None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = labels or [Path(d).name for d in run_dirs]
    fig, (ax_loss, ax_valid) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=80)
    score_names, all_epochs = set(), set()
    for run_dir, label in zip(run_dirs, labels):
        epochs = read_epochs(run_dir)
        xs = [r["epoch"] for r in epochs]   # numbered as in log.log (Epoch 0, 1, ...)
        all_epochs |= set(xs)
        line, = ax_loss.plot(xs, [r["train_loss"] for r in epochs], marker="o", label=label)
        tasks = sorted({k for r in epochs for k in (r.get("train_losses") or {})})
        for task in tasks:
            points = [(r["epoch"], r["train_losses"][task]) for r in epochs
                      if task in (r.get("train_losses") or {})]
            ax_loss.plot(*zip(*points), linestyle="--", alpha=0.7,
                         label=f"{label}: {task}")
        scored = [(r["epoch"], *valid_score(r)) for r in epochs]
        scored = [(x, k, v) for x, k, v in scored if k is not None]
        if scored:
            score_names |= {k for _, k, _ in scored}
            ax_valid.plot([x for x, _, _ in scored], [v for _, _, v in scored], marker="o",
                          color=line.get_color(), label=label)
    ax_loss.set(title="training loss", xlabel="epoch", ylabel="loss")
    ax_valid.set(title="validation", xlabel="epoch",
                 ylabel=" / ".join(sorted(score_names)) or "no validation records")
    for ax in (ax_loss, ax_valid):
        ax.grid(alpha=0.3)
        if len(all_epochs) <= 20:   # whole epochs only, also for a single point
            ax.set_xticks(sorted(all_epochs))
            ax.set_xlim(min(all_epochs) - 0.5, max(all_epochs) + 0.5)
        else:
            ax.xaxis.get_major_locator().set_params(integer=True)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.plot_metrics",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run folders holding metrics.jsonl")
    ap.add_argument("-o", "--output", default="curves.png")
    ap.add_argument("--labels", nargs="+", help="legend names (default: folder names)")
    args = ap.parse_args(argv)
    if args.labels and len(args.labels) != len(args.runs):
        ap.error(f"{len(args.labels)} labels for {len(args.runs)} runs")
    try:
        plot_runs(args.runs, args.output, args.labels)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
