"""Does training the encoder's top layers help the finding classifier? Frozen Lite0 against its last layers trained.

    python scripts/encoder_top_probe.py --phantom runs/demo/phantom --cache-dir runs/demo/.cache

The default model's feature cache holds, per view, the tokens entering Lite0's last two layers (the last
MBConv block and the final 1x1 conv; `train.encoder_top: 2`). On them, the classifier head alone (each
view's mean- and max-pooled tokens, LayerNorm + linear) is trained with the top 0, 1 or 2 layers
trained too (AdamW, head lr 7e-4, top lr 1e-4, one-cycle, batch 16, 12 epochs; BatchNorm statistics
frozen), two seeds, and scored on the validation split: mean AUROC, then CE macro-F1 (14) and CE5
micro-F1 with thresholds tuned on one half of it and counted on the other, both ways.
"""
import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from classifier_probe import half_scores  # this folder
from sklearn.metrics import roc_auc_score

from cxrgen.config import load_config
from cxrgen.data.specs import load_studies
from cxrgen.labeler import CONDITIONS
from cxrgen.models.generator import ReportModel
from cxrgen.training.fit import build_datamodule

CACHED_BELOW = 2


class TopAndHead(nn.Module):
    """A copy of the encoder's last CACHED_BELOW layers, the last `trained` of them trainable, and a fresh head."""

    def __init__(self, encoder, trained: int):
        super().__init__()
        self.encoder = copy.deepcopy(encoder).eval().requires_grad_(False)
        for module in self.encoder.top_modules(trained):
            module.requires_grad_(True)
        self.head = nn.Sequential(nn.LayerNorm(4 * encoder.out_dim), nn.Linear(4 * encoder.out_dim, len(CONDITIONS)))

    def pooled(self, cached: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        tokens = self.encoder.top(cached.flatten(0, 1).float(), CACHED_BELOW).unflatten(0, cached.shape[:2])
        return ReportModel.classifier_input(tokens * views[:, :, None, None])


def train_and_score(encoder, data: dict, trained: int, seed: int, epochs: int = 12, bs: int = 16) -> tuple:
    torch.manual_seed(seed)
    model = TopAndHead(encoder, trained)
    top = [p for p in model.encoder.parameters() if p.requires_grad]
    groups = [{"params": model.head.parameters(), "lr": 7e-4}] + ([{"params": top, "lr": 1e-4}] if top else [])
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    X, V, Y, M = data["train"]
    n = len(X)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, [g["lr"] for g in groups], total_steps=epochs * -(-n // bs),
                                                pct_start=0.05)
    if not top:  # nothing below the head trains: pool once
        with torch.no_grad():
            X = torch.cat([model.pooled(X[i:i + 256], V[i:i + 256]) for i in range(0, n, 256)])
    for _ in range(epochs):
        perm = torch.randperm(n)
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            logits = model.head(X[idx] if not top else model.pooled(X[idx], V[idx]))
            loss = (F.binary_cross_entropy_with_logits(logits, Y[idx], reduction="none") * M[idx]).sum() / M[idx].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    X, V, Y, M = data["val"]
    with torch.no_grad():
        probs = torch.cat([torch.sigmoid(model.head(model.pooled(X[i:i + 256], V[i:i + 256]))) for i in range(0, len(X), 256)])
    y = (Y.numpy() > 0) & (M.numpy() > 0)
    auroc = np.mean([roc_auc_score(y[:, c], probs[:, c]) for c in range(y.shape[1]) if 0 < y[:, c].sum() < len(y)])
    return (auroc, *half_scores(probs, Y, M))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phantom", required=True)
    ap.add_argument("--cache-dir", required=True)
    args = ap.parse_args()
    torch.set_num_threads(2)
    config = load_config("configs/default.yaml", [f"train.encoder_top={CACHED_BELOW}"])
    dm, _, model, _ = build_datamodule(config, load_studies(f"phantom:{args.phantom}"), Path(args.cache_dir))
    dm.prepare_data()  # reuses the cache `make demo` built
    dm.setup("fit")
    features = np.load(dm.features_path, mmap_mode="r")
    row = {sid: i for i, sid in enumerate(dm.feature_ids)}
    data = {}
    for split in ("train", "val"):
        ds = dm.datasets[split]
        views = torch.tensor([[True, ds.cache.get(s)[1] is not None] for s in ds.ids])
        data[split] = (torch.from_numpy(np.asarray(features[[row[s] for s in ds.ids]])), views,
                       torch.from_numpy(ds.labels), torch.from_numpy(ds.label_mask))
    print("| encoder layers trained | seed | mean AUROC | CE macro-F1 | CE5 micro-F1 | seconds |\n|---|---|---|---|---|---|")
    for seed in (0, 1):
        for trained, name in ((0, "none (frozen)"), (1, "final 1x1 conv"), (2, "last MBConv block + final conv")):
            t = time.time()
            auroc, macro, c5 = train_and_score(model.encoder, data, trained, seed)
            print(f"| {name} | {seed} | {auroc:.3f} | {macro:.3f} | {c5:.3f} | {time.time() - t:.0f} |", flush=True)


if __name__ == "__main__":
    main()
