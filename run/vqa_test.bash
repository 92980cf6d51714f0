#!/usr/bin/env bash
# Predict a VQA split with a fine-tuned model and write the test-server file:
#   bash run/vqa_test.bash GPU NAME --test test --load snap/vqa/vqa_lxr050/BEST
# -> snap/vqa/NAME/test_predict.json   (--test minival scores minival instead)
set -euo pipefail
source "$(dirname "$0")/common.sh"
usage_check $# "bash run/vqa_test.bash GPU_ID|GPU_IDS|cpu NAME --test test --load PATH/BEST" "${1:-}" "${2:-}"
output="snap/vqa/$2"
mkdir -p "$output"
launch "$1" tasks.vqa.main --recipe vqa_test --tqdm --output "$output" "${@:3}"
