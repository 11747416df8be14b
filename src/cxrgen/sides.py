"""Which side a finding is on, read from the frontal image, so that the draft can say it.

The classifier calls a finding, not its side, and the decoder reads side poorly: a draft chosen
for its findings alone names the wrong side more often than not. Here, per observation, a
multinomial logistic regression over left / right / bilateral reads the frontal view's encoder
tokens pooled over the image's left and right halves (mean and max of each). Its training labels
are the sides that the training reports state (the labeler's laterality of present or uncertain
mentions; both sides, or "bilateral", make bilateral). An observation with fewer than
`MIN_EXAMPLES` sided training reports, or only one side among them, gets no model. Reranking
(`cxrgen.inference`) then prefers, among drafts that state the calls, one that puts each called
finding on the predicted side.

Saved in the checkpoint folder as `sides.safetensors` (weights and biases per observation).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save

from cxrgen.io import atomic_open
from cxrgen.labeler import CONDITIONS, mentions

_logger = logging.getLogger(__name__)

FILE = "sides.safetensors"
SIDES = ("bilateral", "left", "right")
MIN_EXAMPLES = 20


def stated_sides(text: str) -> dict[str, str]:
    """Observation -> the side a text puts it on, over its present or uncertain mentions that name one."""
    found: dict[str, set[str]] = {}
    for m in mentions(text):
        if m.observation and m.status in (1, -1) and m.laterality:
            found.setdefault(m.observation, set()).add(m.laterality)
    return {obs: "bilateral" if len(s) > 1 else next(iter(s)) for obs, s in found.items()}


def side_features(frontal: torch.Tensor) -> torch.Tensor:
    """Frontal encoder tokens (B, N, C) of a square grid -> (B, 4C): mean and max over the image's left
    half, then over its right half."""
    b, n, c = frontal.shape
    side = math.isqrt(n)
    grid = frontal.float().reshape(b, side, side, c)
    halves = (grid[:, :, : -(-side // 2)], grid[:, :, side // 2:])  # an odd grid's middle column goes to both
    return torch.cat([part for h in halves for part in (h.mean((1, 2)), h.amax((1, 2)))], dim=1)


class SideModel:
    """observation -> (weights (3, D), bias (3,)) over `SIDES`."""

    def __init__(self, weights: dict[str, tuple[np.ndarray, np.ndarray]]):
        self.weights = weights

    @classmethod
    def fit(cls, features: torch.Tensor, reports: Sequence[str], C: float = 0.1) -> SideModel:
        """`features`: (N, D) `side_features` of the training studies, `reports` their reports."""
        from sklearn.linear_model import LogisticRegression

        features = features.numpy()
        sides = [stated_sides(r) for r in reports]
        weights = {}
        for obs in CONDITIONS:
            rows = [i for i, s in enumerate(sides) if obs in s]
            labels = [sides[i][obs] for i in rows]
            if len(rows) < MIN_EXAMPLES or len(set(labels)) < 2:
                continue
            clf = LogisticRegression(C=C, max_iter=2000).fit(features[rows], labels)
            w, b = np.zeros((len(SIDES), features.shape[1]), np.float32), np.full(len(SIDES), -1e4, np.float32)
            coef, bias = (clf.coef_, clf.intercept_) if len(clf.classes_) > 2 else \
                (np.stack([-clf.coef_[0], clf.coef_[0]]), np.array([-clf.intercept_[0], clf.intercept_[0]]))
            for k, side in enumerate(clf.classes_):  # sides never seen stay unreachable (bias -1e4)
                w[SIDES.index(side)], b[SIDES.index(side)] = coef[k], bias[k]
            weights[obs] = (w, b)
        _logger.info("side models for %d observations: %s", len(weights), ", ".join(weights) or "none")
        return cls(weights)

    def predict(self, features: torch.Tensor) -> list[dict[str, str]]:
        """(B, D) `side_features` -> per study, observation -> its most likely side. In torch, not numpy:
        numpy's BLAS threads would spin beside torch's and slow every draft by a sixth."""
        out = [{} for _ in range(len(features))]
        for obs, (w, b) in self.weights.items():
            scores = features.float() @ torch.from_numpy(w).T + torch.from_numpy(b)
            for row, k in zip(out, scores.argmax(1).tolist()):
                row[obs] = SIDES[k]
        return out

    def save(self, model_dir: str | Path) -> None:
        save_linear(Path(model_dir) / FILE, self.weights)

    @classmethod
    def load(cls, model_dir: str | Path) -> SideModel | None:
        """The folder's side models, or None when it has none (a checkpoint from before them)."""
        weights = load_linear(Path(model_dir) / FILE)
        return None if weights is None else cls(weights)


def save_linear(path: Path, weights: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """name -> (weight, bias) into one safetensors file (`name.weight`, `name.bias`)."""
    tensors = {f"{name}.{part}": np.ascontiguousarray(t) for name, wb in weights.items() for part, t in zip(("weight", "bias"), wb)}
    with atomic_open(path, "wb") as f:
        f.write(save(tensors))


def load_linear(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """What `save_linear` wrote, or None when there is no such file."""
    if not path.is_file():
        return None
    tensors = load_file(str(path))
    return {name: (tensors[f"{name}.weight"], tensors[f"{name}.bias"]) for name in sorted({k.rsplit(".", 1)[0] for k in tensors})}
