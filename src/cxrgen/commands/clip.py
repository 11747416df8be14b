"""`cxrgen clip train|eval|probe|retrieve`: train the chest X-ray CLIP, measure it, retrieve reports with it.

Training runs on cached features: the image backbone is frozen, so each frontal image goes
through it once; each step trains the image projection MLP, the text projection, the last
MiniLM layer(s) and the temperature. That fits a 2-core CPU.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cxrgen.errors import UserError

_logger = logging.getLogger(__name__)


@dataclass
class ClipTrainConfig:
    epochs: int = 8
    batch_size: int = 64
    lr: float = 1e-4  # text layers; the projection heads use head_lr
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    hard_negatives: bool = True  # add each report's negated/side-flipped copy as an extra image->text negative
    seed: int = 0


@dataclass
class ClipRunConfig:
    model: dict = field(default_factory=dict)  # ClipConfig overrides
    train: ClipTrainConfig = field(default_factory=ClipTrainConfig)


def load_run_config(path: str | None, overrides: dict | None = None) -> ClipRunConfig:
    import yaml

    from cxrgen.models.clip import ClipConfig

    raw = yaml.safe_load(Path(path).read_text()) if path else {}
    raw = raw or {}
    unknown = set(raw) - {"model", "train"}
    if unknown:
        raise UserError(f"{path}: unknown sections {sorted(unknown)} (expected model, train)")
    model = raw.get("model") or {}
    bad = set(model) - {f.name for f in dataclasses.fields(ClipConfig)}
    train = {**(raw.get("train") or {}), **(overrides or {})}
    bad |= set(train) - {f.name for f in dataclasses.fields(ClipTrainConfig)}
    if bad:
        raise UserError(f"unknown CLIP config fields: {sorted(bad)}")
    return ClipRunConfig(model=model, train=ClipTrainConfig(**train))


def study_pairs(spec: str, split: str) -> list:
    """Studies of one split that have both a frontal image path and findings text."""
    from cxrgen.data.datasets import load_studies

    studies = [s for s in load_studies(spec, split) if s.frontal is not None and s.frontal.path and s.findings.strip()]
    if not studies:
        raise UserError(f"no {split} studies with a frontal image and findings in {spec}")
    return studies


@torch.no_grad()
def cache_features(clip, studies: list, batch_size: int = 32) -> tuple[list, torch.Tensor]:
    """Frozen backbone features (N, C) of each study's frontal image; unreadable images skipped (warned)."""
    from tqdm.auto import tqdm

    from cxrgen.data.images import ImageError, load_image
    from cxrgen.models.clip import images_to_tensor

    kept, feats, batch = [], [], []
    for i, s in enumerate(tqdm(studies, desc="image features", unit="study", disable=None)):
        try:
            batch.append(load_image(s.frontal.path, clip.image_size))
            kept.append(s)
        except ImageError as e:
            _logger.warning("skipping study %s: %s", s.id, e)
        if batch and (len(batch) == batch_size or i == len(studies) - 1):
            feats.append(clip.image_features(images_to_tensor(batch, clip.image_size).to(clip.device)))
            batch = []
    return kept, torch.cat(feats)


def train_clip(clip, feats: torch.Tensor, texts: list[str], cfg: ClipTrainConfig) -> list[dict]:
    """Symmetric InfoNCE (+ hard negatives) on cached image features. Returns per-epoch history."""
    from tqdm.auto import tqdm

    from cxrgen.losses import clip_loss, hard_negative

    rng, gen = random.Random(cfg.seed), torch.Generator().manual_seed(cfg.seed)
    heads = [*clip.visual.proj.parameters(), *clip.text.proj.parameters(), clip.logit_scale]
    head_ids = {id(p) for p in heads}
    text_layers = [p for p in clip.text.parameters() if p.requires_grad and id(p) not in head_ids]
    opt = torch.optim.AdamW([{"params": heads, "lr": cfg.head_lr}, {"params": text_layers, "lr": cfg.lr}],
                            weight_decay=cfg.weight_decay)
    steps = cfg.epochs * max(1, len(texts) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[cfg.head_lr, cfg.lr], total_steps=steps, pct_start=0.1)
    history, step = [], 0
    clip.train()
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(texts), generator=gen)
        losses, t0 = [], time.perf_counter()
        for start in tqdm(range(0, len(order) - cfg.batch_size + 1, cfg.batch_size), desc=f"clip epoch {epoch + 1}",
                          unit="step", disable=None, leave=False):
            idx = order[start:start + cfg.batch_size]
            batch_texts = [texts[i] for i in idx]
            out = clip(feats[idx].to(clip.device), *clip.tokenize(batch_texts))
            negs = [n for t in batch_texts if (n := hard_negative(t, rng))] if cfg.hard_negatives else []
            neg_feats = clip.encode_text(*clip.tokenize(negs)) if negs else None
            loss = clip_loss(**out, negative_text_features=neg_feats)["contrastive_loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step < steps:
                sched.step()
            step += 1
            losses.append(loss.item())
        history.append({"epoch": epoch + 1, "loss": sum(losses) / max(1, len(losses)),
                        "temperature": float(1 / clip.logit_scale.detach().exp()), "seconds": time.perf_counter() - t0})
        _logger.info("clip epoch %d: loss %.4f", epoch + 1, history[-1]["loss"])
    clip.eval()
    return history


@torch.no_grad()
def evaluate_clip(clip, studies: list, feats: torch.Tensor | None = None) -> dict:
    """Test-split recall@1/5/10 both ways and the negation probe (text side and image-grounded)."""
    from cxrgen.retrieval import negation_probe, recall_at_k

    if feats is None:
        studies, feats = cache_features(clip, studies)
    texts = [s.findings for s in studies]
    img = clip.encode_image_features(feats.to(clip.device))
    txt = clip.embed_texts(texts)
    return {"n": len(studies), **recall_at_k(img, txt), **negation_probe(clip, texts, img)}


def _train(args) -> int:
    from cxrgen.models.clip import ClipConfig, CXRClip

    overrides = {k: v for k, v in (("epochs", args.epochs), ("seed", args.seed)) if v is not None}
    if args.no_hard_negatives:
        overrides["hard_negatives"] = False
    run = load_run_config(args.config, overrides)
    torch.manual_seed(run.train.seed)
    clip = CXRClip(ClipConfig(**run.model))
    train_studies, train_feats = cache_features(clip, study_pairs(args.data, "train"))
    test_studies, test_feats = cache_features(clip, study_pairs(args.data, "test"))
    before = evaluate_clip(clip, test_studies, test_feats)
    history = train_clip(clip, train_feats, [s.findings for s in train_studies], run.train)
    after = evaluate_clip(clip, test_studies, test_feats)
    out = clip.save(args.output)
    metrics = {"data": args.data, "config": dataclasses.asdict(run), "history": history,
               "test_before": before, "test_after": after}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(_table({"before training": before, "after training": after}))
    print(f"CLIP saved to {out}")
    return 0


def _table(rows: dict[str, dict]) -> str:
    keys = ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "template_cos", "report_cos",
            "image_prefers_true"]
    lines = ["| | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, m in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{m[k]:.3f}" if k in m else "-" for k in keys) + " |")
    return "\n".join(lines)


def _eval(args) -> int:
    from cxrgen.models.clip import CXRClip, load_clip

    clip = load_clip(args.clip)
    studies = study_pairs(args.data, args.split)
    if isinstance(clip, CXRClip):
        metrics = evaluate_clip(clip, studies)
    else:
        from cxrgen.retrieval import embed_study_images, negation_probe, recall_at_k

        ids, img = embed_study_images(clip, studies)
        by_id = {s.id: s.findings for s in studies}
        texts = [by_id[i] for i in ids]
        metrics = {"n": len(ids), **recall_at_k(img, clip.embed_texts(texts)), **negation_probe(clip, texts, img)}
    print(json.dumps(metrics, indent=2) if args.json else _table({args.clip: metrics}))
    return 0


def _probe(args) -> int:
    from cxrgen.models.clip import ClipConfig, CXRClip, load_clip

    clip = load_clip(args.clip) if args.clip else CXRClip(ClipConfig(), pretrained=False).eval()
    reports = [s.findings for s in study_pairs(args.data, args.split)] if args.data else None
    from cxrgen.retrieval import negation_probe

    metrics = negation_probe(clip, reports)
    print(json.dumps(metrics, indent=2) if args.json else _table({args.clip or "MiniLM (untrained)": metrics}))
    return 0


def run_retrieval(clip_dir: str, data: str, split: str, output: str, k: int = 1) -> int:
    """Nearest training report (k=1) or top-k training sentences per study of `split` -> JSONL for `cxrgen eval`."""
    from cxrgen.data.datasets import load_studies
    from cxrgen.models.clip import load_clip
    from cxrgen.retrieval import retrieve_reports

    if not data or not output:
        raise UserError("retrieval needs --data SPEC and --output PREDICTIONS.jsonl")
    if k < 1:
        raise UserError(f"--k must be at least 1, got {k}")
    clip = load_clip(clip_dir)
    preds = retrieve_reports(clip, load_studies(data, "train"), load_studies(data, split), k=k,
                             unit="sentence" if k > 1 else "report")
    write_predictions(preds, output)
    print(f"{len(preds)} retrieved reports written to {output}")
    return 0


def _retrieve(args) -> int:
    return run_retrieval(args.clip, args.data, args.split, args.output, args.k)


def write_predictions(preds: dict[str, str], path: str | Path) -> None:
    """JSONL {id, report}: the format `cxrgen generate` writes and `cxrgen eval` reads (atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps({"id": k, "report": v}) + "\n" for k, v in preds.items()))
    tmp.replace(path)


def register(sub) -> None:
    clip = sub.add_parser("clip", help="chest X-ray CLIP: train, evaluate, negation probe, retrieval baseline")
    csub = clip.add_subparsers(dest="clip_command", required=True)

    p = csub.add_parser("train", help="train CXR-CLIP on the training split's image-report pairs")
    p.add_argument("--data", required=True, help="dataset spec, e.g. phantom:DIR or r2gen:DIR")
    p.add_argument("--output", required=True, help="output CLIP directory")
    p.add_argument("--config", help="YAML with model/train sections (e.g. configs/clip.yaml)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--no-hard-negatives", action="store_true", help="plain InfoNCE (the ablation of the negation fix)")
    p.set_defaults(func=_train)

    p = csub.add_parser("eval", help="recall@1/5/10 both ways and the negation probe on a split")
    p.add_argument("--clip", required=True, help="CLIP directory or open_clip state dict / HF CLIP folder")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_eval)

    p = csub.add_parser("probe", help="negation probe: does the text space separate 'X' from 'no X'?")
    p.add_argument("--clip", help="CLIP to probe (default: untrained MiniLM text tower)")
    p.add_argument("--data", help="also probe report/hard-negative pairs of this dataset")
    p.add_argument("--split", default="test")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_probe)

    p = csub.add_parser("retrieve", help="CXR-RePaiR-style baseline: nearest training report(s) per study -> JSONL")
    p.add_argument("--clip", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--k", type=int, default=1, help="1: nearest whole report; >1: top-k training sentences")
    p.add_argument("--output", required=True, help="predictions JSONL for `cxrgen eval`")
    p.set_defaults(func=_retrieve)
