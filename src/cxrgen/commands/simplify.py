"""`cxrgen simplify`: plain-language versions of reports, checked by the consistency guard.

Input is either `--input FILE.jsonl` (one {"id", "report"} object a line) or a single report as
plain text on stdin. JSONL in gives JSONL out: {"id", "plain", "guard", "note"}. Plain text in gives
the plain version, a blank line and the draft note (add --json to get the JSON object instead).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from cxrgen.io import atomic_write_text
from cxrgen.errors import UserError


def register(subparsers) -> None:
    p = subparsers.add_parser("simplify", help="rewrite reports in plain language (with a consistency guard)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", type=Path, help='JSONL file of {"id", "report"} (default: one report as text on stdin)')
    p.add_argument("--output", type=Path, help="where to write (default: stdout)")
    p.add_argument("--model", type=Path, help="local Hugging Face seq2seq model folder (default: glossary rules)")
    p.add_argument("--json", action="store_true", help="for stdin text: print the JSON object, not plain text")
    p.set_defaults(func=run)


def _read_jsonl(path: Path) -> list[dict]:
    from cxrgen.io import read_jsonl

    rows = []
    for n, row in read_jsonl(path, '{"id": ..., "report": ...}'):
        if not isinstance(row, dict) or not isinstance(row.get("report"), str):
            raise UserError(f'{path}:{n}: expected an object with a "report" string')
        rows.append({"id": row.get("id", n), "report": row["report"]})
    return rows


def _record(row_id, result) -> dict:
    return {"id": row_id, "plain": result.plain, "guard": result.guard, "note": result.note}


def run(args: argparse.Namespace) -> int:
    from cxrgen.simplify import Seq2SeqRewriter, simplify

    rewriter = None
    if args.model is not None:
        if not (args.model / "config.json").is_file():
            raise UserError(f"--model {args.model}: not a Hugging Face model folder (no config.json)")
        rewriter = Seq2SeqRewriter(args.model)

    if args.input is not None:
        if not args.input.is_file():
            raise UserError(f"--input {args.input}: no such file")
        rows = _read_jsonl(args.input)
        lines = [json.dumps(_record(r["id"], simplify(r["report"], rewriter)))
                 for r in tqdm(rows, desc="simplify", disable=len(rows) < 50)]
        text = "\n".join(lines) + ("\n" if lines else "")
    else:
        if sys.stdin.isatty():
            raise UserError("give a report on stdin or use --input FILE.jsonl")
        report = sys.stdin.read()
        if not report.strip():
            raise UserError("the report on stdin is empty")
        result = simplify(report, rewriter)
        text = (json.dumps(_record(None, result)) if args.json else f"{result.plain}\n\n{result.note}") + "\n"

    if args.output is not None:
        atomic_write_text(args.output, text)
    else:
        sys.stdout.write(text)
    return 0
