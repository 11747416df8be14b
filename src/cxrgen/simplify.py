"""Plain-language rewriting of radiology reports, with a consistency guard.

Why a guard: a simpler report is only safe if it still says the same thing. Each sentence is
rewritten on its own (glossary rules, or a local seq2seq model), then the labeler reads the
original and the rewrite. If the 14 CheXpert observations or any side (left/right/bilateral)
differ, or a kind of time or certainty word (resolved, new, unchanged, possible, ...) is lost or
added, the rewrite is thrown away and the sentence falls back to a literal gloss: the original
words with plain explanations in brackets. Nothing is dropped: every sentence of the input gives
one sentence of output.

The glossary (resources/glossary.json) holds phrase rules for report conventions ("negative for"
-> "no", "interval development of X" -> "X, new since the last X-ray"), applied first, and maps
radiology terms to plain words. The labeler knows report words, not plain ones ("fluid around the
lung"), so the guard reads a rewrite through the glossary (`read_as_terms`): plain phrases are put
back as their terms and brackets that only restate a term are dropped, then the labeler reads it. A
finding still keeps its name in brackets, "fluid around the lung (pleural effusion)", so the patient
can ask about it by name.

Example:
    >>> r = simplify("Mild cardiomegaly. No pneumothorax or pleural effusion.")
    >>> r.plain
    'A slightly enlarged heart. No air leak around the lung (pneumothorax) or fluid around the lung (pleural effusion).'
    >>> r.guard["passed_before_fallback"], r.guard["passed"]
    (True, True)
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable, Iterator

from cxrgen import labeler
from cxrgen.data.reports import split_sentences

_logger = logging.getLogger(__name__)

DRAFT_NOTE = (
    "This plain-language version was written by a computer from a radiology report. "
    "It is a draft, not a diagnosis: please go through it with your doctor."
)

Rewriter = Callable[[str], "str | Iterable[str]"]  # a sentence -> candidate rewrites, best first


@dataclass(frozen=True)
class GlossEntry:
    term: str
    plain: str
    kind: str  # "finding", "device", "anatomy" or "word": used for coverage reports only
    place: str = ""  # "after": an adjective whose plain words go after the noun ("lungs holding too much air")


@dataclass(frozen=True)
class PhraseRule:
    """A report convention and its plain clause: "negative for" -> "no", "interval development of {x}"."""
    match: str
    plain: str
    kind: str  # "time", "certainty", "history" or "polarity"
    regex: re.Pattern


_LOCK = "\x02"
# The `{x}` of a phrase rule: the words it applies to, up to punctuation or the next clause.
_NOUN_PHRASE = r"(?P<x>[^,.;:()]+?)(?=\s*(?:[,.;:()]|$)|\s+(?:with|which|but|since|compared|when|that)\b)"


@dataclass
class SentenceResult:
    original: str
    plain: str
    method: str  # "rewrite", "gloss" (guard fallback), "original" (gloss failed too), "hidden"
    passed: bool  # did the first rewrite keep the labeler's reading?
    differences: list[str] = field(default_factory=list)


@dataclass
class SimplifyResult:
    plain: str  # the rewritten sentences only; the draft note is separate
    guard: dict
    sentences: list[SentenceResult]
    note: str = DRAFT_NOTE

    def to_dict(self) -> dict:
        return asdict(self)


# --- glossary --------------------------------------------------------------------------------------

def _resource() -> dict:
    text = resources.files("cxrgen.resources").joinpath("glossary.json").read_text(encoding="utf-8")
    return json.loads(text)


@lru_cache(maxsize=1)
def load_glossary() -> tuple[GlossEntry, ...]:
    """The packaged glossary, longest terms first (so "pleural effusion" wins over "effusion")."""
    entries = [GlossEntry(e["term"].lower(), e["plain"], e["kind"], e.get("place", "")) for e in _resource()["terms"]]
    return tuple(sorted(entries, key=lambda e: -len(e.term)))


@lru_cache(maxsize=1)
def load_phrases() -> tuple[PhraseRule, ...]:
    """The report conventions (time, certainty, history, polarity), in the order they are applied."""
    rules = []
    for e in _resource()["phrases"]:
        pattern = e["match"].replace("{x}", _NOUN_PHRASE)
        # Whole words only; the plain words a rule writes are joined by _LOCK so no later rule rewrites them.
        start = rf"(?<![\w{_LOCK}-])" if re.match(r"[\w(]", e["match"]) else ""
        end = rf"(?![\w{_LOCK}-])" if re.search(r"[\w)?]$", e["match"]) else ""
        rules.append(PhraseRule(e["match"], e["plain"], e["kind"], re.compile(start + pattern + end, re.IGNORECASE)))
    return tuple(rules)


@lru_cache(maxsize=1)
def kept_terms() -> dict[str, str]:
    """Frequent report words deliberately left as they are, with the reason (e.g. units of a number)."""
    return {e["term"].lower(): e["why"] for e in _resource()["kept"]}


@lru_cache(maxsize=1)
def _glossary_regex() -> re.Pattern:
    terms = "|".join(re.escape(e.term) for e in load_glossary())
    return re.compile(rf"(?<![\w-])(?:{terms})(?![\w-])", re.IGNORECASE)


@lru_cache(maxsize=1)
def _term_at_end() -> re.Pattern:
    return re.compile(_glossary_regex().pattern + r"$", re.IGNORECASE)


@lru_cache(maxsize=1)
def _by_term() -> dict[str, GlossEntry]:
    return {e.term: e for e in load_glossary()}


def _labels_and_sides(text: str) -> tuple[tuple, frozenset]:
    """What the labeler takes from a text as written: the 14 labels and every (observation, side) pair."""
    labels = labeler.label(text)
    sides = frozenset((m.observation, m.laterality) for m in labeler.mentions(text))
    return tuple(labels[c] for c in labeler.CONDITIONS), sides


def _bare(plain: str) -> str:
    """A plain phrase without its leading article: "a hazy area" -> "hazy area"."""
    return re.sub(r"^(?:a|an) ", "", plain)


# Sentences a term and its plain words are read in: alone, in a "normal" frame (anatomy terms such as
# "mediastinal contours" only become findings when something is said about them) and beside a finding
# (so plain words that carry a side, "lower part of the left upper lung", count).
_FRAMES = ("{}.", "The {} is normal.", "Opacity in the {}.")


@lru_cache(maxsize=None)
def _frame_readings(text: str) -> tuple:
    return tuple(_labels_and_sides(frame.format(text)) for frame in _FRAMES)


@lru_cache(maxsize=None)
def _read_differently(term: str) -> bool:
    """Does the labeler read the term's plain words differently from the term?"""
    return _frame_readings(term) != _frame_readings(_by_term()[term].plain)


@lru_cache(maxsize=1)
def _read_back() -> tuple[re.Pattern, dict[str, str]]:
    """The plain phrases the guard puts back as their terms, each with its term, and a regex that finds
    them and, so that nothing inside a term is touched, the terms themselves.

    A phrase is put back when the labeler reads it differently from its term, or when it is longer than
    one word (a long phrase would push a side or hedge word out of the labeler's reach). A phrase shared
    by terms the labeler reads differently ("lumpy spot": nodular density, which is no opacity, or
    nodular opacity) stands for no single reading and is read as written.
    """
    terms_by_plain: dict[str, list[str]] = {}
    for e in load_glossary():
        terms_by_plain.setdefault(_bare(e.plain).lower(), []).append(e.term)
    back = {plain: terms[0] for plain, terms in terms_by_plain.items()
            if plain not in _by_term() and (" " in plain or any(map(_read_differently, terms)))
            and len({_frame_readings(t) for t in terms}) == 1}
    # Every term and plain phrase is found whole, so no part of one is read back on its own.
    phrases = "|".join(re.escape(p) for p in sorted({*terms_by_plain, *_by_term()}, key=len, reverse=True))
    return re.compile(rf"(?<![\w-])(?:{phrases})(?![\w-])", re.IGNORECASE), back


def read_as_terms(text: str) -> str:
    """The text as the guard reads it: each plain phrase of the glossary is put back as its term (see
    `_read_back`), and a bracket that only restates the term just before it, by name or in its plain
    words, is dropped. "Partly deflated lung (atelectasis) in the lower part of both lungs" and
    "Atelectasis (partly deflated lung) in the lower part of both lungs" both read "atelectasis in the
    bibasilar". Gaps are read as one `XXXX` each (see `_one_gap`). Everything else
    (negation, hedges, sides, other brackets) is read as written.
    """
    regex, back = _read_back()
    text = _drop_restatements(_one_gap(text))
    return _drop_restatements(regex.sub(lambda m: back.get(m.group().lower(), m.group()), text))


def _drop_restatements(text: str) -> str:
    """Drop each bracket that names the term just before it, or says its plain words."""
    def meaning(words: str) -> str:
        words = words.strip().lower()
        return _bare(_by_term()[words].plain).lower() if words in _by_term() else words

    def bracket(m: re.Match) -> str:
        before = _term_at_end().search(text, 0, m.start())
        return "" if before and meaning(before.group()) == meaning(m.group(1)) else m.group()
    return re.sub(r"\s*\(([^()]*)\)", bracket, text)


@lru_cache(maxsize=4096)  # the original sentence is read once per candidate rewrite
def _reading(text: str) -> tuple[tuple, frozenset]:
    """What the guard compares of the labeler's reading: labels and sides of the text read as terms."""
    return _labels_and_sides(read_as_terms(text))


# Time and certainty, which the labeler does not report. A rewrite must keep every kind its original
# has and add none: "has resolved" must not become present, "possible" must not become certain.
# Mentions of the comparison exam itself ("compared to the prior study", "on the prior XXXX", where the gap hides
# the exam's name) are not history of the patient.
_COMPARISON = re.compile(
    r"\b(?:the |a )?(?:prior|previous|last|earlier|recent|most recent) (?:(?:chest )?"
    r"(?:exam\w*|stud\w*|films?|radiograph\w*|x-ray\w*|x-xxxx|images?|imaging|ct)\b|chest (?:xxxx|\(hidden word\)))"
    r"|\b(?:to|from|than|with|since|on) (?:the )?(?:prior|previous)\b(?: xxxx| \(hidden word\))?(?=\s*(?:[.,;]|$))",
    re.IGNORECASE)
_CUE_PATTERNS = {
    "uncertain": r"possible|possibly|probable|probably|likely|may|might|could|question|questionabl\w*|suspicio\w*|"
                 r"suspect\w*|suggest\w*|concerning|cannot|can not|"
                 r"not (?:be )?(?:entirely |completely )?(?:excluded|ruled out)|"
                 r"differential|versus|vs|equivocal|indeterminate|uncertain|presumed|perhaps",
    "resolved": r"resol\w*|cleared|clearing|no longer",
    "new": r"new|newly|develop\w*",
    "better": r"improv\w*|decreas\w*|smaller|better",
    "worse": r"wors\w*|increas\w*|larger|progress\w*",
    "same": r"unchanged|stable|stability|no (?:\w+ )?change|not changed|the same|similar|persist\w*|remain\w*|again|"
            r"redemonstrat\w*|still",
    "history": r"status post|s/p|post-?surgical|post-?operative|postop|has had|after|past|prior|previous|previously",
}
CUES: dict[str, re.Pattern] = {kind: re.compile(rf"(?<![\w-])(?:{pattern})(?![\w-])", re.IGNORECASE)
                               for kind, pattern in _CUE_PATTERNS.items()}


def cues(text: str) -> frozenset[str]:
    """The kinds of time and certainty words in a text (see CUES)."""
    text = _COMPARISON.sub(" ", text)
    return frozenset(kind for kind, regex in CUES.items() if regex.search(text))


def _signature(text: str) -> tuple:
    """Everything the guard compares: the labeler's reading plus time and certainty."""
    return _reading(text), cues(text)


# --- de-identification gaps -------------------------------------------------------------------------

_GAP = re.compile(r"(?<![\w-])[\w-]*x{4}[\w-]*(?![\w-])", re.IGNORECASE)
_GAP_RUN = re.compile(rf"{_GAP.pattern}(?:\s+{_GAP.pattern})*", re.IGNORECASE)
_HIDDEN = "(hidden word)"
# After these words a gap cannot simply vanish: "The XXXX are intact", "lungs have XXXX in".
_NEEDS_WORD = {"the", "a", "an", "have", "has", "had", "of", "with", "in", "on", "at", "to", "for",
               "by", "and", "or", "is", "are", "was", "were", "per", "from", "no", "these", "this",
               "both", "her", "his", "your"}


def _one_gap(text: str) -> str:
    """Each run of `XXXX` gaps, and each "(hidden word)" marker, as one `XXXX`: the marker stands for
    the gap, and one marker stands for a whole run ("costophrenic XXXX XXXX" -> "costophrenic (hidden word)")."""
    return re.sub(rf"{re.escape(_HIDDEN)}|{_GAP_RUN.pattern}", "XXXX", text, flags=re.IGNORECASE)


def fill_gaps(sentence: str, drop: bool = True) -> str:
    """Handle IU's `XXXX` de-identification tokens without inventing words.

    A gap after a content word is dropped ("Clear lung XXXX bilaterally" -> "Clear lung
    bilaterally"); where the sentence would break without a word it becomes "(hidden word)".
    With drop=False every gap becomes "(hidden word)": the last-resort fallback, closest to the original.
    """
    def repl(m: re.Match) -> str:
        if not drop:
            return _HIDDEN
        before = sentence[:m.start()].rstrip()
        prev = re.findall(r"[A-Za-z]+$", before)
        if before and before[-1].isalnum() and prev and prev[0].lower() not in _NEEDS_WORD:
            return ""
        return _HIDDEN
    out = _GAP_RUN.sub(repl, sentence)
    out = re.sub(rf"\b(?:the|a|an)\s+(?=\({_HIDDEN[1:-1]}\))", "", out, flags=re.IGNORECASE)
    out = re.sub(r"\s+([,.;:!?])", r"\1", out)
    out = re.sub(r",\s*,", ",", out)
    return re.sub(r"\s{2,}", " ", out).strip()


# --- rewriting -------------------------------------------------------------------------------------

# Whole sentences about normal structures, said back as short reassuring sentences. The guard still
# checks each one. Patterns match the lower-cased sentence without its final full stop.
_REASSURING: tuple[tuple[re.Pattern, str], ...] = tuple((re.compile(p), s) for p, s in (
    (r"(?:the |both )?lungs (?:are |appear )?(?:grossly |otherwise )?clear(?: bilaterally)?"
     r"|clear lungs(?: bilaterally)?|(?:both )?lungs are clear and (?:well )?expanded"
     r"|well-expanded and clear lungs|lungs are clear without focal airspace disease", "The lungs look clear."),
    (r"(?:the )?heart (?:size )?is normal(?: in size)?|(?:the )?heart size (?:is )?(?:normal|within normal limits)"
     r"|normal heart size", "The heart is a normal size."),
    (r"no (?:acute|active) (?:cardiopulmonary |pulmonary |radiographic cardiopulmonary )?"
     r"(?:abnormality|abnormalities|findings?|disease|process)(?: identified| seen)?"
     r"|no evidence of (?:active|acute cardiopulmonary) (?:disease|process)"
     r"|negative for acute (?:abnormality|cardiopulmonary disease)|normal chest(?: x-ray)?",
     "Nothing urgent was seen in the heart or lungs."),
    (r"no acute (?:bony|osseous|bone) (?:abnormality|abnormalities|findings?)"
     r"|there are no acute bony findings|(?:the )?(?:visualized )?(?:osseous|bony|skeletal) structures"
     r"(?: of the thorax)? (?:are |appear )?(?:intact|normal|without acute abnormality|grossly intact)",
     "The bones look normal."),
    (r"(?:the )?trachea is midline", "The windpipe is in the middle, as it should be."),
    (r"(?:the )?(?:pulmonary vascularity|pulmonary vasculature) (?:is |appears )?(?:normal|within normal limits)"
     r"|normal pulmonary vascularity", "The blood vessels of the lungs look normal."),
))


_HEART_WORDS = {"heart", "cardiac"}
_MEDIA_WORDS = {"mediastinum", "mediastinal"}
_HEART_MEDIA_VOCAB = _HEART_WORDS | _MEDIA_WORDS | {
    "cardiomediastinal", "cardio", "the", "size", "silhouette", "silhouettes", "contour", "contours",
    "and", "are", "is", "appear", "appears", "within", "normal", "limits", "unremarkable", "of", "in",
    "for", "configuration", "appearance", "otherwise", "grossly", "width", "both"}


def _heart_mediastinum(key: str) -> str | None:
    """'Heart size and mediastinal contours are within normal limits' and its many variants -> one
    reassuring sentence per structure named, each said so that the labeler reads it the same way."""
    words = set(re.findall(r"[a-z]+", key))
    if not words <= _HEART_MEDIA_VOCAB or not words & {"normal", "unremarkable"}:
        return None
    parts = []
    if words & _HEART_WORDS:
        parts.append("the heart looks normal")
    if words & _MEDIA_WORDS:
        parts.append("the middle of the chest (mediastinum) looks normal")
    if "cardiomediastinal" in words or "cardio" in words:
        parts.append("the outline of the heart and middle of the chest (cardiomediastinal silhouette) looks normal")
    return _finish(", and ".join(parts)) if parts else None


def _article_ok(before: str) -> bool:
    """Keep a plain phrase's "a/an" only at the start or after a verb or preposition."""
    prev = re.findall(r"[A-Za-z]+$", before.rstrip())
    return not before.strip() or bool(prev and prev[0].lower() in {
        "is", "are", "was", "were", "be", "been", "shows", "show", "has", "have", "with", "of",
        "represents", "represent", "there", "and", "or"})


def _plain_phrase(entry: GlossEntry, matched: str, before: str) -> str:
    """The plain words for a matched term. A finding or device whose plain words the labeler would not
    recognise keeps its name in brackets after them, so the patient can ask about it by name: "fluid
    around the lung (pleural effusion)"."""
    plain = entry.plain if _article_ok(before) else _bare(entry.plain)
    named = entry.kind in ("finding", "device") and _read_differently(entry.term)
    return f"{plain} ({matched if matched.isupper() else matched.lower()})" if named else plain


def _finish(text: str) -> str:
    """Spacing, no word twice in a row ("lower lung lung"), a capital first letter, a final full stop."""
    text = re.sub(r"\s{2,}", " ", text).strip()
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    text = re.sub(r",(\s*,)+", ",", text)
    text = re.sub(r"(?<![\w-])([A-Za-z]+)(?:\s+\1)+(?![\w-])", r"\1", text, flags=re.IGNORECASE)
    first = re.search(r"[A-Za-z]", text)
    if not first:
        return text
    text = text[:first.start()] + text[first.start()].upper() + text[first.start() + 1:]
    return text if text[-1] in ".!?" else text + "."


def rewrite_phrases(sentence: str) -> str:
    """Report conventions as plain clauses that keep their polarity, certainty and timing:
    "Negative for X" -> "No X", "interval development of X" -> "X, new since the last X-ray"."""
    def fill(rule: PhraseRule, m: re.Match) -> str:
        groups = {k: v or "" for k, v in m.groupdict().items()}
        plural = _plural(groups.get("x", ""))  # "{x} {has} cleared": the verb agrees with the phrase
        groups |= {"has": "have" if plural else "has", "is": "are" if plural else "is"}
        pieces = re.split(r"(\{\w+\})", rule.plain)  # fixed words are locked, the {x} words stay open
        return "".join(groups[p[1:-1]] if re.fullmatch(r"\{\w+\}", p) else _LOCK + p.replace(" ", _LOCK) + _LOCK
                       for p in pieces)
    for rule in load_phrases():
        sentence = rule.regex.sub(lambda m, rule=rule: fill(rule, m), sentence)
    sentence = re.sub(rf"[{_LOCK} ]+", " ", sentence)
    return re.sub(r"\(\s+", "(", re.sub(r"\s+\)", ")", sentence)).strip()


_PLACE = (r"(?:(?:left|right)\s+)?(?:(?:upper|middle|lower)\s+(?:lobe|lung(?: zone)?)|lung\s+base|base|basilar|apical|midlung)"
          r"|bibasilar|biapical")
_SIDE = {"left": "on the left", "left-sided": "on the left", "right": "on the right",
         "right-sided": "on the right", "bilateral": "on both sides"}
# Nouns an "after" adjective may move behind, besides glossary terms: "hyperexpanded lungs" -> "lungs hyperexpanded".
_NOUNS = ("lungs", "lung", "heart", "changes", "change", "areas", "area", "regions", "region", "appearance",
          "process", "disease", "markings", "shadows", "lymph nodes", "nodes")


@lru_cache(maxsize=1)
def _reorder_regex() -> re.Pattern:
    findings = "|".join(re.escape(e.term) for e in load_glossary() if e.kind == "finding")
    return re.compile(rf"(?<![\w-])(?:(?P<place>{_PLACE})|(?P<side>{'|'.join(_SIDE)}))\s+(?P<term>{findings})(?![\w-])",
                      re.IGNORECASE)


@lru_cache(maxsize=1)
def _after_regex() -> re.Pattern:
    adjectives = "|".join(re.escape(e.term) for e in load_glossary() if e.place == "after")
    nouns = sorted({e.term for e in load_glossary() if e.kind != "word"} | set(_NOUNS), key=len, reverse=True)
    return re.compile(rf"(?<![\w-])(?P<adj>{adjectives})\s+(?P<noun>{'|'.join(map(re.escape, nouns))})(?![\w-])",
                      re.IGNORECASE)


def _reorder(sentence: str) -> str:
    """Put words where their plain versions read well. "Left lower lobe atelectasis" -> "atelectasis
    in the left lower lobe": a side placed before a long plain phrase would end up far from the finding.
    "Hyperexpanded lungs" -> "lungs hyperexpanded" (then "lungs holding too much air"): an adjective
    whose plain words are a clause goes after its noun."""
    def side(m: re.Match) -> str:
        where = f"in the {m['place'].lower()}" if m["place"] else _SIDE[m["side"].lower()]
        return f"{m['term']} {where}"

    def adjective(m: re.Match) -> str:
        whole = _glossary_regex().match(sentence, m.start())
        if whole and whole.end() > m.end("adj"):  # part of a longer term ("calcified granuloma"): keep it
            return m.group()
        return f"{m['noun']} {m['adj'].lower()}"  # "Calcified lymph nodes" -> "lymph nodes calcified"
    sentence = _after_regex().sub(adjective, sentence)
    return _reorder_regex().sub(side, sentence)


_VERB = re.compile(r"^(\s*(?:\([^)]*\)\s*)?)(is|are|was|were|has|have|appears|appear|remains|remain)\b")
_OTHER_NUMBER = {"is": "are", "are": "is", "was": "were", "were": "was", "has": "have", "have": "has",
                 "appears": "appear", "appear": "appears", "remains": "remain", "remain": "remains"}
_PLURAL_VERBS = {"are", "were", "have", "appear", "remain"}
_IRREGULAR_PLURALS = {"bullae", "apices", "sulci", "vertebrae", "granulomata", "sequelae", "pneumothoraces"}


def _plural(phrase: str) -> bool:
    """Is the head noun of a noun phrase plural? ("small round spots" yes, "fluid around the lungs" no)"""
    head = re.split(r"[,(]|\s(?:of|in|on|at|around|from|that|with|near|behind|to|under|below|between|for|and)\s",
                    f"{phrase.lower()} ")[0]
    words = re.findall(r"[a-z]+", head)
    if not words:
        return False
    w = words[-1]
    return w in _IRREGULAR_PLURALS or (w.endswith("s") and not w.endswith(("ss", "us", "is", "xs")))


def _agree(before: str, term: str, plain: str, after: str) -> str:
    """Subject-verb agreement after a gloss of a different number: "No adenopathy is seen" ->
    "No swollen lymph nodes are seen". Left alone after "and" (a compound subject)."""
    m = _VERB.match(after)
    if not m or _plural(plain) == _plural(term) or re.search(r"\band\b", re.split(r"[,;]", before)[-1], re.I):
        return after
    verb = m.group(2)
    if (verb.lower() in _PLURAL_VERBS) == _plural(plain):
        return after
    fixed = _OTHER_NUMBER[verb.lower()]
    return m.group(1) + (fixed.capitalize() if verb[0].isupper() else fixed) + after[m.end():]


def _assemble(sentence: str, matches: list[re.Match], texts: list[str]) -> str:
    """The sentence with each glossary match replaced by its chosen text, verbs made to agree."""
    out, last = [], 0
    for i, (m, text) in enumerate(zip(matches, texts)):
        out.append(sentence[last:m.start()])
        gap_end = matches[i + 1].start() if i + 1 < len(matches) else len(sentence)
        out.append(text)
        out.append(_agree(sentence[:m.start()], m.group(), text, sentence[m.end():gap_end]))
        last = gap_end
    out.append(sentence[last:])
    return "".join(out)


def _substitute(sentence: str) -> str:
    matches = list(_glossary_regex().finditer(sentence))
    texts = [_plain_phrase(_by_term()[m.group().lower()], m.group(), sentence[:m.start()]) for m in matches]
    return _finish(_assemble(sentence, matches, texts))


def _stepwise(sentence: str, target: tuple) -> str:
    """Term by term, keeping each replacement only if the guard still reads the sentence as `target`.

    For each glossary term, in order: its plain words (see `_plain_phrase`); the term with its plain
    words in brackets; the term as written. Every step is checked against the whole sentence, so the
    result always reads the same.
    """
    matches = list(_glossary_regex().finditer(sentence))
    chosen = [m.group() for m in matches]
    for i, m in enumerate(matches):
        entry = _by_term()[m.group().lower()]
        bare = _bare(entry.plain)
        if bare.lower() == m.group().lower():
            continue
        for option in (_plain_phrase(entry, m.group(), sentence[:m.start()]), f"{m.group()} ({bare})", m.group()):
            chosen[i] = option
            if _signature(_finish(_assemble(sentence, matches, chosen))) == target:
                break
    return _finish(_assemble(sentence, matches, chosen))


def glossary_rewrite(sentence: str) -> Iterator[str]:
    """Rule-based rewrites, plainest first (lazily, so the guard stops at the first that passes):
    a reassuring sentence for common normal statements; report conventions as plain clauses, then
    every term in plain words; term by term, checked at each step; and the same two without the
    convention rewrites."""
    key = sentence.lower().strip().rstrip(".").strip()
    key = re.sub(r"^(?:specifically|again|otherwise),?\s+", "", key)
    yield from (reassuring for pattern, reassuring in _REASSURING if pattern.fullmatch(key))
    heart = _heart_mediastinum(key)
    if heart:
        yield heart
    target = _signature(sentence)
    phrased = rewrite_phrases(sentence)
    for text in dict.fromkeys([phrased, sentence]):  # without the convention rewrites only if they differ
        ordered = _reorder(text)
        yield _substitute(ordered)
        for base in (ordered, text):
            if _signature(base) == target:
                yield _stepwise(base, target)
                break


def gloss(sentence: str) -> str:
    """The literal fallback: the original words, each glossary term followed by its plain meaning."""
    def repl(m: re.Match) -> str:
        entry = _by_term()[m.group().lower()]
        same = entry.plain.lower() == m.group().lower()
        return m.group() if same else f"{m.group()} ({_bare(entry.plain)})"
    return _finish(_glossary_regex().sub(repl, sentence))


def unexplained(plain: str, is_jargon: Callable[[str], bool]) -> list[str]:
    """The words of a plain text, outside brackets, that `is_jargon` flags and nothing explains: a word
    counts as explained by a bracket right after it, or right after the glossary term it is part of. In
    "pleural effusion (fluid around the lung)" both words are explained, in "atelectasis in the left lung
    (partly deflated lung)" none is. Words are lower case, hyphenated ones whole."""
    explained = [m.span() for m in _glossary_regex().finditer(plain) if re.match(r"\s*\(", plain[m.end():])]
    outside = re.sub(r"\([^()]*\)", lambda m: " " * len(m.group()), plain)
    return [m.group() for m in re.finditer(r"(?<![\w'-])[a-z]+(?:-[a-z]+)*(?![\w'-])", outside.lower())
            if is_jargon(m.group()) and not re.match(r"\s*\(", plain[m.end():])
            and not any(a <= m.start() and m.end() <= b for a, b in explained)]


class Seq2SeqRewriter:
    """A local Hugging Face seq2seq model (e.g. BART or T5 fine-tuned for simplification).

    It runs behind the same guard as the glossary rules; nothing is downloaded.
    """

    def __init__(self, model_dir: str | Path, max_new_tokens: int = 96, prefix: str = ""):
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        path = Path(model_dir)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(path / "config.json")
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModelForSeq2SeqLM.from_pretrained(path, local_files_only=True).eval()
        self.max_new_tokens = max_new_tokens
        self.prefix = prefix  # e.g. "simplify: " for a T5 trained with a task prefix

    def __call__(self, sentence: str) -> str:
        import torch

        batch = self.tokenizer(self.prefix + sentence, return_tensors="pt", truncation=True)
        with torch.no_grad():
            ids = self.model.generate(**batch, max_new_tokens=self.max_new_tokens, num_beams=1, do_sample=False)
        return _finish(self.tokenizer.decode(ids[0], skip_special_tokens=True))


# --- guard and driver ------------------------------------------------------------------------------

def differences(original: str, plain: str) -> list[str]:
    """What the guard reads differently in `plain`: observations, sides, time and certainty."""
    (labels_a, sides_a), (labels_b, sides_b) = _reading(original), _reading(plain)
    diffs = [f"{c}: {a} -> {b}" for c, a, b in zip(labeler.CONDITIONS, labels_a, labels_b) if a != b]
    diffs += [f"lost {o or 'finding'} side {s}" for o, s in sorted(sides_a - sides_b, key=str) if s]
    diffs += [f"added {o or 'finding'} side {s}" for o, s in sorted(sides_b - sides_a, key=str) if s]
    cues_a, cues_b = cues(original), cues(plain)
    diffs += [f"lost {kind}" for kind in sorted(cues_a - cues_b)]
    diffs += [f"added {kind}" for kind in sorted(cues_b - cues_a)]
    return diffs


def _sentence(original: str, rewriter: Rewriter) -> SentenceResult:
    text = fill_gaps(original)
    if not re.search(r"[A-Za-z]{2,}", text.replace(_HIDDEN, "")):
        return SentenceResult(original, "(This sentence was hidden for privacy.)", "hidden", True)
    if _signature(text) != _signature(original):  # dropping a gap changed what the guard reads: mark every gap
        text = fill_gaps(original, drop=False)
    candidates = rewriter(text)
    first_diffs: list[str] = []
    for attempt in [candidates] if isinstance(candidates, str) else candidates:
        diffs = differences(original, attempt) if attempt.strip() else ["empty rewrite"]
        if not diffs:
            return SentenceResult(original, attempt, "rewrite", True)
        first_diffs = first_diffs or diffs
    _logger.debug("guard fallback for %r: %s", original, first_diffs)
    fallback = gloss(text)
    if not differences(original, fallback):
        return SentenceResult(original, fallback, "gloss", False, first_diffs or ["no rewrite"])
    literal = _finish(fill_gaps(original, drop=False))
    if differences(original, literal):
        literal = original  # the gap marker itself changed the reading: keep the report's words
    return SentenceResult(original, literal, "original", False, first_diffs or ["no rewrite"])


def simplify(report: str, rewriter: Rewriter | None = None) -> SimplifyResult:
    """Rewrite a report in plain language, sentence by sentence, behind the consistency guard.

    Args:
        report: the report text (findings plus impression).
        rewriter: sentence -> plain sentence; defaults to the glossary rules.
    Returns:
        SimplifyResult: `plain` (one output sentence per input sentence, no note), `guard`
        ({"sentences", "passed_before_fallback", "fallbacks", "passed"}), per-sentence results
        and the fixed draft `note`.
    """
    if not isinstance(report, str):
        raise TypeError(f"report must be a str, got {type(report).__name__}")
    rewriter = rewriter or glossary_rewrite
    sentences = [s for s in split_sentences(report) if re.search(r"[A-Za-z]", s)]
    results = [_sentence(s, rewriter) for s in sentences]
    fallbacks = [{"index": i, "sentence": r.original, "method": r.method, "differences": r.differences}
                 for i, r in enumerate(results) if not r.passed]
    final_ok = all(r.method == "hidden" or not differences(r.original, r.plain) for r in results)
    guard = {"sentences": len(results), "passed_before_fallback": not fallbacks,
             "fallbacks": fallbacks, "passed": final_ok}
    return SimplifyResult(" ".join(r.plain for r in results), guard, results)
