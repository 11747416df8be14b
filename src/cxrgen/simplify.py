"""Plain-language rewriting of radiology reports, with a consistency guard.

Why a guard: a simpler report is only safe if it still says the same thing. Each sentence is
rewritten on its own (glossary rules, or a local seq2seq model), then the labeler reads the
original and the rewrite. If the 14 CheXpert observations or any side (left/right/bilateral)
differ, the rewrite is thrown away and the sentence falls back to a literal gloss: the original
words with plain explanations in brackets. Nothing is dropped: every sentence of the input gives
one sentence of output.

The glossary (resources/glossary.json) maps radiology terms to plain words. Where the labeler
reads the plain words differently from the term (it does not know "fluid around the lung"), the
term is kept in brackets after them, "fluid around the lung (pleural effusion)", so the finding
stays visible to the labeler and to the patient, who can ask about it by name.

Example:
    >>> r = simplify("Mild cardiomegaly. No pneumothorax or pleural effusion.")
    >>> r.plain
    'Mild enlarged heart. No air leak around the lung (pneumothorax) or fluid around the lung (pleural effusion).'
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

@lru_cache(maxsize=1)
def load_glossary() -> tuple[GlossEntry, ...]:
    """The packaged glossary, longest terms first (so "pleural effusion" wins over "effusion")."""
    text = resources.files("cxrgen.resources").joinpath("glossary.json").read_text(encoding="utf-8")
    entries = [GlossEntry(e["term"].lower(), e["plain"], e["kind"]) for e in json.loads(text)]
    return tuple(sorted(entries, key=lambda e: -len(e.term)))


@lru_cache(maxsize=1)
def _glossary_regex() -> re.Pattern:
    terms = "|".join(re.escape(e.term) for e in load_glossary())
    return re.compile(rf"(?<![\w-])(?:{terms})(?![\w-])", re.IGNORECASE)


@lru_cache(maxsize=1)
def _by_term() -> dict[str, GlossEntry]:
    return {e.term: e for e in load_glossary()}


def _reading(text: str) -> tuple[tuple, frozenset]:
    """What the labeler takes from a text: the 14 labels and every (observation, side) pair."""
    labels = labeler.label(text)
    sides = frozenset((m.observation, m.laterality) for m in labeler.mentions(text))
    return tuple(labels[c] for c in labeler.CONDITIONS), sides


@lru_cache(maxsize=None)
def _keep_term(term: str) -> bool:
    """Keep the term in brackets when the labeler reads the plain words differently from it.

    Checked alone and in a "normal" frame, because anatomy terms ("mediastinal contours") only
    become findings when something is said about them.
    """
    plain = _by_term()[term].plain
    return any(_reading(frame.format(term)) != _reading(frame.format(plain))
               for frame in ("{}.", "The {} is normal."))


# --- de-identification gaps -------------------------------------------------------------------------

_GAP = re.compile(r"(?<![\w-])[\w-]*x{4}[\w-]*(?![\w-])", re.IGNORECASE)
_GAP_RUN = re.compile(rf"{_GAP.pattern}(?:\s+{_GAP.pattern})*", re.IGNORECASE)
_HIDDEN = "(hidden word)"
# After these words a gap cannot simply vanish: "The XXXX are intact", "lungs have XXXX in".
_NEEDS_WORD = {"the", "a", "an", "have", "has", "had", "of", "with", "in", "on", "at", "to", "for",
               "by", "and", "or", "is", "are", "was", "were", "per", "from", "no", "these", "this",
               "both", "her", "his", "your"}


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


def _plain_phrase(entry: GlossEntry, matched: str, before: str, keep_terms: bool) -> str:
    plain = entry.plain
    if not _article_ok(before):
        plain = re.sub(r"^(?:a|an)\s+", "", plain)
    if keep_terms and _keep_term(entry.term):
        plain = f"{plain} ({matched.lower()})"
    return plain


def _finish(text: str) -> str:
    text = re.sub(r"\s{2,}", " ", text).strip()
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    first = re.search(r"[A-Za-z]", text)
    if not first:
        return text
    text = text[:first.start()] + text[first.start()].upper() + text[first.start() + 1:]
    return text if text[-1] in ".!?" else text + "."


_PLACE = r"(?:(?:left|right)\s+)?(?:(?:upper|middle|lower)\s+lobe|lung\s+base|base|basilar|apical|midlung)|bibasilar|biapical"
_SIDE = {"left": "on the left", "left-sided": "on the left", "right": "on the right",
         "right-sided": "on the right", "bilateral": "on both sides"}


@lru_cache(maxsize=1)
def _reorder_regex() -> re.Pattern:
    findings = "|".join(re.escape(e.term) for e in load_glossary() if e.kind == "finding")
    return re.compile(rf"(?<![\w-])(?:(?P<place>{_PLACE})|(?P<side>{'|'.join(_SIDE)}))\s+(?P<term>{findings})(?![\w-])",
                      re.IGNORECASE)


def _reorder(sentence: str) -> str:
    """"Left lower lobe atelectasis" -> "atelectasis in the left lower lobe": plain phrases are
    longer than terms, and a side word placed before them would end up far from the finding."""
    def repl(m: re.Match) -> str:
        where = f"in the {m['place'].lower()}" if m["place"] else _SIDE[m["side"].lower()]
        return f"{m['term']} {where}"
    return _reorder_regex().sub(repl, sentence)


def _substitute(sentence: str, keep_terms: bool) -> str:
    out, last = [], 0
    for m in _glossary_regex().finditer(sentence):
        out.append(sentence[last:m.start()])
        out.append(_plain_phrase(_by_term()[m.group().lower()], m.group(), sentence[:m.start()], keep_terms))
        last = m.end()
    out.append(sentence[last:])
    return _finish("".join(out))


def _stepwise(sentence: str) -> str:
    """Term by term, keeping each replacement only if the labeler still reads the sentence the same.

    For each glossary term, in order: plain words; plain words (term); term (plain words); the term
    as written. Every step is checked against the whole sentence, so the result always reads the same.
    """
    target = _reading(sentence)
    matches = list(_glossary_regex().finditer(sentence))
    chosen = [m.group() for m in matches]

    def build() -> str:
        out, last = [], 0
        for m, text in zip(matches, chosen):
            out += [sentence[last:m.start()], text]
            last = m.end()
        return "".join(out + [sentence[last:]])

    for i, m in enumerate(matches):
        entry = _by_term()[m.group().lower()]
        plain = _plain_phrase(entry, m.group(), sentence[:m.start()], keep_terms=False)
        for option in (plain, f"{plain} ({m.group().lower()})", f"{m.group()} ({re.sub(r'^(?:a|an) ', '', entry.plain)})"):
            chosen[i] = option
            if _reading(build()) == target:
                break
        else:
            chosen[i] = m.group()
    return _finish(build())


def glossary_rewrite(sentence: str) -> Iterator[str]:
    """Rule-based rewrites, plainest first (lazily, so the guard stops at the first that passes):
    a reassuring sentence for common normal statements; every term in plain words; the same keeping
    in brackets the terms the labeler needs; then term by term, checked at each step."""
    key = sentence.lower().strip().rstrip(".").strip()
    key = re.sub(r"^(?:specifically|again|otherwise),?\s+", "", key)
    yield from (reassuring for pattern, reassuring in _REASSURING if pattern.fullmatch(key))
    heart = _heart_mediastinum(key)
    if heart:
        yield heart
    ordered = _reorder(sentence)
    yield _substitute(ordered, keep_terms=False)
    yield _substitute(ordered, keep_terms=True)
    yield _stepwise(ordered if _reading(ordered) == _reading(sentence) else sentence)


def gloss(sentence: str) -> str:
    """The literal fallback: the original words, each glossary term followed by its plain meaning."""
    def repl(m: re.Match) -> str:
        entry = _by_term()[m.group().lower()]
        same = entry.plain.lower() == m.group().lower()
        return m.group() if same else f"{m.group()} ({re.sub(r'^(?:a|an) ', '', entry.plain)})"
    return _finish(_glossary_regex().sub(repl, sentence))


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
    """What the labeler reads differently in `plain`: changed observations and changed sides."""
    (labels_a, sides_a), (labels_b, sides_b) = _reading(original), _reading(plain)
    diffs = [f"{c}: {a} -> {b}" for c, a, b in zip(labeler.CONDITIONS, labels_a, labels_b) if a != b]
    diffs += [f"lost {o or 'finding'} side {s}" for o, s in sorted(sides_a - sides_b, key=str) if s]
    diffs += [f"added {o or 'finding'} side {s}" for o, s in sorted(sides_b - sides_a, key=str) if s]
    return diffs


def _sentence(original: str, rewriter: Rewriter) -> SentenceResult:
    text = fill_gaps(original)
    if not re.search(r"[A-Za-z]{2,}", text.replace(_HIDDEN, "")):
        return SentenceResult(original, "(This sentence was hidden for privacy.)", "hidden", True)
    if _reading(text) != _reading(original):  # dropping a gap changed the reading: mark every gap
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
