"""`cxrgen eval`: score prediction files against a dataset split, beside the trivial baselines.

Writes metrics.json, metrics.md (95% bootstrap CIs, p-values), bootstrap.json (seed, p-values),
per_sample.csv, per_class.csv and metrics.png into --output. A system is named by its file stem.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cxrgen.errors import UserError

log = logging.getLogger(__name__)


def jsonl_rows(path: Path, expected: str) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) of each non-blank line; `expected` describes a line for the error messages."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")  # not splitlines(): JSON may hold a raw U+2028
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file; give a JSONL file of {expected} lines") from None
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{n}: not valid JSON ({e.msg}); each line must be {expected}") from None


def read_predictions(path: Path) -> dict[str, str]:
    """{id: report} from a JSONL file of {"id": ..., "report": ...} lines."""
    if not path.is_file():
        raise UserError(f"predictions file not found: {path}")
    preds: dict[str, str] = {}
    for n, row in jsonl_rows(path, '{"id": ..., "report": ...}'):
        if not isinstance(row, dict) or not isinstance(row.get("id"), (str, int)) or not isinstance(row.get("report"), str):
            raise UserError(f'{path}:{n}: each line must be {{"id": "...", "report": "..."}}')
        sid = str(row["id"])
        if sid in preds:
            raise UserError(f"{path}:{n}: duplicate id {sid!r}")
        preds[sid] = row["report"]
    if not preds:
        raise UserError(f'{path}: no predictions (empty file); write it with `cxrgen generate --data SPEC --output '
                        f'{path}` or give one {{"id": ..., "report": ...}} line per study')
    return preds


def split_reports(spec: str, split: str) -> dict[str, str]:
    """{study id: findings} of one split of a dataset spec (studies without findings are left out)."""
    from cxrgen.data.datasets import load_studies

    studies = load_studies(spec, split)
    refs = {s.id: s.findings for s in studies if s.findings.strip()}
    if not refs:
        raise UserError(f"{spec}: no studies with findings in split {split!r}")
    if len(refs) < len(studies):
        log.warning("%s %s: %d studies without findings left out", spec, split, len(studies) - len(refs))
    return refs


def _run(args) -> int:
    from cxrgen.evaluate.nlg import NLGScorer

    if args.bootstrap < 1:
        raise UserError("--bootstrap must be at least 1")
    systems: dict[str, dict[str, str]] = {}
    for p in map(Path, args.predictions):
        if p.stem in systems:
            raise UserError(f"two prediction files are both named {p.stem!r}; rename one (the file stem names the system)")
        systems[p.stem] = read_predictions(p)
    with NLGScorer() as scorer:  # start the METEOR JVM now: it loads while the data and baselines do
        return _evaluate(args, systems, scorer)


def _evaluate(args, systems: dict[str, dict[str, str]], scorer) -> int:
    from cxrgen.evaluate.baselines import BASELINES, build_baseline
    from cxrgen.evaluate.report import evaluate_systems

    references = split_reports(args.dataset, args.split)
    if args.with_baselines:
        train = list(split_reports(args.dataset, "train").values())
        ids, refs = list(references), list(references.values())
        for name in BASELINES:
            if name in systems:
                raise UserError(f"a prediction file is named like the baseline {name!r}; rename it")
            systems[name] = dict(zip(ids, build_baseline(name, train, refs, seed=args.seed)))
    result = evaluate_systems(systems, references, n_boot=args.bootstrap, seed=args.seed, scorer=scorer)
    paths = result.save(args.output)
    print(result.to_markdown())
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("eval", help="NLG + clinical-efficacy metrics with bootstrap CIs, beside baselines")
    p.add_argument("--predictions", action="append", required=True, metavar="FILE.jsonl",
                   help='JSONL of {"id", "report"}; repeat to compare systems (named by file stem)')
    p.add_argument("--dataset", required=True, help="dataset spec, e.g. iu-xray or phantom:DIR")
    p.add_argument("--split", default="test", help="split to score against (default test)")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--with-baselines", action="store_true",
                   help="add most-frequent, best-constant, label-oracle and random-train (built from the train split)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap and random-train seed (default 0)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.set_defaults(func=_run)
