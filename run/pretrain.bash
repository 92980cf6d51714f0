#!/usr/bin/env bash
# One pre-training stage: bash run/pretrain.bash GPU NAME --stage CONFIG [--init PREV/LAST] [flags]
#   CONFIG: run/configs/msp/{token,phrase,sentence}.json or run/configs/lxmert_pretrain.json
# Output: snap/pretrain/NAME/ (EpochNN_LXRT.pth, LAST_LXRT.pth, BEST_EVAL_LOSS_LXRT.pth,
# metrics.jsonl with each task's loss and accuracy, log.log, resume.pth). Fine-tune from it
# with any launcher: --loadLXMERT snap/pretrain/NAME/BEST_EVAL_LOSS
# GPU lists run DDP through torchrun; several machines: NNODES, NODE_RANK, MASTER_ADDR,
# MASTER_PORT (run/common.sh).
set -euo pipefail
source "$(dirname "$0")/common.sh"
source "$(dirname "$0")/pretrain_stage.sh"
usage_check $# "bash run/pretrain.bash GPU_ID|GPU_IDS|cpu NAME --stage CONFIG [extra flags]" "${1:-}" "${2:-}"
pretrain_stage "$1" "snap/pretrain/$2" "${@:3}"
