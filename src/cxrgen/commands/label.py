"""`cxrgen label`: CheXpert-style labels for a CSV or JSONL file of reports.

Output keeps every input column except the text column, then the 14 CheXpert columns in
CheXpert's order, with 1 / 0 / -1 / empty (JSONL output: 1 / 0 / -1 / null).
"""
from __future__ import annotations

import csv
from pathlib import Path

from tqdm import tqdm

from cxrgen.io import atomic_open, read_jsonl, write_jsonl
from cxrgen.errors import UserError
from cxrgen.labeler import CONDITIONS, label


def _read(path: Path) -> list[dict]:
    """Rows of a .csv or .jsonl file, as dicts."""
    if not path.is_file():
        raise UserError(f"input file not found: {path}")
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = []
        for n, row in read_jsonl(path, "a JSON object"):
            if not isinstance(row, dict):
                raise UserError(f"{path}:{n}: each JSONL line must be an object, got {type(row).__name__}")
            rows.append(row)
        return rows
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path}: cannot read as CSV ({e})") from None


def _write(path: Path, rows: list[dict], columns: list[str]) -> None:
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        write_jsonl(path, ({c: row.get(c) for c in columns} for row in rows))
        return
    with atomic_open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: "" if row.get(c) is None else row[c] for c in columns})


def _run(args) -> int:
    src, dst = Path(args.input), Path(args.output)
    rows = _read(src)
    if not rows:
        raise UserError(f"{src}: no rows")
    columns: list[str] = []
    for row in rows:  # JSONL rows may differ in keys; keep first-seen order
        columns.extend(k for k in row if k not in columns)
    if args.text_column not in columns:
        raise UserError(f"{src}: no column {args.text_column!r}; columns are {', '.join(columns)}")
    kept = [c for c in columns if c != args.text_column and c not in CONDITIONS]
    out = []
    for row in tqdm(rows, desc="labelling", unit="report", disable=len(rows) < 1000):
        text = row.get(args.text_column)
        labels = label(text if isinstance(text, str) else "")
        out.append({**{c: row.get(c) for c in kept}, **labels})
    _write(dst, out, kept + list(CONDITIONS))
    positives = {c: sum(r[c] == 1 for r in out) for c in CONDITIONS}
    print(f"labelled {len(out)} reports -> {dst}")
    print("positives: " + ", ".join(f"{c} {n}" for c, n in positives.items() if n))
    return 0


def register(sub) -> None:
    p = sub.add_parser("label", help="CheXpert-style labels (14 observations) for a CSV/JSONL of reports")
    p.add_argument("--input", required=True, help="CSV or JSONL file of reports")
    p.add_argument("--text-column", required=True, help="column (or JSONL key) holding the report text")
    p.add_argument("--output", required=True, help="output CSV, or JSONL when it ends in .jsonl")
    p.set_defaults(func=_run)
