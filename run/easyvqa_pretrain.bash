#!/usr/bin/env bash
# Does pre-training help? An end-to-end check on real images without downloads (easy-VQA):
#   bash run/easyvqa_pretrain.bash GPU_ID|GPU_IDS|cpu NAME [flags for every run]
# 1. converts easy-VQA and writes a pre-training corpus from its TRAIN images only (captions
#    from each image's shape and colour, its questions as text) and the few-label splits
#    easyvqa/train_<P>pct.json (the questions of P% of the train images);
# 2. pre-trains with the three MSP stages (token, phrase, sentence) on the first images of the
#    train feature file, with the feature regression as the only masked-region loss
#    (--visualLosses feat: the grid features carry no detector labels); unless EASYVQA_PRETRAIN_QA=1 the sentence stage leaves QA out and
#    reads the captions only (run/configs/easyvqa/sentence_captions.json), so no answer
#    enters pre-training;
# 3. for each P in EASYVQA_PERCENTS (default 1,5) fine-tunes twice with the same seed and the
#    same number of steps, from the pre-trained encoder and from scratch, and scores the last
#    weights on the test split (no model selection);
# 4. prints the test-accuracy table and writes it to snap/easyvqa_pretrain/NAME/results.md
#    (and results.json).
# On the CPU it uses a small model (run/configs/easyvqa_cpu.json, 2 cross-modality layers)
# and one intra-op thread (OMP_NUM_THREADS; on a shared 2-core machine one thread ran 5x faster
# than two); about 20 minutes on 2 cores.
set -euo pipefail
source "$(dirname "$0")/common.sh"
source "$(dirname "$0")/pretrain_stage.sh"
usage_check $# "bash run/easyvqa_pretrain.bash GPU_ID|GPU_IDS|cpu NAME [extra flags]" "${1:-}" "${2:-}"
devices=$1
name=$2
data_root="${LXRT_DATA_ROOT:-data}"
percents="${EASYVQA_PERCENTS:-1,5}"
run_dir="snap/easyvqa_pretrain/$name"
mkdir -p "$run_dir"
started=$(date +%s)
# shellcheck disable=SC2086  # word splitting of the optional flags is intended
python -m tools.easyvqa --data-root "$data_root" --pretraining --few-label-percents "$percents" \
    ${EASYVQA_CONVERT_FLAGS:-}

if [[ "$devices" == "cpu" ]]; then
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
    model=(--modelConfig "$REPO_ROOT/run/configs/easyvqa_cpu.json" --llayers 0 --xlayers 2
           --rlayers 0 --numWorkers 0)
    # per stage: images read from the feature file, epochs (about 250 steps of 64 each)
    stage_flags=(token "--imageLimit 1600 --epochs 1" phrase "--imageLimit 1600 --epochs 6"
                 sentence "--imageLimit 1600 --epochs 1")
    captions_epochs=4  # the captions-only sentence stage: a quarter of the sentences
    pretrain=(--batchSize 64 --lr 5e-4 --visualLosses feat)
    finetune=(--batchSize 32 --lr 3e-4)
    finetune_steps=300
else
    model=(--llayers 0 --xlayers 5 --rlayers 0 --numWorkers 4)
    stage_flags=(token "--epochs 5" phrase "--epochs 10" sentence "--epochs 5")
    captions_epochs=20
    pretrain=(--batchSize 256 --lr 1e-4 --visualLosses feat)
    finetune=(--batchSize 32 --lr 1e-4)
    finetune_steps=1500
fi
sentence_config="$REPO_ROOT/run/configs/easyvqa/sentence_qa.json"
sentence_extra=(--epochs "${EASYVQA_QA_EPOCHS:-1}")
if [[ -z "${EASYVQA_PRETRAIN_QA:-}" ]]; then
    sentence_config="$REPO_ROOT/run/configs/easyvqa/sentence_captions.json"
    sentence_extra=(--epochs "$captions_epochs")
fi

init=()
for (( i = 0; i < ${#stage_flags[@]}; i += 2 )); do
    stage=${stage_flags[i]}
    output="$run_dir/pretrain/$stage"
    config="$REPO_ROOT/run/configs/msp/$stage.json"
    extra=()
    if [[ "$stage" == sentence ]]; then config=$sentence_config; extra=(${sentence_extra[@]+"${sentence_extra[@]}"}); fi
    if [[ -f "$output/stage_done" ]]; then
        echo "stage $stage already finished in $output"
    else
        # shellcheck disable=SC2206  # the stage's flags are separate words
        pretrain_stage "$devices" "$output" --stage "$config" \
            --dataRoot "$data_root" --train easyvqa_train --valid easyvqa_minival \
            ${init[@]+"${init[@]}"} "${model[@]}" "${pretrain[@]}" ${stage_flags[i+1]} \
            ${extra[@]+"${extra[@]}"} "${@:3}"
        [[ -n "${LXRT_DRY_RUN:-}" ]] || touch "$output/stage_done"
    fi
    init=(--init "$output/LAST")
done
pretrained="$run_dir/pretrain/sentence/LAST"
# the encoder only, also after QA pre-training: the answer head trained with a softmax over
# 9,500 answers gives all 13 easy-VQA answers large logits, and the sigmoid loss of
# fine-tuning then starts near 60 instead of 7 and its first steps wreck the encoder
load=(--loadLXMERT "$pretrained")
pretrain_seconds=$(( $(date +%s) - started ))

for percent in ${percents//,/ }; do
    split="train_${percent}pct"
    # the same number of optimizer steps for every fraction: epochs from the question count
    epochs=$(python -c "import json,sys; n=len(json.load(open(sys.argv[1]))); \
print(max(1, round($finetune_steps * ${finetune[1]} / n)))" "$data_root/easyvqa/$split.json")
    for start in pretrained scratch; do
        output="$run_dir/finetune/${split}_$start"
        mkdir -p "$output"
        if [[ "$start" == pretrained ]]; then weights=("${load[@]}"); else weights=(--fromScratch); fi
        launch "$devices" tasks.vqa.main --task easyvqa --dataRoot "$data_root" \
            --train "$split" --valid "" "${weights[@]}" --optim bert "${model[@]}" \
            "${finetune[@]}" --epochs "$epochs" --output "$output" "${@:3}"
        launch "$devices" tasks.vqa.main --task easyvqa --dataRoot "$data_root" \
            --train "" --valid "" --test test --load "$output/LAST" "${model[@]}" \
            --output "$output" "${@:3}"
    done
done
[[ -z "${LXRT_DRY_RUN:-}" ]] || exit 0

python -m tools.easyvqa_report "$run_dir" --percents "$percents" \
    --pretrain-seconds "$pretrain_seconds" --total-seconds $(( $(date +%s) - started ))
