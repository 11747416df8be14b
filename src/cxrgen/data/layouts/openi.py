"""Open-i IU X-ray: one XML report per study (`ecgen-radiology/*.xml`) plus `NLMCXR_png/`.

The reports ship inside the `torchxrayvision` wheel (`data/NLMCXR_reports.tgz`, 3,955 reports,
CC BY-NC-ND 4.0), so the text side works offline with no download. Image views come from
`nlmcxr_dicom_metadata.csv.gz` in the same wheel.
"""
from __future__ import annotations

import csv
import gzip
import importlib.util
import json
import logging
import re
import tarfile
import xml.etree.ElementTree as ET
from functools import lru_cache
from importlib import resources
from pathlib import Path

from cxrgen.data.studies import ImageRef, Problem, Study

_logger = logging.getLogger(__name__)

# Normalise the DICOM View Position strings of the IU metadata to PA / AP / LL.
_VIEW_NAMES = {"PA": "PA", "AP": "AP", "LL": "LL", "LATERAL": "LL", "RL": "LL", "LARGE LATERAL": "LL"}


class ReportParseError(ValueError):
    pass


def txv_data(name: str) -> Path:
    """A data file shipped in the torchxrayvision wheel, found without importing the package
    (importing it pulls in torch and scikit-image: seconds we don't need)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("torchxrayvision is not installed; run `make setup`")
    return Path(spec.submodule_search_locations[0]) / "data" / name


def study_key(image_id: str) -> str:
    """R2Gen's study id is the image id without its last `-NNNN` part: CXR1000_IM-0003-1001 -> CXR1000_IM-0003."""
    return re.sub(r"-\d+$", "", image_id)


def parse_report_xml(data: bytes, source: str = "") -> dict:
    """Sections, MeSH terms and image ids of one Open-i report."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise ReportParseError(f"{source}: malformed XML ({e})") from e
    sections = {
        (el.get("Label") or "").upper(): " ".join((el.text or "").split())
        for el in root.iter("AbstractText")
    }
    uid = root.find("uId")
    mesh = root.find("MeSH")
    return {
        "uid": uid.get("id") if uid is not None else Path(source).stem,
        "findings": sections.get("FINDINGS", ""),
        "impression": sections.get("IMPRESSION", ""),
        "indication": sections.get("INDICATION", ""),
        "comparison": sections.get("COMPARISON", ""),
        "mesh_major": [m.text for m in mesh.iter("major") if m.text] if mesh is not None else [],
        "mesh_automatic": [m.text for m in mesh.iter("automatic") if m.text] if mesh is not None else [],
        "image_ids": [p.get("id") for p in root.iter("parentImage") if p.get("id")],
    }


def iter_report_xml(reports: Path | None = None):
    """Yield (name, bytes) for each XML report in a folder, a .tgz, or the bundled tgz."""
    reports = Path(reports) if reports else txv_data("NLMCXR_reports.tgz")
    if reports.is_dir():
        for p in sorted(reports.rglob("*.xml")):
            yield str(p), p.read_bytes()
        return
    with tarfile.open(reports) as tar:
        members = sorted((m for m in tar.getmembers() if m.name.endswith(".xml")), key=lambda m: m.name)
        for m in members:
            yield m.name, tar.extractfile(m).read()


@lru_cache(maxsize=1)
def image_views() -> dict[str, str | None]:
    """Image id -> PA / AP / LL (None where the DICOM header had no View Position)."""
    with gzip.open(txv_data("nlmcxr_dicom_metadata.csv.gz"), "rt", newline="") as f:
        return {
            row["imageid"]: _VIEW_NAMES.get(row["View Position"].strip().upper())
            for row in csv.DictReader(f)
        }


@lru_cache(maxsize=1)
def r2gen_split() -> dict[str, str]:
    """Study id -> train / val / test, R2Gen's split (2,069 / 296 / 590), shipped as ids only."""
    ids = json.loads(resources.files("cxrgen.resources").joinpath("iu_xray_r2gen_split.json").read_text())
    return {sid: split for split, sids in ids.items() for sid in sids}


def read_openi(images_dir: Path | None = None, reports: Path | None = None, errors: list[Problem] | None = None) -> list[Study]:
    """All Open-i studies. `images_dir` holds `<image id>.png` (NLMCXR_png); without it, image
    paths are None (text-only use: the bundled reports). Files absent from `images_dir` keep
    their path, so `cxrgen data check` reports them and training skips them. Views: DICOM metadata first, then the
    position in the report (first image frontal, second lateral) where the header has none."""
    views = image_views()
    split = r2gen_split()
    studies = []
    for name, data in iter_report_xml(reports):
        try:
            rep = parse_report_xml(data, name)
        except ReportParseError as e:
            if errors is None:
                raise
            errors.append(Problem(name, str(e).split(': ', 1)[-1]))
            continue
        ids = rep["image_ids"]
        images = []
        for i, image_id in enumerate(ids):
            view = views.get(image_id) or ("PA" if i == 0 else "LL")
            path = Path(images_dir) / f"{image_id}.png" if images_dir is not None else None
            images.append(ImageRef(path=path, view=view, image_id=image_id))
        sid = study_key(ids[0]) if ids else rep["uid"]
        studies.append(Study(
            id=sid,
            split=split.get(sid),
            images=images,
            findings=rep["findings"],
            impression=rep["impression"],
            meta={k: rep[k] for k in ("uid", "indication", "comparison", "mesh_major", "mesh_automatic")}
            | {"layout": "openi", "source": name},
        ))
    return studies
