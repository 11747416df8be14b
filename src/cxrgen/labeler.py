"""A rule-based, offline CheXpert-style labeler for chest X-ray reports.

Why our own: the CheXpert labeler needs a dependency parser, Java-era NLP tooling and minutes per
thousand reports; evaluation, the phantom renderer and plain-language rewriting need labels and
fine-grained findings (with side, size and place) in microseconds, offline.

How it works, per report:
1. Split into sentences once; find every finding term with precompiled regexes over the whole text.
2. For each mention, look inside its clause (a sentence cut at "but", "however", ";", ...):
   a negation cue before it ("no", "without", "free of", "negative for", ...) negates it, and the
   cue reaches over lists ("no pleural effusion or pneumothorax"); cues after it ("is not seen",
   "has resolved") negate too; otherwise an uncertainty cue ("possible", "may represent",
   "cannot exclude", "versus", "X or Y") makes it uncertain; otherwise it is positive.
3. Per CheXpert observation: positive beats uncertain beats negative; "No Finding" is positive when
   no abnormality of any kind (support devices and surgical material aside) is positive or uncertain.
"""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Iterable

from cxrgen.data.reports import PLACEHOLDER, sentence_starts

# CheXpert's 14 observations, in CheXpert's column order.
CONDITIONS: tuple[str, ...] = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Lung Opacity",
    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices",
)

POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1


@dataclass(frozen=True)
class Mention:
    """One finding mentioned in one sentence, with its status and attributes."""
    finding: str                  # fine-grained term, e.g. "pleural effusion", "granuloma"
    observation: str | None       # CheXpert class, or None for findings outside the 14
    status: int                   # 1 positive, 0 negative, -1 uncertain
    laterality: str | None        # "left" / "right" / "bilateral"
    severity: str | None          # "small" / "mild" / "moderate" / "large"
    location: str | None          # "upper" / "middle" / "lower" / "base" / "apex" / "retrocardiac"
    sentence: str


# --- lexicon -------------------------------------------------------------------------------------
# (finding, CheXpert observation or None, regex). Order matters inside the alternation: longer,
# more specific terms come first, so "calcified nodule" wins over "nodule".
_TERMS: tuple[tuple[str, str | None, str], ...] = (
    # surgical material and devices
    ("sternotomy", None, r"sternotomy|sternal (?:wires?|sutures?)|cabg(?! markers?)"),
    ("surgical clips", None, r"(?:surgical|cholecystectomy|vascular|postsurgical) clips?|clips?"),
    ("pacemaker", "Support Devices", r"pacemakers?|pacers?|(?:pacemaker |pulse )?generators?|icds?|(?:cardiac |implantable )?defibrillators?|aicds?|cardioverter"),
    ("monitor leads", None, r"(?:external |cardiac |ecg |ekg )?monitor(?:ing)? leads?|(?:ecg|ekg|external|overlying) leads?"),
    ("leads", "Support Devices", r"(?:pacer|pacemaker|pacing|transvenous|cardiac|icd) (?:leads?|wires?)|leads?"),
    ("catheter", "Support Devices", r"catheters?|picc(?: lines?)?|central (?:venous )?lines?|(?:jugular|subclavian|venous) lines?|port-?a-?cath|(?:chest|power|infusion|mediport) ports?|mediports?|ports?"),
    ("tube", "Support Devices", r"(?:endotracheal|et|nasogastric|ng|orogastric|og|feeding|chest|enteric|gastric|gastrostomy|tracheostomy|drainage) tubes?|tracheostomy|drains?|shunts?"),
    ("valve replacement", "Support Devices", r"(?:prosthetic |mechanical |replaced )?(?:aortic |mitral )?valve (?:replacement|prosthesis|artifact)|valve replacements?|(?:prosthetic|mechanical|bioprosthetic|artificial) (?:aortic |mitral |tricuspid )?valves?"),
    # CheXpert counts orthopedic fixation and joint replacement as support devices.
    ("hardware", "Support Devices", r"(?:orthopedic |fixation |surgical |spinal |fusion )hardware|hardware|(?:fixation |surgical |orthopedic )?screws?|(?<!growth )plates?(?![-\w])|arthroplast\w*"),
    ("device", "Support Devices", r"(?:electronic |closure |cardiac |implant\w* |monitoring )?devices?|loop recorders?|(?:nerve |spinal cord |vagal |vagus nerve )?stimulators?|(?:embolization |embolic )?coils|(?:cabg|bypass graft|graft|surgical) markers?|cannula"),
    # heart and mediastinum
    ("cardiomegaly", "Cardiomegaly", r"cardiomegaly|cardiac enlargement|enlarged (?:heart|cardiac (?:silhouette|size|shadow|contour))|(?:enlargement|prominence) of the (?:heart|cardiac silhouette)|increase in (?:the )?(?:heart|cardiac) size"),
    ("enlarged mediastinum", "Enlarged Cardiomediastinum", r"(?:widened|enlarged|prominent) (?:mediastinum|mediastinal (?:contours?|silhouette)|cardiomediastinal (?:silhouette|contours?))|"
     r"(?:widening|enlargement|prominence|fullness) of the (?:(?:superior|upper|anterior|middle|posterior) )?(?:mediastinum|mediastinal (?:contours?|silhouette)|cardiomediastinal (?:silhouette|contours?))|"
     r"mediastinal (?:widening|enlargement|prominence|(?:lymph)?adenopathy|lymph node enlargement|masse?s?)|(?:mediastinal )?contour abnormality|abnormal mediastinal contours?"),
    ("tortuous aorta", None, r"tortuous (?:thoracic |descending )?aort\w*|tortuosity of the (?:thoracic |descending )?aort\w*|aortic tortuosity|ectatic aort\w*|unfolded aort\w*"),
    ("aortic atherosclerosis", None, r"(?:aortic )?atherosclero\w*|(?:aortic|vascular) calcifications?|calcified (?:aorta|aortic \w+)"),
    # lungs
    ("granuloma", None, r"calcified (?:granulomas?|nodules?|lymph nodes?|nodes?|densit(?:y|ies))|calcific densit(?:y|ies)|granulomas?|granulomatous (?:disease|process|sequela|changes?|infection)\w*|calcified hilar (?:nodes?|lymph nodes?)"),
    ("nodule", "Lung Lesion", r"nodules?|nodular (?:densit(?:y|ies)|opacit(?:y|ies))"),
    ("mass", "Lung Lesion", r"mass(?:es)?|mass-?like"),
    ("lung lesion", "Lung Lesion", r"(?:cavitary |pulmonary |lung )?lesions?|neoplasms?|tumou?rs?|carcinoma|malignanc(?:y|ies)|metasta\w*"),
    ("emphysema", None, r"emphysema\w*|copd|chronic obstructive (?:pulmonary|lung) disease|bullae|bullous (?:disease|changes?)"),
    ("hyperinflation", None, r"hyperinflat\w*|hyperexpan\w*|hyperaerat\w*|overinflat\w*|hyperlucen\w*"),
    ("vascular congestion", "Edema", r"(?:pulmonary )?(?:vascular|venous) (?:congestion|engorgement|prominence|indistinctness)|pulmonary congestion|indistinct (?:pulmonary )?vasculature"),
    ("edema", "Edema", r"(?:pulmonary |interstitial |alveolar )?edema|congestive heart failure|heart failure|chf|fluid overload"),
    ("consolidation", "Consolidation", r"consolidat\w*"),
    ("pneumonia", "Pneumonia", r"pneumonias?|pneumonitis|bronchopneumonia|(?:infectious|inflammatory) process|infection"),
    ("atelectasis", "Atelectasis", r"atelectas\w*|atelectatic|(?:lobar |lobe |lung )?collapsed?"),
    ("scarring", "Lung Opacity", r"scar(?:ring|s)?|fibrosis|fibrotic changes?"),
    # A bare "density" is often not in the lung (hernia, piercing, stent): only qualified ones count.
    ("airspace opacity", "Lung Opacity", r"(?:air ?space|alveolar) (?:disease|opacit(?:y|ies)|process)|opacit(?:y|ies)|opacification|opacified|infiltrates?|infiltration|"
     r"interstitial (?:lung )?(?:markings?|prominence|opacit(?:y|ies)|changes?|pattern|disease)|reticula(?:r|tion)\w*|reticulonodular|peribronchial (?:thickening|cuffing)|"
     r"(?:lung|pulmonary|airspace|parenchymal|patchy|streaky|hazy|ill-defined|basilar|basal|increased) densit(?:y|ies)|haziness|hazy"),
    ("pneumothorax", "Pneumothorax", r"pneumothora(?:x|ces)|hydropneumothorax"),
    ("pleural thickening", "Pleural Other", r"pleural (?:thickening|plaques?|scarring|calcifications?|fibrosis)|apical (?:pleural )?(?:thickening|capping|caps?)|fibrothorax|pleural-parenchymal scarring"),
    ("pericardial effusion", None, r"pericardial effusions?"),
    ("pleural effusion", "Pleural Effusion", r"(?:pleural )?effusions?|pleural fluid|hydrothorax"),
    ("costophrenic blunting", None, r"blunting|blunted"),
    # abdomen, spine and bones
    ("hiatal hernia", None, r"hiatal hernias?|hiatus hernias?"),
    ("scoliosis", None, r"(?:levo|dextro)?scoliosis|(?:levo|dextro)?scoliotic|curvature of the (?:thoracic |lumbar )?spine"),
    ("kyphosis", None, r"kyphosis|kyphotic"),
    ("degenerative changes", None, r"degenerative (?:changes?|disease|disc disease|joint disease|endplate changes?)|spondylos\w*|osteophyt\w*|djd|arthritic changes?|arthropathy"),
    ("elevated hemidiaphragm", None, r"elevat\w+ (?:of the )?(?:right |left )?hemidiaphragm|(?:right |left )?hemidiaphragm(?:atic)? elevation|eventration"),
    ("osteopenia", None, r"osteopeni\w*|demineraliz\w*"),
    ("fracture", "Fracture", r"fractures?|fractured|fx"),
)

# The CheXpert "no finding" rule ignores support devices; surgical material is not a finding either.
_NOT_ABNORMAL = {"monitor leads", "sternotomy", "surgical clips", "pacemaker", "leads", "catheter", "tube",
                 "valve replacement", "hardware", "device"}

# Findings that only suggest their observation: vascular congestion often precedes edema but is not edema.
_SUGGESTIVE = {"vascular congestion"}

FINDINGS: dict[str, str | None] = {}
for _finding, _obs, _ in _TERMS:
    FINDINGS.setdefault(_finding, _obs)

# Statements about the heart and mediastinum: "heart size is normal", "mediastinum is widened".
_HEART = r"(?:heart|cardiac)(?: size| silhouette| contours?| shadow)?"
_MEDIA = r"(?:mediastin(?:um|al)(?: size| contours?| silhouette| width)?|cardiomediastinal(?: size| silhouette| contours?| structures)?)"
# CheXpert's convention: a heart "at the upper limits of normal" is normal; a "borderline" one is enlarged.
_NORMAL = r"(?:(?:(?:at |near |the )*(?:upper|top)[- ](?:limits? (?:of )?)?)?normal|within normal limits|within (?:the )?limits of normal|unremarkable|not enlarged)"
_BIG = r"(?:borderline|enlarged|enlargement|increased|large|prominent|widened|widening)"
_GAP_NO_NORMAL = r"(?:(?!\bnormal|\bnot\b|\bno\b)[^.;,]){0,40}?"
_GAP_NO_BIG = r"(?:(?!enlarg|widen|increas|prominen)[^.;,]){0,40}?"
_ANATOMY: tuple[tuple[str, str, str, int | None], ...] = (
    ("cardiomegaly", "Cardiomegaly", rf"\b{_HEART}\b{_GAP_NO_NORMAL}\b{_BIG}", None),
    ("cardiomegaly", "Cardiomegaly", rf"\b{_HEART}\b{_GAP_NO_BIG}\b{_NORMAL}|\bnormal(?: in)? (?:size )?{_HEART}\b", NEGATIVE),
    ("enlarged mediastinum", "Enlarged Cardiomediastinum", rf"\b{_MEDIA}\b{_GAP_NO_NORMAL}\b{_BIG}", None),
    ("enlarged mediastinum", "Enlarged Cardiomediastinum", rf"\b{_MEDIA}\b{_GAP_NO_BIG}\b{_NORMAL}|\bnormal(?: in)? (?:size )?{_MEDIA}\b|\b(?:heart|cardiac) and mediastin\w*(?: contours?| silhouettes?)?\b{_GAP_NO_BIG}\b{_NORMAL}", NEGATIVE),
)

# --- cues ----------------------------------------------------------------------------------------
# One alternation behind a single word boundary: the engine tries the terms only at word starts.
_TERM_RE = re.compile(r"\b(?:" + "|".join(rf"(?P<t{i}>{pat})" for i, (_, _, pat) in enumerate(_TERMS)) + r")\b")
_ANATOMY_RES = tuple(re.compile(pat) for _, _, pat, _ in _ANATOMY)
# Clause breaks stop the reach of a cue: "no effusion, but small pneumothorax".
_CLAUSE_BREAK = re.compile(r";|\b(?:but|however|although|though|whereas|while|except|other than|aside from|apart from|besides|with the exception of|which|otherwise)\b|\band (?:there|the|a|an)\b")
_UNCERTAIN_PRE = re.compile(
    r"\b(?:possible|possibly|probable|probably|likely|may|might|could|questionable|question of|"
    r"suspicious|suspected|suspect|suspicion|suggest\w*|concerning|concern for|cannot (?:be )?(?:excluded?|ruled? out)|"
    r"can ?not (?:be )?(?:excluded?|ruled? out)|not (?:be )?(?:entirely |completely )?(?:excluded|ruled out)|difficult to exclude|"
    r"differential|versus|vs|equivocal|(?<!age-)(?<!age )indeterminate|uncertain|presumed|rule out|r/o|"
    r"evaluate for)\b")
_NEGATION_PRE = re.compile(
    r"\b(?:no|not|without|free of|clear of|negative for|absence of|absent|resolution of|resolved|"
    r"neither|nor|no longer|removal of|removed)\b")
# "no change", "not changed": not negations of what follows.
_PSEUDO_NEG = re.compile(r"\b(?:no|without) (?:(?:significant|interval|appreciable|substantial) )*(?:change|increase|decrease|worsening|progression)|\bnot (?:changed|increased)|\bnot only\b")
# "Normal" after the mention negates it only as its predicate ("... is normal", "heart size normal"),
# not inside a phrase about something else ("cardiomegaly with normal caliber vasculature").
_NEGATION_POST = re.compile(
    r"^[^.;]{0,30}?\b(?:(?:is|are|was|were|has|have)\s+)?(?:(?:been\s+)?(?:not\s+(?:seen|identified|present|evident|demonstrated|appreciated|visualized|visible|noted|detected|well-seen|apparent))(?!\s+(?:on|in)\s+(?:the\s+)?(?:prior|previous|earlier|comparison))|absent|resolved|cleared|removed|no longer (?:seen|present|visible)|negative)\b|"
    r"^(?:(?:(?!\b(?:with|of|in|and)\b)[^.;]){0,30}?\b(?:is|are|was|were|appears?|remains?)\s+(?:(?:otherwise|now|again|still)\s+)?|[\s,]*)"
    r"(?:within (?:normal limits|(?:the )?limits of normal)|normal|unremarkable)\b")
# After the mention a hedge must be its predicate ("effusion is possible", "pneumonia suspected.",
# "fractures may not be seen"), not a hedge on the next finding ("consolidation, possibly pneumonia").
_UNCERTAIN_POST = re.compile(
    r"^[^.;]{0,25}?\b(?:(?:(?:is|are|was|were|remains?)\s+(?:also\s+|still\s+)?(?:possible|possibly|suspected|questioned|likely|"
    r"questionable|suspicious)|(?:possible|suspected|questioned|questionable)\s*(?=[.,;]|$)|(?:may|might|could)(?: not)? be)\b|"
    r"(?:not (?:entirely |completely )?(?:excluded|ruled out)|cannot be (?:excluded|ruled out)|can not be excluded|"
    r"versus|vs|or|and/or)\b)")
_UNCERTAIN_OR_PRE = re.compile(r"\b(?:or|versus|vs|and/or)\s+(?:\w+\s+){0,2}$")
# "acute or subacute fracture", "left or right": an "or" between two modifiers is not a hedge.
_MODIFIER = r"(?:acute|subacute|chronic|old|new|recent|healed|healing|small|large|mild|moderate|severe|left|right|upper|lower|anterior|posterior|lateral|medial)"
_OR_MODIFIERS = re.compile(rf"\b{_MODIFIER}\s+or\s+(?:{_MODIFIER}\s+)+$")

_LATERALITY = re.compile(r"\b(?:(left|left-sided)|(right|right-sided)|(bilateral|bilaterally|both|bibasilar|bibasal|biapical|bilat))\b")
_SEVERITY = re.compile(r"\b(?:(tiny|trace|minimal|small|smaller|subtle)|(mild|mildly|slight|slightly|borderline|minimally)|(moderate|moderately)|(large|larger|severe|severely|marked|markedly|massive|extensive))\b")
_LOCATION = re.compile(r"\b(?:(retrocardiac)|(apex|apices|apical|biapical)|(base|bases|basilar|basal|bibasilar|bibasal|costophrenic)|(upper)|(middle|mid|midlung|lingula|lingular|perihilar)|(lower))\b")
_LATERALITY_NAMES = ("left", "right", "bilateral")
_SEVERITY_NAMES = ("small", "mild", "moderate", "large")
_LOCATION_NAMES = ("retrocardiac", "apex", "base", "upper", "middle", "lower")
_ATTRIBUTE_REACH = 45  # characters either side of a mention where an attribute word may apply



def _nearest(regex: re.Pattern, names: tuple[str, ...], clause: str, start: int, end: int) -> str | None:
    """The attribute word closest to the mention span within the clause (ties go to the left)."""
    best, best_dist = None, _ATTRIBUTE_REACH + 1
    for m in regex.finditer(clause):
        dist = start - m.end() if m.end() <= start else m.start() - end if m.start() >= end else 0
        if dist < best_dist:
            best, best_dist = names[m.lastindex - 1], dist
    return best


def _status(clause: str, start: int, end: int) -> int:
    """Negation, uncertainty or assertion of the mention at clause[start:end]."""
    before, after = clause[:end], clause[end:]
    masked = _PSEUDO_NEG.sub(lambda m: " " * len(m.group()), before)
    uncertain_spans = [m.span() for m in _UNCERTAIN_PRE.finditer(masked)]
    for m in _NEGATION_PRE.finditer(masked):
        if not any(a <= m.start() < b for a, b in uncertain_spans):
            return NEGATIVE
    if _NEGATION_POST.match(after):
        return NEGATIVE
    prefix = clause[:start]
    if (uncertain_spans or _UNCERTAIN_POST.match(after)
            or (_UNCERTAIN_OR_PRE.search(prefix) and not _OR_MODIFIERS.search(prefix))):
        return UNCERTAIN
    return POSITIVE


class _Report:
    """A report lower-cased and cut into sentences and clauses once, so each mention is cheap."""

    def __init__(self, text: str):
        self.text = PLACEHOLDER.sub("____", text)
        self.lower = self.text.lower()
        self.starts = sentence_starts(self.lower)
        self.breaks = sorted({m.start() for m in _CLAUSE_BREAK.finditer(self.lower)})

    def mention(self, finding: str, observation: str | None, start: int, end: int, fixed: int | None) -> Mention:
        s = bisect.bisect_right(self.starts, start) - 1
        s_start = self.starts[s]
        s_end = self.starts[s + 1] if s + 1 < len(self.starts) else len(self.lower)
        # Clause = the stretch between the clause breaks on either side of the mention.
        i = bisect.bisect_right(self.breaks, start)
        c_start = max(s_start, self.breaks[i - 1] if i > 0 else 0)
        c_end = s_end
        j = bisect.bisect_left(self.breaks, end)
        if j < len(self.breaks):
            c_end = min(s_end, self.breaks[j])
        clause = self.lower[c_start:c_end]
        a, b = start - c_start, end - c_start
        status = fixed if fixed is not None else _status(clause, a, b)
        if finding == "fracture":
            finding = "rib fracture" if "rib" in clause else "clavicle fracture" if "clavic" in clause else "fracture"
        return Mention(
            finding=finding, observation=observation, status=status,
            laterality=_nearest(_LATERALITY, _LATERALITY_NAMES, clause, a, b),
            severity=_nearest(_SEVERITY, _SEVERITY_NAMES, clause, a, b),
            location=_nearest(_LOCATION, _LOCATION_NAMES, clause, a, b),
            sentence=self.text[s_start:s_end].strip(),
        )


def _mentions(text: str) -> list[tuple[Mention, str]]:
    """Every mention with the text that matched it."""
    if not isinstance(text, str):
        raise TypeError(f"report text must be a str, got {type(text).__name__}")
    report = _Report(text)
    found: list[tuple[int, Mention, str]] = []
    for m in _TERM_RE.finditer(report.lower):
        finding, observation, _ = _TERMS[int(m.lastgroup[1:])]
        found.append((m.start(), report.mention(finding, observation, m.start(), m.end(), None), m.group()))
    for (finding, observation, _, fixed), regex in zip(_ANATOMY, _ANATOMY_RES):
        for m in regex.finditer(report.lower):
            found.append((m.start(), report.mention(finding, observation, m.start(), m.end(), fixed), m.group()))
    found.sort(key=lambda triple: triple[0])
    return [(mention, matched) for _, mention, matched in found]


def mentions(text: str) -> list[Mention]:
    """Every finding mentioned in `text`, in order, with status and attributes.

    Example:
        >>> [(m.finding, m.status, m.laterality, m.severity) for m in mentions("Small left effusion. No pneumothorax.")]
        [('pleural effusion', 1, 'left', 'small'), ('pneumothorax', 0, None, None)]
    """
    return [mention for mention, _ in _mentions(text)]


def label(text: str) -> dict[str, int | None]:
    """CheXpert-style labels: {condition: 1 positive, 0 negative, -1 uncertain, None not mentioned}.

    An empty report says nothing, so every label is None (CheXpert would call it "No Finding").
    """
    labels: dict[str, int | None] = dict.fromkeys(CONDITIONS)
    found = _mentions(text)
    if not text.strip():
        return labels
    rank = {POSITIVE: 2, UNCERTAIN: 1, NEGATIVE: 0}
    abnormal = False
    for m, matched in found:
        status = UNCERTAIN if m.finding in _SUGGESTIVE and m.status == POSITIVE else m.status
        # CheXpert reads a "nodular opacity" as a lesion and as an opacity.
        observations = (m.observation, "Lung Opacity") if "opaci" in matched and m.observation == "Lung Lesion" else (m.observation,)
        for observation in observations:
            if observation is None:
                continue
            current = labels[observation]
            if current is None or rank[status] > rank[current]:
                labels[observation] = status
        if m.status != NEGATIVE and m.finding not in _NOT_ABNORMAL:
            abnormal = True
    if not abnormal:
        labels["No Finding"] = POSITIVE
    return labels


def extra_findings(text: str) -> frozenset[str]:
    """The fine-grained findings outside CheXpert's 14 that a text states as present or uncertain, such as
    "degenerative changes" or "granuloma"."""
    return frozenset(m.finding for m in mentions(text) if m.observation is None and m.status != NEGATIVE)


def label_many(texts: Iterable[str]) -> list[dict[str, int | None]]:
    """`label` over many reports (None or NaN text counts as empty)."""
    return [label(t if isinstance(t, str) else "") for t in texts]
