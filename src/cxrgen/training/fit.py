"""`fit`: train a report generator on PyTorch Lightning.

Two modes (config `train.mode`):
  frozen    the encoder runs once over every study; its tokens are stored (float16, memory-mapped)
            and only the projection, classifier and decoder train. Fast on a CPU. With
            `train.encoder_top` N > 0 the stored tokens are those entering the encoder's last N
            layers, which then train too (cheap: they run on an 8x8 grid).
  finetune  end to end, images from the preprocessed ImageCache, encoder at `train.encoder_lr`.
"""
from __future__ import annotations

import json
import logging
import math
import time
import warnings
from contextlib import contextmanager
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch

from cxrgen.bank import add_bank
from cxrgen.checkpoint import load_checkpoint, save_checkpoint
from cxrgen.config import Config
from cxrgen.data.cache import ImageCache
from cxrgen.data.loader import assign_splits, split_studies
from cxrgen.data.reports import target_text
from cxrgen.data.specs import parse_spec
from cxrgen.data.studies import Study
from cxrgen.data.tokenizer import ReportTokenizer
from cxrgen.errors import UserError
from cxrgen.inference import calibrate
from cxrgen.io import atomic_write_text
from cxrgen.models.generator import ReportModel
from cxrgen.ood import DEFAULT_QUANTILE, OODStats, pool
from cxrgen.precision import bf16_is_fast
from cxrgen.extras import ExtraFindings, study_features
from cxrgen.sides import SideModel, side_features
from cxrgen.training.callbacks import MarginEarlyStopping, SaveBest, TrainThroughput
from cxrgen.training.datamodule import ReportDataModule
from cxrgen.training.hooks import hooks_from_config
from cxrgen.training.module import ExtraLoss, GeneratorModule
from cxrgen.training.resume import SaveLast, check_resume, merge_csv_log, set_csv_log_aside

_logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model_dir: Path
    best_metric: str
    best_value: float | None
    best_epoch: int | None
    epochs_run: int
    train_samples_per_s: float


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


def build_datamodule(config: Config, studies: list[Study], cache_dir: Path, meta: dict | None = None,
                     bf16: bool = False) -> tuple[ReportDataModule, ReportTokenizer, ReportModel, dict[str, list[Study]]]:
    """Tokenizer, model and data module; the caches are built when Lightning calls `prepare_data`
    (`bf16`: the feature cache is computed under bfloat16 autocast, as bf16 training reads images).

    The vocabulary comes from every training report with a frontal image: the model must exist
    before the caches do, so a study whose frontal later fails to decode still lends its words
    (`setup` then leaves it out of the datasets).
    """
    mc, tc = config.model, config.train
    if tc.mode not in ("frozen", "finetune"):
        raise UserError(f"train.mode must be 'frozen' or 'finetune', got {tc.mode!r}")
    studies = [s for s in studies if target_text(s) and s.frontal is not None]
    assign_splits(studies)
    splits = split_studies(studies, {s.id for s in studies})
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
        if tc.encoder_top and not model.encoder.n_layers:
            _logger.warning("encoder %s cannot train only its top layers: it stays wholly frozen "
                            "(train.encoder_top %d ignored; train.mode finetune trains all of it)", mc.encoder, tc.encoder_top)
            tc.encoder_top = 0
        model.encoder.requires_grad_(False)
        for module in model.encoder.top_modules(tc.encoder_top):
            module.requires_grad_(True)
        model.cached_below = tc.encoder_top
    return ReportDataModule(config, studies, splits, tokenizer, model, cache_dir, meta, bf16), tokenizer, model, splits


def data_meta(spec: str | None, splits: dict[str, list[Study]]) -> dict:
    """What the model card says about the training data: layout, phantom or real, studies per split
    (those with a report and a frontal image)."""
    layout = parse_spec(spec)[0] if spec else None
    return {"layout": layout, "phantom": layout == "phantom" if layout else None,
            "studies": {k: len(v) for k, v in splits.items()}}


def add_ood_stats(model_dir: Path, dm: ReportDataModule, device: torch.device) -> None:
    """Training statistics for the OOD check (`cxrgen.ood`) from the saved model's encoder tokens of the
    training and validation images: in frozen mode from the feature cache, else over the cached images."""
    try:
        stats = _fit_ood_stats(model_dir, dm, device)
    except UserError as e:  # a tiny data set: the model is still good to use, without the check
        _logger.warning("no OOD statistics: %s; the model's drafts carry no verdict", e)
        return
    stats.save(model_dir)
    for name, v in stats.meta()["views"].items():
        _logger.info("OOD check (%s): threshold %.2f, the validation 99th percentile of %d images",
                     name, v["threshold"], v["val_images"])


def _fit_ood_stats(model_dir: Path, dm: ReportDataModule, device: torch.device) -> OODStats:
    cache = ImageCache(dm.cache_path)
    model = load_checkpoint(model_dir)[0]
    if dm.features_path is not None:

        def pooled(split: str) -> tuple[np.ndarray, np.ndarray]:
            x = torch.cat([pool(tokens) for tokens in dm.cached_tokens(model, split)]).numpy()
            return x, np.array([[True, cache.get(sid)[1] is not None] for sid in dm.datasets[split].ids])

        return OODStats.fit(*pooled("train"), *pooled("val"), DEFAULT_QUANTILE)
    train, val = ((cache.get(sid) for sid in dm.datasets[split].ids) for split in ("train", "val"))
    return calibrate(model, train, val, DEFAULT_QUANTILE, device=device)


def add_finding_readers(model_dir: Path, dm: ReportDataModule, reports: dict[str, str]) -> None:
    """Side models (`cxrgen.sides`) and models of findings outside the 14 (`cxrgen.extras`) from the saved
    model's tokens of the training studies, read from the feature cache, and the latter's validation
    AUROC logged; frozen mode only (in finetune mode drafts are chosen without them). `reports`: the
    training and validation studies' reports by study id."""
    if dm.features_path is None:
        _logger.info("no side models in finetune mode: drafts are chosen without the findings' sides or the findings outside the 14")
        return
    model = load_checkpoint(model_dir)[0]
    side_x, study_x = zip(*((side_features(t[:, 0]), study_features(t)) for t in dm.cached_tokens(model, "train")))
    texts = [reports[s] for s in dm.datasets["train"].ids]
    sides = SideModel.fit(torch.cat(side_x), texts)
    if sides.weights:  # none when too few training reports give a side: drafts are then chosen without sides
        sides.save(model_dir)
    extras = ExtraFindings.fit(torch.cat(study_x), texts)
    if extras.weights:
        extras.save(model_dir)
        val = torch.cat([study_features(t) for t in dm.cached_tokens(model, "val")])
        scores = extras.auroc(val, [reports[s] for s in dm.datasets["val"].ids])
        _logger.info("findings outside the 14, validation AUROC (positives): %s",
                     ", ".join(f"{f} {a:.2f} ({n})" for f, (a, n) in scores.items()) or "no validation positives")


@contextmanager
def quiet_lightning(log_file: Path) -> Iterator[None]:
    """Lightning's own log lines (tips, accelerator summary, "`Trainer.fit` stopped") go to `log_file`
    only, not twice to the console; known-harmless warnings are dropped. With -v (debug logging) they
    all stay on the console too. Our own log lines also go to `log_file`."""
    verbose = logging.getLogger().isEnabledFor(logging.DEBUG)
    lightning, root = logging.getLogger("lightning"), logging.getLogger()
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved = lightning.handlers[:], lightning.propagate
    lightning.handlers = [handler]  # its own stderr handler repeated every line the root handler prints
    lightning.propagate = verbose
    root.addHandler(handler)
    with warnings.catch_warnings():
        if not verbose:
            warnings.filterwarnings("ignore", message=r".*is deprecated", module=r"lightning\.")
            warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")  # the frozen encoder
        try:
            yield
        finally:
            root.removeHandler(handler)
            lightning.handlers, lightning.propagate = saved
            handler.close()


def fit(config: Config, studies: list[Study], output: str | Path, *, cache_dir: str | Path | None = None,
        accelerator: str = "auto", devices: int | str = "auto", num_nodes: int = 1, strategy: str = "auto",
        extra_losses: list[ExtraLoss] | None = None, limit_train_batches: int | float | None = None,
        resume: bool = False, data: str | None = None) -> TrainResult:
    """Train a report generator; the best checkpoint (by `train.select_metric`) goes to OUTPUT/model.

    OUTPUT also receives config.yaml (resolved), last.ckpt (after every epoch; `resume=True`
    continues from it), csv/metrics.csv, tb/ (TensorBoard), loss_curve.png, train_summary.json and
    train.log (every log line, Lightning's included).
    Image and feature caches go to `cache_dir` (default OUTPUT/../.cache)
    and are reused by later runs on the same data. `data`, the dataset spec, goes into the model card;
    the model's training statistics for the OOD check are added at the end.
    """
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    output = Path(output)
    last = check_resume(config, output, resume)
    output.mkdir(parents=True, exist_ok=True)
    with quiet_lightning(output / "train.log"):
        cache_dir = Path(cache_dir) if cache_dir else output.parent / ".cache"
        config.save(output / "config.yaml")
        tc = config.train
        L.seed_everything(tc.seed, workers=True)
        monitor, mode = ("val/cider", "max") if tc.select_metric == "cider" else ("val/ce_loss", "min")
        if tc.select_metric not in ("cider", "loss"):
            raise UserError(f"train.select_metric must be 'cider' or 'loss', got {tc.select_metric!r}")
        meta = {"seed": tc.seed, "select_metric": monitor, "trained_at": time.strftime("%Y-%m-%d")}
        device = "cuda" if torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda") else "cpu"
        precision = tc.precision if tc.precision != "auto" else ("bf16-mixed" if bf16_is_fast(device) else "32-true")
        meta["precision"] = precision
        dm, tokenizer, model, splits = build_datamodule(config, studies, cache_dir, meta,  # setup adds the study counts
                                                        bf16=precision.startswith("bf16"))
        meta["data"] = data_meta(data, splits)
        if extra_losses is None:  # the config's `loss` section: CLIP directional loss and/or SCST
            extra_losses = hooks_from_config(config.loss, [s for s in studies if s.split != "test"])
        module = GeneratorModule(model, tokenizer, config, extra_losses)
        save_best = SaveBest(output / "model", monitor, mode, meta)
        speed = TrainThroughput()
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
        # last.ckpt holds tensors and plain values only (see SaveLast), so it loads without pickle
        trainer.fit(module, datamodule=dm, ckpt_path=last, weights_only=True)
        if trainer.is_global_zero:
            if not (output / "model").exists():  # no validation pass ran: keep the last weights
                save_checkpoint(output / "model", model, tokenizer, config, meta)
            add_ood_stats(output / "model", dm, trainer.strategy.root_device)
            add_bank(output / "model", [target_text(s) for s in splits["train"]], tokenizer, config.model.max_len)
            add_finding_readers(output / "model", dm, {s.id: target_text(s) for split in ("train", "val") for s in splits[split]})
            merge_csv_log(metrics_csv)
            if metrics_csv.exists():
                plot_loss_curve(metrics_csv, output / "loss_curve.png")
        result = TrainResult(output / "model", monitor, save_best.best, save_best.best_epoch, trainer.current_epoch,
                             speed.samples / max(speed.seconds, 1e-9))
        atomic_write_text(output / "train_summary.json", json.dumps({k: str(v) if isinstance(v, Path) else v
                                                                    for k, v in result.__dict__.items()}, indent=2))
        return result
