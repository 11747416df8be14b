"""Report text: sentences, the training target, R2Gen-style cleaning, sections, hard negatives.

IU X-ray reports keep the `XXXX` tokens of the de-identification: they stand for words
removed from the original (dates, names, sometimes ordinary words). We keep them visible;
R2Gen-style cleaning keeps them too (it only lowercases and strips punctuation), so metrics
stay comparable with published work.
"""
from __future__ import annotations

import random
import re

from cxrgen.data.studies import Study

# Sentence ends: after . ! ? and a space; a line break; before a list number ("normal 2. No
# effusion"); and IU's missing space ("effusion.There is"). The labeler cuts on the same ends.
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+|\s(?=\d\.\s)|(?<=\.)(?=[A-Z])")
_LIST_NUMBER = re.compile(r"^\d+\.?$")
PLACEHOLDER = re.compile(r"\bx{2,}\b", re.IGNORECASE)  # IU X-ray's de-identification "XXXX"


def sentence_starts(text: str) -> list[int]:
    """Character offsets at which the sentences of `text` start (0 first)."""
    return [0] + [m.end() for m in SENTENCE_END.finditer(text)]


def split_sentences(text: str) -> list[str]:
    """The sentences of a report, each ending in one period; bare list numbers ("2.") are dropped."""
    out = []
    for p in SENTENCE_END.split(text.strip()):
        p = p.strip().rstrip(".").strip()
        if p and not _LIST_NUMBER.match(p):
            out.append(p + ".")
    return out


def target_text(study: Study) -> str:
    """What a model learns to write: FINDINGS (R2Gen convention), the impression when findings are empty."""
    return study.findings or study.impression


def clean_report_r2gen(text: str) -> str:
    """R2Gen's `clean_report_iu_xray`: lowercase, drop punctuation inside sentences, join with ' . '."""
    t = (
        text.replace("..", ".").replace("..", ".").replace("..", ".").replace("1. ", "")
        .replace(". 2. ", ". ").replace(". 3. ", ". ").replace(". 4. ", ". ").replace(". 5. ", ". ")
        .replace(" 2. ", ". ").replace(" 3. ", ". ").replace(" 4. ", ". ").replace(" 5. ", ". ")
        .strip().lower().split(". ")
    )
    sents = []
    for s in t:
        s = re.sub(r"[.,?;*!%^&_+():-\[\]{}]", "", s.replace('"', "").replace("/", "").replace("\\", "").replace("'", "").strip().lower())
        if s:
            sents.append(s)
    return " . ".join(sents) + " ." if sents else ""


def extract_sections(text: str) -> dict[str, str]:
    """Split a free-text report (MIMIC-CXR style: 'FINDINGS:' headers on their own line or inline)
    into upper-case section name -> text."""
    text = text.replace("\r", "")
    pattern = re.compile(r"(?:^|\n)\s*([A-Z][A-Z ]{2,40}):", re.M)
    matches = list(pattern.finditer(text))
    sections: dict[str, str] = {}
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = " ".join(text[m.end():end].split())
        sections[m.group(1).strip()] = body
    return sections


# --- hard negatives: negate one finding or flip its side -------------------------------------
_SIDE = {"left": "right", "right": "left", "Left": "Right", "Right": "Left"}
# (pattern, replacement), tried in order on one sentence; the first that matches wins.
_NEGATE: list[tuple[re.Pattern, str]] = [
    (re.compile(r"\b(there (?:is|are)) no (?:evidence of )?", re.I), r"\1 "),
    (re.compile(r"\bno (?:evidence of |definite |focal |acute |visible )?", re.I), ""),
    (re.compile(r"\bwithout\b", re.I), "with"),
    (re.compile(r"\bnegative for\b", re.I), "positive for"),
    (re.compile(r"\b(is|are) not\b", re.I), r"\1"),
    (re.compile(r"\b(is|are|appears?|remains?)\b(?! not)", re.I), r"\1 not"),
]


def flip_sides(sentence: str) -> str | None:
    """'left effusion' -> 'right effusion'; None when the sentence has no side."""
    out = re.sub(r"\b(left|right|Left|Right)\b", lambda m: _SIDE[m.group(1)], sentence)
    return out if out != sentence else None


def negate_sentence(sentence: str) -> str | None:
    """Flip a sentence's polarity with a rule ('No pneumothorax.' -> 'pneumothorax.'); None if no rule applies."""
    for pattern, repl in _NEGATE:
        out, n = pattern.subn(repl, sentence, count=1)
        if n:
            out = out.strip()
            return out[:1].upper() + out[1:] if out and out != sentence else None
    return None


def hard_negative(report: str, rng: random.Random | None = None) -> str | None:
    """The report with one sentence negated or side-flipped: near-identical text, opposite meaning.

    With `rng=None` the choice is deterministic (first sentence that a rule changes; side flip
    preferred), which is what the probe uses. Returns None when no rule applies.
    """
    sents = split_sentences(report)
    options = [(i, new) for edit in (flip_sides, negate_sentence) for i, s in enumerate(sents) if (new := edit(s))]
    if not options:
        return None
    i, new = rng.choice(options) if rng else options[0]
    return " ".join(sents[:i] + [new] + sents[i + 1:])
