"""Clinical efficacy: CheXpert-label precision, recall and F1 of generated reports against references.

As in R2Gen's successors (`compute_ce`): both texts are labelled, a label counts as positive only
when it is 1 (negative, uncertain and not-mentioned are all 0), and precision/recall/F1 are taken
micro (pooled counts) and macro (mean of per-class values, 0 where a class's denominator is 0, like
scikit-learn's `zero_division=0`). Reported over all 14 observations ("CE-") and over the 5 common
findings ("CE5-"). Everything is computed from per-sample TP/FP/FN counts, so a bootstrap resample
is one matrix product.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from cxrgen.labeler import CONDITIONS, label_many

COMMON5 = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
_GROUPS = {"CE": CONDITIONS, "CE5": COMMON5}
CE_METRICS = tuple(f"{g}-{avg}-{m}" for g in _GROUPS for avg in ("micro", "macro") for m in ("P", "R", "F1"))

LabelFn = Callable[[list[str]], list[Mapping[str, int | None]]]


def positives(labels: Sequence[Mapping[str, int | None]]) -> np.ndarray:
    """(N, 14) booleans: label == 1 for each CheXpert condition."""
    return np.array([[lab.get(c) == 1 for c in CONDITIONS] for lab in labels], dtype=bool).reshape(-1, len(CONDITIONS))


def label_texts(texts: Sequence[str], label_fn: LabelFn = label_many) -> np.ndarray:
    """Positive-label matrix of raw texts, labelling each distinct text once (baselines repeat a lot)."""
    distinct = list(dict.fromkeys(texts))
    by_text = dict(zip(distinct, positives(label_fn(distinct))))
    return np.stack([by_text[t] for t in texts]) if texts else np.zeros((0, len(CONDITIONS)), bool)


def ce_counts(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(N, 14, 3) per-sample true positives, false positives and false negatives."""
    return np.stack([pred & ref, pred & ~ref, ~pred & ref], axis=-1).astype(float)


def sample_f1(predictions: Sequence[str], references: Sequence[str], label_fn: LabelFn = label_many) -> np.ndarray:
    """(N,) F1 of each prediction's positive findings against its reference's (1 when both have none):
    the per-study clinical score, e.g. an SCST reward."""
    tp, fp, fn = ce_counts(label_texts(predictions, label_fn), label_texts(references, label_fn)).sum(1).T
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(tp + fp + fn == 0, 1.0, 2 * tp / (2 * tp + fp + fn))


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.nan_to_num(tp / (tp + fp))
        r = np.nan_to_num(tp / (tp + fn))
        f = np.nan_to_num(2 * p * r / (p + r))
    return p, r, f


def ce_metrics(summed: np.ndarray) -> dict[str, np.ndarray]:
    """CE metrics from counts summed over samples: (..., 14, 3) -> metric -> value shaped (...)."""
    out: dict[str, np.ndarray] = {}
    for group, names in _GROUPS.items():
        c = summed[..., [CONDITIONS.index(n) for n in names], :]
        tp, fp, fn = c[..., 0], c[..., 1], c[..., 2]
        micro = _prf(tp.sum(-1), fp.sum(-1), fn.sum(-1))
        macro = [x.mean(-1) for x in _prf(tp, fp, fn)]
        for avg, values in (("micro", micro), ("macro", macro)):
            for name, v in zip(("P", "R", "F1"), values):
                out[f"{group}-{avg}-{name}"] = v
    return out


def draft_agreement(summed: np.ndarray, called: np.ndarray) -> np.ndarray:
    """How well drafts state what the classifier calls: macro-F1 between the labeler's positives of
    each draft and the classifier's calls, over the observations in `called` ((14,) bool, those
    called at least once). `summed`: (..., 14, 3) counts of `ce_counts(draft positives, calls)`."""
    _, _, f1 = _prf(summed[..., 0], summed[..., 1], summed[..., 2])
    return f1[..., called].mean(-1) if called.any() else np.zeros(summed.shape[:-2])


def per_class_table(counts: np.ndarray) -> pd.DataFrame:
    """Per-condition precision, recall, F1 and support (reference positives) from (N, 14, 3) counts."""
    tp, fp, fn = counts.sum(0).T
    p, r, f = _prf(tp, fp, fn)
    return pd.DataFrame(
        {"precision": p, "recall": r, "f1": f, "support": (tp + fn).astype(int), "predicted": (tp + fp).astype(int)},
        index=pd.Index(CONDITIONS, name="condition"),
    )
