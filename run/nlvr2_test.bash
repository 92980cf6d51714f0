#!/usr/bin/env bash
# Predict an NLVR2 split with a fine-tuned model:
#   bash run/nlvr2_test.bash GPU NAME --test test --load snap/nlvr2/nlvr2_lxr050/BEST
# -> snap/nlvr2/NAME/test_predict.csv (identifier,True|False per line), plus accuracy and
#    consistency in the log and metrics.jsonl. --test valid | hidden work the same way
#    (hidden needs nlvr2/hidden.json and nlvr2_imgfeat/hidden_obj36.tsv).
set -euo pipefail
source "$(dirname "$0")/common.sh"
usage="bash run/nlvr2_test.bash GPU_ID|GPU_IDS|cpu NAME --test test|valid|hidden --load PATH/BEST"
usage_check $# "$usage" "${1:-}" "${2:-}"
require_flag --test "$usage" "give the split to predict" "${@:3}"
output="snap/nlvr2/$2"
mkdir -p "$output"
launch "$1" tasks.nlvr2.main --recipe nlvr2_test --tqdm --output "$output" "${@:3}"
