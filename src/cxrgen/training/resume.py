"""Crash-safe training: OUTPUT/last.ckpt after every epoch, and `cxrgen train --resume` from it.

A resumed run repeats the uninterrupted one exactly (same final weights on the same machine):
Lightning restores weights, optimizer, LR schedule, loop counters and each callback's state
(so the best-model selection and the early-stopping minimum survive); `SaveLast` adds the
global RNG states, which decide the next epoch's shuffle and dropout.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only

from cxrgen.io import atomic_write_text, disk_full_error, finish_interrupted_swap, is_disk_full
from cxrgen.config import Config, load_config
from cxrgen.errors import UserError


class SaveLast(L.Callback):
    """Write `path` (Lightning's full training state plus the RNG states) at the end of every epoch, atomically.

    It also keeps `csv_log`'s snapshot up to date: Lightning writes metrics.csv only every 100
    steps, and rewrites it in place when a new column appears, so a kill can lose its rows.
    """

    def __init__(self, path: Path, csv_log: Path):
        self.path, self.csv_log = path, csv_log

    def _save_logs(self, trainer: L.Trainer) -> None:
        for logger in trainer.loggers:
            logger.save()
        if trainer.is_global_zero and self.csv_log.exists():
            atomic_write_text(_snapshot(self.csv_log), self.csv_log.read_text())

    def state_dict(self) -> dict:  # tensors and plain tuples only: torch.load(weights_only=True) reads them
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        numpy_state = (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)
        rng = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return rng

    def load_state_dict(self, state: dict) -> None:
        random.setstate(state["python"])
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save_logs(trainer)  # the last epoch's train averages, logged after on_train_epoch_end

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after this epoch's validation, so SaveBest's state already counts it; the log too
        self._save_logs(trainer)
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            trainer.save_checkpoint(tmp, weights_only=False)  # the full state; every rank calls it, rank 0 writes
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            raise disk_full_error(self.path, e) if is_disk_full(e) else e
        if trainer.is_global_zero:
            os.replace(tmp, self.path)


def check_resume(config: Config, output: Path, resume: bool) -> Path | None:
    """OUTPUT/last.ckpt to resume from (None for a fresh run); refuse anything that could clobber a run."""
    last = output / "last.ckpt"
    finish_interrupted_swap(output / "model")  # the best model so far, if a kill hit its replacement
    if not resume:
        if last.exists() or (output / "model").exists():
            raise UserError(f"{output} already holds a training run; add --resume to continue it, "
                            "or choose a new --output")
        return None
    if not last.is_file():
        raise UserError(f"--resume: {last} not found (it is written at the end of each epoch); "
                        "run without --resume and a new --output")
    saved, wanted = load_config(output / "config.yaml").to_dict(), config.to_dict()
    diff = [f"{sec}.{k} ({saved[sec][k]!r} in the run, {v!r} now)" for sec, fields in wanted.items()
            for k, v in fields.items() if saved[sec][k] != v]
    if diff:
        raise UserError(f"--resume: the config differs from {output / 'config.yaml'} in {', '.join(diff)}; "
                        "resume with the run's settings")
    return last


def _snapshot(csv_log: Path) -> Path:
    return csv_log.with_name(csv_log.name + ".snapshot")


def _parts(csv_log: Path) -> list[Path]:
    return sorted(csv_log.parent.glob(f"{csv_log.name}.part*"), key=lambda p: int(p.name.rsplit("part", 1)[1]))


def set_csv_log_aside(csv_log: Path) -> None:
    """Keep the interrupted attempt's log (its last complete snapshot) as metrics.csv.partN.

    Lightning's CSV logger deletes an existing metrics.csv, which a kill may have left half rewritten anyway.
    """
    if rank_zero_only.rank == 0 and _snapshot(csv_log).exists():
        _snapshot(csv_log).rename(csv_log.with_name(f"{csv_log.name}.part{len(_parts(csv_log)) + 1}"))


def merge_csv_log(csv_log: Path) -> None:
    """metrics.csv.part1, part2, ... and metrics.csv -> one metrics.csv, as an uninterrupted run would log it.

    Each attempt's rows replace the earlier attempts' rows from its first epoch on (the epoch a
    crash cut short is logged again in full).
    """
    import pandas as pd

    parts = _parts(csv_log)
    if parts:
        merged = None
        for path in [*parts, csv_log] if csv_log.exists() else parts:
            frame = pd.read_csv(path)
            merged = frame if merged is None else pd.concat([merged[merged["epoch"] < frame["epoch"].min()], frame])
        atomic_write_text(csv_log, merged.to_csv(index=False))
        for path in parts:
            path.unlink()
    _snapshot(csv_log).unlink(missing_ok=True)  # the run ended: the log is complete
