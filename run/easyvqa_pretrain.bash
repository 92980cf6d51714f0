#!/usr/bin/env bash
# Evidence that pre-training works, on real images without downloads (easy-VQA from PyPI):
#   bash run/easyvqa_pretrain.bash GPU_ID|GPU_IDS|cpu NAME [flags for every run]
# 1. converts easy-VQA and writes a pre-training corpus from its TRAIN images only
#    (captions from each image's shape and colour, its questions as QA) plus
#    easyvqa/train_small.json, the questions of 10% of the train images;
# 2. pre-trains with the three MSP stages (snap/pretrain/easyvqa_NAME/{token,phrase,sentence});
# 3. fine-tunes on train_small twice, from the pre-trained weights (QA head included) and from
#    scratch, validates on the held-out images, scores the test split and prints both.
# Set EASYVQA_CONVERT_FLAGS (e.g. "--limit-images 60 --dim 64") for a quick trial.
set -euo pipefail
source "$(dirname "$0")/common.sh"
usage_check $# "bash run/easyvqa_pretrain.bash GPU_ID|GPU_IDS|cpu NAME [extra flags]" "${1:-}" "${2:-}"
devices=$1
name=$2
data_root="${LXRT_DATA_ROOT:-data}"
# shellcheck disable=SC2086  # word splitting of the optional flags is intended
python -m tools.easyvqa --data-root "$data_root" --pretraining ${EASYVQA_CONVERT_FLAGS:-}

if [[ "$devices" == "cpu" ]]; then  # the small CPU model of run/easyvqa_finetune.bash
    model=(--modelConfig "$REPO_ROOT/run/configs/easyvqa_cpu.json" --numWorkers 0)
    pretrain=(--epochs 1 --batchSize 64 --lr 3e-4)
    finetune=(--epochs 4 --lr 3e-4 --batchSize 32)
else
    model=(--numWorkers 4)
    pretrain=()
    finetune=(--epochs 6 --lr 1e-4 --batchSize 32)
fi

bash "$REPO_ROOT/run/msp_pretrain.bash" "$devices" "easyvqa_$name" --dataRoot "$data_root" \
    --train easyvqa_train --valid easyvqa_minival "${model[@]}" "${pretrain[@]}" "${@:3}"
weights="snap/pretrain/easyvqa_$name/sentence/LAST"

for start in pretrained scratch; do
    output="snap/easyvqa/${name}_$start"
    mkdir -p "$output"
    if [[ "$start" == pretrained ]]; then init=(--loadLXMERTQA "$weights"); else init=(--fromScratch); fi
    launch "$devices" tasks.vqa.main --task easyvqa --dataRoot "$data_root" \
        --train train_small --valid valid "${init[@]}" \
        --llayers 0 --xlayers 5 --rlayers 0 --optim bert "${model[@]}" "${finetune[@]}" \
        --output "$output" "${@:3}"
    launch "$devices" tasks.vqa.main --task easyvqa --dataRoot "$data_root" \
        --train "" --valid "" --test test --load "$output/BEST" \
        --llayers 0 --xlayers 5 --rlayers 0 "${model[@]}" --output "$output" "${@:3}"
done

python - "snap/easyvqa/${name}_pretrained" "snap/easyvqa/${name}_scratch" <<'PY'
import json, sys
from pathlib import Path
for out in map(Path, sys.argv[1:]):
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    test = [r for r in records if r.get("test") == "test"][-1]
    print(f"{out.name}: easy-VQA test accuracy {test['accuracy']:.2f}% "
          f"({test['questions']} questions), fine-tuned on train_small")
PY
