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
from pycocoevalcap.bleu.bleu_scorer import precook

from cxrgen.evaluate.nlg import bleu_from_counts, clean
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
    return float(_ConstantBleu(references).bleu4(candidate))


class _ConstantBleu:
    """Corpus BLEU of a constant prediction without running the scorer over every reference.

    For each reference n-gram the counts across references are kept as an array; a candidate's
    clipped matches are then sum(min(count_in_candidate, counts)) per n-gram, exactly the sum
    `BleuScorer` would build one reference at a time.
    """

    def __init__(self, references: Sequence[str]) -> None:
        columns: dict[tuple, list[int]] = defaultdict(list)
        self.ref_len = 0
        for ref in references:
            length, counts = precook(ref, 4)
            self.ref_len += length
            for gram, k in counts.items():
                columns[gram].append(k)
        self.columns = {g: np.array(v) for g, v in columns.items()}
        self.n = len(references)

    def bleu4(self, candidate: str, leave_out: bool = False) -> float:
        """`leave_out`: the candidate is one of the references; score it against the others only."""
        length, counts = precook(candidate, 4)
        correct = np.zeros(4)
        for gram, k in counts.items():
            col = self.columns.get(gram)
            if col is not None:
                correct[len(gram) - 1] += np.minimum(col, k).sum() - (k if leave_out else 0)
        n, ref_len = (self.n - 1, self.ref_len - length) if leave_out else (self.n, self.ref_len)
        guess = [n * max(0, length - k) for k in range(4)]
        stats = np.array([*correct, *guess, n * length, ref_len], dtype=float)
        return float(bleu_from_counts(stats)[3])


def best_constant(train_reports: Sequence[str], min_count: int = 3) -> str:
    """The recurring training report with the highest corpus BLEU-4 against the whole training split.

    Candidates are the cleaned reports that occur at least `min_count` times (templates a constant
    system would plausibly adopt; 54 on IU X-ray); min_count=1 searches every distinct report.
    Scoring is exact pycocoevalcap BLEU-4 (see `_ConstantBleu`). Ties go to the more frequent report.
    """
    counts, raw = _templates(train_reports)
    candidates = [c for c, n in counts.items() if n >= min_count]
    if not candidates:
        _logger.warning("no training report occurs %d times; searching all %d distinct reports", min_count, len(counts))
        candidates = list(counts)
    scorer = _ConstantBleu([clean(r) for r in train_reports])
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


def finding_set(labels) -> frozenset[str]:
    """What a phantom image shows: the positive or uncertain observations, No Finding excluded."""
    return frozenset(c for c in CONDITIONS if c != "No Finding" and labels.get(c) in (1, -1))


def finding_oracle(train_reports: Sequence[str], test_reports: Sequence[str], label_fn: LabelFn = label_many) -> list[str]:
    """A perfect image reader on phantom data: for each test study, the consensus training report of its finding set.

    Phantom images carry a report's positive and uncertain findings, not its wording nor which
    normal statements it makes, so "one good report per finding set" is the most any image reader
    can write; this is that ceiling. It cheats on purpose: it reads the test reports' findings.
    The consensus report of a set is the set's training report with the highest BLEU-4 against the
    set's other training reports. Where no training report has the exact set, it takes the set that
    differs in the fewest observations (ties: the set shared by more training reports).
    """
    cleaned = [clean(r) for r in train_reports]
    _, raw = _templates(train_reports)
    groups: dict[frozenset, list[str]] = defaultdict(list)
    for c, lab in zip(cleaned, label_fn(list(train_reports))):
        groups[finding_set(lab)].append(c)
    group_keys = list(groups)
    consensus: dict[frozenset, str] = {}
    fallbacks = 0
    out = []
    for lab in label_fn(list(test_reports)):
        k = finding_set(lab)
        if k not in groups:
            fallbacks += 1
            k = min(group_keys, key=lambda g: (len(g ^ k), -len(groups[g])))
        if k not in consensus:
            members = groups[k]
            if len(members) == 1:
                consensus[k] = members[0]
            else:
                scorer = _ConstantBleu(members)
                consensus[k] = max(dict.fromkeys(members), key=lambda c: scorer.bleu4(c, leave_out=True))
        out.append(raw[consensus[k]])
    _logger.info("finding-oracle: %d of %d test studies had no training report with their exact finding set",
                 fallbacks, len(out))
    return out


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
