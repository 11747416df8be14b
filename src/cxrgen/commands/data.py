"""`cxrgen data stats|check|phantom`."""
from __future__ import annotations

import json
from pathlib import Path

from cxrgen.data.specs import LAYOUTS, check_studies, dataset_stats, read_layout
from cxrgen.data.studies import Problem


def _layout_args(p):
    p.add_argument("layout", choices=LAYOUTS, help="dataset layout")
    p.add_argument("path", nargs="?", help="dataset folder or manifest file (not needed for iu-xray)")


def _stats(args) -> int:
    if args.layout == "iu-xray":  # all 3,955 real reports; the split counts show R2Gen's split
        from cxrgen.data.iu import load_iu_reports

        studies = load_iu_reports()
    else:
        studies = read_layout(args.layout, args.path)
    stats = dataset_stats(studies)
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        for k, v in stats.items():
            print(f"{k:28s} {v}")
    return 0


def _check(args) -> int:
    problems: list[Problem] = []
    studies = read_layout(args.layout, args.path, problems)
    check_studies(studies, problems, decode=not args.no_decode)
    for p in problems:
        print(p)
    print(f"{len(studies)} studies checked, {len(problems)} problem(s)")
    return 1 if problems else 0


def _phantom(args) -> int:
    from cxrgen.data.phantom import build_phantom

    counts = build_phantom(Path(args.out), size=args.size, seed=args.seed, limit=args.limit, workers=args.workers)
    print(json.dumps(counts, indent=2))
    return 0


def register(sub) -> None:
    data = sub.add_parser("data", help="dataset statistics, checks and the phantom IU X-ray set")
    dsub = data.add_subparsers(dest="data_command", required=True)

    p = dsub.add_parser("stats", help="counts: reports, images, views, splits, lengths, vocabulary")
    _layout_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_stats)

    p = dsub.add_parser("check", help="list every problem (missing/corrupt images, empty reports, bad rows, duplicates)")
    _layout_args(p)
    p.add_argument("--no-decode", action="store_true", help="don't decode images (only existence and size)")
    p.set_defaults(func=_check)

    p = dsub.add_parser("phantom", help="render phantom IU X-ray radiographs from the real IU reports")
    p.add_argument("--out", required=True, help="output folder (R2Gen layout)")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="render only the first N studies")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.set_defaults(func=_phantom)
