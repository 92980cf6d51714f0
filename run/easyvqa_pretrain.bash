#!/usr/bin/env bash
# Does pre-training help? An end-to-end check on real images without downloads (easy-VQA):
#   bash run/easyvqa_pretrain.bash GPU_ID|GPU_IDS|cpu NAME [flags for every run]
# 1. converts easy-VQA and writes a pre-training corpus from its TRAIN images only (captions
#    from each image's shape and colour, its questions with their answers) and the few-label
#    splits easyvqa/train_<P>pct.json (the questions of P% of the train images);
# 2. pre-trains with the three MSP stages on the captions (token, phrase, sentence: MLM,
#    masked regions with the feature regression as the only region loss, since the grid
#    features carry no detector labels, IFRS, TITP, ITM with hard negatives, TITS), then,
#    unless EASYVQA_PRETRAIN_QA=0, a QA stage on the pre-training images' questions (MLM and
#    QA, LXMERT's QA task: these answers are labels the few-label arms do not get);
# 3. for each P in EASYVQA_PERCENTS (default 1,5) and each seed in EASYVQA_SEEDS (default
#    9595,1) fine-tunes with the same flags, seed and number of steps from scratch, from the
#    captions-only encoder (no answer seen) and from the encoder after the QA stage, and
#    scores the last weights on the test split (no model selection);
# 4. prints the table (means over the seeds, per question type) and writes it to
#    snap/easyvqa_pretrain/NAME/results.md (and results.json).
# On the CPU it uses a small model (run/configs/easyvqa_cpu.json, 2 cross-modality layers)
# and every core (set OMP_NUM_THREADS=1 on a machine shared with other jobs: there one
# thread ran faster than two); about 20 minutes on 2 cores.
set -euo pipefail
source "$(dirname "$0")/common.sh"
source "$(dirname "$0")/pretrain_stage.sh"
usage_check $# "bash run/easyvqa_pretrain.bash GPU_ID|GPU_IDS|cpu NAME [extra flags]" "${1:-}" "${2:-}"
devices=$1
name=$2
data_root="${LXRT_DATA_ROOT:-data}"
percents="${EASYVQA_PERCENTS:-1,5}"
seeds="${EASYVQA_SEEDS:-9595,1}"
run_dir="snap/easyvqa_pretrain/$name"
mkdir -p "$run_dir"
started=$(date +%s)
# shellcheck disable=SC2086  # word splitting of the optional flags is intended
python -m tools.easyvqa --data-root "$data_root" --pretraining --few-label-percents "$percents" \
    ${EASYVQA_CONVERT_FLAGS:-}

if [[ "$devices" == "cpu" ]]; then
    model=(--modelConfig "$REPO_ROOT/run/configs/easyvqa_cpu.json" --llayers 0 --xlayers 2
           --rlayers 0 --numWorkers 0)
    # per stage: images read from the feature file, epochs (about 100 steps of 64 each for
    # the caption stages, 205 for the QA stage)
    stage_epochs=(3 2 6 3)
    limit=(--imageLimit 1600)
    pretrain=(--batchSize 64 --lr 5e-4 --visualLosses feat)
    finetune=(--batchSize 32 --lr 1e-4)
    finetune_steps=300
else
    model=(--llayers 0 --xlayers 5 --rlayers 0 --numWorkers 4)
    stage_epochs=(10 10 20 10)
    limit=()
    pretrain=(--batchSize 256 --lr 1e-4 --visualLosses feat)
    finetune=(--batchSize 32 --lr 1e-4)
    finetune_steps=1500
fi
# the stages in order, each with its config under run/configs/
stages=(token phrase sentence qa)
configs=(easyvqa/token_captions.json msp/phrase.json easyvqa/sentence_captions.json
         easyvqa/sentence_qa.json)
arms=(scratch captions)
if [[ "${EASYVQA_PRETRAIN_QA:-1}" != 0 ]]; then
    arms+=(qa)
else
    stages=("${stages[@]:0:3}")
fi

init=()
for i in "${!stages[@]}"; do
    stage=${stages[i]}
    output="$run_dir/pretrain/$stage"
    if [[ -f "$output/stage_done" ]]; then
        echo "stage $stage already finished in $output"
    else
        pretrain_stage "$devices" "$output" --stage "$REPO_ROOT/run/configs/${configs[i]}" \
            --dataRoot "$data_root" --train easyvqa_train --valid easyvqa_minival \
            ${init[@]+"${init[@]}"} "${model[@]}" "${pretrain[@]}" \
            ${limit[@]+"${limit[@]}"} --epochs "${stage_epochs[i]}" "${@:3}"
        [[ -n "${LXRT_DRY_RUN:-}" ]] || touch "$output/stage_done"
    fi
    init=(--init "$output/LAST")
done
pretrain_seconds=$(( $(date +%s) - started ))

# the encoder only: the pre-training answer head was trained with a softmax over 9,500
# answers, which gives all 13 easy-VQA answers large logits, and the sigmoid loss of
# fine-tuning then starts near 60 instead of 7 and its first steps wreck the encoder
weights_of() {
    case $1 in
        scratch) echo --fromScratch ;;
        captions) echo --loadLXMERT "$run_dir/pretrain/sentence/LAST" ;;
        qa) echo --loadLXMERT "$run_dir/pretrain/qa/LAST" ;;
    esac
}
for percent in ${percents//,/ }; do
    split="train_${percent}pct"
    # the same number of optimizer steps for every fraction: epochs from the question count
    epochs=$(python -c "import json,sys; n=len(json.load(open(sys.argv[1]))); \
print(max(1, round($finetune_steps * ${finetune[1]} / n)))" "$data_root/easyvqa/$split.json")
    for seed in ${seeds//,/ }; do
        for arm in "${arms[@]}"; do
            output="$run_dir/finetune/${split}_${arm}_seed$seed"
            [[ ! -f "$output/test_done" ]] || continue
            mkdir -p "$output"
            # shellcheck disable=SC2046  # the weight flags are separate words
            launch "$devices" tasks.vqa.main --task easyvqa --dataRoot "$data_root" \
                --train "$split" --valid "" $(weights_of "$arm") --optim bert "${model[@]}" \
                "${finetune[@]}" --epochs "$epochs" --seed "$seed" --output "$output" "${@:3}"
            launch "$devices" tasks.vqa.main --task easyvqa --dataRoot "$data_root" \
                --train "" --valid "" --test test --load "$output/LAST" "${model[@]}" \
                --output "$output" "${@:3}"
            [[ -n "${LXRT_DRY_RUN:-}" ]] || touch "$output/test_done"
        done
    done
done
[[ -z "${LXRT_DRY_RUN:-}" ]] || exit 0

python -m tools.easyvqa_report "$run_dir" --percents "$percents" --seeds "$seeds" \
    --arms "$(IFS=,; echo "${arms[*]}")" --test-json "$data_root/easyvqa/test.json" \
    --pretrain-seconds "$pretrain_seconds" --total-seconds $(( $(date +%s) - started ))
