#!/usr/bin/env bash
# MSP, our reconstruction of multi-stage pre-training: token -> phrase -> sentence stages
# (run/configs/msp/*.json), each starting from the previous stage's LAST_LXRT.pth with a fresh
# optimizer and schedule.
#   bash run/msp_pretrain.bash GPU NAME [flags for every stage]
# Output: snap/pretrain/NAME/{token,phrase,sentence}/; the result to fine-tune from is
# snap/pretrain/NAME/sentence/LAST (or .../sentence/BEST_EVAL_LOSS).
# A finished stage (a stage_done file in its folder) is not run again.
set -euo pipefail
source "$(dirname "$0")/common.sh"
source "$(dirname "$0")/pretrain_stage.sh"
usage_check $# "bash run/msp_pretrain.bash GPU_ID|GPU_IDS|cpu NAME [extra flags]" "${1:-}" "${2:-}"
devices=$1
name=$2
configs="$REPO_ROOT/run/configs/msp"
init=()
for stage in token phrase sentence; do
    output="snap/pretrain/$name/$stage"
    if [[ -f "$output/stage_done" ]]; then
        echo "stage $stage already finished in $output"
    else
        pretrain_stage "$devices" "$output" \
            --stage "$configs/$stage.json" ${init[@]+"${init[@]}"} "${@:3}"
        [[ -n "${LXRT_DRY_RUN:-}" ]] || touch "$output/stage_done"
    fi
    init=(--init "$output/LAST")
done
