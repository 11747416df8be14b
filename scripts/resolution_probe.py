"""Does more image resolution help the finding classifier? A linear probe on frozen features, train -> val.

    PYTHONPATH=src python scripts/resolution_probe.py --phantom runs/demo/phantom --cache-dir runs/demo/.cache \
        --hi-phantom PHANTOM_512 --size 384 [--features pooled384.pt] [--threads 2]

PHANTOM_512 is the same phantom set drawn at higher resolution (`cxrgen data phantom --out DIR --size 512`:
same studies, same findings). The low-resolution features are the default model's cached 256 px
Lite0 tokens (what `make demo` trains on); the high-resolution ones are the same pretrained encoder's
at `--size` (computed once, saved to `--features`). Each view's tokens are mean- and max-pooled, as
the default classifier reads them, and a LayerNorm + linear head is trained as in the default
(12 epochs, batch 16, AdamW lr 7e-4, one-cycle), two seeds. Reported on the 296 validation studies,
thresholds tuned there (as training does): mean AUROC, macro-F1 (14), CE5 micro-F1, per-class AUROC.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from cxrgen.config import load_config
from cxrgen.data.images import load_image
from cxrgen.data.specs import load_studies
from cxrgen.evaluate.clinical import COMMON5
from cxrgen.labeler import CONDITIONS
from cxrgen.models.generator import ReportModel
from cxrgen.training.fit import build_datamodule
from cxrgen.training.module import tune_thresholds


@torch.no_grad()
def encode(encoder, studies, size: int, desc: str) -> torch.Tensor:
    out = []
    for i in tqdm(range(0, len(studies), 16), desc=desc):
        chunk = studies[i:i + 16]
        fr = torch.from_numpy(np.stack([load_image(s.frontal.path, size) for s in chunk])).float().div(255)[:, None]
        has = [s.lateral is not None and s.lateral.path is not None for s in chunk]
        la = torch.from_numpy(np.stack([load_image(s.lateral.path, size) if h else np.zeros((size, size), np.uint8)
                                        for s, h in zip(chunk, has)])).float().div(255)[:, None]
        lat = encoder(la) * torch.tensor(has, dtype=torch.float32)[:, None, None]  # an absent view reads as zeros
        out.append(ReportModel.classifier_input(torch.stack([encoder(fr), lat], 1)))
    return torch.cat(out)


def probe(X: dict, Y: dict, M: dict, seed: int, epochs: int = 12, lr: float = 7e-4, bs: int = 16,
          warmup: float = 0.05) -> torch.Tensor:
    """A fresh LayerNorm + linear head trained on X["train"] (masked BCE, AdamW, one-cycle); its val probabilities."""
    torch.manual_seed(seed)
    head = nn.Sequential(nn.LayerNorm(X["train"].shape[1]), nn.Linear(X["train"].shape[1], len(CONDITIONS)))
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.01)
    n = len(X["train"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * ((n + bs - 1) // bs), pct_start=warmup)
    for _ in range(epochs):
        head.train()
        perm = torch.randperm(n)
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            bce = F.binary_cross_entropy_with_logits(head(X["train"][idx]), Y["train"][idx], reduction="none")
            loss = (bce * M["train"][idx]).sum() / M["train"][idx].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    head.eval()
    with torch.no_grad():
        return torch.sigmoid(head(X["val"]))


def report(name: str, probs: torch.Tensor, labels: torch.Tensor, known: torch.Tensor) -> None:
    pred = (probs > tune_thresholds(probs, labels, known)).numpy()
    y = (labels.numpy() > 0) & (known.numpy() > 0)
    tp, fp, fn = (pred & y).sum(0), (pred & ~y).sum(0), (~pred & y).sum(0)
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    c5 = [CONDITIONS.index(c) for c in COMMON5]
    micro5 = 2 * tp[c5].sum() / (2 * tp[c5].sum() + fp[c5].sum() + fn[c5].sum())
    aucs = {c: roc_auc_score(y[:, i], probs[:, i]) for i, c in enumerate(CONDITIONS) if 0 < y[:, i].sum() < len(y)}
    print(f"| {name} | {np.mean(list(aucs.values())):.3f} | {f1[y.sum(0) > 0].mean():.3f} | {micro5:.3f} | "
          + " ".join(f"{c} {a:.2f}," for c, a in aucs.items()).rstrip(",") + " |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--phantom", required=True, help="the phantom set the default model trains on (256 px)")
    p.add_argument("--cache-dir", required=True, help="its training cache (holds the 256 px features)")
    p.add_argument("--hi-phantom", required=True, help="the same set drawn at higher resolution")
    p.add_argument("--size", type=int, default=384, help="encoder input side for the high-resolution features")
    p.add_argument("--features", help="file for the high-resolution pooled features (reused when present)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dm, _, model, _ = build_datamodule(load_config("configs/default.yaml", ["train.encoder_top=0"]), load_studies(f"phantom:{args.phantom}"),
                                       Path(args.cache_dir))
    dm.setup("fit")
    feats = np.load(dm.features_path, mmap_mode="r")
    row = {sid: i for i, sid in enumerate(dm.feature_ids)}
    ids = {k: dm.datasets[k].ids for k in ("train", "val")}
    low = {k: ReportModel.classifier_input(torch.from_numpy(np.stack([np.array(feats[row[s]]) for s in v])).float())
           for k, v in ids.items()}
    if args.features and Path(args.features).is_file():
        high = torch.load(args.features)
    else:
        hi = {s.id: s for s in load_studies(f"phantom:{args.hi_phantom}")}
        t = time.time()
        high = {k: encode(model.encoder.eval(), [hi[s] for s in v], args.size, f"{k} at {args.size} px") for k, v in ids.items()}
        print(f"high-resolution features: {time.time() - t:.0f} s")
        if args.features:
            torch.save(high, args.features)
    Y = {k: torch.from_numpy(dm.datasets[k].labels) for k in ids}
    M = {k: torch.from_numpy(dm.datasets[k].label_mask) for k in ids}
    print("| features | mean AUROC | macro-F1 | CE5 micro-F1 | AUROC per observation |\n|---|---|---|---|---|")
    for seed in (0, 1):
        for name, X in ((f"256 px, seed {seed}", low), (f"{args.size} px, seed {seed}", high)):
            report(name, probe(X, Y, M, seed), Y["val"], M["val"])


if __name__ == "__main__":
    main()
