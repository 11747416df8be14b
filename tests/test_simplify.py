"""Plain-language rewriting: glossary, negation/side safety on unseen sentences, gaps, guard, model, CLI."""
import io
import json
import re

import pytest

from cxrgen import labeler
from cxrgen.cli import main
from cxrgen.simplify import (DRAFT_NOTE, cues, differences, fill_gaps, kept_terms, load_glossary, load_phrases,
                             read_as_terms, simplify, unexplained)

# Written for this test, not taken from IU X-ray: (sentence, observation, expected status in the original).
UNSEEN = [
    ("No pneumothorax is present on today's film.", "Pneumothorax", 0),
    ("There is no pneumothorax on either side.", "Pneumothorax", 0),
    ("We see no pneumothorax and no pleural effusion.", "Pneumothorax", 0),
    ("Negative for pneumothorax after line placement.", "Pneumothorax", 0),
    ("Without pneumothorax or effusion.", "Pneumothorax", 0),
    ("Pneumothorax is not seen.", "Pneumothorax", 0),
    ("The left pneumothorax has resolved.", "Pneumothorax", 0),
    ("Tiny left apical pneumothorax.", "Pneumothorax", 1),
    ("Small right pneumothorax, slightly larger.", "Pneumothorax", 1),
    ("Possible small left pneumothorax.", "Pneumothorax", -1),
    ("No left pleural effusion is present today.", "Pleural Effusion", 0),
    ("Moderate left pleural effusion with basilar opacity.", "Pleural Effusion", 1),
    ("Small right pleural effusion, new since yesterday.", "Pleural Effusion", 1),
    ("Large bilateral pleural effusions.", "Pleural Effusion", 1),
    ("Trace left effusion cannot be excluded.", "Pleural Effusion", -1),
    ("No cardiomegaly on this portable view.", "Cardiomegaly", 0),
    ("Marked cardiomegaly with a globular heart.", "Cardiomegaly", 1),
    ("Mild cardiomegaly, unchanged from before.", "Cardiomegaly", 1),
    ("No edema is identified today.", "Edema", 0),
    ("Mild pulmonary edema in both lungs.", "Edema", 1),
    ("Findings may represent early edema.", "Edema", -1),
    ("No consolidation in the right lung.", "Consolidation", 0),
    ("Dense consolidation in the right lower lobe.", "Consolidation", 1),
    ("Left lower lobe consolidation is new.", "Consolidation", 1),
    ("Patchy left basilar atelectasis.", "Atelectasis", 1),
    ("Right middle lobe atelectasis is seen.", "Atelectasis", 1),
    ("No atelectasis at the lung bases.", "Atelectasis", 0),
    ("A 1 cm nodule in the left upper lobe.", "Lung Lesion", 1),
    ("No suspicious nodule or mass in either lung.", "Lung Lesion", 0),
    ("Right hilar mass, new.", "Lung Lesion", 1),
    ("No pneumonia in the left lung.", "Pneumonia", 0),
    ("Right lower lobe pneumonia is suspected.", "Pneumonia", -1),
    ("Acute fracture of the left seventh rib.", "Fracture", 1),
    ("No displaced rib fracture on the right.", "Fracture", 0),
    ("Old healed right clavicle fracture.", "Fracture", 1),
    ("Hazy left basilar opacity.", "Lung Opacity", 1),
    ("No focal opacity in the right lung.", "Lung Opacity", 0),
    ("The mediastinum is widened on this film.", "Enlarged Cardiomediastinum", 1),
    ("Left chest wall pacemaker with two leads.", "Support Devices", 1),
    ("Right PICC line tip in the lower SVC.", "Support Devices", 1),
    ("Calcified granuloma in the left lung apex.", None, 1),
]


def _sides(text: str) -> set:
    return {m.laterality for m in labeler.mentions(text) if m.laterality}


def test_glossary_size_and_safe_wording():
    glossary = load_glossary()
    assert len(glossary) >= 150
    hedges = re.compile(labeler._NEGATION_PRE.pattern + "|" + labeler._UNCERTAIN_PRE.pattern)
    for e in glossary:
        # A plain phrase must neither negate nor hedge where its term does not ("suggestive of" -> "suggesting"),
        # nor name a finding its term does not name.
        assert not hedges.search(e.plain.lower()) or hedges.search(e.term), e
        extra = ({m.observation or m.finding for m in labeler.mentions(e.plain)}
                 - {m.observation or m.finding for m in labeler.mentions(e.term)})
        assert not extra, (e, extra)
        # Nor may it add a time or certainty word ("past", "new", "possible") that the guard compares.
        assert cues(e.plain) <= cues(e.term), (e, cues(e.plain))
    for term in ("cardiomegaly", "pleural effusion", "atelectasis", "granuloma", "pneumothorax"):
        assert term in {e.term for e in glossary}
    assert {r.kind for r in load_phrases()} == {"time", "certainty", "history", "polarity"}


@pytest.mark.parametrize("sentence,observation,status", UNSEEN)
def test_unseen_sentences_keep_negation_and_side(sentence, observation, status):
    if observation is not None:
        assert labeler.label(sentence)[observation] == status, "test sentence misread by the labeler"
    result = simplify(sentence)
    assert result.guard["passed"]
    assert len(result.sentences) == 1
    plain = result.plain
    assert not differences(sentence, plain)
    if observation is not None:  # the guard reads plain words through the glossary ("middle of the chest": mediastinum)
        assert labeler.label(read_as_terms(plain))[observation] == status
    assert _sides(read_as_terms(plain)) == _sides(sentence)
    for side in ("left", "right"):  # the word itself survives, so a reader sees the same side
        if re.search(rf"\b{side}\b", sentence, re.I):
            assert re.search(rf"\b{side}\b", plain, re.I), plain


def test_no_pneumothorax_never_becomes_positive():
    for s, obs, status in UNSEEN:
        if obs == "Pneumothorax" and status == 0:
            assert labeler.label(simplify(s).plain)["Pneumothorax"] == 0


def test_report_examples_and_note():
    r = simplify("Mild cardiomegaly. No pneumothorax or pleural effusion. The lungs are clear.")
    assert r.guard == {"sentences": 3, "passed_before_fallback": True, "fallbacks": [], "passed": True}
    assert "enlarged heart" in r.plain.lower()
    assert "fluid around the lung" in r.plain
    assert r.plain.endswith("The lungs look clear.")
    assert DRAFT_NOTE not in r.plain and "doctor" in r.note
    assert [s.method for s in r.sentences] == ["rewrite"] * 3


def test_deidentification_gaps():
    assert fill_gaps("Clear lung XXXX bilaterally.") == "Clear lung bilaterally."
    assert fill_gaps("The XXXX are intact.") == "(hidden word) are intact."
    r = simplify("XXXX. The heart and lungs have XXXX XXXX in the interval. Chest x-XXXX.")
    assert len(r.sentences) == 3  # nothing dropped
    assert "xxxx" not in r.plain.lower()
    assert r.sentences[0].method == "hidden"
    assert "(hidden word)" in r.sentences[1].plain


def test_guard_falls_back_when_a_rewriter_drops_the_negation():
    r = simplify("No left pneumothorax. Heart size is normal.", rewriter=lambda s: s.replace("No ", ""))
    assert not r.guard["passed_before_fallback"] and r.guard["passed"]
    assert [f["index"] for f in r.guard["fallbacks"]] == [0]
    assert "Pneumothorax: 0 -> 1" in r.guard["fallbacks"][0]["differences"]
    assert r.sentences[0].plain == "No left pneumothorax (air leak around the lung)."
    assert labeler.label(r.plain)["Pneumothorax"] == 0


def test_bad_input():
    with pytest.raises(TypeError):
        simplify(None)
    r = simplify("")
    assert r.plain == "" and r.guard["sentences"] == 0 and r.guard["passed"]


def test_real_iu_reports_pass_the_guard():
    from cxrgen.data.iu import load_iu_reports

    studies = load_iu_reports()[:60]
    for s in studies:
        r = simplify(s.report)
        assert r.guard["passed"], (s.id, r.guard)
        assert len(r.sentences) == r.guard["sentences"]


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory):
    """A randomly initialised T5 with a word-level tokenizer, saved like a real local model."""
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    words = ["<pad>", "</s>", "<unk>"] + sorted({w.lower() for s, _, _ in UNSEEN for w in re.findall(r"\w+", s)})
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    config = T5Config(vocab_size=len(words), d_model=16, d_ff=32, d_kv=8, num_layers=1, num_decoder_layers=1,
                      num_heads=2, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    path = tmp_path_factory.mktemp("t5")
    T5ForConditionalGeneration(config).save_pretrained(path)
    fast.save_pretrained(path)
    return path


def test_seq2seq_model_behind_the_guard(tiny_t5):
    from cxrgen.simplify import Seq2SeqRewriter

    rewriter = Seq2SeqRewriter(tiny_t5, max_new_tokens=8)
    report = "Small left pleural effusion. No pneumothorax."
    r = simplify(report, rewriter)
    # Random weights write random words: the guard must catch it and keep every finding and side.
    assert not r.guard["passed_before_fallback"] and r.guard["passed"]
    assert not differences(report, r.plain)
    assert "left" in r.plain and "effusion" in r.plain


def test_cli_jsonl_and_stdin(tmp_path, monkeypatch, capsys, tiny_t5):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "a", "report": "No pneumothorax. XXXX."}) + "\n\n"
                   + json.dumps({"id": 7, "report": "Left lower lobe atelectasis."}) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["simplify", "--input", str(src), "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", 7]
    assert set(rows[0]) == {"id", "plain", "guard", "note"} and rows[0]["guard"]["passed"]
    assert "left" in rows[1]["plain"]

    monkeypatch.setattr("sys.stdin", io.StringIO("No acute cardiopulmonary abnormality."))
    assert main(["simplify"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("Nothing urgent was seen in the heart or lungs.") and DRAFT_NOTE in printed

    monkeypatch.setattr("sys.stdin", io.StringIO("Small right effusion."))
    assert main(["simplify", "--model", str(tiny_t5), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["guard"]["passed"]

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n')
    assert main(["simplify", "--input", str(bad)]) == 2
    assert main(["simplify", "--input", str(tmp_path / "missing.jsonl")]) == 2
    assert main(["simplify", "--model", str(tmp_path), "--input", str(src)]) == 2
    assert "error:" in capsys.readouterr().err


# Written for this test, not taken from IU X-ray: report conventions (time, certainty, history, polarity)
# and common jargon. (sentence, words that must be gone from the plain version, words it must contain)
CONVENTIONS = [
    ("Interval clearing of the left basilar opacity.", ["interval"], ["clearing since the last X-ray", "left"]),
    ("The right pleural effusion has resolved.", [], ["cleared", "right"]),
    ("No interval change in the small left pleural effusion.", ["interval"], ["no change since the last X-ray"]),
    ("Stable mild cardiomegaly compared to the prior study.", ["stable", "prior"], ["unchanged since the last X-ray"]),
    ("New right upper lobe consolidation.", [], ["new", "right upper lung"]),
    ("Interval improvement in the right basilar airspace disease.", ["interval"], ["improved since the last X-ray"]),
    ("Interval worsening of bilateral interstitial opacities.", ["interval"], ["have become worse", "both sides"]),
    ("Left lower lobe atelectasis is redemonstrated.", ["redemonstrated"], ["seen again", "left"]),
    ("Unchanged small right apical pneumothorax.", [], ["unchanged since the last X-ray", "right"]),
    ("Findings concerning for early pneumonia.", ["concerning"], ["could mean"]),
    ("Right basilar opacity, suggestive of atelectasis.", ["suggestive"], ["possible", "right"]),
    ("Cannot exclude a small left pleural effusion.", ["exclude"], ["may be", "left"]),
    ("Left lower lobe atelectasis versus pneumonia.", ["versus"], ["or possibly", "left"]),
    ("Small bilateral effusions, most likely.", ["likely"], ["probably"]),
    ("No frank pulmonary edema.", ["frank"], ["no obvious"]),
    ("The osseous structures are grossly intact.", ["grossly", "osseous"], ["bones"]),
    ("Status post CABG with intact sternal wires.", ["status post"], ["after heart bypass surgery"]),
    ("The patient is status post left mastectomy.", ["status post"], ["has had", "left"]),
    ("Negative for acute osseous abnormality.", ["negative"], ["no urgent bone problem"]),
    ("No evidence of pneumothorax on the left.", ["evidence"], ["no sign of", "left"]),
    ("The lungs are free of focal consolidation.", ["free of"], ["show no"]),
    ("Without evidence of pleural effusion.", ["evidence"], ["without any sign of"]),
    ("No adenopathy is seen.", ["adenopathy is"], ["swollen glands are seen"]),
    ("Right lower lobe pulmonary nodule.", ["lung lung"], ["small round spot", "right lower lung"]),
    ("Hyperexpanded lungs with flattened hemidiaphragms.", [], ["lungs holding too much air"]),
    ("Possible retrocardiac atelectasis.", [], ["possible", "behind the heart"]),
    # hedged findings with sides, where a bracket after each term used to push a word out of the labeler's reach
    ("Minimal right basilar subsegmental atelectasis or scarring.", [], ["right", "partly deflated lung"]),
    ("Left apical pleural thickening versus scarring.", ["versus"], ["or possibly", "left"]),
    ("Subtle right midlung opacity may represent atelectasis or early pneumonia.", [], ["may", "right", "deflated"]),
    ("Bibasilar airspace opacities, left greater than right, concerning for aspiration.", ["concerning"],
     ["both lungs", "left greater than right"]),
    ("Calcified left hilar granulomas, unchanged.", [], ["left", "unchanged", "old healed illness"]),
    ("No residual right pleural effusion or pneumothorax.", [], ["no residual", "right", "air leak"]),
]


# Plain words of the glossary that wordfreq ranks low but a lay reader knows.
EVERYDAY = {"hazy", "deflated", "glands", "breastbone", "halves", "unbroken", "spotty", "windpipe", "collarbone",
            "thickened"}


@pytest.fixture(scope="module")
def jargon():
    """A word outside a general-audience word list (wordfreq, as scripts/simplify_terms.py uses)."""
    wordfreq = pytest.importorskip("wordfreq")

    def is_jargon(word: str) -> bool:
        return (word not in kept_terms() and word not in EVERYDAY
                and any(wordfreq.zipf_frequency(p, "en") < 3.5 for p in word.split("-")))
    return is_jargon


@pytest.mark.parametrize("sentence,gone,present", CONVENTIONS)
def test_conventions_become_plain_clauses(sentence, gone, present, jargon):
    r = simplify(sentence)
    plain = r.plain
    assert r.guard["passed_before_fallback"], r.guard
    assert not differences(sentence, plain)  # labels, sides, time and certainty
    assert cues(plain) == cues(sentence)
    for word in gone:
        assert not re.search(rf"\b{word}\b", plain, re.I), plain
    for words in present:
        assert words.lower() in plain.lower(), plain
    for side in ("left", "right"):
        if re.search(rf"\b{side}\b", sentence, re.I):
            assert re.search(rf"\b{side}\b", plain, re.I), plain
    assert not re.search(r"(?<![\w-])([a-z]+)\s+\1(?![\w-])", plain, re.I), plain
    assert not unexplained(plain, jargon), (plain, unexplained(plain, jargon))
    assert plain[0].isupper() and plain.endswith(".")


def test_negation_and_uncertainty_survive_the_conventions():
    assert labeler.label(simplify("Negative for pneumothorax.").plain)["Pneumothorax"] == 0
    assert labeler.label(simplify("No evidence of pleural effusion.").plain)["Pleural Effusion"] == 0
    assert labeler.label(simplify("Findings concerning for pneumonia.").plain)["Pneumonia"] == -1
    assert labeler.label(simplify("Cannot exclude a small left pleural effusion.").plain)["Pleural Effusion"] == -1
    assert "uncertain" in cues(simplify("Left basilar atelectasis versus scarring.").plain)


def test_guard_rejects_lost_time_and_certainty():
    # A rewriter that turns a resolved finding into a present one, or a possible one into a certain one.
    r = simplify("The left pneumothorax has resolved.", rewriter=lambda s: "There is a pneumothorax on the left.")
    assert not r.guard["passed_before_fallback"] and r.guard["passed"]
    r = simplify("Possible granuloma in the right lung.", rewriter=lambda s: s.replace("Possible ", ""))
    assert "lost uncertain" in r.guard["fallbacks"][0]["differences"]
    assert r.sentences[0].plain.startswith("Possible")
    r = simplify("Stable calcified granuloma.", rewriter=lambda s: "A new calcified granuloma.")
    assert {"lost same", "added new"} <= set(r.guard["fallbacks"][0]["differences"])


def test_grammar_after_substitution():
    assert simplify("No adenopathy is seen.").plain == "No swollen glands are seen."
    assert simplify("Hyperexpanded lungs.").plain.startswith("Lungs holding too much air")
    assert simplify("Right lower lobe pulmonary nodule.").plain.count("lung") == 1
    assert "the the" not in simplify("Heart size is normal in the the lungs are clear.").plain.lower()


def test_the_guard_reads_plain_words_and_brackets_through_the_glossary():
    assert read_as_terms("Partly deflated lung (atelectasis) in the lower part of both lungs.") == \
        "atelectasis in the bibasilar."
    assert read_as_terms("Atelectasis (partly deflated lung) in the left lower lung.") == "Atelectasis in the left lower lobe."
    assert read_as_terms("Costophrenic (hidden word) and XXXX XXXX.") == "Costophrenic XXXX and XXXX."
    # A bracket that names another finding is no restatement: it is read.
    assert "pneumothorax" in read_as_terms("No fluid around the lung (pneumothorax).")


def test_a_word_is_explained_only_by_a_bracket_after_it_or_after_its_term():
    words = {"pleural", "effusion", "atelectasis"}.__contains__
    assert unexplained("Pleural effusion (fluid around the lung).", words) == []
    assert unexplained("Partly deflated lung (atelectasis), left.", words) == []
    assert unexplained("Atelectasis in the left lung (partly deflated lung).", words) == ["atelectasis"]
    assert unexplained("Small pleural effusion and atelectasis (partly deflated lung).", words) == ["pleural", "effusion"]


# Written for this test: rewrites in plain words that change the meaning. Reading plain words back as
# their terms must not hide any of them. (original, bad rewrite, a difference the guard must report)
MEANING_CHANGES = [
    ("No left pleural effusion.", "Fluid around the lung on the left.", "Pleural Effusion: 0 -> 1"),
    ("Left lower lobe atelectasis.", "Partly deflated lung in the right lower lung.", "lost Atelectasis side left"),
    ("The right pleural effusion has resolved.", "There is fluid around the lung on the right.", "lost resolved"),
    ("Possible left lower lobe atelectasis.", "Partly deflated lung in the left lower lung.", "Atelectasis: -1 -> 1"),
    ("Small left pneumothorax.", "Small fluid around the lung on the left.", "Pneumothorax: 1 -> None"),
    ("No pleural effusion.", "No fluid around the lung (pneumothorax).", "Pneumothorax: None -> 0"),
    ("Stable right basilar scarring.", "New scar tissue in the right lower lung.", "added new"),
]


@pytest.mark.parametrize("original,rewrite,difference", MEANING_CHANGES)
def test_plain_words_that_change_the_meaning_still_fall_back(original, rewrite, difference):
    r = simplify(original, rewriter=lambda s: rewrite)
    assert not r.guard["passed_before_fallback"] and r.guard["passed"]
    assert difference in r.guard["fallbacks"][0]["differences"]
    assert r.sentences[0].method == "gloss" and not differences(original, r.plain)
