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
usage_check $# "bash run/pretrain.bash GPU_ID|GPU_IDS|cpu NAME --stage CONFIG [extra flags]"
output="snap/pretrain/$2"
mkdir -p "$output"
if [[ "$1" == *,* ]] || (( ${NNODES:-1} > 1 )); then
    # build the corpus index and the other caches once, before the processes start
    python -m tasks.pretrain.main --prepareOnly --device cpu --output "$output" "${@:3}"
fi
launch "$1" tasks.pretrain.main \
    --llayers 0 --xlayers 5 --rlayers 0 \
    --optim bert --warmup 0.05 --clipNorm 1.0 \
    --tqdm --output "$output" "${@:3}"
