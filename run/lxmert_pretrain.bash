#!/usr/bin/env bash
# LXMERT's pre-training recipe on the LXMERT-S layers (0/5/0): MLM, masked objects, ITM and QA
# over mscoco_train, mscoco_nominival and vgnococo, validated on mscoco_minival; BertAdam,
# lr 1e-4, warmup 0.05, clipping 1.0, batch 256, 20 epochs, from scratch.
#   bash run/lxmert_pretrain.bash GPU NAME [flags]
# Output: snap/pretrain/NAME/ (see run/pretrain.bash).
set -euo pipefail
source "$(dirname "$0")/common.sh"
usage_check $# "bash run/lxmert_pretrain.bash GPU_ID|GPU_IDS|cpu NAME [extra flags]" "${1:-}" "${2:-}"
bash "$REPO_ROOT/run/pretrain.bash" "$1" "$2" \
    --stage "$REPO_ROOT/run/configs/lxmert_pretrain.json" --fromScratch "${@:3}"
