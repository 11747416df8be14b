"""NLG metrics through pycocoevalcap, with R2Gen's conventions, kept as per-sample statistics.

R2Gen (`modules/metrics.py:compute_scores`) scores one reference per study with pycocoevalcap's
`Bleu(4)` (cumulative BLEU, "closest" reference length), `Meteor()` (METEOR-1.5 jar, `-l en -norm`),
`Rouge()` (ROUGE-L F, beta 1.2) and, in its successors, `Cider()`. Both sides are cleaned with
`clean_report_iu_xray` (lower case, punctuation dropped, sentences joined by " . "), and no PTB
tokenizer is run: the scorers split on whitespace.

Every corpus value here is a cheap function of per-sample statistics, so a bootstrap resample
(a weight vector over samples) never re-runs a scorer:
- BLEU: pycocoevalcap's own per-sample n-gram counts (`BleuScorer.ctest`: clipped matches, guesses,
  hypothesis and reference lengths), summed and combined exactly as `BleuScorer.compute_score` does.
- METEOR: the jar's per-sample statistics line; the jar's corpus score is its scorer applied to the
  summed statistics, which `meteor_from_stats` reproduces (a test pins both to the jar's output).
- ROUGE-L and CIDEr: means of pycocoevalcap's per-sample scores (CIDEr's IDF stays the one computed
  on the full reference set).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from pycocoevalcap.bleu.bleu_scorer import BleuScorer
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge

from cxrgen.data.reports import clean_report_r2gen

_logger = logging.getLogger(__name__)

NLG_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")

# METEOR-1.5's parameters for `-l en` (task "default"): alpha, beta, gamma, delta and the weights of
# its four matching stages (exact, stem, synonym, paraphrase).
_METEOR_ALPHA, _METEOR_BETA, _METEOR_GAMMA, _METEOR_DELTA = 0.85, 0.20, 0.60, 0.75
_METEOR_WEIGHTS = np.array([1.0, 0.6, 0.8, 0.6])
# pycocoevalcap's BLEU smoothing constants (bleu_scorer.py), so our sums give its numbers exactly.
_TINY, _SMALL = 1e-15, 1e-9


def clean(text: str) -> str:
    """R2Gen's IU X-ray cleaning, applied to references and predictions alike."""
    return clean_report_r2gen(text or "")


def cider(predictions: list[str], references: list[str], cleaned: bool = False) -> np.ndarray:
    """Per-sample CIDEr-D (pycocoevalcap), document frequencies from these references; the corpus
    CIDEr is the mean. The one CIDEr: evaluation, checkpoint selection and the SCST reward use it.
    Texts are cleaned as R2Gen cleans them unless `cleaned` says they already are."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        return np.zeros(0)
    if not cleaned:
        predictions, references = [clean(p) for p in predictions], [clean(r) for r in references]
    _, scores = Cider().compute_score({i: [r] for i, r in enumerate(references)},
                                      {i: [p] for i, p in enumerate(predictions)})
    return np.asarray(scores, dtype=float)


@dataclass
class NLGSamples:
    """Per-sample statistics of one system against its references (N samples, fixed order).

    bleu_counts: (N, 10) correct[1..4], guess[1..4], hypothesis length, reference length.
    meteor_stats: (N, 23) the METEOR jar's statistics line for each pair.
    rouge, cider: (N,) pycocoevalcap's per-sample scores.
    bleu_sentence: (N, 4) pycocoevalcap's per-sample (sentence) BLEU-1..4, for per_sample.csv only.
    """

    bleu_counts: np.ndarray
    meteor_stats: np.ndarray
    rouge: np.ndarray
    cider: np.ndarray
    bleu_sentence: np.ndarray

    def corpus(self, weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Corpus metrics for one or many weightings of the samples.

        weights: (N,) or (B, N) sample multiplicities (a bootstrap resample); None = each sample once.
        Returns metric -> value, shaped () or (B,).
        """
        w = np.ones(len(self.rouge)) if weights is None else np.asarray(weights, dtype=float)
        n = w.sum(axis=-1)
        bleu = bleu_from_counts(w @ self.bleu_counts)
        out = {f"BLEU-{k + 1}": bleu[..., k] for k in range(4)}
        out["METEOR"] = meteor_from_stats(w @ self.meteor_stats)
        out["ROUGE-L"] = (w @ self.rouge) / n
        out["CIDEr"] = (w @ self.cider) / n
        return out


def bleu_from_counts(counts: np.ndarray) -> np.ndarray:
    """Cumulative BLEU-1..4 from summed counts (..., 10), as `BleuScorer.compute_score` combines them."""
    correct, guess = counts[..., 0:4], counts[..., 4:8]
    testlen, reflen = counts[..., 8], counts[..., 9]
    precisions = (correct + _TINY) / (guess + _SMALL)
    bleus = np.cumprod(precisions, axis=-1) ** (1.0 / np.arange(1, 5))
    ratio = (testlen + _TINY) / (reflen + _SMALL)
    with np.errstate(divide="ignore", over="ignore"):
        brevity = np.where(ratio < 1, np.exp(1 - 1 / ratio), 1.0)
    return bleus * brevity[..., None]


def meteor_from_stats(stats: np.ndarray) -> np.ndarray:
    """METEOR-1.5 score from (summed) statistics lines (..., 23), as the jar's scorer computes it."""
    s = np.asarray(stats, dtype=float)
    test_len, ref_len, test_fn, ref_fn = s[..., 0], s[..., 1], s[..., 2], s[..., 3]
    stages = s[..., 4:20].reshape(*s.shape[:-1], 4, 4)  # (..., stage, [test content, ref content, test fn, ref fn])
    chunks, test_words, ref_words = s[..., 20], s[..., 21], s[..., 22]
    d = _METEOR_DELTA
    with np.errstate(divide="ignore", invalid="ignore"):
        test_matched = (_METEOR_WEIGHTS * (d * stages[..., 0] + (1 - d) * stages[..., 2])).sum(-1)
        ref_matched = (_METEOR_WEIGHTS * (d * stages[..., 1] + (1 - d) * stages[..., 3])).sum(-1)
        precision = test_matched / (d * (test_len - test_fn) + (1 - d) * test_fn)
        recall = ref_matched / (d * (ref_len - ref_fn) + (1 - d) * ref_fn)
        fmean = 1.0 / ((1 - _METEOR_ALPHA) / precision + _METEOR_ALPHA / recall)
        identical = (
            (stages[..., [0, 2]].sum((-1, -2)) == test_len)
            & (stages[..., [1, 3]].sum((-1, -2)) == ref_len)
            & (chunks == 1)
        )
        frag = np.where(identical, 0.0, chunks / ((test_words + ref_words) / 2))
        score = fmean * (1 - _METEOR_GAMMA * frag**_METEOR_BETA)
    return np.maximum(np.nan_to_num(score, nan=0.0), 0.0)


class NLGScorer:
    """Scores systems against references with one METEOR JVM for its whole life.

    The JVM takes ~15 s of CPU to load its paraphrase table, so it is started in the constructor (it loads
    while Python computes everything else) and reused for every system. Use as a context manager.
    """

    def __init__(self) -> None:
        self._meteor = Meteor()

    def __enter__(self) -> NLGScorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the JVM now rather than at garbage collection."""
        if self._meteor is not None:
            proc = self._meteor.meteor_p
            proc.stdin.close()
            proc.kill()
            proc.wait()
            self._meteor = None

    def score(self, predictions: list[str], references: list[str]) -> NLGSamples:
        """Per-sample statistics; both lists are raw text in the same order (cleaned here)."""
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
        if not references:
            raise ValueError("nothing to score: no references")
        hyps = [clean(p) for p in predictions]
        refs = [clean(r) for r in references]
        bleu = BleuScorer(n=4)
        for h, r in zip(hyps, refs):
            bleu += (h, [r])
        _, sentence = bleu.compute_score(option="closest", verbose=0)
        counts = np.array([[*c["correct"], *c["guess"], c["testlen"], c["reflen"][0]] for c in bleu.ctest], dtype=float)
        gts = {i: [r] for i, r in enumerate(refs)}
        res = {i: [h] for i, h in enumerate(hyps)}
        _, rouge = Rouge().compute_score(gts, res)
        return NLGSamples(
            bleu_counts=counts,
            meteor_stats=self._meteor_stats(hyps, refs),
            rouge=np.asarray(rouge, dtype=float),
            cider=cider(hyps, refs, cleaned=True),
            bleu_sentence=np.array(sentence, dtype=float).T,
        )

    def _meteor_stats(self, hyps: list[str], refs: list[str]) -> np.ndarray:
        """The jar's statistics line per pair; each distinct pair is aligned once (constant
        baselines and template reports repeat a lot)."""
        if self._meteor is None:
            raise RuntimeError("NLGScorer is closed")
        cache: dict[tuple[str, str], np.ndarray] = {}
        rows = []
        for h, r in zip(hyps, refs):
            if (h, r) not in cache:
                # `_stat` is the SCORE half of `Meteor.compute_score`; its EVAL half is meteor_from_stats.
                cache[h, r] = np.array(self._meteor._stat(h, [r]).split(), dtype=float)
            rows.append(cache[h, r])
        _logger.debug("METEOR aligned %d distinct pairs for %d samples", len(cache), len(rows))
        return np.stack(rows)
