#!/usr/bin/env bash
# Fine-tune LXMERT-S on GQA (the authors' recipe): bash run/gqa_finetune.bash GPU NAME [flags]
# Output: snap/gqa/NAME/ (BEST.pth, LAST.pth, log.log, metrics.jsonl, run_info.json)
# Extra flags are appended, e.g. --mceLoss, --tiny, --numWorkers 4.
set -euo pipefail
source "$(dirname "$0")/common.sh"
usage_check $# "bash run/gqa_finetune.bash GPU_ID|GPU_IDS|cpu NAME [extra flags]" "${1:-}" "${2:-}"
output="snap/gqa/$2"
mkdir -p "$output"
launch "$1" tasks.gqa.main \
    --train train,valid --valid testdev \
    --llayers 0 --xlayers 5 --rlayers 0 \
    --loadLXMERT data/model \
    --batchSize 32 --optim bert --lr 5e-5 --epochs 5 \
    --tqdm --output "$output" "${@:3}"
