"""`cxrgen baseline NAME`: a trivial baseline's predictions for a split, as {"id", "report"} JSONL."""
from __future__ import annotations

import json
from pathlib import Path

from cxrgen.atomic import atomic_open
from cxrgen.evaluate.baselines import BASELINES


def _run(args) -> int:
    from cxrgen.commands.eval import split_reports
    from cxrgen.evaluate.baselines import build_baseline

    references = split_reports(args.dataset, args.split)
    train = list(split_reports(args.dataset, "train").values())
    reports = build_baseline(args.name, train, list(references.values()), seed=args.seed, min_count=args.min_count)
    out = Path(args.output)
    with atomic_open(out, "w", encoding="utf-8") as f:
        for sid, report in zip(references, reports):
            f.write(json.dumps({"id": sid, "report": report}) + "\n")
    print(f"wrote {len(reports)} {args.name} predictions to {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("baseline", help="trivial baseline predictions (JSONL) for a dataset split")
    p.add_argument("name", choices=BASELINES)
    p.add_argument("--dataset", required=True, help="dataset spec, e.g. iu-xray or phantom:DIR")
    p.add_argument("--split", default="test", help="split to predict (default test)")
    p.add_argument("--output", required=True, help="output JSONL")
    p.add_argument("--seed", type=int, default=0, help="random-train seed (default 0)")
    p.add_argument("--min-count", type=int, default=3,
                   help="best-constant: candidates occur at least this often in train (1 = every report)")
    p.set_defaults(func=_run)
