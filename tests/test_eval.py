"""Evaluation suite: pycocoevalcap agreement, bootstrap recomputation, CE, baselines, CLI.

METEOR starts a JVM (~12 s of CPU to load its paraphrase table), so the whole file shares one
scorer, lent to the CLI run too.
"""
import json

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.bleu.bleu_scorer import BleuScorer
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from sklearn.metrics import precision_recall_fscore_support

from cxrgen.cli import main
from cxrgen.errors import UserError
from cxrgen.evaluate.baselines import best_constant, constant_bleu4, label_oracle, most_frequent, random_train
from cxrgen.evaluate.bootstrap import paired_p_value, resample_weights
from cxrgen.evaluate.clinical import COMMON5, CONDITIONS, ce_counts, ce_metrics, per_class_table, positives
from cxrgen.evaluate.nlg import NLGScorer, clean, meteor_from_stats
from cxrgen.evaluate.report import METRICS, check_ids, evaluate, evaluate_systems
from cxrgen.io import read_predictions
from cxrgen.labeler import label

REFS = {
    "s1": "The heart is normal in size. The lungs are clear. No pleural effusion or pneumothorax.",
    "s2": "Cardiomegaly. Small left pleural effusion. No pneumothorax.",
    "s3": "Lungs are clear. Heart size normal. Degenerative changes of the spine.",
    "s4": "Right lower lobe consolidation, concerning for pneumonia. Heart size normal.",
    "s5": "Mild pulmonary edema. The cardiac silhouette is enlarged. Small bilateral pleural effusions.",
    "s6": "No acute cardiopulmonary abnormality. The lungs are clear.",
    "s7": "Left basilar atelectasis. No focal consolidation. Heart size is normal.",
    "s8": "Pacemaker in place. The lungs are clear. No pleural effusion.",
}
MODEL = {
    "s1": "The heart is normal in size. The lungs are clear.",
    "s2": "The heart is enlarged. Small left pleural effusion.",
    "s3": "The lungs are clear. Heart size is normal.",
    "s4": "Right lower lobe opacity. Heart size normal.",
    "s5": "Pulmonary edema. Cardiomegaly.",
    "s6": "The lungs are clear. No pneumothorax.",
    "s7": "",
    "s8": "The lungs are clear. No pleural effusion.",
}
CONSTANT = dict.fromkeys(REFS, "The heart is normal in size. The lungs are clear.")


@pytest.fixture(scope="module")
def scorer():
    with NLGScorer() as s:
        yield s


def _coco(preds, refs):
    gts = {i: [clean(r)] for i, r in enumerate(refs)}
    res = {i: [clean(p)] for i, p in enumerate(preds)}
    return gts, res


@pytest.mark.slow
def test_nlg_equals_direct_pycocoevalcap(scorer):
    preds, refs = list(MODEL.values()), list(REFS.values())
    ours = scorer.score(preds, refs)
    corpus = ours.corpus()
    gts, res = _coco(preds, refs)
    bleu, bleu_per = Bleu(4).compute_score(gts, res, verbose=0)
    meteor, meteor_per = scorer._meteor.compute_score(gts, res)  # the jar's own EVAL path, same JVM
    rouge, rouge_per = Rouge().compute_score(gts, res)
    cider, cider_per = Cider().compute_score(gts, res)
    for k in range(4):
        assert corpus[f"BLEU-{k + 1}"] == pytest.approx(bleu[k], abs=1e-12)
        np.testing.assert_allclose(ours.bleu_sentence[:, k], bleu_per[k], atol=1e-12)
    assert corpus["METEOR"] == pytest.approx(meteor, abs=1e-9)
    np.testing.assert_allclose(meteor_from_stats(ours.meteor_stats), meteor_per, atol=1e-9)
    assert corpus["ROUGE-L"] == pytest.approx(rouge, abs=1e-12)
    np.testing.assert_allclose(ours.rouge, rouge_per)
    assert corpus["CIDEr"] == pytest.approx(cider, abs=1e-12)
    np.testing.assert_allclose(ours.cider, cider_per)


@pytest.mark.slow
def test_resample_weights_recompute_corpus_metrics(scorer):
    """A weight vector gives what the scorers give on the duplicated sample list (CIDEr excepted: its IDF is fixed)."""
    preds, refs = list(MODEL.values()), list(REFS.values())
    w = np.array([3, 0, 1, 2, 0, 1, 1, 0])
    dup_p = [p for p, k in zip(preds, w) for _ in range(k)]
    dup_r = [r for r, k in zip(refs, w) for _ in range(k)]
    gts, res = _coco(dup_p, dup_r)
    got = scorer.score(preds, refs).corpus(w[None, :])
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    meteor, _ = scorer._meteor.compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    assert got["BLEU-4"][0] == pytest.approx(bleu[3], abs=1e-12)
    assert got["METEOR"][0] == pytest.approx(meteor, abs=1e-9)
    assert got["ROUGE-L"][0] == pytest.approx(rouge, abs=1e-12)


@pytest.mark.slow
def test_r2gen_cleaning_is_applied_to_both_sides(scorer):
    s = scorer.score(["THE LUNGS ARE CLEAR. No (effusion),"], ["the lungs are clear. no effusion"]).corpus()
    assert s["BLEU-1"] == pytest.approx(1.0) and s["ROUGE-L"] == pytest.approx(1.0)


def test_ce_matches_sklearn():
    rng = np.random.default_rng(0)
    ref = rng.random((60, 14)) < 0.3
    pred = rng.random((60, 14)) < 0.3
    pred[:, 1] = ref[:, 1] = False  # a class nobody mentions: macro counts it as 0, like zero_division=0
    got = ce_metrics(ce_counts(pred, ref).sum(0))
    for group, cols in (("CE", list(range(14))), ("CE5", [CONDITIONS.index(c) for c in COMMON5])):
        for avg in ("micro", "macro"):
            p, r, f, _ = precision_recall_fscore_support(ref[:, cols], pred[:, cols], average=avg, zero_division=0)
            assert (got[f"{group}-{avg}-P"], got[f"{group}-{avg}-R"], got[f"{group}-{avg}-F1"]) == pytest.approx((p, r, f))


def test_only_positive_labels_count():
    ref = [{"Cardiomegaly": 1, "Edema": -1, "Pleural Effusion": 0}, {"No Finding": 1}]
    pred = [{"Cardiomegaly": 1, "Edema": 1}, {"No Finding": 1, "Pneumothorax": -1}]
    counts = ce_counts(positives(pred), positives(ref))
    table = per_class_table(counts)
    assert table.loc["Cardiomegaly", "f1"] == 1.0
    assert table.loc["Edema", "predicted"] == 1 and table.loc["Edema", "support"] == 0  # uncertain reference = 0
    assert table.loc["Pneumothorax", "predicted"] == 0  # uncertain prediction = 0
    assert ce_metrics(counts.sum(0))["CE-micro-P"] == pytest.approx(2 / 3)


def test_bootstrap_helpers():
    w = resample_weights(7, 50, seed=1)
    assert w.shape == (50, 7) and (w.sum(1) == 7).all()
    assert np.array_equal(w, resample_weights(7, 50, seed=1))
    assert not np.array_equal(w, resample_weights(7, 50, seed=2))
    a = np.linspace(0.5, 0.6, 1000)
    assert paired_p_value(a, a) == 1.0
    assert paired_p_value(a, a - 0.1) < 0.01


def test_check_ids_names_missing_and_extra():
    preds = {f"x{i}": "" for i in range(8)} | {"s1": ""}
    with pytest.raises(UserError) as e:
        check_ids(preds, {"s1": "a", "s2": "b"}, "model")
    msg = str(e.value)
    assert "model" in msg and "1 missing (s2)" in msg and "8 not in the split (x0, x1, x2, x3, x4, ...)" in msg


@pytest.mark.slow
def test_evaluate_systems(scorer, tmp_path):
    systems = {"model": MODEL, "constant": CONSTANT, "oracle": REFS}
    result = evaluate_systems(systems, REFS, n_boot=200, seed=3, scorer=scorer)
    m = result.metrics
    assert set(m) == set(systems) and all(set(v) == set(METRICS) for v in m.values())
    assert m["oracle"]["BLEU-4"]["value"] == pytest.approx(1.0) and m["oracle"]["CE-micro-F1"]["value"] == 1.0
    for sys in systems:
        for metric in ("BLEU-4", "METEOR", "CE-micro-F1"):
            v = m[sys][metric]
            assert v["ci_low"] <= v["value"] + 1e-9 and v["value"] <= v["ci_high"] + 1e-9
    assert m["constant"]["CE5-micro-F1"]["value"] < m["model"]["CE5-micro-F1"]["value"]
    assert set(result.p_values["BLEU-4"]) == {"model vs constant", "model vs oracle", "constant vs oracle"}
    assert result.p_values["BLEU-4"]["model vs oracle"] < 0.05
    assert len(result.per_sample) == 3 * len(REFS)
    paths = result.save(tmp_path / "ev")
    assert all(p.stat().st_size > 0 for p in paths.values())
    assert json.loads(paths["metrics.json"].read_text())["model"]["CIDEr"].keys() == {"value", "ci_low", "ci_high"}
    md = paths["metrics.md"].read_text()
    assert "seed 3" in md and "200 paired resamples" in md and "| constant vs oracle |" in md
    assert paths["metrics.png"].read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_evaluate_single_system(scorer):
    r = evaluate(MODEL, REFS, n_boot=50, scorer=scorer)
    assert list(r.metrics) == ["predictions"] and r.p_values["BLEU-4"] == {}
    assert "p-values" not in r.to_markdown()


TRAIN = [
    "The heart is normal in size. The lungs are clear.",
    "the heart is normal in size . the lungs are clear .",
    "The heart is normal in size. The lungs are clear.",
    "Heart size normal. Lungs clear. No pleural effusion or pneumothorax.",
    "Heart size normal. Lungs clear. No pleural effusion or pneumothorax.",
    "Cardiomegaly. No pleural effusion.",
    "Cardiomegaly. No pleural effusion.",
    "Small right pleural effusion. The heart is normal in size.",
]


def test_constant_baselines():
    assert most_frequent(TRAIN) == TRAIN[0]  # 3 occurrences once cleaned
    # The fast search agrees with brute force through pycocoevalcap's scorer.
    refs = [clean(t) for t in TRAIN]
    brute = {}
    for cand in dict.fromkeys(refs):
        bs = BleuScorer(n=4)
        for r in refs:
            bs += (cand, [r])
        brute[cand] = bs.compute_score(option="closest")[0][3]
        assert constant_bleu4(cand, refs) == pytest.approx(brute[cand], abs=1e-12)
    assert clean(best_constant(TRAIN, min_count=1)) == max(brute, key=brute.get)
    assert best_constant(TRAIN, min_count=3) == TRAIN[0]  # the only report seen 3 times


def test_label_oracle_and_random_train():
    tests = ["Mild cardiomegaly. No effusion.", "Right pneumothorax."]
    out = label_oracle(TRAIN, tests)
    assert label(out[0]) == label(tests[0])  # exact label set exists in train
    assert out[1] in TRAIN  # no pneumothorax in train: nearest label set
    assert random_train(TRAIN, 5, seed=0) == random_train(TRAIN, 5, seed=0)
    assert random_train(TRAIN, 20, seed=0) != random_train(TRAIN, 20, seed=1)


def test_best_constant_on_iu_xray_reproduces_design_numbers():
    """No JVM: the chosen report and its BLEU on R2Gen's test split (DESIGN.md: B1 .507, B4 .160)."""
    from cxrgen.data.iu import load_iu_xray

    train = [s.findings for s in load_iu_xray("train")]
    test = [clean(s.findings) for s in load_iu_xray("test")]
    best = clean(best_constant(train))
    assert constant_bleu4(best, [clean(t) for t in train]) == pytest.approx(0.1412, abs=5e-4)
    bs = BleuScorer(n=4)
    for r in test:
        bs += (best, [r])
    bleu = bs.compute_score(option="closest")[0]
    assert bleu[0] == pytest.approx(0.507, abs=2e-3) and bleu[3] == pytest.approx(0.160, abs=2e-3)


@pytest.fixture
def dataset(tmp_path):
    ann = {
        "train": [{"id": f"t{i}", "report": r, "image_path": []} for i, r in enumerate(TRAIN)],
        "test": [{"id": k, "report": v, "image_path": []} for k, v in REFS.items()],
    }
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "annotation.json").write_text(json.dumps(ann))
    return f"phantom:{tmp_path / 'ds'}"


class _Lent:
    """The shared scorer, lent to code that would otherwise start (and stop) its own JVM."""

    def __init__(self, scorer):
        self.score = scorer.score

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass  # the JVM stays up for the other tests


@pytest.mark.slow
def test_cli_baseline_and_eval(dataset, tmp_path, capsys, monkeypatch, scorer):
    monkeypatch.setattr("cxrgen.evaluate.nlg.NLGScorer", lambda: _Lent(scorer))
    preds = tmp_path / "model.jsonl"
    preds.write_text("".join(json.dumps({"id": k, "report": v}) + "\n" for k, v in MODEL.items()))
    rf = tmp_path / "rf.jsonl"
    assert main(["baseline", "random-train", "--dataset", dataset, "--output", str(rf), "--seed", "4"]) == 0
    rows = read_predictions(rf)
    assert list(rows) == list(REFS) and all(r in TRAIN for r in rows.values())
    out = tmp_path / "ev"
    argv = ["eval", "--predictions", str(preds), "--predictions", str(rf), "--dataset", dataset,
            "--output", str(out), "--with-baselines", "--bootstrap", "100"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["model", "rf", "most-frequent", "best-constant", "label-oracle", "finding-oracle", "random-train"]
    assert json.loads((out / "bootstrap.json").read_text())["resamples"] == 100
    assert "| best-constant |" in capsys.readouterr().out


def test_cli_refuses_bad_predictions(dataset, tmp_path, capsys):
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"id": "s1", "report": "x"}) + "\n" + json.dumps({"id": "zz", "report": "y"}) + "\n")
    assert main(["eval", "--predictions", str(preds), "--dataset", dataset, "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "7 missing (s2, s3, s4, s5, s6, ...)" in err and "1 not in the split (zz)" in err
    preds.write_text('{"id": "s1", "report": "x"}\nnot json\n')
    assert main(["eval", "--predictions", str(preds), "--dataset", dataset, "--output", str(tmp_path / "o")]) == 2
    assert f"{preds}:2: not valid JSON" in capsys.readouterr().err
    assert main(["baseline", "best-constant", "--dataset", dataset, "--split", "val", "--output", str(tmp_path / "b.jsonl")]) == 2
    assert "no studies with findings in split 'val'" in capsys.readouterr().err
