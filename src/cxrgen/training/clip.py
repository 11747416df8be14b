"""Training and evaluating the chest X-ray CLIP (used by `cxrgen clip` and experiments).

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
from tqdm.auto import tqdm

from cxrgen.config import read_yaml
from cxrgen.data.images import ImageError, load_image
from cxrgen.data.reports import hard_negative
from cxrgen.data.specs import load_studies
from cxrgen.errors import UserError
from cxrgen.io import atomic_write_text
from cxrgen.losses import clip_loss
from cxrgen.models.clip import ClipConfig, CXRClip, grey_pixels
from cxrgen.retrieval import negation_probe, recall_at_k

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
    raw = read_yaml(path) if path else {}
    unknown = set(raw) - {"model", "train"}
    if unknown:
        raise UserError(f"{path}: unknown sections {sorted(unknown)} (expected model, train)")
    model = raw.get("model") or {}
    bad = set(model) - {f.name for f in dataclasses.fields(ClipConfig)}
    train = {**(raw.get("train") or {}), **(overrides or {})}
    bad |= set(train) - {f.name for f in dataclasses.fields(ClipTrainConfig)}
    if bad:
        raise UserError(f"{path or '--set'}: unknown CLIP config fields: {sorted(bad)}")
    return ClipRunConfig(model=model, train=ClipTrainConfig(**train))


def study_pairs(spec: str, split: str) -> list:
    """Studies of one split that have both a frontal image path and findings text."""
    studies = [s for s in load_studies(spec, split) if s.frontal is not None and s.frontal.path and s.findings.strip()]
    if not studies:
        raise UserError(f"no {split} studies with a frontal image and findings in {spec}")
    return studies


@torch.no_grad()
def cache_features(clip, studies: list, batch_size: int = 32) -> tuple[list, torch.Tensor]:
    """Frozen backbone features (N, C) of each study's frontal image; unreadable images skipped (warned)."""
    kept, feats, batch = [], [], []
    for i, s in enumerate(tqdm(studies, desc="image features", unit="study", disable=None)):
        try:
            batch.append(load_image(s.frontal.path, clip.image_size))
            kept.append(s)
        except ImageError as e:
            _logger.warning("skipping study %s: %s", s.id, e)
        if batch and (len(batch) == batch_size or i == len(studies) - 1):
            feats.append(clip.image_features(grey_pixels(batch, clip.image_size).to(clip.device)))
            batch = []
    return kept, torch.cat(feats)


def train_clip(clip, feats: torch.Tensor, texts: list[str], cfg: ClipTrainConfig) -> list[dict]:
    """Symmetric InfoNCE (+ hard negatives) on cached image features. Returns per-epoch history."""
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
    if feats is None:
        studies, feats = cache_features(clip, studies)
    texts = [s.findings for s in studies]
    img = clip.encode_image_features(feats.to(clip.device))
    txt = clip.embed_texts(texts)
    return {"n": len(studies), **recall_at_k(img, txt), **negation_probe(clip, texts, img)}


def train_clip_run(run: ClipRunConfig, train: list, test: list, output: str | Path, data: str) -> tuple[CXRClip, dict]:
    """Train a CXR-CLIP on the `train` studies, measure it on `test` before and after, and save it
    to OUTPUT with metrics.json. Returns the trained CLIP (eval mode) and the metrics."""
    torch.manual_seed(run.train.seed)
    clip = CXRClip(ClipConfig(**run.model))
    train, train_feats = cache_features(clip, train)
    test, test_feats = cache_features(clip, test)
    before = evaluate_clip(clip, test, test_feats)
    history = train_clip(clip, train_feats, [s.findings for s in train], run.train)
    after = evaluate_clip(clip, test, test_feats)
    out = clip.save(output)
    metrics = {"data": data, "config": dataclasses.asdict(run), "history": history,
               "test_before": before, "test_after": after}
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    return clip.eval(), metrics
