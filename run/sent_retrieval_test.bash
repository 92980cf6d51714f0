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
usage_check $# "bash run/sent_retrieval_test.bash GPU_ID|GPU_IDS|cpu NAME [extra flags]" "${1:-}" "${2:-}"
# the same run as image_retrieval_test.bash; later flags win, so these select text retrieval
exec bash "$(dirname "$0")/image_retrieval_test.bash" "$1" "$2" \
    --direction text --scoreFunction logit "${@:3}"
