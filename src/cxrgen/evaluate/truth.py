"""Omission and hallucination against what a phantom image really shows.

A phantom study's truth.json lists the findings drawn into its images, each with its drawing
kind and side. A report "states" the findings that the phantom renderer would draw from it: the
same labeler mentions, mapped to kinds by the same table (`cxrgen.data.phantom.findings`). So:
- omission: the share of drawn findings whose kind the report does not state;
- hallucination: the share of stated findings whose kind was not drawn;
- side error: among kinds both drawn and stated with a side (left, right, bilateral) on both, the
  share whose sides differ. Counted apart from the other two.
A finding is counted once per study and kind. There is no labeler on the reference side, so this
is the most direct measure of "the report says what the image shows".
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cxrgen.data.phantom.findings import from_mentions
from cxrgen.errors import UserError
from cxrgen.labeler import mentions

_logger = logging.getLogger(__name__)
TRUTH_METRICS = ("omission", "hallucination", "side-error")
# per study and kind: drawn, omitted, stated, hallucinated, sides compared, sides wrong
_COLUMNS = ("drawn", "omitted", "stated", "hallucinated", "sided", "side_wrong")


def read_truths(phantom_dir: str | Path, ids: Sequence[str]) -> dict[str, dict] | None:
    """{study id: truth.json} of a phantom set (`cxrgen data phantom --out DIR`); None (warned) for an
    R2Gen-layout folder that has no truth files at all."""
    paths = {sid: Path(phantom_dir) / "images" / sid / "truth.json" for sid in ids}
    missing = [p for p in paths.values() if not p.is_file()]
    if len(missing) == len(paths):
        _logger.warning("%s has no truth.json files: omission and hallucination are left out", phantom_dir)
        return None
    if missing:
        raise UserError(f"{missing[0]} not found ({len(missing)} of {len(paths)} studies lack their truth.json); "
                        "render the phantom set again with `cxrgen data phantom`")
    return {sid: json.loads(p.read_text()) for sid, p in paths.items()}


def phantom_truths(data: str, ids: Sequence[str]) -> dict[str, dict] | None:
    """`read_truths` for a `phantom:DIR` data spec; None for any other layout (no truth to read)."""
    layout, _, root = data.partition(":")
    return read_truths(root, ids) if layout == "phantom" else None


def _sides(findings) -> dict[str, set[str]]:
    """kind -> the sides it is drawn or stated on (empty set: no side)."""
    out: dict[str, set[str]] = {}
    for f in findings:
        out.setdefault(f["kind"], set()).update([f["laterality"]] if f["laterality"] else [])
    return out


def stated(report: str) -> dict[str, set[str]]:
    """kind -> sides of every finding a report states as present or uncertain."""
    findings, _ = from_mentions(mentions(report))
    return _sides({"kind": f.kind, "laterality": f.laterality} for f in findings)


def truth_counts(reports: Sequence[str], truths: Sequence[dict], kinds: Sequence[str]) -> np.ndarray:
    """(N, K, 6) counts per study and kind: drawn, omitted, stated, hallucinated, sided, side_wrong."""
    index = {k: i for i, k in enumerate(kinds)}
    out = np.zeros((len(reports), len(kinds), len(_COLUMNS)))
    for n, (report, truth) in enumerate(zip(reports, truths)):
        drawn, said = _sides(truth["findings"]), stated(report)
        for kind in drawn.keys() | said.keys():
            row = out[n, index[kind]]
            row[0], row[2] = kind in drawn, kind in said
            row[1], row[3] = row[0] and not row[2], row[2] and not row[0]
            if row[0] and row[2] and drawn[kind] and said[kind]:
                row[4], row[5] = 1, drawn[kind] != said[kind]
    return out


def truth_kinds(truths: Sequence[dict], systems: Mapping[str, Sequence[str]]) -> list[str]:
    """Every kind drawn in `truths` or stated by any system, sorted."""
    kinds = {f["kind"] for t in truths for f in t["findings"]}
    for reports in systems.values():
        for r in dict.fromkeys(reports):
            kinds |= stated(r).keys()
    return sorted(kinds)


def truth_metrics(summed: np.ndarray) -> dict[str, np.ndarray]:
    """Rates from counts summed over studies and kinds: (..., 6) -> metric -> value shaped (...)."""
    drawn, omitted, said, hallucinated, sided, wrong = np.moveaxis(summed, -1, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"omission": np.nan_to_num(omitted / drawn), "hallucination": np.nan_to_num(hallucinated / said),
                "side-error": np.nan_to_num(wrong / sided)}


def per_kind_table(counts: np.ndarray, kinds: Sequence[str]) -> pd.DataFrame:
    """Per kind: drawn and stated counts, omission, hallucination and side-error rates."""
    summed = counts.sum(0)
    rates = truth_metrics(summed)
    return pd.DataFrame({"drawn": summed[:, 0].astype(int), "stated": summed[:, 2].astype(int), **rates},
                        index=pd.Index(kinds, name="kind"))
