#!/usr/bin/env bash
# Does multi-stage pre-training beat LXMERT's single stage? The MSP ablation on easy-VQA:
#   bash run/easyvqa_ablation.bash GPU_ID|GPU_IDS|cpu NAME [options] [flags for every run]
# Pre-trains on captions only (no answer seen), the same steps and data for every arm:
# LXMERT's single-stage recipe (MLM, masked regions, ITM), MSP token -> phrase -> sentence,
# and MSP without each of IFRS, TITP, ITM_HS and TITS; fine-tunes each and a from-scratch
# arm on 1% and 5% of the labelled questions with three seeds and writes the table (mean,
# standard deviation, each seed, by question kind) to snap/easyvqa_pretrain/NAME/results.md.
# Options (--arms, --seeds, --percents; LXRT_DRY_RUN=1 prints the commands):
#   python -m tools.easyvqa_pretrain --help
set -euo pipefail
source "$(dirname "$0")/common.sh"
usage_check $# "bash run/easyvqa_ablation.bash GPU_ID|GPU_IDS|cpu NAME [extra flags]" "${1:-}" "${2:-}"
exec python -m tools.easyvqa_pretrain ablation "$@"
