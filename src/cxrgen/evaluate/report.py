"""The evaluation core: predictions + references in, metrics with bootstrap CIs and p-values out.

`evaluate_systems({name: {id: report}}, {id: reference})` knows nothing about datasets or files;
the CLI (`cxrgen eval`) resolves those. One METEOR JVM and one set of bootstrap resamples serve
every system, so the comparisons are paired.
"""
from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cxrgen.io import atomic_open, atomic_write_text
from cxrgen.errors import UserError
from cxrgen.evaluate.bootstrap import paired_p_value, percentile_ci, resample_weights
from cxrgen.evaluate.clinical import CE_METRICS, LabelFn, ce_counts, ce_metrics, draft_agreement, label_texts, per_class_table
from cxrgen.evaluate.nlg import NLG_METRICS, NLGSamples, NLGScorer, meteor_from_stats
from cxrgen.evaluate.truth import TRUTH_METRICS, per_kind_table, truth_counts, truth_kinds, truth_metrics
from cxrgen.labeler import CONDITIONS, label_many

METRICS = NLG_METRICS + CE_METRICS
# The columns of the headline table and chart; the full CE set is in its own table.
HEADLINE = NLG_METRICS + ("CE-micro-F1", "CE-macro-F1", "CE5-micro-F1", "CE5-macro-F1")
P_VALUE_METRICS = ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "CE-micro-F1", "CE-macro-F1")


@dataclass
class SystemSamples:
    """Everything about one system that its metrics are a function of, per study."""

    nlg: NLGSamples
    ce: np.ndarray  # (N, 14, 3) TP / FP / FN per condition
    truth: np.ndarray | None = None  # (N, kinds, 6) counts against a phantom's truth (cxrgen.evaluate.truth)
    agree: np.ndarray | None = None  # (N, 14, 3) draft positives against the classifier's own calls

    def metrics(self, weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """All metrics, for each sample once (weights None) or for (B, N) resample weights."""
        out = self.nlg.corpus(weights)
        summed = self.ce.sum(0) if weights is None else np.tensordot(weights, self.ce, axes=(1, 0))
        out.update(ce_metrics(summed))
        if self.agree is not None:
            called = self.agree.sum(0)[:, [0, 2]].sum(-1) > 0  # observations called at least once
            agreed = self.agree.sum(0) if weights is None else np.tensordot(weights, self.agree, axes=(1, 0))
            out["draft-agreement"] = draft_agreement(agreed, called)
        if self.truth is not None:
            per_study = self.truth.sum(1)  # (N, 6): over kinds
            out.update(truth_metrics(per_study.sum(0) if weights is None else weights @ per_study))
        return out


@dataclass
class EvalResult:
    metrics: dict[str, dict[str, dict[str, float]]]  # system -> metric -> {value, ci_low, ci_high}
    p_values: dict[str, dict[str, float]]  # metric -> "A vs B" -> two-sided paired bootstrap p
    per_sample: pd.DataFrame
    per_class: pd.DataFrame  # (system, condition) -> precision, recall, f1, support, predicted
    n_studies: int
    n_boot: int
    seed: int
    per_kind: pd.DataFrame | None = None  # (system, kind) -> drawn, stated, omission, ... (phantom truth only)
    refused: dict[str, int] = field(default_factory=dict)  # system -> studies it wrote no draft for

    def to_markdown(self) -> str:
        return _markdown(self)

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """metrics.json, metrics.md, bootstrap.json (seed, p-values), per_sample.csv, per_class.csv, metrics.png."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {name: out / name for name in
                 ("metrics.json", "metrics.md", "bootstrap.json", "per_sample.csv", "per_class.csv", "metrics.png")}
        # each file atomically: a crash or a full disk never leaves a half-written result
        atomic_write_text(paths["metrics.json"], json.dumps(self.metrics, indent=2) + "\n")
        atomic_write_text(paths["metrics.md"], self.to_markdown())
        boot = {"studies": self.n_studies, "resamples": self.n_boot, "seed": self.seed, "ci_level": 0.95,
                "p_values": self.p_values}
        atomic_write_text(paths["bootstrap.json"], json.dumps(boot, indent=2) + "\n")
        atomic_write_text(paths["per_sample.csv"], self.per_sample.to_csv(index=False, float_format="%.6g"))
        atomic_write_text(paths["per_class.csv"], self.per_class.to_csv(float_format="%.6g"))
        with atomic_open(paths["metrics.png"], "wb") as f:
            _bar_chart(self.metrics, f)
        if self.per_kind is not None:
            paths["per_kind.csv"] = out / "per_kind.csv"
            atomic_write_text(paths["per_kind.csv"], self.per_kind.to_csv(float_format="%.6g"))
        return paths


def check_ids(predictions: Mapping[str, str], references: Mapping[str, str], system: str = "predictions") -> None:
    """Refuse predictions that don't cover exactly the reference ids, naming what is missing and extra."""
    missing = [i for i in references if i not in predictions]
    extra = [i for i in predictions if i not in references]
    if not missing and not extra:
        return
    show = lambda ids: ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
    parts = [f"{len(missing)} missing ({show(missing)})" if missing else "",
             f"{len(extra)} not in the split ({show(extra)})" if extra else ""]
    raise UserError(f"{system}: ids don't match the {len(references)} reference studies: "
                    + "; ".join(p for p in parts if p))


def evaluate_systems(
    systems: Mapping[str, Mapping[str, str]],
    references: Mapping[str, str],
    n_boot: int = 1000,
    seed: int = 0,
    label_fn: LabelFn = label_many,
    scorer: NLGScorer | None = None,
    truths: Mapping[str, dict] | None = None,
    calls: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
    refused: Mapping[str, int] | None = None,
) -> EvalResult:
    """Score each system's {id: report} against {id: reference}; ids must match exactly.

    Returns corpus metrics with 95% percentile bootstrap CIs (n_boot paired resamples of the
    studies, drawn from `seed`), pairwise p-values, per-sample scores and per-class CE tables.
    With `truths` ({id: a phantom study's truth.json}), also omission, hallucination and side
    errors against what the images show, overall and per finding kind. With `calls` ({system: {id:
    the conditions its classifier called}}), also how well each such system's drafts state its
    own calls ("draft-agreement", macro-F1 over the conditions called at least once). `refused`
    ({system: n}) counts the studies a system wrote no draft for; their reports are empty and are
    scored as such (a refusal states no finding), and the results page says how many there were.
    Pass an open `scorer` to reuse its METEOR JVM across calls (it is left open); otherwise one is
    started and stopped here.
    """
    if not systems:
        raise UserError("no predictions to evaluate")
    if not references:
        raise UserError("no reference studies to evaluate against")
    for name, preds in systems.items():
        check_ids(preds, references, name)
    ids = list(references)
    refs = [references[i] for i in ids]
    own = scorer is None
    scorer = NLGScorer() if own else scorer  # the JVM loads while the labeler runs
    try:
        texts = {name: [preds[i] for i in ids] for name, preds in systems.items()}
        ref_pos = label_texts(refs, label_fn)
        ce = {name: ce_counts(label_texts(t, label_fn), ref_pos) for name, t in texts.items()}
        truth, kinds = {}, []
        if truths is not None:
            truth_list = [truths[i] for i in ids]
            kinds = truth_kinds(truth_list, texts)
            truth = {name: truth_counts(t, truth_list, kinds) for name, t in texts.items()}
        agree = {name: ce_counts(label_texts(texts[name], label_fn),
                                 np.array([[c in set(called[i]) for c in CONDITIONS] for i in ids], dtype=bool))
                 for name, called in (calls or {}).items()}
        samples = {name: SystemSamples(scorer.score(t, refs), ce[name], truth.get(name), agree.get(name))
                   for name, t in tqdm(texts.items(), desc="scoring systems", unit="system", disable=None)}
    finally:
        if own:
            scorer.close()
    names = METRICS + (TRUTH_METRICS if truths is not None else ())
    if calls:
        names += ("draft-agreement",)
    weights = resample_weights(len(ids), n_boot, seed)
    point = {name: s.metrics() for name, s in samples.items()}
    boot = {name: s.metrics(weights) for name, s in samples.items()}
    metrics = {
        name: {m: {"value": float(point[name][m]), **dict(zip(("ci_low", "ci_high"), percentile_ci(boot[name][m])))}
               for m in names if m in point[name]}
        for name in samples
    }
    p_values = {m: {f"{a} vs {b}": paired_p_value(boot[a][m], boot[b][m]) for a, b in itertools.combinations(samples, 2)
                    if m in boot[a] and m in boot[b]}
                for m in names}
    per_kind = None
    if truths is not None:
        per_kind = pd.concat({name: per_kind_table(s.truth, kinds) for name, s in samples.items()}, names=["system"])
    return EvalResult(metrics, p_values, _per_sample(ids, samples), _per_class(samples), len(ids), n_boot, seed,
                      per_kind, {name: n for name, n in (refused or {}).items() if n})


def evaluate(predictions: Mapping[str, str], references: Mapping[str, str], **kwargs) -> EvalResult:
    """One system: `evaluate({id: report}, {id: reference})`; the system is called "predictions"."""
    return evaluate_systems({"predictions": predictions}, references, **kwargs)


def _per_sample(ids: list[str], samples: dict[str, SystemSamples]) -> pd.DataFrame:
    frames = []
    for name, s in samples.items():
        df = pd.DataFrame({"system": name, "id": ids})
        for k in range(4):
            df[f"BLEU-{k + 1}"] = s.nlg.bleu_sentence[:, k]
        df["METEOR"] = meteor_from_stats(s.nlg.meteor_stats)
        df["ROUGE-L"] = s.nlg.rouge
        df["CIDEr"] = s.nlg.cider
        df["CE-TP"], df["CE-FP"], df["CE-FN"] = (s.ce[..., j].sum(1).astype(int) for j in range(3))
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _per_class(samples: dict[str, SystemSamples]) -> pd.DataFrame:
    return pd.concat({name: per_class_table(s.ce) for name, s in samples.items()}, names=["system"])


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def _markdown(r: EvalResult) -> str:
    cell = lambda v: f"{v['value']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]"
    ce_cols = list(CE_METRICS)
    refused = ", ".join(f"{s} {n} of {r.n_studies} studies" for s, n in r.refused.items())
    parts = [
        f"# Evaluation on {r.n_studies} studies\n",
        f"Value [95% percentile bootstrap CI], {r.n_boot} paired resamples of the studies, seed {r.seed}. "
        "NLG metrics: pycocoevalcap with R2Gen's conventions; CE: CheXpert labels of prediction vs reference "
        "(positive = 1).\n",
        *([f"No draft (refused), scored as an empty report: {refused}.\n"] if refused else []),
        "## Headline\n",
        _table(["system"] + list(HEADLINE), [[s] + [cell(m[c]) for c in HEADLINE] for s, m in r.metrics.items()]),
        "\n## Clinical efficacy\n",
        _table(["system"] + ce_cols, [[s] + [cell(m[c]) for c in ce_cols] for s, m in r.metrics.items()]),
        "\n## Per-class F1 (support = reference positives)\n",
    ]
    f1 = r.per_class["f1"].unstack("system")
    support = r.per_class["support"].groupby(level="condition").first()
    systems = list(r.metrics)
    parts.append(_table(["condition", "support"] + systems,
                        [[c, str(support[c])] + [f"{f1.loc[c, s]:.3f}" for s in systems] for c in f1.index]))
    if r.per_kind is not None:
        parts.append("\n## Against the phantom's truth\n")
        parts.append("Omission: drawn findings the report does not state. Hallucination: stated findings that were "
                     "not drawn. Side error: both drawn and stated, on different sides.\n")
        parts.append(_table(["system"] + list(TRUTH_METRICS),
                            [[s] + [cell(m[c]) for c in TRUTH_METRICS] for s, m in r.metrics.items()]))
        parts.append("\nPer finding kind (drawn / stated counts, omission / hallucination):\n")
        pk = r.per_kind
        kinds = list(dict.fromkeys(pk.index.get_level_values("kind")))
        drawn = pk["drawn"].groupby(level="kind").first()
        parts.append(_table(["kind", "drawn"] + systems, [
            [k, str(drawn[k])] + [f"{pk.loc[(s, k), 'stated']} stated, {pk.loc[(s, k), 'omission']:.2f} / "
                                  f"{pk.loc[(s, k), 'hallucination']:.2f}" for s in systems] for k in kinds]))
    agreeing = {s: m["draft-agreement"] for s, m in r.metrics.items() if "draft-agreement" in m}
    if agreeing:
        parts.append("\n## Drafts against the classifier's own calls\n")
        parts.append("Macro-F1 between the labeler's reading of each draft and the findings its classifier called, "
                     "over the conditions called at least once.\n")
        parts.append(_table(["system", "draft-agreement"], [[s, cell(v)] for s, v in agreeing.items()]))
    if len(systems) > 1:
        parts.append("\n## Paired bootstrap p-values (two-sided)\n")
        pairs = list(r.p_values[P_VALUE_METRICS[0]])
        parts.append(_table(["pair"] + list(P_VALUE_METRICS),
                            [[p] + [f"{r.p_values[m][p]:.3g}" for m in P_VALUE_METRICS] for p in pairs]))
    return "\n".join(parts)


def _bar_chart(metrics: dict, path: Path | IO[bytes]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(metrics)
    x = np.arange(len(HEADLINE))
    width = 0.8 / len(systems)
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(HEADLINE)), 4.5))
    for k, s in enumerate(systems):
        v = np.array([metrics[s][m]["value"] for m in HEADLINE])
        err = np.array([[v[j] - metrics[s][m]["ci_low"], metrics[s][m]["ci_high"] - v[j]] for j, m in enumerate(HEADLINE)]).T
        ax.bar(x + (k - (len(systems) - 1) / 2) * width, v, width, yerr=np.clip(err, 0, None), capsize=2, label=s)
    ax.set_xticks(x, HEADLINE, rotation=30, ha="right")
    ax.set_ylabel("score (95% bootstrap CI)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)
