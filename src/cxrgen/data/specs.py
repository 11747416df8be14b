"""One entry point from a dataset spec to `Study` records: `load_studies("r2gen:DIR")`.

Spec forms: `iu-xray` (R2Gen's split of the bundled real reports, text only), `openi:DIR`
(NLMCXR_png/ with the bundled reports, or DIR/ecgen-radiology XML when present),
`r2gen:DIR` (also `iu-xray-r2gen:DIR` and `phantom:DIR`, which share the layout),
`kaggle:DIR`, `mimic:DIR`, `manifest:FILE` (CSV or JSONL).
"""
from __future__ import annotations

import csv
import logging
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cxrgen.data.images import ImageError, load_image
from cxrgen.data.studies import Problem, Study
from cxrgen.errors import UserError

_logger = logging.getLogger(__name__)

LAYOUTS = ("iu-xray", "openi", "r2gen", "iu-xray-r2gen", "phantom", "kaggle", "mimic", "manifest")


def _read_openi_dir(root: Path, problems):
    from cxrgen.data.layouts.openi import read_openi

    images = next((p for p in (root / "NLMCXR_png", root / "images", root) if p.is_dir()), root)
    xml = root / "ecgen-radiology"
    return read_openi(images, xml if xml.is_dir() else None, problems)


def _checked_path(layout: str, path: str | Path | None) -> Path | None:
    """The layout's path, after the checks that need no reading: a known layout, a path that exists
    (None for iu-xray, the bundled reports)."""
    if layout == "iu-xray":
        return None
    if layout not in LAYOUTS:
        raise UserError(f"unknown layout {layout!r}; choose one of: {', '.join(LAYOUTS)}")
    if not path:
        raise UserError(f"layout {layout!r} needs a path (e.g. {layout}:/data/{layout})")
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{path} does not exist")
    return path


def check_spec(spec: str) -> None:
    """Refuse a dataset spec with an unknown layout or a missing path before anything is read (and
    before a command imports torch)."""
    _checked_path(*parse_spec(spec))


def read_layout(layout: str, path: str | Path | None, problems: list[Problem] | None = None) -> list[Study]:
    """Studies of one layout. Malformed rows are skipped and recorded in `problems`."""
    problems = [] if problems is None else problems
    path = _checked_path(layout, path)
    if path is None:
        from cxrgen.data.iu import load_iu_xray

        return load_iu_xray()
    try:
        if layout == "openi":
            return _read_openi_dir(path, problems)
        if layout in ("r2gen", "iu-xray-r2gen", "phantom"):
            from cxrgen.data.layouts.r2gen import read_r2gen

            return read_r2gen(path, problems)
        if layout == "kaggle":
            from cxrgen.data.layouts.kaggle import read_kaggle

            return read_kaggle(path, problems)
        if layout == "mimic":
            from cxrgen.data.layouts.mimic import read_mimic

            return read_mimic(path, problems)
        from cxrgen.data.layouts.manifest import read_manifest

        return read_manifest(path, problems)
    except FileNotFoundError as e:
        raise UserError(f"{layout} layout: required file missing: {e.filename or e}") from None
    except (UnicodeDecodeError, csv.Error, ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
        # a file that exists but holds something else: a binary file, another layout's JSON, a broken CSV
        raise UserError(f"{path} does not look like the {layout} layout ({e.__class__.__name__}: "
                        f"{' '.join(str(e).split())[:200]}); see docs/data.md for what it expects") from None


def parse_spec(spec: str) -> tuple[str, str | None]:
    layout, _, path = spec.partition(":")
    return layout, (path or None)


def load_studies(spec: str, split: str | None = None) -> list[Study]:
    """Studies for a spec like `phantom:/data/ph`, optionally one split; malformed rows skipped with a warning."""
    problems: list[Problem] = []
    studies = read_layout(*parse_spec(spec), problems)
    if problems:
        _logger.warning("%s: skipped %d malformed entries (run `cxrgen data check` for the list)", spec, len(problems))
    if split is not None:
        studies = [s for s in studies if s.split == split]
    return studies


def check_studies(studies: list[Study], problems: list[Problem], decode: bool = True) -> list[Problem]:
    """Add every image and report problem to `problems`: missing, empty, unreadable, not an image, duplicates."""
    counts = Counter(s.id for s in studies)
    for sid, n in counts.items():
        if n > 1:
            problems.append(Problem(sid, f"duplicate id ({n} studies)"))
    for s in tqdm(studies, desc="checking", unit="study", disable=None):
        if not (s.findings or s.impression):
            problems.append(Problem(s.id, "empty report"))
        for im in s.images:
            if im.path is None:
                continue
            if not im.path.exists():
                problems.append(Problem(str(im.path), f"missing image (study {s.id})"))
            elif im.path.stat().st_size == 0:
                problems.append(Problem(str(im.path), f"zero-byte file (study {s.id})"))
            elif decode:
                try:
                    load_image(im.path)
                except ImageError as e:
                    reason = str(e).split(": ", 1)[-1]
                    problems.append(Problem(str(im.path), f"{reason} (study {s.id})"))
    return problems


def dataset_stats(studies: list[Study]) -> dict:
    """The counts `cxrgen data stats` prints: reports, findings, images, views, splits, lengths, vocabulary."""
    from cxrgen.data.tokenizer import wordpieces

    with_findings = [s for s in studies if s.findings]
    words = [s.findings.lower().replace(".", " ").replace(",", " ").split() for s in with_findings]
    pieces = [len(wordpieces(s.findings)) for s in with_findings]
    pct = lambda xs: {f"p{q}": float(np.percentile(xs, q)) for q in (5, 25, 50, 75, 95, 99)} if xs else {}
    return {
        "reports": len(studies),
        "reports_with_findings": len(with_findings),
        "reports_with_impression": sum(bool(s.impression) for s in studies),
        "images": sum(len(s.images) for s in studies),
        "image_files_present": sum(1 for s in studies for im in s.images if im.path is not None and im.path.exists()),
        "views": dict(Counter(im.view or "unknown" for s in studies for im in s.images).most_common()),
        "splits": dict(Counter(s.split or "none" for s in studies).most_common()),
        "findings_length_words": pct([len(w) for w in words]),
        "findings_length_wordpieces": pct(pieces),
        "vocabulary_words": len({t for w in words for t in w}),
        "vocabulary_wordpieces": len({p for s in with_findings for p in wordpieces(s.findings)}),
        "deid_tokens_XXXX": sum(s.report.count("XXXX") for s in studies),
    }


def reference_reports(spec: str, split: str) -> dict[str, str]:
    """{study id: findings} of one split of a dataset spec (studies without findings are left out)."""
    studies = load_studies(spec, split)
    refs = {s.id: s.findings for s in studies if s.findings.strip()}
    if not refs:
        raise UserError(f"{spec}: no studies with findings in split {split!r}")
    if len(refs) < len(studies):
        _logger.warning("%s %s: %d studies without findings left out", spec, split, len(studies) - len(refs))
    return refs
