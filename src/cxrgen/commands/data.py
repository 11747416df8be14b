"""`cxrgen data stats|check|phantom`."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from cxrgen.data.specs import LAYOUTS


def _layout_args(p):
    p.add_argument("layout", choices=LAYOUTS, help="dataset layout")
    p.add_argument("path", nargs="?", help="dataset folder or manifest file (not needed for iu-xray)")


def _stats_tables(stats: dict) -> str:
    """`dataset_stats` as aligned tables: the counts, then images by view, reports by split and the
    findings' length percentiles."""
    import pandas as pd

    def column(counts: dict) -> str:
        return pd.Series({str(k).replace("_", " "): f"{v:,}" for k, v in counts.items()}).to_string()

    lengths = pd.DataFrame({"words": stats["findings_length_words"],
                            "wordpieces": stats["findings_length_wordpieces"]}).T
    return "\n\n".join([
        column({k: v for k, v in stats.items() if isinstance(v, int)}),
        "images by view\n" + column(stats["views"]),
        "reports by split\n" + column(stats["splits"]),
        "findings length (percentiles)\n" + lengths.to_string(float_format="{:.0f}".format),
    ])


def _stats(args) -> int:
    from cxrgen.data.specs import dataset_stats, read_layout

    if args.layout == "iu-xray":  # all 3,955 real reports; the split counts show R2Gen's split
        from cxrgen.data.iu import load_iu_reports

        studies = load_iu_reports()
    else:
        studies = read_layout(args.layout, args.path)
    stats = dataset_stats(studies)
    print(json.dumps(stats, indent=2) if args.json else _stats_tables(stats))
    return 0


def _check(args) -> int:
    from cxrgen.data.specs import check_studies, read_layout
    from cxrgen.data.studies import Problem

    problems: list[Problem] = []
    studies = read_layout(args.layout, args.path, problems)
    check_studies(studies, problems, decode=not args.no_decode)
    groups: dict[str, list[Problem]] = defaultdict(list)
    for p in problems:
        groups[p.kind].append(p)
    named = sum(1 for s in studies for im in s.images if im.path is not None)
    if named and len(groups.get("missing image", [])) == named:
        print(f"no images: none of the {named:,} image files that the {args.layout} reports name is in "
              f"{args.path}; only the reports were checked (see docs/data.md for where each layout looks)")
        del groups["missing image"]
    for kind, found in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        print(f"{kind}: {len(found):,}")
        for p in found[:args.show]:
            print(f"  {p}")
        if len(found) > args.show:
            print(f"  ... and {len(found) - args.show:,} more")
    print(f"{len(studies):,} studies checked, {len(problems):,} problem(s)")
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

    p = dsub.add_parser("check", help="every problem (missing/corrupt images, empty reports, bad rows, duplicates), "
                                      "grouped by kind")
    _layout_args(p)
    p.add_argument("--no-decode", action="store_true", help="don't decode images (only existence and size)")
    p.add_argument("--show", type=int, default=5, metavar="N", help="list the first N problems of each kind (default 5)")
    p.set_defaults(func=_check)

    p = dsub.add_parser("phantom", help="render phantom IU X-ray radiographs from the real IU reports")
    p.add_argument("--out", required=True, help="output folder (R2Gen layout)")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="render only the first N studies")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.set_defaults(func=_phantom)
