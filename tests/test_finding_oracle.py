"""finding-oracle: one consensus training report per finding set, the ceiling of an image reader on phantom data."""
import pytest
from pycocoevalcap.bleu.bleu_scorer import BleuScorer

from cxrgen.bank import ConstantBleu, finding_set
from cxrgen.evaluate.baselines import build_baseline, finding_oracle
from cxrgen.evaluate.nlg import clean
from cxrgen.labeler import label

CARDIO = [
    "Cardiomegaly is present.",
    "The heart is enlarged. Lungs are clear.",
    "Mild cardiomegaly. The lungs are clear. No pneumothorax.",
    "Mild cardiomegaly. The lungs are clear.",
]
NORMAL = ["The lungs are clear. No pleural effusion.", "The lungs are clear. No pleural effusion.", "Heart size normal."]


def _leave_one_out_bleu4(candidate_index: int, reports: list[str]) -> float:
    bs = BleuScorer(n=4)
    for i, r in enumerate(reports):
        if i != candidate_index:
            bs += (clean(reports[candidate_index]), [clean(r)])
    return bs.compute_score(option="closest")[0][3]


def test_finding_set_is_positive_or_uncertain_without_no_finding():
    assert finding_set(label("Possible small left effusion. Cardiomegaly. No pneumothorax.")) == \
        {"Pleural Effusion", "Cardiomegaly"}
    assert finding_set(label("The lungs are clear.")) == frozenset()


def test_consensus_is_the_report_closest_to_the_rest_of_its_set():
    scores = [_leave_one_out_bleu4(i, CARDIO) for i in range(len(CARDIO))]
    fast = ConstantBleu([clean(r) for r in CARDIO])
    assert [fast.bleu4(clean(r), leave_out=True) for r in CARDIO] == pytest.approx(scores, abs=1e-12)
    best = CARDIO[max(range(len(CARDIO)), key=scores.__getitem__)]
    assert best == CARDIO[3]
    out = finding_oracle(CARDIO + NORMAL, ["Moderate cardiomegaly.", "No acute disease. Lungs clear."])
    assert out[0] == best
    assert out[1] == NORMAL[0]  # its duplicate makes it the consensus of the empty set


def test_a_set_without_training_reports_takes_the_nearest_set():
    out = finding_oracle(CARDIO + NORMAL, ["Cardiomegaly. Small right pneumothorax."])
    assert out[0] in CARDIO  # {Cardiomegaly, Pneumothorax} is one observation from {Cardiomegaly}
    assert build_baseline("finding-oracle", CARDIO + NORMAL, ["Cardiomegaly. Small right pneumothorax."]) == out


def test_on_iu_xray_it_scores_like_design_md():
    """No JVM: BLEU-4 on R2Gen's test split (DESIGN.md's perfect reader: B4 .159)."""
    from cxrgen.data.iu import load_iu_xray

    train = [s.findings for s in load_iu_xray("train") if s.findings.strip()]
    test = [s.findings for s in load_iu_xray("test") if s.findings.strip()]
    bs = BleuScorer(n=4)
    for pred, ref in zip(finding_oracle(train, test), test):
        bs += (clean(pred), [clean(ref)])
    assert bs.compute_score(option="closest")[0][3] == pytest.approx(0.159, abs=3e-3)
