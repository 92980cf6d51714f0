#!/usr/bin/env bash
# Zero-shot Flickr30k text retrieval with the pre-trained ITM head (no training):
#   bash run/sent_retrieval_zero_shot.bash GPU_ID|GPU_IDS|cpu NAME [extra flags]
# As the authors' sent_retrieval_test.py --zero_shot: score p(match) = softmax(logits)[:,1].
# One pass over all test captions x images reports text retrieval in the authors' protocol
# (first caption of each image, `tr_first`) and the standard one (`tr_standard`), plus image
# retrieval, for both score functions. Output: snap/retrieval/NAME/ (eval.log, test_*.json/npy).
set -euo pipefail
source "$(dirname "$0")/common.sh"
usage_check $# "bash run/sent_retrieval_zero_shot.bash GPU_ID|GPU_IDS|cpu NAME [extra flags]" "${1:-}" "${2:-}"
output="snap/retrieval/$2"
mkdir -p "$output"
launch "$1" tasks.retrieval.main --recipe sent_retrieval_zero_shot --tqdm --output "$output" "${@:3}"
