#!/usr/bin/env bash
# Fine-tune LXMERT-S on SNLI-VE (visual entailment): bash run/snli_ve_finetune.bash GPU NAME [flags]
# The recipe snli_ve_finetune (tasks/snli_ve/entry.py): train on train, validate on dev, from
# the pre-trained encoder data/model; batch 32, lr 5e-5, 4 epochs (LXMERT's fine-tuning recipe).
# Output: snap/snli_ve/NAME/ (BEST.pth, LAST.pth, log.log, metrics.jsonl with the accuracy of
# each class, run_info.json)
set -euo pipefail
source "$(dirname "$0")/common.sh"
usage_check $# "bash run/snli_ve_finetune.bash GPU_ID|GPU_IDS|cpu NAME [extra flags]" "${1:-}" "${2:-}"
output="snap/snli_ve/$2"
mkdir -p "$output"
launch "$1" tasks.snli_ve.main --recipe snli_ve_finetune --tqdm --output "$output" "${@:3}"
