#!/usr/bin/env bash
# Every GPU measurement the issues ask for, as ONE short script for a borrowed H200 (about
# 8-9 minutes). Results land in ${OUT:-bench/results/gpu}: speed.json, retrieval.json,
# easyvqa_*.log, gqa/nlvr2 metrics and a summary. Usage: bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/results/gpu}"; mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
pip install -q -e . >/dev/null 2>&1 || true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python -c "import torch; print('torch', torch.__version__, torch.version.cuda)" | tee -a "$out/gpu.txt"

# 1. training / matching / pipeline / tokenizer speed, faithful fp32 vs fast (+ compiled)
timeout 240 python bench/bench_speed.py --compile --out "$out/speed.json" 2>&1 | tee "$out/speed.log"

# 2. retrieval scoring, 1,000 images x 5,000 captions: authors' loop vs our evaluator
timeout 150 python bench/bench_retrieval.py --out "$out/retrieval.json" 2>&1 | tail -25 | tee "$out/retrieval.log"

# 3. GQA and NLVR2 at full LXMERT-S size on generated data: training samples/s
gen=$(mktemp -d); python -m tools.make_data "$gen" --images 256 --dim 2048 >/dev/null
for task in gqa nlvr2; do
  train=$([[ $task == gqa ]] && echo "train,valid" || echo "train")
  valid=$([[ $task == gqa ]] && echo "testdev" || echo "valid")
  timeout 90 python -m tasks.$task.main --dataRoot "$gen" --fromScratch --train "$train" \
      --valid "$valid" --epochs 1 --batchSize 32 --precision bf16 --numWorkers 4 \
      --output "$out/$task" > "$out/$task.log" 2>&1
  tail -1 "$out/$task/metrics.jsonl" 2>/dev/null | tee -a "$out/summary.txt"
done

# 4. easy-VQA, full configuration: faithful fp32 vs fast path (bf16), accuracy and samples/s
python -m tools.easyvqa --data-root data > "$out/easyvqa_convert.log" 2>&1
for mode in fast faithful; do
  flags=(--precision bf16); [[ $mode == faithful ]] && flags=(--precision fp32 --no-trimPadding)
  timeout 150 python -m tasks.vqa.main --task easyvqa --fromScratch --train train --valid valid \
      --epochs 2 --lr 1e-4 --batchSize 32 --numWorkers 6 "${flags[@]}" \
      --output "$out/easyvqa_$mode" > "$out/easyvqa_$mode.log" 2>&1
  python -m tasks.vqa.main --task easyvqa --train "" --valid "" --test test \
      --load "$out/easyvqa_$mode/BEST" --output "$out/easyvqa_$mode" >> "$out/easyvqa_$mode.log" 2>&1
  echo "easyvqa $mode: $(tail -1 "$out/easyvqa_$mode/metrics.jsonl")" | tee -a "$out/summary.txt"
done
