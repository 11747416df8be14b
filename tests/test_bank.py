"""The report bank: training reports by finding set, most typical first; and reranking that offers them to the decoder."""
import json

import numpy as np
import pytest
import torch

from cxrgen.bank import FILE, ReportBank, bank_for_model, consensus_order, finding_set
from cxrgen.data.tokenizer import ReportTokenizer
from cxrgen.errors import UserError
from cxrgen.labeler import label_many

NORMAL = ["The heart is normal in size. The lungs are clear.",
          "The heart is normal in size. The lungs are clear. No pneumothorax.",
          "Heart size normal. Lungs clear.",
          "The heart is normal in size. The lungs are clear."]
EFFUSION = ["Small left pleural effusion. The heart is normal.", "There is a small right pleural effusion."]
CARDIO = ["The heart is enlarged."]


def _bank(reports, **kw) -> ReportBank:
    return ReportBank.build(reports, label_many(reports), **kw)


def test_reports_are_grouped_by_finding_set_most_typical_first():
    bank = _bank(NORMAL + EFFUSION + CARDIO)
    assert set(bank.sets) == {frozenset(), frozenset({"Pleural Effusion"}), frozenset({"Cardiomegaly"})}
    normal = bank.sets[frozenset()]
    # the repeated wording shares most n-grams with the others; the terse one shares fewest
    assert normal[0] == NORMAL[0] and normal[-1] == NORMAL[2] and len(normal) == 3  # distinct reports only
    assert bank.sizes[frozenset()] == 4


def test_consensus_order_keeps_the_first_spelling_and_the_cap_keeps_the_best():
    assert consensus_order(["The lungs are clear.", "the lungs are clear", "Lungs clear."])[0] == "The lungs are clear."
    assert _bank(NORMAL, per_set=1).sets[frozenset()] == [NORMAL[0]]


def test_the_filter_drops_candidates_without_changing_the_order():
    bank = _bank(NORMAL, keep=lambda r: "No pneumothorax" not in r)
    assert bank.sets[frozenset()] == [NORMAL[0], NORMAL[2]]
    assert _bank(EFFUSION + CARDIO, keep=lambda r: "enlarged" not in r).sets.keys() == {frozenset({"Pleural Effusion"})}


def test_a_set_the_bank_lacks_gets_the_nearest_one():
    bank = _bank(NORMAL + EFFUSION + CARDIO)
    both = frozenset({"Pleural Effusion", "Cardiomegaly"})
    assert bank.nearest(frozenset({"Cardiomegaly"})) == frozenset({"Cardiomegaly"})
    # both sets differ by one; Pleural Effusion has more training reports
    assert bank.nearest(both) == frozenset({"Pleural Effusion"})
    assert bank.candidates(frozenset({"Edema"})) == bank.sets[frozenset()]


def test_save_and_load_round_trip_and_a_corrupt_file_is_one_clear_error(tmp_path):
    bank = _bank(NORMAL + EFFUSION)
    bank.save(tmp_path)
    again = ReportBank.load(tmp_path)
    assert again.sets == bank.sets and again.sizes == bank.sizes
    assert ReportBank.load(tmp_path / "nothing") is None
    (tmp_path / FILE).write_text(json.dumps({"no_finding": True, "sets": [{"findings": []}]}))
    with pytest.raises(UserError, match="corrupt"):
        ReportBank.load(tmp_path)
    with pytest.raises(UserError, match="empty"):
        _bank(["x"], keep=lambda r: False)


def test_a_model_bank_keeps_no_placeholder_no_unknown_word_and_nothing_too_long():
    reports = ["The heart is normal.", "XXXX heart is normal.", "The heart is normal, zebra.",
               "The heart is normal and the lungs are clear and the mediastinum is normal."]
    tok = ReportTokenizer.build(reports, min_freq=2)  # "zebra" and "mediastinum" appear once: [UNK]
    bank = bank_for_model(reports, tok, max_len=8)
    assert bank.sets == {frozenset({"No Finding"}): ["The heart is normal."]}  # keyed on all 14, as the calls are


def test_finding_set_counts_uncertain_and_leaves_out_no_finding():
    assert finding_set(label_many(["Possible small effusion. No pneumothorax."])[0]) == frozenset({"Pleural Effusion"})
    assert finding_set(label_many(["The lungs are clear."])[0]) == frozenset()
    assert finding_set(label_many(["The lungs are clear."])[0], no_finding=True) == frozenset({"No Finding"})
    # a finding outside the 14 withholds No Finding: such a report does not answer a call of No Finding
    assert finding_set(label_many(["Degenerative changes of the spine."])[0], no_finding=True) == frozenset()


def test_reranking_with_a_bank_states_the_called_finding(generator_calling):
    """A random tiny model writes nothing sensible; with its classifier made to call Cardiomegaly, the bank's
    report for that set is chosen, and without a bank the draft is one of the model's own beams."""
    gen = generator_calling("Cardiomegaly")
    assert gen.bank is None
    image = np.full((64, 64), 128, np.uint8)
    plain = gen.generate(image, rerank=True)
    assert plain["calls"] == ["Cardiomegaly"]
    gen.bank = _bank(["Mild cardiomegaly.", "The heart is normal in size."], no_finding=True)
    drafted = gen.generate(image, rerank=True)
    assert drafted["report"] == "Mild cardiomegaly."
    assert gen.generate(image, rerank=False)["report"] == plain["report"]
    # a call means present: the report that states it beats a more typical one that hedges it
    hedged = "Mild cardiomegaly or normal in size."  # the tiny vocabulary has no "possible"
    gen.bank = _bank([hedged, hedged, "Mild cardiomegaly."], no_finding=True)
    assert gen.bank.sets[frozenset({"Cardiomegaly"})][0] == hedged
    assert gen.generate(image, rerank=True)["report"] == "Mild cardiomegaly."
    # among reports that agree equally, the most typical wording wins
    typical, rare = "Mild cardiomegaly. The lungs are clear.", "Mild cardiomegaly."
    gen.bank = _bank([typical, typical, rare], no_finding=True)
    assert gen.bank.sets[frozenset({"Cardiomegaly"})] == [typical, rare]
    assert gen.generate(image, rerank=True)["report"] == typical


def test_a_set_the_bank_lacks_is_planned_from_its_nearest_set_with_the_missing_finding_stated():
    from cxrgen.bank import statable

    reports = ["The heart is enlarged. No pleural effusion."] * 4 + [
               "Small left pleural effusion.", "There is a small pleural effusion.", "There is a small pleural effusion.",
               "The lungs are clear."]
    bank = ReportBank.build(reports, label_many(reports), no_finding=True, with_sentences=True)
    assert bank.sentences["Pleural Effusion"] == "There is a small pleural effusion."
    both = frozenset({"Cardiomegaly", "Pleural Effusion"})
    assert both not in bank.sets
    planned = bank.plan(both)
    assert planned == ["The heart is enlarged. There is a small pleural effusion."]  # the denial is gone
    assert finding_set(label_many(planned)[0], no_finding=True) == both
    assert bank.plan(frozenset({"No Finding"})) == ["The lungs are clear."]  # a set the bank has: as is
    assert statable(frozenset({"No Finding", "Pleural Effusion"})) == frozenset({"Pleural Effusion"})
    assert statable(frozenset({"No Finding", "Support Devices"})) == frozenset({"No Finding", "Support Devices"})


def test_a_planned_report_too_long_for_the_decoder_drops_its_normal_sentences_last_first():
    reports = ["The heart is enlarged. No pneumothorax. The lungs are clear. Bones are intact."] * 2 + [
               "There is a small pleural effusion."] * 2
    bank = ReportBank.build(reports, label_many(reports), no_finding=True, with_sentences=True)
    both = frozenset({"Cardiomegaly", "Pleural Effusion"})
    full = "The heart is enlarged. No pneumothorax. The lungs are clear. Bones are intact. There is a small pleural effusion."
    assert bank.plan(both) == [full]
    short = bank.plan(both, fits=lambda text: len(text.split()) <= 12)
    assert short == ["The heart is enlarged. No pneumothorax. There is a small pleural effusion."]
    # the findings stay even when nothing else can go
    assert bank.plan(both, fits=lambda text: False) == ["The heart is enlarged. There is a small pleural effusion."]


def test_a_call_set_is_planned_once_per_bank(generator_calling):
    """Planning labels the bank's sentences, so each call set is planned once; a new bank plans afresh."""
    gen = generator_calling("Cardiomegaly")
    image = np.full((64, 64), 128, np.uint8)
    for reports, expected in ((["Mild cardiomegaly."], "Mild cardiomegaly."),
                              (["Mild cardiomegaly. The lungs are clear."], "Mild cardiomegaly. The lungs are clear.")):
        gen.bank = _bank(reports, no_finding=True)
        planned = []
        plan = gen.bank.plan
        gen.bank.plan = lambda *a: planned.append(a[0]) or plan(*a)
        assert [gen.generate(image, rerank=True)["report"] for _ in range(3)] == [expected] * 3
        assert planned == [frozenset({"Cardiomegaly"})]
