"""Agreement of cxrgen's labeler with the CheXpert labeler's output on IU X-ray reports.

Usage: python scripts/labeler_agreement.py [--reference CSV] [--section findings|report]
                                         [--disagreements CLASS] [--limit N] [--audit N --seed S]
The reference holds CheXpert-labeler labels for 3,199 IU reports; it is another labeler, not
ground truth. Its labels were computed on the FINDINGS section only, although the file carries the
impression too: findings the impression alone names (e.g. "Right upper lobe pneumonia.") are
blank there (docs/labeler.md gives the counts). So by default we label the findings as well;
`--section report` labels findings + impression. Prints a Markdown table: per-class precision, recall and F1 of
the positive class (reference as truth), exact 4-way agreement (1/0/-1/blank), and the micro-F1
over the 13 findings (No Finding excluded).
"""
from __future__ import annotations

import argparse
import random
from collections import Counter
from pathlib import Path

from cxrgen.evaluate.agreement import agreement, load_reference
from cxrgen.labeler import CONDITIONS, label, mentions

DEFAULT_REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "iu_xray" / "chexpert_labeler_iu.csv"


def impression_check(path: Path) -> None:
    """Which section did the reference label? Count findings that only the impression names (ours
    positive on the impression, blank on the findings) and what the reference says about them."""
    rows = load_reference(path, "report")
    print("| observation | only in the impression | reference 1 | reference -1 | reference 0 | reference blank |")
    print("|---|---|---|---|---|---|")
    for c in CONDITIONS[1:]:
        ref = [r["reference"][c] for r in rows
               if label(r["impression"])[c] == 1 and label(r["findings"])[c] is None]
        if ref:
            print(f"| {c} | {len(ref)} | {ref.count(1)} | {ref.count(-1)} | {ref.count(0)} | {ref.count(None)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE)
    parser.add_argument("--section", choices=("findings", "report"), default="findings",
                        help="text to label: findings (what the reference labeled) or findings + impression")
    parser.add_argument("--disagreements", metavar="CLASS", help="print reports where the positive label differs")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--audit", type=int, default=0, metavar="N",
                        help="print N random disagreements on the positive class (any class) to read and judge")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--literal-no-finding", action="store_true",
                        help="No Finding = 1 whenever none of the 13 pathologies is positive or uncertain (the "
                             "published rule) instead of also withholding it for findings outside the 14")
    parser.add_argument("--impression-check", action="store_true",
                        help="count findings named only in the impression and the reference's labels for them")
    args = parser.parse_args()
    if args.impression_check:
        impression_check(args.reference)
        return
    rows = load_reference(args.reference, args.section)
    predictions = [label(r["text"]) for r in rows]
    if args.literal_no_finding:
        pathologies = [c for c in CONDITIONS if c not in ("No Finding", "Support Devices")]
        changed, outside = 0, Counter()
        for r, p in zip(rows, predictions):
            if r["text"].strip() and p["No Finding"] != 1 and not any(p[c] in (1, -1) for c in pathologies):
                p["No Finding"], changed = 1, changed + 1
                outside.update(m.finding for m in mentions(r["text"]) if m.status != 0 and m.observation is None)
        print(f"literal No Finding rule: {changed} reports become No Finding; the findings outside the 14 "
              f"that withheld it: {', '.join(f'{f} ({n})' for f, n in outside.most_common(8))}\n")
    table, micro = agreement(rows, predictions)
    print(f"{len(rows)} reports from {args.reference.name}, labeling the {args.section}\n")
    print("| observation | positives (ref) | precision | recall | F1 | exact 4-way agreement |")
    print("|---|---|---|---|---|---|")
    for c, s in table.items():
        print(f"| {c} | {s['support']} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | {s['exact']:.3f} |")
    print(f"\nmicro-F1, positive class, 13 findings: {micro:.3f}")
    if args.disagreements:
        c = args.disagreements
        shown = 0
        for r, p in zip(rows, predictions):
            if (r["reference"][c] == 1) != (p[c] == 1) and shown < args.limit:
                shown += 1
                print(f"\nuid {r['uid']}: reference {r['reference'][c]} ours {p[c]}\n  {r['text']}")
    if args.audit:
        pairs = [(r, c, p[c]) for r, p in zip(rows, predictions) for c in CONDITIONS[1:]
                 if (r["reference"][c] == 1) != (p[c] == 1)]
        print(f"\n{len(pairs)} disagreements; {args.audit} drawn with seed {args.seed}:")
        for r, c, ours in random.Random(args.seed).sample(pairs, args.audit):
            print(f"\nuid {r['uid']} {c}: reference {r['reference'][c]} ours {ours}\n  {r['text']}")


if __name__ == "__main__":
    main()
