"""Mine the IU X-ray reports for the words a general reader does not know, and check the glossary covers them.

A word is "general" when wordfreq gives it a Zipf frequency of at least 3.5 in English (about the
30,000 commonest words; a hyphenated word when each part is). Every other word is jargon. The
script counts jargon words and two-word jargon phrases ("pleural effusion") in all 3,955 reports
(findings + impression; de-identification gaps like XXXX are not words), takes the 300 most
frequent, and marks each one:

- glossed: a glossary term or a phrase rule covers it, so the plain version explains it;
- kept: deliberately left as written (a unit after a number, a vertebra name), with the reason;
- missing: neither (the script exits with status 1).

It writes the list to docs/simplify_terms.tsv and prints the coverage.

    PYTHONPATH=src .venv/bin/python scripts/simplify_terms.py [--top 300] [--out docs/simplify_terms.tsv]
"""
from __future__ import annotations

import argparse
import collections
import re
import sys
from functools import lru_cache
from pathlib import Path

from wordfreq import zipf_frequency

from cxrgen.data.iu import load_iu_reports
from cxrgen.simplify import kept_terms, load_glossary, load_phrases

GENERAL_ZIPF = 3.5
WORD = re.compile(r"(?<![\w'-])[a-z]+(?:-[a-z]+)*(?![\w'-])")
GAP = re.compile(r"x{4}")


@lru_cache(maxsize=None)
def is_general(word: str) -> bool:
    """In the general-audience word list (wordfreq Zipf >= 3.5; hyphenated: every part)."""
    return all(zipf_frequency(part, "en") >= GENERAL_ZIPF for part in word.split("-"))


def is_jargon(word: str) -> bool:
    return not GAP.search(word) and len(word) > 1 and not is_general(word)


def mine(reports: list[str], top: int) -> list[tuple[str, int]]:
    """The `top` most frequent jargon words and two-word jargon phrases, most frequent first."""
    counts: collections.Counter = collections.Counter()
    for report in reports:
        for piece in re.split(r"[^\w\s'-]+", report.lower()):  # no phrase across punctuation
            words = WORD.findall(piece)
            counts.update(w for w in words if is_jargon(w))
            counts.update(f"{a} {b}" for a, b in zip(words, words[1:]) if is_jargon(a) and is_jargon(b))
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]


def _covered(word: str) -> str:
    """How one word is explained: a glossary term that contains it (and whose plain words do not), or a
    phrase rule that rewrites it; "" if neither."""
    inside = rf"(?<![\w-]){re.escape(word)}(?![\w-])"
    terms = sorted((e for e in load_glossary() if re.search(inside, e.term) and not re.search(inside, e.plain.lower())),
                   key=lambda e: len(e.term))
    if terms:
        return f"glossary: {terms[0].term} -> {terms[0].plain}"
    rules = [r for r in load_phrases() if re.search(inside, r.match)]
    return f"phrase rule: {rules[0].match} -> {rules[0].plain}" if rules else ""


def status(unit: str) -> tuple[str, str]:
    """("glossed", how) / ("kept", why) / ("missing", "")."""
    kept = kept_terms()
    if unit in kept:
        return "kept", kept[unit]
    whole = [e for e in load_glossary() if e.term == unit]
    if whole:
        return "glossed", f"glossary: {unit} -> {whole[0].plain}"
    how = [_covered(w) if w not in kept else f"kept: {w}" for w in unit.split()]
    return ("glossed", "; ".join(how)) if all(how) else ("missing", "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("docs/simplify_terms.tsv"))
    args = parser.parse_args()

    reports = [s.report for s in load_iu_reports()]
    mined = mine(reports, args.top)
    rows = [(rank, unit, n, *status(unit)) for rank, (unit, n) in enumerate(mined, 1)]
    lines = ["rank\tterm\tcount\tstatus\thow"] + ["\t".join(map(str, row)) for row in rows]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")

    by_status = collections.Counter(row[3] for row in rows)
    words = sum(" " not in row[1] for row in rows)
    print(f"reports: {len(reports)}; mined {len(rows)} terms ({words} words, {len(rows) - words} two-word phrases), "
          f"seen {rows[-1][2]}-{rows[0][2]} times; written to {args.out}")
    print(f"glossed {by_status['glossed']}, kept {by_status['kept']}, missing {by_status['missing']}")
    missing = [row[1] for row in rows if row[3] == "missing"]
    if missing:
        print("missing:", ", ".join(missing))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
