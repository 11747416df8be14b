"""CE of the classifier's own calls, beside CE of the drafts, from `cxrgen generate --data` prediction files.

The calls are scored as if a report stated exactly them, present, against the labeler's reading of
the references (the same counts as `cxrgen eval`). Shows how far the drafts stand from what their
classifier bounds them to.

    python scripts/calls_ce.py phantom:runs/demo/phantom test runs/results/preds/rerank_s*.jsonl
"""
import sys

import numpy as np

from cxrgen.data.specs import reference_reports
from cxrgen.evaluate.clinical import ce_counts, ce_metrics, label_texts
from cxrgen.io import read_prediction_rows
from cxrgen.labeler import CONDITIONS


def main(spec: str, split: str, files: list[str]) -> None:
    references = reference_reports(spec, split)
    ids = list(references)
    truth = label_texts([references[i] for i in ids])
    print("| predictions | drafts: CE macro-F1 | CE5 micro-F1 | calls: CE macro-F1 | CE5 micro-F1 |")
    print("|---|---|---|---|---|")
    for path in files:
        rows = read_prediction_rows(path, "id", "report")
        drafts = label_texts([rows[i]["report"] for i in ids])
        calls = np.array([[c in (rows[i].get("calls") or []) for c in CONDITIONS] for i in ids])
        d, c = (ce_metrics(ce_counts(x, truth).sum(0)) for x in (drafts, calls))
        print(f"| {path} | {d['CE-macro-F1']:.3f} | {d['CE5-micro-F1']:.3f} | {c['CE-macro-F1']:.3f} | {c['CE5-micro-F1']:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
