#!/usr/bin/env bash
# Regenerates the numbers in docs/results.md: the default config over 3 seeds on phantom IU X-ray,
# beam-3 test predictions, and one `cxrgen eval` of all seeds beside the trivial baselines (95 % CIs).
#   bash scripts/results_seeds.sh [PHANTOM_DIR] [OUT_DIR]
# PHANTOM_DIR defaults to runs/demo/phantom (what `make demo` builds); it is built if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
DATA=${1:-runs/demo/phantom}
OUT=${2:-runs/results}
mkdir -p "$OUT/preds"
[ -f "$DATA/annotation.json" ] || "$BIN/cxrgen" data phantom --out "$DATA" --size 256
for seed in 42 1 2; do
  run="$OUT/default_s$seed"
  [ -f "$run/model/model.safetensors" ] || /usr/bin/time -v "$BIN/cxrgen" train --config configs/default.yaml \
      --data "phantom:$DATA" --output "$run" --seed "$seed" --cache-dir "$OUT/.cache" \
      $([ -f "$run/last.ckpt" ] && echo --resume) 2> "$run.time.txt"
  [ -f "$OUT/preds/default_s$seed.jsonl" ] || "$BIN/cxrgen" generate --model "$run/model" --data "phantom:$DATA" \
      --split test --output "$OUT/preds/default_s$seed.jsonl"
done
"$BIN/cxrgen" eval --predictions "$OUT/preds/default_s42.jsonl" --predictions "$OUT/preds/default_s1.jsonl" \
    --predictions "$OUT/preds/default_s2.jsonl" --dataset "phantom:$DATA" --split test --output "$OUT/eval" --with-baselines
