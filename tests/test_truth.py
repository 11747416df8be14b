"""Omission, hallucination and side errors against a phantom's truth: what the images really show."""
import json

import numpy as np
import pytest

from cxrgen.cli import main
from cxrgen.evaluate.truth import TRUTH_METRICS, per_kind_table, stated, truth_counts, truth_metrics


def _truth(*findings: tuple[str, str | None]) -> dict:
    return {"findings": [{"kind": k, "laterality": side} for k, side in findings]}


def test_stated_uses_the_renderers_kinds_and_sides():
    assert stated("Small left pleural effusion. No pneumothorax. Possible right upper lobe nodule.") == \
        {"effusion": {"left"}, "nodule": {"right"}}
    assert stated("The lungs are clear.") == {}


def test_counts_and_rates():
    kinds = ["effusion", "nodule", "pneumothorax"]
    reports = ["Small left pleural effusion.", "Right pleural effusion. Small pneumothorax."]
    truths = [_truth(("effusion", "left"), ("nodule", "right")), _truth(("effusion", "left"))]
    counts = truth_counts(reports, truths, kinds)
    # study 1: effusion drawn and stated on the same side, the nodule omitted
    assert counts[0].tolist() == [[1, 0, 1, 0, 1, 0], [1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]]
    # study 2: effusion on the wrong side, a pneumothorax that was never drawn
    assert counts[1].tolist() == [[1, 0, 1, 0, 1, 1], [0, 0, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0]]
    rates = truth_metrics(counts.sum((0, 1)))
    assert rates == pytest.approx({"omission": 1 / 3, "hallucination": 1 / 3, "side-error": 1 / 2})
    table = per_kind_table(counts, kinds)
    assert table.loc["nodule", "omission"] == 1 and table.loc["pneumothorax", "hallucination"] == 1
    assert table.loc["effusion", "side-error"] == 0.5 and table.loc["effusion", "drawn"] == 2


@pytest.mark.slow  # renders a phantom set and starts the METEOR JVM
def test_eval_on_a_phantom_set_reports_truth_metrics(tmp_path, capsys):
    phantom = tmp_path / "ph"
    assert main(["data", "phantom", "--out", str(phantom), "--size", "64", "--limit", "40", "--workers", "1"]) == 0
    ann = json.loads((phantom / "annotation.json").read_text())
    split = next(s for s in ("test", "val", "train") if ann.get(s))
    studies = ann[split]
    truths = [json.loads((phantom / "images" / s["id"] / "truth.json").read_text()) for s in studies]
    assert any(t["findings"] for t in truths), "the sample should draw some findings"
    perfect, constant = tmp_path / "perfect.jsonl", tmp_path / "constant.jsonl"
    perfect.write_text("".join(json.dumps({"id": s["id"], "report": s["report"]}) + "\n" for s in studies))
    constant.write_text("".join(json.dumps({"id": s["id"], "report": "The lungs are clear."}) + "\n" for s in studies))
    out = tmp_path / "ev"
    assert main(["eval", "--predictions", str(perfect), "--predictions", str(constant), "--dataset",
                 f"phantom:{phantom}", "--split", split, "--output", str(out), "--bootstrap", "20"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {m: metrics["perfect"][m]["value"] for m in TRUTH_METRICS} == {m: 0.0 for m in TRUTH_METRICS}
    assert metrics["constant"]["omission"]["value"] == 1.0 and metrics["constant"]["hallucination"]["value"] == 0.0
    assert "## Against the phantom's truth" in capsys.readouterr().out
    kinds = (out / "per_kind.csv").read_text().splitlines()
    assert kinds[0].startswith("system,kind,drawn,stated") and len(kinds) > 2
    assert np.isclose(sum(float(r.split(",")[2]) for r in kinds[1:] if r.startswith("perfect,")),
                      sum(len({f["kind"] for f in t["findings"]}) for t in truths))
