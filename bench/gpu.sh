#!/usr/bin/env bash
# GPU benchmark: one command, under 8 minutes on one recent NVIDIA card.
#   bash bench/gpu.sh [OUT_DIR]        (default OUT_DIR: bench-gpu-<date>)
# Prints the card, then training samples/s (frozen features and fine-tuning, CE and CE +
# directional) in fp32, then with the fast path (bf16 autocast, fused AdamW; the encoder is always channels_last),
# then with torch.compile added, and the seed's pipeline against ours (training step and
# decoding). Each step has its own timeout, so one slow step cannot overrun the whole run.
# Compare the GFLOP/s column with the card's dense bf16 peak (H100 SXM: ~989 TFLOP/s) and
# copy the Markdown files from OUT_DIR into docs/benchmarks.md under "GPU" with the card's name.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-bench-gpu-$(date +%Y%m%d-%H%M)}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TQDM_DISABLE=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
run() {  # run NAME TIMEOUT_S SCRIPT ARGS...: Markdown to OUT/NAME.md, raw numbers to OUT/NAME.json
  local name=$1 limit=$2; shift 2
  echo "== $name" >&2
  timeout "$limit" "$PY" "$@" --device cuda --json "$OUT/$name.json" > "$OUT/$name.md" || echo "$name: failed or timed out" >&2
  cat "$OUT/$name.md"
}
SIZE=(--batch-size 64 --finetune-batch-size 32 --steps 10)
run train_fp32 100 bench/train_speed.py "${SIZE[@]}"
run train_bf16 100 bench/train_speed.py "${SIZE[@]}" --bf16
run train_bf16_compile 150 bench/train_speed.py "${SIZE[@]}" --bf16 --compile
run seed_pipeline 120 bench/seed_pipeline.py --batch-size 16 --steps 2
echo "results in $OUT/" >&2
