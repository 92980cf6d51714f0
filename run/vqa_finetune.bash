#!/usr/bin/env bash
# Fine-tune LXMERT-S on VQA (the authors' recipe): bash run/vqa_finetune.bash GPU NAME [flags]
# The recipe vqa_finetune (tasks/vqa/entry.py) holds what differs from the defaults; flags
# given here win over it. Output: snap/vqa/NAME/ (BEST.pth, LAST.pth, log.log, metrics.jsonl,
# run_info.json)
# Your own data (tools.make_qa_dataset, docs/own_qa_data.md): add --dataRoot ROOT --train train
# --valid valid (the root's own split names).
set -euo pipefail
source "$(dirname "$0")/common.sh"
usage_check $# "bash run/vqa_finetune.bash GPU_ID|GPU_IDS|cpu NAME [extra flags]" "${1:-}" "${2:-}"
output="snap/vqa/$2"
mkdir -p "$output"
launch "$1" tasks.vqa.main --recipe vqa_finetune --tqdm --output "$output" "${@:3}"
