#!/usr/bin/env bash
# Predict a GQA split with a fine-tuned model:
#   bash run/gqa_test.bash GPU NAME --test submit --load snap/gqa/gqa_lxr050/BEST
# -> snap/gqa/NAME/submit_predict.json   (the test-server file; --test test is the same)
#    --test testdev scores testdev and writes testdev_predict.json
set -euo pipefail
source "$(dirname "$0")/common.sh"
usage="bash run/gqa_test.bash GPU_ID|GPU_IDS|cpu NAME --test submit|testdev --load PATH/BEST"
usage_check $# "$usage" "${1:-}" "${2:-}"
require_flag --test "$usage" "give the split to predict" "${@:3}"
output="snap/gqa/$2"
mkdir -p "$output"
launch "$1" tasks.gqa.main --recipe gqa_test --tqdm --output "$output" "${@:3}"
