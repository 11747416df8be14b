"""Readable drafts: counts of [UNK], XXXX, words no training report wrote, and distinct drafts.

Usage: python scripts/draft_words.py DATASET_SPEC PREDICTIONS.jsonl [...]
The training words are those of the spec's training split (its target text: findings, else impression).
"""
from __future__ import annotations

import re
import sys

from cxrgen.data.loader import assign_splits
from cxrgen.data.reports import target_text
from cxrgen.data.specs import load_studies
from cxrgen.io import read_predictions

WORD = re.compile(r"[a-z0-9]+")


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    studies = [s for s in load_studies(sys.argv[1]) if target_text(s) and s.frontal is not None]
    assign_splits(studies)
    vocabulary = {w for s in studies if s.split == "train" for w in WORD.findall(target_text(s).lower())}
    print("| predictions | drafts | with [UNK] | with XXXX | words never in training | distinct |")
    print("|---|---|---|---|---|---|")
    for path in sys.argv[2:]:
        drafts = list(read_predictions(path).values())
        novel = sorted({w for d in drafts for w in WORD.findall(d.lower()) if w not in vocabulary})
        print(f"| {path} | {len(drafts)} | {sum('[UNK]' in d for d in drafts)} | "
              f"{sum('xxxx' in d.lower() for d in drafts)} | {len(novel)} {' '.join(novel[:6])} | {len(set(drafts))} |")


if __name__ == "__main__":
    main()
