#!/usr/bin/env bash
# Evaluate a fine-tuned retrieval model for text retrieval on the Flickr30k test split:
#   bash run/sent_retrieval_test.bash GPU_ID|GPU_IDS|cpu NAME --load snap/retrieval/FT/LAST
# Selected score: the raw class-1 logit, as the authors' sent_retrieval.py ranked after
# fine-tuning, for their protocol (first caption of each image, `tr_first`); the standard
# protocol and the p(match) numbers are reported too, each labelled
# (--scoreFunction prob selects p(match)).
# Output: snap/retrieval/NAME/ (eval.log, test_metrics.json, test_scores.npy, ...)
set -euo pipefail
source "$(dirname "$0")/common.sh"
usage="bash run/sent_retrieval_test.bash GPU_ID|GPU_IDS|cpu NAME --load PATH/LAST [extra flags]"
usage_check $# "$usage" "${1:-}" "${2:-}"
require_flag --load "$usage" "--load is required" "${@:3}"
output="snap/retrieval/$2"
mkdir -p "$output"
launch "$1" tasks.retrieval.main --recipe sent_retrieval_test --tqdm --output "$output" "${@:3}"
