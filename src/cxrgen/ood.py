"""Is this image like the model's training images? A per-view Mahalanobis score on encoder features.

Each view's encoder tokens are mean-pooled into one vector. On the training split we fit, per view
(frontal, lateral), the mean and a Ledoit-Wolf shrunk covariance of those vectors; an image's
score is its Mahalanobis distance to that view's training distribution. The threshold is a
quantile (default the 99th percentile) of the validation split's scores, so about 1% of
validation images of that view are flagged by construction.

The statistics live in the checkpoint folder: `ood.safetensors` (means, precision matrices and
the validation scores) and an "ood" entry in meta.json (thresholds and counts). A checkpoint
without them still loads; its predictions carry no verdict (`ood` is None).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save

from cxrgen.errors import UserError
from cxrgen.checkpoint import update_meta
from cxrgen.io import atomic_open

_logger = logging.getLogger(__name__)

VIEWS = ("frontal", "lateral")
FILE = "ood.safetensors"
DEFAULT_QUANTILE = 0.99
MIN_STUDIES = 10  # fewer training images of a view than this: no statistics for that view
NO_STATS = ("this model has no training-set statistics, so nothing checks whether the image is like its "
            "training images (add them with `cxrgen model calibrate`)")


def pool(tokens: torch.Tensor) -> torch.Tensor:
    """Encoder tokens (B, 2, N, C) -> one float32 vector per view (B, 2, C), the mean over tokens."""
    return tokens.float().mean(2)


@dataclass
class ViewStats:
    mean: np.ndarray  # (C,)
    precision: np.ndarray  # (C, C), inverse of the shrunk covariance
    val_scores: np.ndarray  # (n_val,) sorted
    threshold: float
    train_images: int


class OODStats:
    """Per-view training statistics; `verdicts` scores pooled features against them."""

    def __init__(self, views: dict[str, ViewStats], quantile: float):
        self.views, self.quantile = views, quantile
        self._torch: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def fit(cls, train: np.ndarray, train_mask: np.ndarray, val: np.ndarray, val_mask: np.ndarray,
            quantile: float = DEFAULT_QUANTILE) -> OODStats:
        """Pooled features (n, 2, C) with view masks (n, 2) of the training and validation splits."""
        from sklearn.covariance import LedoitWolf

        if not 0 < quantile < 1:
            raise UserError(f"the OOD quantile must be between 0 and 1, got {quantile}")
        views = {}
        for v, name in enumerate(VIEWS):
            x, xv = train[train_mask[:, v], v].astype(np.float64), val[val_mask[:, v], v].astype(np.float64)
            if len(x) < MIN_STUDIES or len(xv) == 0:
                _logger.info("no %s statistics: %d training and %d validation images of that view",
                             name, len(x), len(xv))
                continue
            lw = LedoitWolf().fit(x)
            stats = ViewStats(lw.location_.astype(np.float32), lw.precision_.astype(np.float32),
                              np.zeros(0, np.float32), 0.0, len(x))
            scores = np.sort(_mahalanobis(xv, stats.mean, stats.precision)).astype(np.float32)
            stats.val_scores, stats.threshold = scores, float(np.quantile(scores, quantile))
            views[name] = stats
        if not views:
            raise UserError("too few training and validation images to fit any view's statistics "
                            f"(at least {MIN_STUDIES} training images of a view are needed)")
        return cls(views, quantile)

    def verdicts(self, pooled: torch.Tensor, view_mask: torch.Tensor) -> list[list[dict]]:
        """Pooled features (B, 2, C) and view mask (B, 2) -> per study, one verdict per view given:
        {"view", "score", "threshold", "flag"}; a view without statistics gets score and threshold None."""
        scores = {}
        for v, name in enumerate(VIEWS):
            if name in self.views:
                mean, precision = self._on(name, pooled.device)
                d = pooled[:, v].float() - mean
                scores[name] = ((d @ precision) * d).sum(-1).clamp_min(0).sqrt().cpu().tolist()
        mask = view_mask.cpu().tolist()
        out = []
        for i, given in enumerate(mask):
            row = []
            for v, name in enumerate(VIEWS):
                if not given[v]:
                    continue
                if name not in scores:
                    row.append({"view": name, "score": None, "threshold": None, "flag": False})
                    continue
                threshold = self.views[name].threshold
                row.append({"view": name, "score": round(scores[name][i], 4), "threshold": round(threshold, 4),
                            "flag": scores[name][i] > threshold})
            out.append(row)
        return out

    def _on(self, name: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = f"{name}:{device}"
        if key not in self._torch:
            s = self.views[name]
            self._torch[key] = (torch.from_numpy(s.mean).to(device), torch.from_numpy(s.precision).to(device))
        return self._torch[key]

    def meta(self) -> dict:
        """The meta.json entry: what the score is, and each view's threshold and counts."""
        return {"score": "mahalanobis distance of mean-pooled encoder features (Ledoit-Wolf covariance)",
                "quantile": self.quantile,
                "views": {name: {"threshold": s.threshold, "train_images": s.train_images,
                                 "val_images": len(s.val_scores),
                                 "val_quantiles": {q: float(np.quantile(s.val_scores, float(q)))
                                                   for q in ("0.5", "0.9", "0.95", "0.99")}}
                          for name, s in self.views.items()}}

    def save(self, model_dir: str | Path) -> None:
        """Add (or replace) the statistics in a checkpoint folder: ood.safetensors, then meta.json."""
        model_dir = Path(model_dir)
        tensors = {f"{name}.{field}": np.ascontiguousarray(getattr(s, field))
                   for name, s in self.views.items() for field in ("mean", "precision", "val_scores")}
        with atomic_open(model_dir / FILE, "wb") as f:
            f.write(save(tensors))
        update_meta(model_dir, ood=self.meta())

    @classmethod
    def load(cls, model_dir: str | Path, meta: dict) -> OODStats | None:
        """The folder's statistics, or None when it has none (an older checkpoint)."""
        entry, path = meta.get("ood"), Path(model_dir) / FILE
        if not entry or not path.is_file():
            if entry:
                _logger.warning("%s names OOD statistics but %s is missing: no OOD verdicts", model_dir, FILE)
            return None
        try:
            tensors = load_file(str(path))
            views = {name: ViewStats(tensors[f"{name}.mean"], tensors[f"{name}.precision"],
                                     tensors[f"{name}.val_scores"], float(v["threshold"]), int(v["train_images"]))
                     for name, v in entry["views"].items()}
            return cls(views, float(entry["quantile"]))
        except Exception as e:  # a truncated file, a missing key: the folder's statistics, not its weights
            raise UserError(f"{path} is corrupt ({' '.join(str(e).split())[:200]}); delete it and run "
                            f"`cxrgen model calibrate --model {model_dir} --data SPEC`") from None


def _mahalanobis(x: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    d = x - mean
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, precision.astype(np.float64), d), 0))
