"""`cxrgen simplify`: plain-language versions of reports, checked by the consistency guard.

Input is either `--input FILE`, a CSV or JSONL file of reports (told apart by content; the columns
or keys --id-column and --text-column, default id and report), or a single report as plain text on
stdin. A file in gives JSONL out: {"id", "plain", "guard", "note"} a line (id: the line number when
the input has no id column). Plain text in gives the plain version, a blank line and the draft note
(add --json to get the JSON object instead).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cxrgen.errors import UserError


def register(subparsers) -> None:
    p = subparsers.add_parser("simplify", help="rewrite reports in plain language (with a consistency guard)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", type=Path, help="CSV or JSONL file of reports (default: one report as text on stdin)")
    p.add_argument("--id-column", default="id", help="--input's column (JSONL key) of report ids (default id)")
    p.add_argument("--text-column", default="report", help="--input's column (JSONL key) of report text (default report)")
    p.add_argument("--output", type=Path, help="where to write (default: stdout)")
    p.add_argument("--model", type=Path, help="local Hugging Face seq2seq model folder (default: glossary rules)")
    p.add_argument("--json", action="store_true", help="for stdin text: print the JSON object, not plain text")
    p.set_defaults(func=run)


def _read_reports(args) -> list[tuple[object, str]]:
    from cxrgen.io import cell, read_table

    return [(row.get(args.id_column, n), cell(args.input, n, row, args.text_column))
            for n, row in read_table(args.input)]


def _record(row_id, result) -> dict:
    return {"id": row_id, "plain": result.plain, "guard": result.guard, "note": result.note}


def _read_stdin() -> str:
    if sys.stdin.isatty():
        raise UserError("give a report on stdin or use --input FILE (CSV or JSONL)")
    report = sys.stdin.read()
    if not report.strip():
        raise UserError("the report on stdin is empty")
    return report


def run(args: argparse.Namespace) -> int:
    if args.model is not None and not (args.model / "config.json").is_file():
        raise UserError(f"--model {args.model}: not a Hugging Face model folder (no config.json)")
    rows = _read_reports(args) if args.input is not None else [(None, _read_stdin())]

    from tqdm import tqdm

    from cxrgen.io import atomic_write_text
    from cxrgen.simplify import Seq2SeqRewriter, simplify

    rewriter = Seq2SeqRewriter(args.model) if args.model is not None else None
    if args.input is not None:
        lines = [json.dumps(_record(row_id, simplify(report, rewriter)))
                 for row_id, report in tqdm(rows, desc="simplify", disable=len(rows) < 50)]
        text = "\n".join(lines) + ("\n" if lines else "")
    else:
        result = simplify(rows[0][1], rewriter)
        text = (json.dumps(_record(None, result)) if args.json else f"{result.plain}\n\n{result.note}") + "\n"

    if args.output is not None:
        atomic_write_text(args.output, text)
    else:
        sys.stdout.write(text)
    return 0
