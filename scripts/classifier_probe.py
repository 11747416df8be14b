"""Is the finding classifier undertrained? Trained models' heads against the same head fit again, alone.

The head (LayerNorm + linear on each view's mean- and max-pooled encoder tokens) trains jointly with
the decoder and is kept at the decoder's best epoch. Here, for each model, a fresh head of the same
shape is fit on the model's training tokens (from the feature cache) for EPOCHS epochs (AdamW, one-cycle, batch 64), and
both are scored on the validation split without tuning on what they are scored on: thresholds
tuned on one half of it (every other study), F1 counted on the other, both ways, counts pooled.
Prints CE macro-F1 (14) and CE5 micro-F1 of the calls against the labeler's reading of the reports.

    python scripts/classifier_probe.py --phantom runs/demo/phantom --cache-dir runs/demo/.cache \\
        --models runs/demo/run/model runs/results/default_s1/model runs/results/default_s2/model
"""
import argparse
from pathlib import Path

import numpy as np
import torch
from resolution_probe import probe  # this folder: the same head training

from cxrgen.checkpoint import load_checkpoint
from cxrgen.config import load_config
from cxrgen.data.specs import load_studies
from cxrgen.evaluate.clinical import COMMON5
from cxrgen.labeler import CONDITIONS
from cxrgen.models.generator import ReportModel
from cxrgen.training.fit import build_datamodule
from cxrgen.training.module import tune_thresholds


def half_scores(probs, y, known) -> tuple[float, float]:
    """CE macro-F1 (14) and CE5 micro-F1, thresholds tuned on one half of the rows and counted on the other."""
    half = torch.arange(len(probs)) % 2 == 0
    counts = 0
    for tune, score in ((half, ~half), (~half, half)):
        called = (probs[score] > tune_thresholds(probs[tune], y[tune], known[tune])).numpy()
        truth = (y[score] > 0).numpy() & (known[score] > 0).numpy()
        counts = counts + np.stack([(called & truth).sum(0), (called & ~truth).sum(0), (~called & truth).sum(0)])
    tp, fp, fn = counts
    c5 = [CONDITIONS.index(c) for c in COMMON5]
    macro = (2 * tp / np.maximum(2 * tp + fp + fn, 1)).mean()
    return macro, 2 * tp[c5].sum() / (2 * tp[c5].sum() + fp[c5].sum() + fn[c5].sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phantom", required=True)
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(2)
    dm, *_ = build_datamodule(load_config("configs/default.yaml"), load_studies(f"phantom:{args.phantom}"), Path(args.cache_dir))
    dm.prepare_data()
    dm.setup("fit")
    train, val = dm.datasets["train"], dm.datasets["val"]
    Y = {k: torch.from_numpy(ds.labels) for k, ds in (("train", train), ("val", val))}
    M = {k: torch.from_numpy(ds.label_mask) for k, ds in (("train", train), ("val", val))}
    print(f"| model | trained head: CE macro-F1 | CE5 micro-F1 | head refit {args.epochs} epochs: CE macro-F1 | CE5 micro-F1 |")
    print("|---|---|---|---|---|")
    for path in args.models:
        model, _, config, _ = load_checkpoint(path)
        X = {k: torch.cat([ReportModel.classifier_input(t) for t in dm.cached_tokens(model, k)]) for k in ("train", "val")}
        with torch.no_grad():
            trained = half_scores(torch.sigmoid(model.classifier.eval()(X["val"])), Y["val"], M["val"])
        refit = probe(X, Y, M, config.train.seed, epochs=args.epochs, lr=1e-3, bs=64, warmup=0.1)
        again = half_scores(refit, Y["val"], M["val"])
        print(f"| {path} | {trained[0]:.3f} | {trained[1]:.3f} | {again[0]:.3f} | {again[1]:.3f} |", flush=True)


if __name__ == "__main__":
    main()
