"""Training on PyTorch Lightning: data module, Lightning module, the seed's early-stopping rule.

Two modes (config `train.mode`):
  frozen    the encoder runs once over every study; its tokens are stored (float16, memory-mapped)
            and only the projection, classifier and decoder train. Fast on a CPU.
  finetune  end to end, images from the preprocessed ImageCache, encoder at `train.encoder_lr`.

Auxiliary classifier targets come from `cxrgen.labeler` on the reference report (findings +
impression): positive -> 1, negative or not mentioned -> 0, uncertain -> masked out of the BCE.
They are targets only; the model never sees them as input.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from cxrgen.atomic import atomic_write_text
from cxrgen.checkpoint import load_checkpoint, save_checkpoint
from cxrgen.config import Config
from cxrgen.data.cache import ImageCache
from cxrgen.data.studies import Study
from cxrgen.data.tokenizer import ReportTokenizer
from cxrgen.decoding import greedy
from cxrgen.errors import UserError
from cxrgen.models.generator import N_CONDITIONS, ReportModel
from cxrgen.resume import SaveLast, check_resume, merge_csv_log, set_csv_log_aside

_logger = logging.getLogger(__name__)
ExtraLoss = Callable[["GeneratorModule", dict, torch.Tensor], dict[str, torch.Tensor]]


def target_text(study: Study) -> str:
    """What the model learns to write: FINDINGS (R2Gen convention), the impression when findings are empty."""
    return study.findings or study.impression


def assign_splits(studies: list[Study]) -> None:
    """Give studies without a split the manifest reader's stable hash split (80/10/10 by id)."""
    from cxrgen.data.layouts.manifest import hash_split

    for s in studies:
        if s.split is None:
            s.split = hash_split(s.id)


def label_targets(studies: list[Study]) -> tuple[np.ndarray, np.ndarray]:
    """(targets, mask) float32 (N, 14): labeler on the reference report; uncertain -> mask 0."""
    from cxrgen.labeler import CONDITIONS, label_many

    rows = label_many([s.report for s in studies])
    y = np.array([[1.0 if r[c] == 1 else 0.0 for c in CONDITIONS] for r in rows], np.float32)
    m = np.array([[0.0 if r[c] == -1 else 1.0 for c in CONDITIONS] for r in rows], np.float32)
    return y, m


def cider(predictions: list[str], references: list[str]) -> float:
    """Corpus CIDEr-D (pycocoevalcap) with lower-case word tokenisation (no Java needed)."""
    from pycocoevalcap.cider.cider import Cider

    tok = lambda t: " ".join(re.findall(r"[a-z0-9]+", t.lower()))
    res = {i: [tok(p) or "empty"] for i, p in enumerate(predictions)}
    gts = {i: [tok(r)] for i, r in enumerate(references)}
    return float(Cider().compute_score(gts, res)[0]) if res else 0.0


def tune_thresholds(probs: torch.Tensor, labels: torch.Tensor, known: torch.Tensor, min_positives: int = 5) -> torch.Tensor:
    """Per condition, the probability threshold with the best F1 on (N, 14) validation rows.

    Conditions with fewer than `min_positives` validation positives keep 0.5: with one or two
    positives the best-F1 threshold can sit near 0 and call the finding in every study.
    """
    out = torch.full((probs.shape[1],), 0.5)
    for c in range(probs.shape[1]):
        keep = known[:, c] > 0
        p, y = probs[keep, c].cpu(), labels[keep, c].cpu() > 0
        if int(y.sum()) < min_positives:
            continue
        candidates = torch.unique(p)
        hits = (p[None, :] >= candidates[:, None])  # (K, N): called present at each candidate
        tp = (hits & y).sum(1)
        f1 = 2 * tp / (hits.sum(1) + y.sum()).clamp(min=1)
        best = int(f1.argmax())
        below = p[p < candidates[best]]  # midway to the next lower probability: a margin on both sides
        out[c] = (candidates[best] + (below.max() if below.numel() else 0.0)) / 2
    return out


@torch.no_grad()
def extract_features(model: ReportModel, cache: ImageCache, ids: list[str], path: Path, batch_size: int = 32,
                     device: str | torch.device = "cpu") -> np.ndarray:
    """Encoder tokens for every study, (n, 2, N, C) float16 in a .npy memmap; reused when already complete.

    The encoder runs on `device` (training's GPU when it has one) and is moved back afterwards.
    """
    if path.exists():
        feats = np.load(path, mmap_mode="r")
        if feats.shape[0] == len(ids):
            return feats
    enc = model.encoder.eval()
    home = next(enc.parameters()).device
    enc.to(device)
    size = cache.size
    probe = enc(torch.zeros(1, 1, size, size, device=device))
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # per process: concurrent builders never share it
    feats = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(ids), 2, *probe.shape[1:]))
    for start in tqdm(range(0, len(ids), batch_size), desc=f"encoding images ({enc.name})", unit="batch", disable=None):
        chunk = ids[start:start + batch_size]
        pairs = [cache.get(i) for i in chunk]
        imgs = [im for pair in pairs for im in pair if im is not None]
        x = torch.from_numpy(np.stack(imgs))[:, None].to(device).float().div_(255)  # uint8 over the bus
        out = enc(x).to(torch.float16).cpu().numpy()
        k = 0
        for j, pair in enumerate(pairs):
            for v, im in enumerate(pair):
                if im is not None:
                    feats[start + j, v] = out[k]
                    k += 1
    enc.to(home)
    feats.flush()
    del feats
    os.replace(tmp, path)
    return np.load(path, mmap_mode="r")


class ReportDataset(Dataset):
    """Samples: study_id, report_ids, labels, label_mask, view_mask, and `features` or `image`."""

    def __init__(self, ids: list[str], token_ids: list[list[int]], labels: np.ndarray, label_mask: np.ndarray,
                 cache: ImageCache, features: np.ndarray | None = None, feature_row: dict[str, int] | None = None):
        self.ids, self.token_ids, self.labels, self.label_mask = ids, token_ids, labels, label_mask
        self.cache, self.features, self.feature_row = cache, features, feature_row

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        sid = self.ids[i]
        frontal, lateral = self.cache.get(sid)
        item = {"study_id": sid, "report_ids": torch.tensor(self.token_ids[i]),
                "labels": torch.from_numpy(self.labels[i]), "label_mask": torch.from_numpy(self.label_mask[i]),
                "view_mask": torch.tensor([frontal is not None, lateral is not None])}
        if self.features is not None:
            # float16 as stored: half the bytes to the GPU; model_step converts on the device
            item["features"] = torch.from_numpy(np.array(self.features[self.feature_row[sid]]))
        else:
            blank = np.zeros((self.cache.size, self.cache.size), np.uint8)
            item["image"] = torch.from_numpy(np.stack([frontal, lateral if lateral is not None else blank]))[:, None]
        return item


def collate(items: list[dict], pad_id: int) -> dict:
    ids = torch.nn.utils.rnn.pad_sequence([it["report_ids"] for it in items], batch_first=True, padding_value=pad_id)
    batch = {"study_id": [it["study_id"] for it in items], "report_ids": ids, "report_mask": ids != pad_id}
    for key in ("labels", "label_mask", "view_mask", "features", "image"):
        if key in items[0]:
            batch[key] = torch.stack([it[key] for it in items])
    return batch


class LengthBucketSampler(torch.utils.data.Sampler):
    """A fresh shuffle each epoch in which every run of `batch_size` indices holds reports of similar length.

    Batches are padded to their longest report, so random batches of IU findings (median 52,
    longest ~100 WordPieces) waste about 40 % of the decoder's compute on padding. Shuffle, sort
    within windows of `window` batches, cut into batches, shuffle the batches: the data and its
    randomness stay, the padding goes. Lightning calls `set_epoch`; under DDP it shards this order.
    With `weights`, an epoch is len(lengths) draws with replacement in proportion to them instead of
    a permutation (oversampling some studies at the same number of steps).
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, window: int = 50,
                 weights: list[float] | None = None):
        self.lengths, self.batch_size, self.seed, self.window, self.epoch = lengths, batch_size, seed, window, 0
        self.weights = weights

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.weights is None:
            order = torch.randperm(len(self.lengths), generator=g).tolist()
        else:
            order = torch.multinomial(torch.tensor(self.weights, dtype=torch.float64), len(self.lengths),
                                      replacement=True, generator=g).tolist()
        span = self.batch_size * self.window
        batches = []
        for start in range(0, len(order), span):
            part = sorted(order[start:start + span], key=self.lengths.__getitem__)
            batches += [part[i:i + self.batch_size] for i in range(0, len(part), self.batch_size)]
        short = [b for b in batches if len(b) < self.batch_size]  # at most one: it goes last, keeping the rest aligned
        full = [b for b in batches if len(b) == self.batch_size]
        return iter([i for k in torch.randperm(len(full), generator=g).tolist() for i in full[k]] + sum(short, []))


class ReportDataModule(L.LightningDataModule):
    """Train and val loaders over the image cache and, in frozen mode, the encoder-feature cache.

    Lightning calls `prepare_data` in one process per node and `setup` in every process after it:
    the caches are built once there (in parallel over shards, resuming after an interruption) and
    the DDP ranks only open them. `meta` (the checkpoint's) receives the final study counts.
    """

    def __init__(self, config: Config, studies: list[Study], splits: dict[str, list[Study]], tokenizer: ReportTokenizer,
                 model: ReportModel, cache_dir: Path, meta: dict | None = None):
        super().__init__()
        mc, tc = config.model, config.train
        self.config, self.studies, self.tokenizer, self.model = config, studies, tokenizer, model
        self.batch_size, self.pad_id, self.num_workers, self.seed = tc.batch_size, tokenizer.pad_id, tc.num_workers, tc.seed
        key = _fingerprint([(s.id, [str(im.path) for im in s.images]) for s in studies])
        self.cache_path = cache_dir / f"images-{mc.image_size}-{key}"
        self.feature_ids = [s.id for s in splits["train"] + splits["val"]]
        self.features_path = None
        if tc.mode == "frozen":
            self.features_path = cache_dir / (f"features-{mc.encoder}-{mc.image_size}-{_encoder_fingerprint(model)}-"
                                              f"{_fingerprint(self.feature_ids)}.npy")
        self.meta = {} if meta is None else meta
        self.datasets: dict[str, ReportDataset] = {}

    def prepare_data(self) -> None:
        cache = ImageCache.build(self.studies, self.config.model.image_size, self.cache_path)
        if self.features_path is not None:
            device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
            extract_features(self.model, cache, self.feature_ids, self.features_path, device=device)

    def setup(self, stage: str) -> None:
        if self.datasets:
            return
        cache = ImageCache(self.cache_path)
        splits = _split_studies(self.studies, set(cache.usable_ids()))
        features = np.load(self.features_path, mmap_mode="r") if self.features_path is not None else None
        row = {sid: i for i, sid in enumerate(self.feature_ids)}
        for split in ("train", "val"):
            ss = splits[split]
            y, m = label_targets(ss)
            tokens = [self.tokenizer.encode(target_text(s), self.config.model.max_len) for s in ss]
            self.datasets[split] = ReportDataset([s.id for s in ss], tokens, y, m, cache, features, row)
        self.meta.update(train_studies=len(splits["train"]), val_studies=len(splits["val"]))
        _logger.info("studies: %d train, %d val; vocabulary %d; mode %s", len(splits["train"]), len(splits["val"]),
                     len(self.tokenizer), self.config.train.mode)

    def _loader(self, split: str, sampler: torch.utils.data.Sampler | None = None) -> DataLoader:
        return DataLoader(self.datasets[split], batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                          collate_fn=lambda items: collate(items, self.pad_id), persistent_workers=self.num_workers > 0,
                          pin_memory=torch.cuda.is_available())  # pinned host memory: async copies to the GPU

    def train_dataloader(self) -> DataLoader:
        train = self.datasets["train"]
        lengths = [len(t) for t in train.token_ids]
        weights = None
        if self.config.train.abnormal_weight != 1.0:  # columns 1.. are the findings (0 is No Finding)
            abnormal = (train.labels[:, 1:] * train.label_mask[:, 1:]).sum(1) > 0
            weights = np.where(abnormal, self.config.train.abnormal_weight, 1.0).tolist()
        return self._loader("train", LengthBucketSampler(lengths, self.batch_size, self.seed, weights=weights))

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")


class GeneratorModule(L.LightningModule):
    """Orchestrates losses and optimisation; the science lives in ReportModel.

    `extra_losses`: callables (module, batch, logits) -> {name_loss: tensor} added to the total,
    e.g. the CLIP directional loss; logits (B, T-1, V) predict batch["report_ids"][:, 1:].
    """

    def __init__(self, model: ReportModel, tokenizer: ReportTokenizer, config: Config,
                 extra_losses: list[ExtraLoss] | None = None):
        super().__init__()
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.extra_losses = list(extra_losses or [])
        self._val_preds: list[str] = []
        self._val_refs: list[str] = []
        self._val_probs: list[torch.Tensor] = []  # (probabilities, labels, label_mask) per batch

    def model_step(self, batch: dict) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        vm = batch["view_mask"]
        feats = batch["features"].float() if "features" in batch else self.model.encode_views(batch["image"].float() / 255, vm)
        teacher = (batch["labels"], batch["label_mask"]) if self.training else None  # validation decodes as at inference
        memory = self.model.memory_from_features(feats, vm, teacher)
        ids = batch["report_ids"]
        logits = self.model.decode(memory, ids[:, :-1])  # (B, T-1, V)
        tc = self.config.train
        losses = {"ce_loss": F.cross_entropy(logits.transpose(1, 2).float(), ids[:, 1:], ignore_index=self.tokenizer.pad_id,
                                             label_smoothing=tc.label_smoothing)}
        bce = F.binary_cross_entropy_with_logits(memory.cls_logits.float(), batch["labels"], reduction="none")
        losses["cls_loss"] = tc.cls_weight * (bce * batch["label_mask"]).sum() / batch["label_mask"].sum().clamp(min=1)
        for hook in self.extra_losses:
            losses.update(hook(self, batch, logits))
        losses["loss"] = sum(v for k, v in losses.items() if k.endswith("_loss"))
        return losses, memory

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses, _ = self.model_step(batch)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, on_step=True, on_epoch=True,
                      prog_bar=False, batch_size=len(batch["study_id"]))
        self.log("loss", losses["loss"], prog_bar=True, logger=False)
        return losses["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        losses, memory = self.model_step(batch)
        self.log_dict({f"val/{k}": v for k, v in losses.items()}, on_epoch=True, prog_bar=False,
                      batch_size=len(batch["study_id"]), sync_dist=True)
        self._val_probs.append(torch.stack([torch.sigmoid(memory.cls_logits.float()), batch["labels"], batch["label_mask"]]))
        if self.config.train.select_metric == "cider" and len(self._val_preds) < self.config.train.val_decode_limit:
            dc = self.config.decode
            out = greedy(self.model.decoder, memory, self.tokenizer.bos_id, self.tokenizer.eos_id,
                         dc.max_len, dc.no_repeat_ngram)
            self._val_preds += [self.tokenizer.decode(s) for s in out.sequences]
            self._val_refs += [self.tokenizer.decode(r) for r in batch["report_ids"].tolist()]

    def on_validation_epoch_end(self) -> None:
        preds, refs = self._val_preds, self._val_refs
        if self.trainer.world_size > 1:  # corpus CIDEr over every rank's decodes, not a mean of per-rank CIDErs
            gathered: list = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(gathered, (preds, refs))
            preds = [p for rank_preds, _ in gathered for p in rank_preds]
            refs = [r for _, rank_refs in gathered for r in rank_refs]
        if preds:  # the same on every rank after the gather
            self.log("val/cider", cider(preds, refs), prog_bar=True)
        if self._val_probs and self.model.label_emb is not None:
            rows = self.all_gather(torch.cat(self._val_probs, dim=1))  # (3, N, 14), or (world, 3, N, 14) under DDP
            probs, labels, known = rows.transpose(0, 1).reshape(3, -1, N_CONDITIONS) if rows.dim() == 4 else rows
            # the next epoch (and the checkpoint saved now) calls findings at the thresholds best on validation
            self.model.label_thresholds.copy_(tune_thresholds(probs, labels, known))
        self._val_preds, self._val_refs, self._val_probs = [], [], []

    def on_fit_start(self) -> None:
        if self.config.train.compile:
            self.model.compile()  # in place: parameter names (and so checkpoints) are unchanged

    def configure_optimizers(self):
        tc = self.config.train
        groups: dict[tuple[float, float], list] = {}
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            lr = tc.encoder_lr if name.startswith("encoder.") else tc.lr
            wd = tc.weight_decay if p.dim() >= 2 else 0.0  # nanoGPT's rule: decay matrices, not biases/norms
            groups.setdefault((lr, wd), []).append(p)
        opt = torch.optim.AdamW([{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()],
                                fused=self.device.type == "cuda")  # one kernel for all parameters on GPU
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(tc.warmup_ratio * total)

        def schedule(step: int) -> float:  # linear warmup, then cosine to zero
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class MarginEarlyStopping(L.Callback):
    """The seed's rule: stop once the monitored loss exceeds its running minimum by `margin` (relative, 0.05 = 5%)."""

    def __init__(self, monitor: str = "val/ce_loss", margin: float = 0.05):
        self.monitor, self.margin, self.best = monitor, margin, math.inf

    def state_dict(self) -> dict:  # saved in last.ckpt, so a resumed run keeps the running minimum
        return {"best": self.best}

    def load_state_dict(self, state: dict) -> None:
        self.best = state["best"]

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or trainer.sanity_checking:
            return
        value = float(value)
        self.best = min(self.best, value)
        if value > self.best * (1 + self.margin):
            _logger.info("early stop: %s %.4f > (1 + %.3f) x min %.4f", self.monitor, value, self.margin, self.best)
            trainer.should_stop = True


class SaveBest(L.Callback):
    """Write the cxrgen checkpoint directory whenever the selection metric improves."""

    def __init__(self, directory: Path, monitor: str, mode: str, meta: dict):
        self.directory, self.monitor, self.mode, self.meta = directory, monitor, mode, meta
        self.best: float | None = None
        self.best_epoch: int | None = None

    def state_dict(self) -> dict:  # a resumed run must not replace the best model with a worse one
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]

    def on_validation_end(self, trainer: L.Trainer, pl_module: GeneratorModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or trainer.sanity_checking:
            return
        value = float(value)
        if self.best is None or (value > self.best if self.mode == "max" else value < self.best):
            self.best, self.best_epoch = value, trainer.current_epoch
            if trainer.is_global_zero:
                meta = {**self.meta, "epoch": trainer.current_epoch, "step": trainer.global_step, self.monitor: value}
                save_checkpoint(self.directory, pl_module.model, pl_module.tokenizer, pl_module.config, meta)


@dataclass
class TrainResult:
    model_dir: Path
    best_metric: str
    best_value: float | None
    best_epoch: int | None
    epochs_run: int
    train_samples_per_s: float


class TrainThroughput(L.Callback):
    """Training samples per second, timed over training batches only (validation excluded)."""

    def __init__(self):
        self.samples, self.seconds, self._t = 0, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seconds += time.perf_counter() - self._t
        self.samples += len(batch["study_id"])


def _fingerprint(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, default=str).encode()).hexdigest()[:12]


def _encoder_fingerprint(model: ReportModel) -> str:
    """Cached features are only valid for these exact encoder weights (random init differs per seed)."""
    sample = torch.cat([p.detach().flatten()[:256].float() for p in model.encoder.parameters()])
    return hashlib.sha1(sample.numpy().tobytes()).hexdigest()[:12]


def plot_loss_curve(metrics_csv: Path, out_png: Path) -> None:
    """Epoch-level train and val loss (and val CIDEr when present) from Lightning's CSV log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.read_csv(metrics_csv)
    fig, ax = plt.subplots(figsize=(6, 4))
    for col, label in (("train/ce_loss_epoch", "train CE"), ("val/ce_loss", "val CE")):
        if col in df:
            s = df[["epoch", col]].dropna()
            ax.plot(s["epoch"], s[col], marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    if "val/cider" in df:
        s = df[["epoch", "val/cider"]].dropna()
        ax2 = ax.twinx()
        ax2.plot(s["epoch"], s["val/cider"], color="tab:green", linestyle="--", label="val CIDEr")
        ax2.set_ylabel("val CIDEr (greedy)")
        ax2.legend(loc="center right")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def _split_studies(studies: list[Study], usable: set[str]) -> dict[str, list[Study]]:
    splits = {k: [s for s in studies if s.split == k and s.id in usable] for k in ("train", "val", "test")}
    if not splits["train"]:
        raise UserError("no training studies with a report and a readable frontal image")
    if not splits["val"]:
        _logger.warning("no validation split: holding out every 20th training study for validation")
        splits["val"] = splits["train"][::20]
        splits["train"] = [s for i, s in enumerate(splits["train"]) if i % 20]
    return splits


def build_datamodule(config: Config, studies: list[Study], cache_dir: Path, meta: dict | None = None
                     ) -> tuple[ReportDataModule, ReportTokenizer, ReportModel, dict[str, list[Study]]]:
    """Tokenizer, model and data module; the caches are built when Lightning calls `prepare_data`.

    The vocabulary comes from every training report with a frontal image: the model must exist
    before the caches do, so a study whose frontal later fails to decode still lends its words
    (`setup` then leaves it out of the datasets).
    """
    mc, tc = config.model, config.train
    if tc.mode not in ("frozen", "finetune"):
        raise UserError(f"train.mode must be 'frozen' or 'finetune', got {tc.mode!r}")
    studies = [s for s in studies if target_text(s) and s.frontal is not None]
    assign_splits(studies)
    splits = _split_studies(studies, {s.id for s in studies})
    if tc.init_from:  # warm start: the checkpoint's weights and the vocabulary they were trained with
        model, tokenizer, init_config, _ = load_checkpoint(tc.init_from)
        if init_config.model != mc:
            raise UserError(f"train.init_from: {tc.init_from} has a different model config "
                            f"({init_config.model}) from this run's ({mc})")
        model.train()
    else:
        tokenizer = ReportTokenizer.build([target_text(s) for s in splits["train"]], min_freq=tc.min_token_freq)
        model = ReportModel(mc, len(tokenizer))
    if tc.mode == "frozen":
        model.encoder.requires_grad_(False)
    return ReportDataModule(config, studies, splits, tokenizer, model, cache_dir, meta), tokenizer, model, splits


def fit(config: Config, studies: list[Study], output: str | Path, *, cache_dir: str | Path | None = None,
        accelerator: str = "auto", devices: int | str = "auto", num_nodes: int = 1, strategy: str = "auto",
        extra_losses: list[ExtraLoss] | None = None, limit_train_batches: int | float | None = None,
        resume: bool = False) -> TrainResult:
    """Train a report generator; the best checkpoint (by `train.select_metric`) goes to OUTPUT/model.

    OUTPUT also receives config.yaml (resolved), last.ckpt (after every epoch; `resume=True`
    continues from it), csv/metrics.csv, tb/ (TensorBoard), loss_curve.png and train_summary.json.
    Image and feature caches go to `cache_dir` (default OUTPUT/../.cache)
    and are reused by later runs on the same data.
    """
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    output = Path(output)
    last = check_resume(config, output, resume)
    output.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cache_dir) if cache_dir else output.parent / ".cache"
    config.save(output / "config.yaml")
    tc = config.train
    L.seed_everything(tc.seed, workers=True)
    monitor, mode = ("val/cider", "max") if tc.select_metric == "cider" else ("val/ce_loss", "min")
    if tc.select_metric not in ("cider", "loss"):
        raise UserError(f"train.select_metric must be 'cider' or 'loss', got {tc.select_metric!r}")
    meta = {"seed": tc.seed, "select_metric": monitor}  # the data module's setup adds the study counts
    dm, tokenizer, model, splits = build_datamodule(config, studies, cache_dir, meta)
    if extra_losses is None:  # the config's `loss` section: CLIP directional loss and/or SCST
        from cxrgen.losses import hooks_from_config

        extra_losses = hooks_from_config(config.loss, [s for s in studies if s.split != "test"])
    module = GeneratorModule(model, tokenizer, config, extra_losses)
    save_best = SaveBest(output / "model", monitor, mode, meta)
    speed = TrainThroughput()
    precision = tc.precision if tc.precision != "auto" else ("bf16-mixed" if torch.cuda.is_available() else "32-true")
    steps_per_epoch = math.ceil(len(splits["train"]) / tc.batch_size)
    metrics_csv = output / "csv" / "metrics.csv"
    if last is not None:
        set_csv_log_aside(metrics_csv)
    trainer = L.Trainer(
        max_epochs=tc.epochs, accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy,
        precision=precision, gradient_clip_val=tc.grad_clip or None, enable_checkpointing=False,
        num_sanity_val_steps=0, log_every_n_steps=max(1, min(50, steps_per_epoch)), default_root_dir=output,
        logger=[CSVLogger(output, name="csv", version=""), TensorBoardLogger(output, name="tb", version="")],
        callbacks=[save_best, MarginEarlyStopping("val/ce_loss", tc.early_stop_margin), speed,
                   SaveLast(output / "last.ckpt", metrics_csv)],
        limit_train_batches=limit_train_batches, enable_model_summary=False,
    )
    trainer.fit(module, datamodule=dm, ckpt_path=last)
    if trainer.is_global_zero:
        if not (output / "model").exists():  # no validation pass ran: keep the last weights
            save_checkpoint(output / "model", model, tokenizer, config, meta)
        merge_csv_log(metrics_csv)
        if metrics_csv.exists():
            plot_loss_curve(metrics_csv, output / "loss_curve.png")
    result = TrainResult(output / "model", monitor, save_best.best, save_best.best_epoch, trainer.current_epoch,
                         speed.samples / max(speed.seconds, 1e-9))
    atomic_write_text(output / "train_summary.json", json.dumps({k: str(v) if isinstance(v, Path) else v
                                                                for k, v in result.__dict__.items()}, indent=2))
    return result
