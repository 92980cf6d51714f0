#!/usr/bin/env bash
# Fine-tune LXMERT-S on NLVR2 (the authors' recipe): bash run/nlvr2_finetune.bash GPU NAME [flags]
# The recipe nlvr2_finetune is in tasks/nlvr2/entry.py. Output: snap/nlvr2/NAME/ (BEST.pth, LAST.pth, log.log, metrics.jsonl, run_info.json)
set -euo pipefail
source "$(dirname "$0")/common.sh"
usage_check $# "bash run/nlvr2_finetune.bash GPU_ID|GPU_IDS|cpu NAME [extra flags]" "${1:-}" "${2:-}"
output="snap/nlvr2/$2"
mkdir -p "$output"
launch "$1" tasks.nlvr2.main --recipe nlvr2_finetune --tqdm --output "$output" "${@:3}"
