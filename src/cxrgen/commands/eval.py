"""`cxrgen eval`: score prediction files against a dataset split, beside the trivial baselines.

Writes metrics.json, metrics.md (95% bootstrap CIs, p-values), bootstrap.json (seed, p-values),
per_sample.csv, per_class.csv and metrics.png into --output; on a phantom set also omission,
hallucination and side errors against the images' truth (per_kind.csv). A system is named by its
file stem.
"""
from __future__ import annotations

from pathlib import Path

from cxrgen.errors import UserError


def _run(args) -> int:
    from cxrgen.data.specs import check_spec
    from cxrgen.io import read_prediction_rows

    if args.bootstrap < 1:
        raise UserError("--bootstrap must be at least 1")
    check_spec(args.dataset)  # before the METEOR JVM starts
    systems: dict[str, dict[str, str]] = {}
    calls: dict[str, dict[str, list[str]]] = {}  # systems whose files carry their classifier's calls
    refused: dict[str, int] = {}  # studies a system wrote no draft for ("refused" rows): scored as empty reports
    for p in map(Path, args.predictions):
        if p.stem in systems:
            raise UserError(f"two prediction files are both named {p.stem!r}; rename one (the file stem names the system)")
        rows = read_prediction_rows(p, args.id_column, args.text_column)
        systems[p.stem] = {sid: row["report"] for sid, row in rows.items()}
        refused[p.stem] = sum("refused" in row for row in rows.values())
        if all("calls" in row or "refused" in row for row in rows.values()):  # a refused study called nothing
            calls[p.stem] = {sid: row.get("calls", []) for sid, row in rows.items()}

    from cxrgen.evaluate.nlg import NLGScorer

    with NLGScorer() as scorer:  # start the METEOR JVM now: it loads while the data and baselines do
        return _evaluate(args, systems, calls, refused, scorer)


def _evaluate(args, systems: dict[str, dict[str, str]], calls: dict[str, dict[str, list[str]]],
              refused: dict[str, int], scorer) -> int:
    from cxrgen.data.specs import reference_reports
    from cxrgen.evaluate.baselines import BASELINES, build_baseline
    from cxrgen.evaluate.report import evaluate_systems

    references = reference_reports(args.dataset, args.split)
    if args.with_baselines:
        train = list(reference_reports(args.dataset, "train").values())
        ids, refs = list(references), list(references.values())
        for name in BASELINES:
            if name in systems:
                raise UserError(f"a prediction file is named like the baseline {name!r}; rename it")
            systems[name] = dict(zip(ids, build_baseline(name, train, refs, seed=args.seed)))
    from cxrgen.evaluate.truth import phantom_truths

    # the images' own truth: omission and hallucination without a labeler on that side
    truths = phantom_truths(args.dataset, list(references))
    result = evaluate_systems(systems, references, n_boot=args.bootstrap, seed=args.seed, scorer=scorer,
                              truths=truths, calls=calls, refused=refused)
    paths = result.save(args.output)
    print(result.to_markdown())
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("eval", help="NLG + clinical-efficacy metrics with bootstrap CIs, beside baselines")
    p.add_argument("--predictions", action="append", required=True, metavar="FILE",
                   help="CSV or JSONL of predicted reports (what `cxrgen generate --data` writes); repeat to "
                        "compare systems (named by file stem)")
    p.add_argument("--id-column", default="id", help="the predictions' column (JSONL key) of study ids (default id)")
    p.add_argument("--text-column", default="report",
                   help="the predictions' column (JSONL key) of report text (default report)")
    p.add_argument("--dataset", required=True, help="dataset spec, e.g. iu-xray or phantom:DIR")
    p.add_argument("--split", default="test", help="split to score against (default test)")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--with-baselines", action="store_true",
                   help="add most-frequent, best-constant, label-oracle, finding-oracle and random-train (built from the train split)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap and random-train seed (default 0)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.set_defaults(func=_run)
