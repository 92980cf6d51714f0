#!/usr/bin/env bash
# Every GPU measurement of the project in one script, for any machine with a CUDA GPU.
#
# Needs: a CUDA build of torch, then `pip install -r requirements.txt` (it includes the
# easy-VQA data and vocab packages). It runs the code of this checkout's src/ from wherever it
# is called, and needs no network. Two parts, each under ten minutes on one H200:
#   bash bench/gpu_check.sh speed     # training speed (eager, torch.compile, CUDA graphs) and a
#                                     # profile, retrieval scoring at Flickr30k size, GQA/NLVR2
#                                     # training samples/s at full size on generated data
#   bash bench/gpu_check.sh easyvqa   # easy-VQA at the full configuration: fast vs faithful
#   bash bench/gpu_check.sh detector  # the bottom-up-attention detector: pictures/s at 600x1000
#   bash bench/gpu_check.sh           # all three
# It prints each benchmark's table and a one-line summary per run, and writes to
# ${OUT:-bench/results/gpu}: summary.txt, gpu.txt, speed.json, speed_profile.txt,
# retrieval.json, detector.json and gpu_check_logs.tar.gz (every log and metrics file of the runs).
set -uo pipefail
cd "$(dirname "$0")/.."
parts="${1:-speed easyvqa detector}"
want() { [[ " $parts " == *" $1 "* ]]; }
final="${OUT:-bench/results/gpu}"; mkdir -p "$final"
out=$(mktemp -d)   # everything is written here; a few small files are copied to $final at the end
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

if want detector; then
# 5. the detector (VG Faster R-CNN, default-initialised weights: speed does not depend on them),
#    one 600x1000 picture at a time: NCHW and all regions at once vs channels-last in chunks
timeout 300 python bench/bench_detector.py --device cuda --images 20 \
    --out "$out/detector.json" 2>&1 | tee "$out/detector.log"
echo "detector: $(grep -E 'pictures per second' "$out/detector.log")" | tee -a "$out/summary.txt"
fi

# the summary and the benchmark JSONs, and every small log and metrics file in one archive
cp "$out/summary.txt" "$out/gpu.txt" "$out/speed.json" "$out/speed_profile.txt" \
   "$out/retrieval.json" "$out/detector.json" "$final/" 2>/dev/null
(cd "$out" && find . \( -name '*.log' -o -name '*.json' -o -name '*.jsonl' -o -name '*.txt' \) \
    -size -2M -print0 | tar -czf "$final/gpu_check_logs.tar.gz" --null -T -)
ls -la "$final"
