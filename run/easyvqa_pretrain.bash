#!/usr/bin/env bash
# Does pre-training help? An end-to-end check on real images without downloads (easy-VQA):
#   bash run/easyvqa_pretrain.bash GPU_ID|GPU_IDS|cpu NAME [options] [flags for every run]
# Pre-trains with the three MSP stages on captions composed from the easy-VQA train images
# (then a QA stage on their questions), fine-tunes from scratch, from the captions-only
# encoder and from the QA encoder on 1% and 5% of the labelled questions with two seeds, and
# writes the table to snap/easyvqa_pretrain/NAME/results.md. About 20 minutes on 2 cores.
# Options and environment (EASYVQA_PERCENTS, EASYVQA_SEEDS, EASYVQA_PRETRAIN_QA=0,
# LXRT_DATA_ROOT, LXRT_DRY_RUN): python -m tools.easyvqa_pretrain --help
set -euo pipefail
source "$(dirname "$0")/common.sh"
usage_check $# "bash run/easyvqa_pretrain.bash GPU_ID|GPU_IDS|cpu NAME [extra flags]" "${1:-}" "${2:-}"
exec python -m tools.easyvqa_pretrain proof "$@"
