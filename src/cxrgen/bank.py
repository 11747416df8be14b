"""The report bank: for each finding set, the training reports that state exactly that set, most typical first.

A finding set is the positive or uncertain CheXpert observations of a report. The finding-oracle
keys on what an image can show (No Finding left out); a model's bank keys on all 14, No Finding
included, as the classifier calls them: a report that mentions a finding outside the 14, such as
degenerative changes of the spine, has no No Finding, and it should not answer a call of No
Finding. Within a set, reports are ordered by consensus, their BLEU-4 against the set's other
training reports, so the first is the set's most typical wording. Two users:

- the finding-oracle baseline writes, for each test study, the first report of its reference's set;
- inference offers the decoder the reports of the set that the classifier calls, beside its own
  beams, and keeps the candidate that states the called findings (see `cxrgen.inference`).

Any dataset with reports works: the sets come from the labeler, not from the layout. The bank is
saved in the checkpoint folder as `bank.json` (up to 32 reports a set; under 1 MB for IU X-ray).
"""
from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pycocoevalcap.bleu.bleu_scorer import precook

from cxrgen.data.reports import PLACEHOLDER, split_sentences
from cxrgen.errors import UserError
from cxrgen.evaluate.nlg import bleu_from_counts, clean
from cxrgen.io import atomic_write_text
from cxrgen.labeler import CONDITIONS, extra_findings, label_many, mentions

if TYPE_CHECKING:  # the tokenizer imports torch, which `cxrgen baseline --help` should not wait for
    from cxrgen.data.tokenizer import ReportTokenizer

_logger = logging.getLogger(__name__)

FILE = "bank.json"


def finding_set(labels, no_finding: bool = False) -> frozenset[str]:
    """The positive or uncertain observations of a report. Without `no_finding`, what an image shows:
    No Finding left out, as it follows from the rest."""
    return frozenset(c for c in CONDITIONS if (no_finding or c != "No Finding") and labels.get(c) in (1, -1))


class ConstantBleu:
    """Corpus BLEU-4 (pycocoevalcap's) of one candidate predicted for every reference, without running
    the scorer over every reference.

    For each reference n-gram the counts across references are kept as an array; a candidate's
    clipped matches are then sum(min(count_in_candidate, counts)) per n-gram, exactly the sum
    `BleuScorer` would build one reference at a time. Texts are R2Gen-cleaned already.
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


def consensus_order(reports: Sequence[str]) -> list[str]:
    """The distinct reports (raw text, first spelling of each cleaned form), by BLEU-4 against the
    others (leave-one-out, duplicates counted), best first; ties keep the first-seen order."""
    cleaned = [clean(r) for r in reports]
    raw: dict[str, str] = {}
    for c, r in zip(cleaned, reports):
        raw.setdefault(c, r)
    if len(cleaned) == 1:
        return [reports[0]]
    scorer = ConstantBleu(cleaned)
    order = sorted(raw, key=lambda c: -scorer.bleu4(c, leave_out=True))  # stable: ties keep first-seen order
    return [raw[c] for c in order]


def statable(calls: frozenset[str]) -> frozenset[str]:
    """What one report can state of a set of calls: No Finding cannot stand beside one of the 13
    pathologies (CheXpert's rule; Support Devices aside), so there the pathologies win."""
    return calls - {"No Finding"} if calls - {"No Finding", "Support Devices"} else calls


class ReportBank:
    """Finding set -> up to `per_set` training reports, most typical first; and, per observation, the most
    frequent training sentence that states it alone (to write a set the bank lacks, see `plan`)."""

    def __init__(self, sets: dict[frozenset[str], list[str]], sizes: dict[frozenset[str], int], no_finding: bool,
                 sentences: dict[str, str] | None = None):
        if not sets:
            raise UserError("the report bank is empty: no training report was kept")
        self.sets, self.sizes, self.no_finding = sets, sizes, no_finding
        self.sentences = sentences or {}

    @classmethod
    def build(cls, reports: Sequence[str], labels: Iterable[dict], per_set: int = 8,
              keep: Callable[[str], bool] | None = None, no_finding: bool = False,
              with_sentences: bool = False) -> ReportBank:
        """Group `reports` by the `finding_set(labels, no_finding)`; `keep(text)` filters candidates (the
        consensus order is computed over all of a set's reports, so the filter never changes it).
        `with_sentences`: also collect each observation's most frequent kept sentence that states it alone."""
        groups: dict[frozenset[str], list[str]] = defaultdict(list)
        for text, lab in zip(reports, labels):
            groups[finding_set(lab, no_finding)].append(text)
        sets, sizes = {}, {}
        for key, members in groups.items():
            kept = [r for r in consensus_order(members) if keep is None or keep(r)][:per_set]
            if kept:
                sets[key], sizes[key] = kept, len(members)
        _logger.info("report bank: %d finding sets from %d reports (%d sets had no report kept)",
                     len(sets), len(reports), len(groups) - len(sets))
        return cls(sets, sizes, no_finding, _finding_sentences(reports, keep) if with_sentences else None)

    def plan(self, findings: frozenset[str], fits: Callable[[str], bool] | None = None,
             extras: frozenset[str] = frozenset(), read: frozenset[str] = frozenset()) -> list[str]:
        """Reports that state `findings`: the set's own; where the bank lacks the set, its nearest set's
        reports with, for each finding they miss, the sentences that deny it removed and a typical
        sentence stating it added. Findings outside the 14 (`cxrgen.extras`) likewise: of those the image
        was `read` for, a sentence that states one not in `extras` (and none of `findings`) goes, and a
        typical sentence is added for each of `extras` not stated. Where such a report does not `fit`
        (the decoder's positions), its sentences that state none of `findings` or `extras` go, last
        first, until it does."""
        near = self.nearest(findings)
        missing = [c for c in CONDITIONS if c in findings - near and c in self.sentences]
        if not missing and not read:
            return self.sets[near]
        out = []
        for report in self.sets[near]:
            sentences = split_sentences(report)
            kept = []
            for sentence, lab in zip(sentences, label_many(sentences)):
                states = finding_set(lab, no_finding=True) & findings
                other = extra_findings(sentence) & read
                if any(lab[c] == 0 for c in missing) or (other - extras and not states):
                    continue
                kept.append((sentence, states | (other & extras)))
            said = frozenset().union(*(states for _, states in kept))
            kept += [(self.sentences[c], {c}) for c in [*missing, *sorted(extras - said)] if c in self.sentences]
            text = " ".join(s for s, _ in kept)
            while fits is not None and not fits(text) and any(not states for _, states in kept):
                last = max(i for i, (_, states) in enumerate(kept) if not states)
                del kept[last]
                text = " ".join(s for s, _ in kept)
            out.append(text)
        return list(dict.fromkeys(out))  # edits can make two reports one

    def nearest(self, findings: frozenset[str]) -> frozenset[str]:
        """`findings` itself when the bank has it, else the set that differs in the fewest observations
        (ties: the set shared by more training reports, then the first in sorted order)."""
        if findings in self.sets:
            return findings
        return min(self.sets, key=lambda g: (len(g ^ findings), -self.sizes[g], sorted(g)))

    def candidates(self, findings: frozenset[str]) -> list[str]:
        """The reports of `findings`' nearest set, most typical first."""
        return self.sets[self.nearest(findings)]

    def save(self, directory: str | Path) -> None:
        rows = [{"findings": sorted(k), "reports": v, "size": self.sizes[k]}
                for k, v in sorted(self.sets.items(), key=lambda kv: (len(kv[0]), sorted(kv[0])))]
        atomic_write_text(Path(directory) / FILE, json.dumps({"no_finding": self.no_finding, "sets": rows,
                                                              "sentences": self.sentences}, indent=1))

    @classmethod
    def load(cls, directory: str | Path) -> ReportBank | None:
        """The bank of a checkpoint folder; None when it has none (a checkpoint from before banks)."""
        path = Path(directory) / FILE
        if not path.exists():
            return None
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            rows = saved["sets"]
            return cls({frozenset(r["findings"]): list(r["reports"]) for r in rows},
                       {frozenset(r["findings"]): int(r["size"]) for r in rows}, bool(saved["no_finding"]),
                       dict(saved.get("sentences", {})))
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path} is corrupt ({e}); rebuild it with `cxrgen model calibrate` or retrain") from None


def _finding_sentences(reports: Sequence[str], keep: Callable[[str], bool] | None) -> dict[str, str]:
    """Per observation (No Finding aside), the most frequent sentence (by R2Gen-cleaned form; the first
    spelling kept) that states it, present, and no other observation; per finding outside the 14
    (`extra_findings`), the most frequent that states it, present, and nothing else."""
    sentences = [s for r in reports for s in split_sentences(r) if keep is None or keep(s)]
    counts: dict[str, Counter] = defaultdict(Counter)
    spelling: dict[str, str] = {}
    for sentence, lab in zip(sentences, label_many(sentences)):
        said, extra = finding_set(lab), extra_findings(sentence)
        if len(said) == 1 and lab[next(iter(said))] == 1:
            finding = next(iter(said))
        elif not said and len(extra) == 1 and all(m.status == 1 for m in mentions(sentence) if m.observation is None):
            finding = next(iter(extra))
        else:
            continue
        cleaned = clean(sentence)
        spelling.setdefault(cleaned, sentence)
        counts[finding][cleaned] += 1
    return {f: spelling[counts[f].most_common(1)[0][0]] for f in sorted(counts)}


def add_bank(model_dir: str | Path, reports: Sequence[str], tokenizer: ReportTokenizer, max_len: int) -> ReportBank | None:
    """Write `bank_for_model` into a checkpoint folder; None (warned) when no training report qualifies, as
    with a tiny vocabulary: the model is still good to use, reranking then chooses among its own beams."""
    try:
        bank = bank_for_model(reports, tokenizer, max_len)
    except UserError as e:
        _logger.warning("no report bank: %s; reranking chooses among the decoder's own beams", e)
        return None
    bank.save(model_dir)
    return bank


def bank_for_model(reports: Sequence[str], tokenizer: ReportTokenizer, max_len: int, per_set: int = 32) -> ReportBank:
    """The bank a checkpoint keeps, keyed on all 14 observations as the classifier calls them: training reports
    the decoder can score and a reader wants to see, that is
    without [UNK] (every word piece in the vocabulary), within `max_len` tokens, and without a
    de-identification placeholder such as IU's "XXXX"."""
    def keep(text: str) -> bool:
        ids = tokenizer.encode(text)
        return len(ids) <= max_len and tokenizer.unk_id not in ids and not PLACEHOLDER.search(text)

    return ReportBank.build(reports, label_many(list(reports)), per_set, keep, no_finding=True, with_sentences=True)
