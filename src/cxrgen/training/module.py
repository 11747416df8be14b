"""The Lightning module: losses, validation (CIDEr, finding thresholds) and the optimiser.

The science lives in `ReportModel`; this class only orchestrates it.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F

from cxrgen.config import Config
from cxrgen.data.tokenizer import ReportTokenizer
from cxrgen.decoding import greedy
from cxrgen.evaluate.nlg import cider
from cxrgen.models.decoder import Memory
from cxrgen.models.generator import N_CONDITIONS, ReportModel

ExtraLoss = Callable[["GeneratorModule", dict, torch.Tensor], dict[str, torch.Tensor]]


def batch_memory(model: ReportModel, batch: dict, teacher: bool = False) -> Memory:
    """Decoder memory of a batch (cached float16 encoder features, or uint8 images). `teacher` forces the
    label states to the reference findings, as training does; validation and SCST decode as at inference."""
    vm = batch["view_mask"]
    if "features" in batch:
        feats = model.tokens_from_cache(batch["features"].float(), vm)
    else:
        feats = model.encode_views(batch["image"].float() / 255, vm)
    return model.memory_from_features(feats, vm, (batch["labels"], batch["label_mask"]) if teacher else None)


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

    def model_step(self, batch: dict) -> tuple[dict[str, torch.Tensor], Memory]:
        memory = batch_memory(self.model, batch, teacher=self.training)
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
            self.log("val/cider", float(cider(preds, refs).mean()), prog_bar=True)
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
