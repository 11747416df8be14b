#!/usr/bin/env bash
# Regenerates the 3-seed numbers in docs/results.md: the default config over seeds 42, 1, 2 on phantom
# IU X-ray, beam-3 test drafts with the default reranking (the report bank and the models of findings
# outside the 14), with reranking but without those models (--no-extras), and without reranking (the
# decoder's top beam), one `cxrgen eval` of all nine beside the trivial baselines (95 % CIs), then
# each metric's mean and standard deviation over the seeds for each design.
#   bash scripts/results_seeds.sh [PHANTOM_DIR] [OUT_DIR] [CACHE_DIR] [TRAIN_ARGS...]
# TRAIN_ARGS go to every `cxrgen train` (e.g. `--set train.encoder_top=0 --epochs 12`: the default
# before its encoder's top layers trained).
# PHANTOM_DIR defaults to runs/demo/phantom (what `make demo` builds); it is built if missing.
# CACHE_DIR (default OUT_DIR/.cache) holds the image and encoder-feature caches; `make demo`'s
# runs/demo/.cache serves as well (the cached, frozen part of the encoder is the same for every seed).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
DATA=${1:-runs/demo/phantom}
OUT=${2:-runs/results}
CACHE=${3:-$OUT/.cache}
shift $(( $# < 3 ? $# : 3 ))
mkdir -p "$OUT/preds"
[ -f "$DATA/annotation.json" ] || "$BIN/cxrgen" data phantom --out "$DATA" --size 256
preds=()
for seed in 42 1 2; do
  run="$OUT/default_s$seed"
  [ -f "$run/model/model.safetensors" ] || /usr/bin/time -v "$BIN/cxrgen" train --config configs/default.yaml \
      --data "phantom:$DATA" --output "$run" --seed "$seed" --cache-dir "$CACHE" \
      $([ -f "$run/last.ckpt" ] && echo --resume) "$@" 2> "$run.time.txt"
  for design in rerank no-extras no-rerank; do
    out="$OUT/preds/${design}_s$seed.jsonl"
    [ -f "$out" ] || "$BIN/cxrgen" generate --model "$run/model" --data "phantom:$DATA" --split test \
        --output "$out" $([ "$design" = no-extras ] && echo --rerank) "--$design"
    preds+=(--predictions "$out")
  done
done
"$BIN/cxrgen" eval "${preds[@]}" --dataset "phantom:$DATA" --split test --output "$OUT/eval" --with-baselines
"$BIN/python" - "$OUT/eval/metrics.json" <<'PY'
import json, sys
import numpy as np
metrics = json.load(open(sys.argv[1]))
for design in ("rerank", "no-extras", "no-rerank"):
    runs = [m for name, m in metrics.items() if name.startswith(f"{design}_s")]
    print(f"{design} ({len(runs)} seeds): " + ", ".join(
        f"{k} {np.mean([r[k]['value'] for r in runs]):.3f} ± {np.std([r[k]['value'] for r in runs], ddof=1):.3f}"
        for k in runs[0] if isinstance(runs[0][k], dict) and "value" in runs[0][k]))
PY
