#!/usr/bin/env bash
# Fine-tune LXMERT-S for Flickr30k retrieval (the authors' recipe: 4 pairs per caption -
# positive, random image, hard-negative caption, random caption - loss 2 x CE, batch 32 captions
# = 128 pairs per step, lr 5e-5, 8 epochs, starting from the pre-trained ITM head):
#   bash run/image_retrieval_finetune.bash GPU_ID|GPU_IDS|cpu NAME [extra flags]
# Validation (BEST.pth) is on `minival`: --validImages (500) train images held out of training
# with a fixed seed, scored exactly (all captions x all images); the score is the mean of
# IR R@1/5/10 with p(match). The authors validated on the test file and kept the last model:
# pass --valid "" to train on every train image, and use LAST.
# Output: snap/retrieval/NAME/ (BEST.pth, LAST.pth, log.log, metrics.jsonl, resume.pth)
set -euo pipefail
source "$(dirname "$0")/common.sh"
usage_check $# "bash run/image_retrieval_finetune.bash GPU_ID|GPU_IDS|cpu NAME [extra flags]" "${1:-}" "${2:-}"
output="snap/retrieval/$2"
mkdir -p "$output"
launch "$1" tasks.retrieval.main --recipe image_retrieval_finetune --tqdm --output "$output" \
    "${@:3}"
