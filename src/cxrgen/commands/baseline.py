"""`cxrgen baseline NAME`: a trivial baseline's predictions for a split, as {"id", "report"} JSONL."""
from __future__ import annotations

from cxrgen.evaluate.baselines import BASELINES


def _run(args) -> int:
    from cxrgen.data.specs import reference_reports
    from cxrgen.evaluate.baselines import build_baseline
    from cxrgen.io import write_predictions

    references = reference_reports(args.dataset, args.split)
    train = list(reference_reports(args.dataset, "train").values())
    reports = build_baseline(args.name, train, list(references.values()), seed=args.seed, min_count=args.min_count)
    write_predictions(dict(zip(references, reports)), args.output)
    print(f"wrote {len(reports)} {args.name} predictions to {args.output}")
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
