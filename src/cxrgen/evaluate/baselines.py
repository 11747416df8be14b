"""Trivial baselines that every model is printed beside.

On IU X-ray one constant report matches R2Gen on BLEU, METEOR and ROUGE-L, so a model's numbers
mean little without these. Each builder takes the training reports (raw text) and returns one
report per test study, as raw training text. Reports are grouped by their R2Gen-cleaned form, so
"The heart is normal." and "the heart is normal" count as the same report.
"""
from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from cxrgen.bank import ConstantBleu, ReportBank, finding_set
from cxrgen.evaluate.nlg import clean
from cxrgen.labeler import CONDITIONS, label_many

if TYPE_CHECKING:  # clinical imports pandas: seconds that `cxrgen --help` should not wait for
    from cxrgen.evaluate.clinical import LabelFn

_logger = logging.getLogger(__name__)

BASELINES = ("most-frequent", "best-constant", "label-oracle", "finding-oracle", "random-train")


def _templates(reports: Sequence[str]) -> tuple[Counter, dict[str, str]]:
    """Counts of cleaned reports (in first-seen order) and the first raw text of each."""
    cleaned = [clean(r) for r in reports]
    raw: dict[str, str] = {}
    for c, r in zip(cleaned, reports):
        raw.setdefault(c, r)
    return Counter(cleaned), raw


def most_frequent(train_reports: Sequence[str]) -> str:
    """The most frequent training report (ties: the one seen first)."""
    counts, raw = _templates(train_reports)
    return raw[counts.most_common(1)[0][0]]


def constant_bleu4(candidate: str, references: Sequence[str]) -> float:
    """Corpus BLEU-4 (pycocoevalcap's) of `candidate` predicted for every reference; cleaned text."""
    return float(ConstantBleu(references).bleu4(candidate))


def best_constant(train_reports: Sequence[str], min_count: int = 3) -> str:
    """The recurring training report with the highest corpus BLEU-4 against the whole training split.

    Candidates are the cleaned reports that occur at least `min_count` times (templates a constant
    system would plausibly adopt; 54 on IU X-ray); min_count=1 searches every distinct report.
    Scoring is exact pycocoevalcap BLEU-4 (see `cxrgen.bank.ConstantBleu`). Ties go to the more frequent report.
    """
    counts, raw = _templates(train_reports)
    candidates = [c for c, n in counts.items() if n >= min_count]
    if not candidates:
        _logger.warning("no training report occurs %d times; searching all %d distinct reports", min_count, len(counts))
        candidates = list(counts)
    scorer = ConstantBleu([clean(r) for r in train_reports])
    scores = {c: scorer.bleu4(c) for c in candidates}
    best = max(candidates, key=lambda c: (scores[c], counts[c]))
    _logger.info("best-constant: BLEU-4 %.4f on train among %d candidates", scores[best], len(candidates))
    return raw[best]


def label_oracle(train_reports: Sequence[str], test_reports: Sequence[str], label_fn: LabelFn = label_many) -> list[str]:
    """For each test study, the most frequent training report with the same CheXpert label set.

    It cheats on purpose: it reads the test reports' labels (1/0/-1/blank over the 14 conditions).
    Where no training report has exactly that label set, it takes the label set that differs in the
    fewest conditions (ties: the set shared by more training reports).
    """
    cleaned = [clean(r) for r in train_reports]
    _, raw = _templates(train_reports)
    key = lambda lab: tuple(lab.get(c) for c in CONDITIONS)
    groups: dict[tuple, Counter] = defaultdict(Counter)
    for c, lab in zip(cleaned, label_fn(list(train_reports))):
        groups[key(lab)][c] += 1
    group_keys = list(groups)
    sizes = np.array([sum(groups[k].values()) for k in group_keys])
    matrix = np.array([[np.nan if v is None else v for v in k] for k in group_keys], dtype=float)
    chosen: dict[tuple, str] = {}
    fallbacks = 0
    out = []
    for lab in label_fn(list(test_reports)):
        k = key(lab)
        if k not in chosen:
            if k not in groups:
                fallbacks += 1
                row = np.array([np.nan if v is None else v for v in k], dtype=float)
                differ = ~((matrix == row) | (np.isnan(matrix) & np.isnan(row)))
                k_near = group_keys[int(np.lexsort((-sizes, differ.sum(1)))[0])]
            else:
                k_near = k
            chosen[k] = raw[groups[k_near].most_common(1)[0][0]]
        out.append(chosen[k])
    _logger.info("label-oracle: %d of %d distinct test label sets had no exact training match", fallbacks, len(chosen))
    return out


def finding_oracle(train_reports: Sequence[str], test_reports: Sequence[str], label_fn: LabelFn = label_many) -> list[str]:
    """A perfect image reader on phantom data: for each test study, the consensus training report of its finding set.

    Phantom images carry a report's positive and uncertain findings, not its wording nor which
    normal statements it makes, so "one good report per finding set" is the most any image reader
    can write; this is that ceiling. It cheats on purpose: it reads the test reports' findings.
    The consensus report of a set is the first of its `ReportBank` entry: the set's training report
    with the highest BLEU-4 against the set's other training reports. Where no training report has
    the exact set, it takes the nearest set in the bank.
    """
    bank = ReportBank.build(train_reports, label_fn(list(train_reports)), per_set=1)
    sets = [finding_set(lab) for lab in label_fn(list(test_reports))]
    _logger.info("finding-oracle: %d of %d test studies had no training report with their exact finding set",
                 sum(s not in bank.sets for s in sets), len(sets))
    return [bank.candidates(s)[0] for s in sets]


def random_train(train_reports: Sequence[str], n: int, seed: int = 0) -> list[str]:
    """n training reports drawn uniformly with replacement from a seeded generator."""
    picks = np.random.default_rng(seed).integers(0, len(train_reports), size=n)
    return [train_reports[i] for i in picks]


def build_baseline(name: str, train_reports: Sequence[str], test_reports: Sequence[str], seed: int = 0,
                   min_count: int = 3, label_fn: LabelFn = label_many) -> list[str]:
    """One report per test study from baseline `name` (one of BASELINES)."""
    if not train_reports:
        raise ValueError("baselines need training reports; the training split is empty")
    n = len(test_reports)
    if name == "most-frequent":
        return [most_frequent(train_reports)] * n
    if name == "best-constant":
        return [best_constant(train_reports, min_count)] * n
    if name == "label-oracle":
        return label_oracle(train_reports, test_reports, label_fn)
    if name == "finding-oracle":
        return finding_oracle(train_reports, test_reports, label_fn)
    if name == "random-train":
        return random_train(train_reports, n, seed)
    raise ValueError(f"unknown baseline {name!r}; choose one of: {', '.join(BASELINES)}")
