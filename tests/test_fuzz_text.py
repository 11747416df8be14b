"""Arbitrary text never crashes or hangs the report text tools; the labeler is deterministic.

Text comes from two strategies: any Unicode, and radiology words, negations, hedges,
punctuation and section headers in random order (the inputs that reach the rules' deep paths).
A per-example deadline turns a regex that backtracks catastrophically into a failure.
"""
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxrgen.data.layouts.openi import ReportParseError, parse_report_xml
from cxrgen.data.tokenizer import ReportTokenizer
from cxrgen.evaluate.nlg import clean
from cxrgen.labeler import CONDITIONS, label, label_many, mentions
from cxrgen.simplify import simplify

WORDS = ["no", "not", "without", "free of", "may", "possible", "likely", "versus", "cannot exclude", "mild", "small",
         "large", "left", "right", "bilateral", "pleural", "effusion", "pneumothorax", "cardiomegaly", "heart",
         "size", "normal", "enlarged", "opacity", "nodular", "consolidation", "atelectasis", "edema", "fracture",
         "XXXX", "lungs", "clear", "is", "are", "and", "or", "the", ".", ",", ";", ":", "?", "\n", "-", "(", ")",
         "FINDINGS:", "IMPRESSION:", "1.", "2.", "cm", "5", "masslike", "stable", "unchanged", "resolved", "é", "😀"]
REPORTS = st.one_of(st.text(max_size=300), st.lists(st.sampled_from(WORDS), max_size=60).map(" ".join))
FUZZ = settings(max_examples=120, deadline=timedelta(seconds=2))
TOKENIZER = ReportTokenizer.build(["no pleural effusion or pneumothorax. the heart is normal."])
simplify("Warm-up: mild cardiomegaly.")  # the glossary loads once, outside the deadline


@FUZZ
@given(REPORTS)
def test_labeler_total_and_deterministic(text):
    labels = label(text)
    assert list(labels) == list(CONDITIONS) and set(labels.values()) <= {1, 0, -1, None}
    assert label(text) == labels and label_many([text, None]) == [labels, dict.fromkeys(CONDITIONS)]
    assert all(m.finding for m in mentions(text))


@FUZZ
@given(REPORTS)
def test_simplifier_never_crashes(text):
    result = simplify(text)
    assert isinstance(result.plain, str) and isinstance(result.note, str)
    assert set(result.guard) >= {"sentences", "passed", "fallbacks"} and isinstance(result.guard["passed"], bool)


@FUZZ
@given(REPORTS)
def test_cleaner_and_tokenizer(text):
    cleaned = clean(text)
    assert cleaned == "" or cleaned.endswith(" .")  # R2Gen's form: sentences joined by " . "
    ids = TOKENIZER.encode(text, max_len=40)
    assert ids[0] == TOKENIZER.bos_id and ids[-1] == TOKENIZER.eos_id and len(ids) <= 40
    assert isinstance(TOKENIZER.decode(ids), str)


@settings(max_examples=60, deadline=timedelta(seconds=2))
@given(REPORTS, REPORTS)
def test_openi_xml_reader_on_arbitrary_sections(findings, impression):
    """Any text inside a well-formed Open-i report reads back, or fails with the parser's own error."""
    from xml.sax.saxutils import escape

    xml = (f'<eCitation><MedlineCitation><Article><Abstract><AbstractText Label="FINDINGS">{escape(findings)}'
           f'</AbstractText><AbstractText Label="IMPRESSION">{escape(impression)}</AbstractText></Abstract>'
           f'</Article></MedlineCitation><parentImage id="CXR1_1_IM-0001-4001"/></eCitation>')
    try:
        report = parse_report_xml(xml.encode(), "fuzz.xml")
    except ReportParseError:
        return
    assert report["findings"] == " ".join(findings.split()) and report["impression"] == " ".join(impression.split())


@pytest.mark.timeout(120)  # a hang guard, not a speed goal
def test_long_report_finishes():
    """A 5,000-word report (no natural one is a tenth of that) goes through every tool."""
    text = " ".join(WORDS[i * 7 % len(WORDS)] for i in range(5000))
    assert label(text)["Pleural Effusion"] is not None
    assert simplify(text).guard["sentences"] > 100
    assert clean(text)
