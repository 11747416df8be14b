"""Lightning callbacks: the seed's early-stopping rule, best-checkpoint saving, training throughput.

Saving the last state for `--resume` is `cxrgen.training.resume.SaveLast`.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import lightning as L

from cxrgen.checkpoint import save_checkpoint
from cxrgen.training.module import GeneratorModule

_logger = logging.getLogger(__name__)


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


class TrainThroughput(L.Callback):
    """Training samples per second, timed over training batches only (validation excluded)."""

    def __init__(self):
        self.samples, self.seconds, self._t = 0, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seconds += time.perf_counter() - self._t
        self.samples += len(batch["study_id"])
