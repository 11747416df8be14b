"""Generic manifest: a CSV or JSONL file (`cxrgen.io.read_table`), one row per study (or per image when an id repeats).

Columns (first match wins):
- image paths: `image`, `image_path`, `path`, `frontal` (several paths in one cell split on `;` or `|`),
  plus an optional `lateral`;
- report text: `text`, `report`, `findings` (and an optional `impression`);
- optional `id`, `split` (train / val / test), `view` (PA / AP / LL; images of a `frontal` column
  without one are FRONTAL, a `lateral` column's LL).
Relative paths resolve against the manifest's folder. Without a split column, a study goes to
train / val / test with probability 0.8 / 0.1 / 0.1, decided by a hash of its id (deterministic,
stable when rows are added).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from cxrgen.data.studies import ImageRef, Problem, Study
from cxrgen.io import read_table

IMAGE_COLUMNS = ("image", "image_path", "path", "frontal")
TEXT_COLUMNS = ("text", "report", "findings")
SPLIT_FRACTIONS = (("train", 0.8), ("val", 0.1), ("test", 0.1))
_SPLITS = {"train": "train", "val": "val", "valid": "val", "validate": "val", "validation": "val", "test": "test"}


def hash_split(study_id: str) -> str:
    u = int(hashlib.sha1(study_id.encode()).hexdigest()[:8], 16) / 0x100000000
    acc = 0.0
    for name, frac in SPLIT_FRACTIONS:
        acc += frac
        if u < acc:
            return name
    return SPLIT_FRACTIONS[-1][0]


def _first(row: dict, names) -> str | None:
    return next((n for n in names if n in row), None)


def read_manifest(path: str | Path, problems: list[Problem] | None = None) -> list[Study]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(path)
    problems = [] if problems is None else problems
    base = path.parent
    studies: dict[str, Study] = {}
    for line, row in read_table(path, on_bad_row=lambda n, reason: problems.append(Problem(f"{path}:{n}", reason))):
        where = f"{path}:{line}"
        image_col, text_col = _first(row, IMAGE_COLUMNS), _first(row, TEXT_COLUMNS)
        if image_col is None or text_col is None:
            problems.append(Problem(where, f"needs an image column ({'/'.join(IMAGE_COLUMNS)}) and a text column ({'/'.join(TEXT_COLUMNS)})"))
            continue
        cells = [p.strip() for p in str(row[image_col]).replace("|", ";").split(";") if p.strip()]
        if row.get("lateral"):
            cells.append(str(row["lateral"]).strip())
        if not cells:
            problems.append(Problem(where, "no image path"))
            continue
        sid = str(row.get("id") or Path(cells[0]).stem)
        view = (row.get("view") or "").upper() or ("FRONTAL" if image_col == "frontal" else None)
        refs = [
            ImageRef(base / c, "LL" if row.get("lateral") and i == len(cells) - 1 else view, Path(c).stem)
            for i, c in enumerate(cells)
        ]
        if sid in studies:
            # A repeated id with the same report is one row per image of that study;
            # with a different report it is a real duplicate.
            if "id" in row and " ".join(str(row[text_col]).split()) == studies[sid].findings:
                studies[sid].images.extend(refs)
            else:
                problems.append(Problem(where, f"duplicate id ({sid})"))
            continue
        split = _SPLITS.get(str(row.get("split") or "").strip().lower()) or hash_split(sid)
        studies[sid] = Study(
            id=sid, split=split, images=refs, findings=" ".join(str(row[text_col]).split()),
            impression=" ".join(str(row.get("impression") or "").split()),
            meta={"layout": "manifest", "row": line},
        )
    for s in studies.values():
        s.images.sort(key=lambda r: r.is_lateral)  # frontal first
    return list(studies.values())
