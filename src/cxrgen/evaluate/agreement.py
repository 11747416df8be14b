"""Agreement of cxrgen's labeler with another labeler's output (the CheXpert labeler's on IU X-ray).

`load_reference` reads a CSV of reference labels (one column per CheXpert observation: 1, 0, -1
or blank) with the report's `findings` and `impression`; `agreement` scores predictions against
it, the reference taken as truth. Used by scripts/labeler_agreement.py and tests/test_labeler.py.
"""
from __future__ import annotations

import csv
from pathlib import Path

from cxrgen.labeler import CONDITIONS


def _value(cell: str) -> int | None:
    return None if cell.strip() == "" else int(float(cell))


def load_reference(path: Path, section: str = "findings") -> list[dict]:
    """Reference rows with `text` (the findings, or findings + impression for section="report")."""
    if section not in ("findings", "report"):
        raise ValueError(f"section must be 'findings' or 'report', got {section!r}")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["text"] = row["findings"] if section == "findings" else f"{row['findings']} {row['impression']}".strip()
        row["reference"] = {c: _value(row[c]) for c in CONDITIONS}
    return rows


def agreement(rows: list[dict], predictions: list[dict]) -> tuple[dict[str, dict[str, float]], float]:
    """Per-class {precision, recall, f1, exact, support} and micro-F1 over the 13 findings."""
    table, tp_all, fp_all, fn_all = {}, 0, 0, 0
    for c in CONDITIONS:
        ref = [r["reference"][c] for r in rows]
        pred = [p[c] for p in predictions]
        tp = sum(r == 1 and p == 1 for r, p in zip(ref, pred))
        fp = sum(r != 1 and p == 1 for r, p in zip(ref, pred))
        fn = sum(r == 1 and p != 1 for r, p in zip(ref, pred))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        exact = sum(r == p for r, p in zip(ref, pred)) / len(rows)
        table[c] = dict(precision=precision, recall=recall, f1=f1, exact=exact, support=tp + fn)
        if c != "No Finding":
            tp_all, fp_all, fn_all = tp_all + tp, fp_all + fp, fn_all + fn
    micro = 2 * tp_all / (2 * tp_all + fp_all + fn_all)
    return table, micro
