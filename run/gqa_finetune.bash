#!/usr/bin/env bash
# Fine-tune LXMERT-S on GQA (the authors' recipe): bash run/gqa_finetune.bash GPU NAME [flags]
# The recipe gqa_finetune is in tasks/gqa/entry.py. Output: snap/gqa/NAME/ (BEST.pth, LAST.pth, log.log, metrics.jsonl, run_info.json)
# Extra flags are appended, e.g. --mceLoss, --tiny, --numWorkers 4.
set -euo pipefail
source "$(dirname "$0")/common.sh"
usage_check $# "bash run/gqa_finetune.bash GPU_ID|GPU_IDS|cpu NAME [extra flags]" "${1:-}" "${2:-}"
output="snap/gqa/$2"
mkdir -p "$output"
launch "$1" tasks.gqa.main --recipe gqa_finetune --tqdm --output "$output" "${@:3}"
