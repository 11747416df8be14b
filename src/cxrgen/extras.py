"""Findings outside CheXpert's 14, read from the images, so that the draft can state them.

The classifier calls CheXpert's 14 observations, but reports also state findings outside them:
degenerative changes of the spine, granulomas, hyperinflation, aortic atherosclerosis, a
sternotomy. The labeler reads these as fine-grained mentions without an observation. A draft
chosen for its 14 observations alone states them at random: it omits the ones the image shows and
invents others. Here, per such finding that at least `MIN_EXAMPLES` training reports state (present
or uncertain), a logistic regression reads `study_features`: the frontal view's tokens pooled over
its left and right halves (as for sides) and the lateral view's pooled over the whole image (the
spine and the retrosternal space show there). A finding is called when its probability reaches
one half; where the classifier calls none of the 14, not even No Finding, the likeliest one is
called (the labels withhold No Finding for a finding outside the 14, so that is what the
classifier then reads). Reranking (`cxrgen.inference`) then prefers the draft that states the
called ones and no others, and the report bank (`cxrgen.bank.ReportBank.plan`) offers drafts
edited to do so.

Any dataset with reports works: the findings come from the labeler, not from the layout. Saved in
the checkpoint folder as `extras.safetensors` (weights and bias per finding).
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cxrgen.labeler import extra_findings
from cxrgen.sides import load_linear, save_linear, side_features

_logger = logging.getLogger(__name__)

FILE = "extras.safetensors"
MIN_EXAMPLES = 20


def study_features(tokens: torch.Tensor) -> torch.Tensor:
    """Encoder tokens (B, 2, N, C) -> (B, 6C): `side_features` of the frontal view, then the lateral's mean
    and max over all its tokens (zeros for an absent lateral, whose tokens are zeros)."""
    lateral = tokens[:, 1].float()
    return torch.cat([side_features(tokens[:, 0]), lateral.mean(1), lateral.amax(1)], dim=1)


class ExtraFindings:
    """finding -> (weights (D,), bias ()) of a logistic regression over `study_features`."""

    def __init__(self, weights: dict[str, tuple[np.ndarray, np.ndarray]]):
        self.weights = weights

    @property
    def findings(self) -> frozenset[str]:
        return frozenset(self.weights)

    @classmethod
    def fit(cls, features: torch.Tensor, reports: Sequence[str], C: float = 0.01) -> ExtraFindings:
        """`features`: (N, D) `study_features` of the training studies, `reports` their reports."""
        from sklearn.linear_model import LogisticRegression

        x = features.numpy()
        stated = [extra_findings(r) for r in reports]
        counts = Counter(f for s in stated for f in s)
        weights = {}
        for finding in sorted(f for f, n in counts.items() if n >= MIN_EXAMPLES and n < len(reports)):
            clf = LogisticRegression(C=C, max_iter=3000).fit(x, [finding in s for s in stated])
            weights[finding] = (clf.coef_[0].astype(np.float32), clf.intercept_.astype(np.float32))
        _logger.info("models of findings outside the 14: %s", ", ".join(weights) or "none")
        return cls(weights)

    def probabilities(self, features: torch.Tensor) -> list[dict[str, float]]:
        """(B, D) `study_features` -> per study, finding -> probability. In torch, not numpy (see `cxrgen.sides`)."""
        out = [{} for _ in range(len(features))]
        for finding, (w, b) in self.weights.items():
            p = torch.sigmoid(features.float() @ torch.from_numpy(w) + torch.from_numpy(b))
            for row, value in zip(out, p.tolist()):
                row[finding] = value
        return out

    def auroc(self, features: torch.Tensor, reports: Sequence[str]) -> dict[str, tuple[float, int]]:
        """finding -> (AUROC, positives) on held-out studies, for the findings they state and do not all state."""
        from sklearn.metrics import roc_auc_score

        stated = [extra_findings(r) for r in reports]
        probs = self.probabilities(features)
        out = {}
        for finding in self.weights:
            truth = [finding in s for s in stated]
            if 0 < sum(truth) < len(truth):
                out[finding] = (float(roc_auc_score(truth, [p[finding] for p in probs])), sum(truth))
        return out

    @staticmethod
    def calls(probabilities: dict[str, float], abnormal: bool = False) -> frozenset[str]:
        """The findings at probability 0.5 or more; with `abnormal` (the classifier calls none of the 14,
        not even No Finding, so it reads something outside them), at least the likeliest one."""
        called = frozenset(f for f, p in probabilities.items() if p >= 0.5)
        return called or frozenset([max(probabilities, key=probabilities.get)] if abnormal and probabilities else [])

    def save(self, model_dir: str | Path) -> None:
        save_linear(Path(model_dir) / FILE, self.weights)

    @classmethod
    def load(cls, model_dir: str | Path) -> ExtraFindings | None:
        """The folder's models, or None when it has none (a checkpoint from before them)."""
        weights = load_linear(Path(model_dir) / FILE)
        return None if weights is None else cls(weights)
