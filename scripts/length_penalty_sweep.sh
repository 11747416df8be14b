#!/usr/bin/env bash
# How the default length penalty was chosen: beam-3 reports for the VALIDATION split at several length
# penalties, scored beside the trivial baselines (never the test split).
#   bash scripts/length_penalty_sweep.sh MODEL_DIR [PHANTOM_DIR] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
MODEL=$1
DATA=${2:-runs/demo/phantom}
OUT=${3:-runs/lp_sweep}
mkdir -p "$OUT"
preds=()
for lp in 1.0 2.0 3.0; do
  [ -f "$OUT/val_lp$lp.jsonl" ] || "$BIN/cxrgen" generate --model "$MODEL" --data "phantom:$DATA" --split val \
      --length-penalty "$lp" --output "$OUT/val_lp$lp.jsonl"
  preds+=(--predictions "$OUT/val_lp$lp.jsonl")
done
"$BIN/cxrgen" eval "${preds[@]}" --dataset "phantom:$DATA" --split val --output "$OUT/eval" --with-baselines
