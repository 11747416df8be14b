"""Kaggle "Chest X-rays (Indiana University)": indiana_reports.csv + indiana_projections.csv + images."""
from __future__ import annotations

import csv
from pathlib import Path

from cxrgen.data.iu import load_iu_reports
from cxrgen.data.layouts.openi import r2gen_split, study_key
from cxrgen.data.studies import ImageRef, Problem, Study

_VIEWS = {"frontal": "PA", "lateral": "LL"}


def _image_dir(root: Path) -> Path:
    for candidate in (root / "images" / "images_normalized", root / "images_normalized", root / "images"):
        if candidate.is_dir():
            return candidate
    return root


def _rows(path: Path, problems: list[Problem], required: set[str]):
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = required - set(reader.fieldnames or [])
        if missing:
            problems.append(Problem(str(path), f"missing columns ({', '.join(sorted(missing))})"))
            return
        for line, row in enumerate(reader, start=2):
            if None in row or any(row.get(c) is None for c in required):
                problems.append(Problem(f"{path}:{line}", "malformed CSV row (wrong number of fields)"))
                continue
            yield line, row


def read_kaggle(root: str | Path, problems: list[Problem] | None = None) -> list[Study]:
    root = Path(root)
    problems = [] if problems is None else problems
    images = _image_dir(root)
    by_uid: dict[str, list[ImageRef]] = {}
    for _, row in _rows(root / "indiana_projections.csv", problems, {"uid", "filename", "projection"}):
        view = _VIEWS.get(row["projection"].strip().lower())
        by_uid.setdefault(row["uid"], []).append(ImageRef(images / row["filename"], view, Path(row["filename"]).stem))
    split = r2gen_split()
    openi_ids = {st.meta["uid"]: st.id for st in load_iu_reports()}
    studies, seen = [], set()
    fields = {"uid", "findings", "impression"}
    for line, row in _rows(root / "indiana_reports.csv", problems, fields):
        uid = row["uid"]
        if uid in seen:
            problems.append(Problem(f"{root / 'indiana_reports.csv'}:{line}", f"duplicate id ({uid})"))
            continue
        seen.add(uid)
        refs = sorted(by_uid.get(uid, []), key=lambda r: r.view == "LL")  # frontal first
        # Kaggle's uid is the Open-i report number: take the study id (and so R2Gen's split) from there.
        sid = openi_ids.get(f"CXR{uid}") or (study_key("CXR" + refs[0].image_id.split(".")[0]) if refs else f"CXR{uid}")
        studies.append(Study(
            id=sid,
            split=split.get(sid),
            images=refs,
            findings=" ".join(row["findings"].split()),
            impression=" ".join(row["impression"].split()),
            meta={"layout": "kaggle", "uid": uid, "indication": row.get("indication", ""),
                  "comparison": row.get("comparison", ""), "mesh": row.get("MeSH", "")},
        ))
    return studies
