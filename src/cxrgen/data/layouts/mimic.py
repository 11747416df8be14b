"""MIMIC-CXR-JPG: files/pNN/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg, the split and metadata CSVs,
and the free-text reports files/pNN/pNNNNNNNN/sNNNNNNNN.txt (FINDINGS / IMPRESSION extracted).
"""
from __future__ import annotations

import csv
import gzip
from pathlib import Path

from cxrgen.data.reports import extract_sections
from cxrgen.data.studies import ImageRef, Problem, Study

_SPLITS = {"train": "train", "validate": "val", "val": "val", "test": "test"}
_VIEWS = {"PA": "PA", "AP": "AP", "LATERAL": "LL", "LL": "LL"}


def _open_csv(root: Path, stem: str):
    for name in (f"{stem}.csv", f"{stem}.csv.gz"):
        p = root / name
        if p.exists():
            return p, (gzip.open(p, "rt", newline="") if name.endswith(".gz") else open(p, newline=""))
    raise FileNotFoundError(root / f"{stem}.csv")


def _study_dir(root: Path, subject_id: str, study_id: str) -> Path:
    return root / "files" / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}"


def read_mimic(root: str | Path, problems: list[Problem] | None = None) -> list[Study]:
    root = Path(root)
    problems = [] if problems is None else problems
    split_path, f = _open_csv(root, "mimic-cxr-2.0.0-split")
    with f:
        split_rows = list(csv.DictReader(f))
    meta_path, f = _open_csv(root, "mimic-cxr-2.0.0-metadata")
    with f:
        views = {r["dicom_id"]: _VIEWS.get((r.get("ViewPosition") or "").upper()) for r in csv.DictReader(f)}

    studies: dict[str, Study] = {}
    for line, row in enumerate(split_rows, start=2):
        try:
            dicom, study_id, subject_id = row["dicom_id"], row["study_id"], row["subject_id"]
        except KeyError:
            problems.append(Problem(f"{split_path}:{line}", "malformed CSV row"))
            continue
        if not (dicom and study_id and subject_id):
            problems.append(Problem(f"{split_path}:{line}", "malformed CSV row (empty field)"))
            continue
        sid = f"s{study_id}"
        folder = _study_dir(root, subject_id, study_id)
        if sid not in studies:
            sections = {}
            report = folder.with_suffix(".txt")
            if report.exists():
                sections = extract_sections(report.read_text(errors="replace"))
            studies[sid] = Study(
                id=sid, split=_SPLITS.get(row.get("split", "")), findings=sections.get("FINDINGS", ""),
                impression=sections.get("IMPRESSION", ""),
                meta={"layout": "mimic", "subject_id": subject_id, "report": str(report)},
            )
        studies[sid].images.append(ImageRef(folder / f"{dicom}.jpg", views.get(dicom), dicom))
    for s in studies.values():
        s.images.sort(key=lambda r: (r.view not in ("PA", "AP"), r.view != "PA"))  # PA, AP, then lateral
    return list(studies.values())
