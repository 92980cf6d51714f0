#!/usr/bin/env bash
# Predict an SNLI-VE split with a fine-tuned model:
#   bash run/snli_ve_test.bash GPU NAME --test test --load snap/snli_ve/snli_ve_lxr050/BEST
# -> snap/snli_ve/NAME/test_predict.jsonl (each example's pairID, Flickr30K_ID, hypothesis and
#    predicted class), accuracy overall and per class in the log and metrics.jsonl
set -euo pipefail
source "$(dirname "$0")/common.sh"
usage="bash run/snli_ve_test.bash GPU_ID|GPU_IDS|cpu NAME --test test|dev --load PATH/BEST"
usage_check $# "$usage" "${1:-}" "${2:-}"
require_flag --test "$usage" "give the split to predict" "${@:3}"
output="snap/snli_ve/$2"
mkdir -p "$output"
launch "$1" tasks.snli_ve.main --recipe snli_ve_test --tqdm --output "$output" "${@:3}"
