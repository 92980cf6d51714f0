#!/usr/bin/env bash
# Evaluate a fine-tuned retrieval model on the Flickr30k test split:
#   bash run/image_retrieval_test.bash GPU_ID|GPU_IDS|cpu NAME --load snap/retrieval/FT/LAST
# Scores with p(match) = softmax(logits)[:,1], as the authors' fine-tuned image retrieval; the
# raw-logit numbers and both text-retrieval protocols are reported too (labelled).
# Output: snap/retrieval/NAME/ (eval.log, test_metrics.json, test_scores.npy, ...)
set -euo pipefail
source "$(dirname "$0")/common.sh"
usage="bash run/image_retrieval_test.bash GPU_ID|GPU_IDS|cpu NAME --load PATH/LAST [extra flags]"
usage_check $# "$usage" "${1:-}" "${2:-}"
require_flag --load "$usage" "--load is required" "${@:3}"
output="snap/retrieval/$2"
mkdir -p "$output"
launch "$1" tasks.retrieval.main --recipe image_retrieval_test --tqdm --output "$output" \
    "${@:3}"
