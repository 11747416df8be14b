"""`cxrgen label`: CheXpert-style labels for a CSV or JSONL file of reports."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cxrgen.errors import UserError

LEGEND = """\
The output keeps every input column except the text column, then the 14 CheXpert columns
(No Finding, Enlarged Cardiomediastinum, ..., Support Devices), each holding:
  1      positive: the report states the finding ("small left pleural effusion")
  0      negative: the report rules it out ("no pleural effusion")
  -1     uncertain: the report hedges ("possible pneumonia", "cannot exclude effusion")
  blank  not mentioned (null in JSONL output)
No Finding is 1 when nothing abnormal is positive or uncertain. An empty report says nothing, so
all its columns are blank; the command warns about such rows."""


def _write(path: Path, rows: list[dict], columns: list[str]) -> None:
    import csv

    from cxrgen.io import atomic_open, write_jsonl

    if path.suffix.lower() in (".jsonl", ".ndjson"):
        write_jsonl(path, ({c: row.get(c) for c in columns} for row in rows))
        return
    with atomic_open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: "" if row.get(c) is None else row[c] for c in columns})


def _counts(out: list[dict], value: int) -> str:
    from cxrgen.labeler import CONDITIONS

    counts = {c: sum(r[c] == value for r in out) for c in CONDITIONS}
    return ", ".join(f"{c} {n}" for c, n in counts.items() if n) or "none"


def _run(args) -> int:
    from tqdm import tqdm

    from cxrgen.io import read_table
    from cxrgen.labeler import CONDITIONS, label

    src, dst = Path(args.input), Path(args.output)
    rows = list(read_table(src))
    if not rows:
        raise UserError(f"{src}: no rows")
    columns: list[str] = []
    for _, row in rows:  # JSONL rows may differ in keys; keep first-seen order
        columns.extend(k for k in row if k not in columns)
    if args.text_column not in columns:
        raise UserError(f"{src}: no column {args.text_column!r} (--text-column); the columns are {', '.join(columns)}")
    kept = [c for c in columns if c != args.text_column and c not in CONDITIONS]
    out, empty = [], []
    for n, row in tqdm(rows, desc="labelling", unit="report", disable=len(rows) < 1000):
        text = row.get(args.text_column)
        text = text if isinstance(text, str) else ""
        if not text.strip():
            empty.append(n)
        out.append({**{c: row.get(c) for c in kept}, **label(text)})
    _write(dst, out, kept + list(CONDITIONS))
    print(f"labelled {len(out)} reports -> {dst}")
    print(f"positive (1): {_counts(out, 1)}")
    print(f"uncertain (-1): {_counts(out, -1)}")
    if empty:
        lines = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
        print(f"warning: {len(empty)} empty report(s) (line {lines} of {src}): all their labels are blank",
              file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("label", help="CheXpert-style labels (14 observations) for a CSV/JSONL of reports",
                       description="Label each report of a CSV or JSONL file (told apart by content) with\n"
                                   "the 14 CheXpert observations.",
                       epilog=LEGEND, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="CSV or JSONL file of reports")
    p.add_argument("--text-column", default="report", help="column (JSONL key) holding the report text (default report)")
    p.add_argument("--output", required=True, help="output CSV, or JSONL when it ends in .jsonl")
    p.set_defaults(func=_run)
