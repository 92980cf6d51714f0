#!/usr/bin/env bash
# Zero-shot Flickr30k retrieval with the pre-trained ITM head (no training):
#   bash run/image_retrieval_zero_shot.bash GPU_ID|GPU_IDS|cpu NAME [extra flags]
# Scores all test captions x all test images once with p(match) = softmax(logits)[:,1] and
# reports image retrieval (selected), text retrieval (standard and the authors' protocol) for
# both score functions. Output: snap/retrieval/NAME/ (eval.log with the authors' "Final r1:..."
# lines, test_metrics.json, test_scores.npy, test_logits.npy, test_ranks.npz).
# (The authors' script loaded /data/model; data/model is meant.)
set -euo pipefail
source "$(dirname "$0")/common.sh"
usage_check $# "bash run/image_retrieval_zero_shot.bash GPU_ID|GPU_IDS|cpu NAME [extra flags]" "${1:-}" "${2:-}"
output="snap/retrieval/$2"
mkdir -p "$output"
launch "$1" tasks.retrieval.main --recipe image_retrieval_zero_shot --tqdm \
    --output "$output" "${@:3}"
