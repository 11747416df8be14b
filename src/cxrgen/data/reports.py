"""Report text: sections, R2Gen-style cleaning, sentence splitting.

IU X-ray reports keep the `XXXX` tokens of the de-identification: they stand for words
removed from the original (dates, names, sometimes ordinary words). We keep them visible;
R2Gen-style cleaning keeps them too (it only lowercases and strips punctuation), so metrics
stay comparable with published work.
"""
from __future__ import annotations

import re

DEID_TOKEN = "XXXX"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\.(?=[A-Z])")
_SECTION = re.compile(r"^\s*([A-Z][A-Z /]+):\s*$", re.M)


def split_sentences(text: str) -> list[str]:
    """Split on sentence ends, including the IU quirk 'effusion.There is' (no space)."""
    parts = _SENTENCE_END.split(text.strip())
    out = []
    for p in parts:
        p = p.strip().rstrip(".").strip()
        if p:
            out.append(p + ".")
    return out


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
