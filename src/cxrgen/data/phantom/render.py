"""Render one study (`render_study`) or the whole R2Gen split in parallel (`build_phantom`)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import struct
import zlib
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cxrgen.data.phantom.acquisition import expose, sample_acquisition
from cxrgen.data.phantom.anatomy import frontal, lateral, sample_patient
from cxrgen.data.phantom.findings import ADJUSTERS, DRAWERS, adjust, from_mentions, observations
from cxrgen.data.studies import Study
from cxrgen.errors import UserError
from cxrgen.io import atomic_write_text

_logger = logging.getLogger(__name__)
INTERNAL = 192  # views are drawn at most at this size, then upsampled: 7x fewer pixels than 512 (20 studies/s needs it)


def study_rng(seed: int, study_id: str) -> np.random.Generator:
    """Per-study generator from (seed, id): independent of worker count and order."""
    h = int.from_bytes(hashlib.blake2b(study_id.encode(), digest_size=8).digest(), "little")
    return np.random.default_rng([seed, h])


def render_text(text: str, study_id: str, size: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """Frontal and lateral radiographs (uint8, size x size) showing the findings of `text`, plus the truth."""
    from cxrgen.labeler import mentions

    if not isinstance(size, int) or not 32 <= size <= 4096:
        raise UserError(f"--size must be an integer between 32 and 4096, got {size!r}")
    # separate streams, so that adding a finding changes nothing else: same patient, same film
    rng_patient, rng_anatomy, rng_findings, rng_film = study_rng(seed, study_id).spawn(4)
    findings, skipped = from_mentions(mentions(text))
    patient = sample_patient(rng_patient)
    acq = sample_acquisition(rng_film)
    for f in findings:
        if f.kind in ADJUSTERS:
            patient = adjust(patient, f, rng_findings)
    R = min(size, INTERNAL)
    F = frontal(patient, R, rng_anatomy)
    L = lateral(patient, R, rng_anatomy, F.marks)
    drawn = []
    for f in findings:
        params = DRAWERS[f.kind](F, L, f, rng_findings)
        if f.kind in ADJUSTERS:
            params = {**params, **_adjusted(f.kind, patient, F.marks)}
        drawn.append(f.to_json(params))
    front = expose(F.density(), acq, size, rng_film)
    side = expose(L.density(), acq, size, rng_film, lateral=True)
    truth = {
        "id": study_id, "seed": seed, "findings": drawn, "not_drawn": skipped,
        "labels": sorted({o for f in findings if f.status == 1 for o in observations(f)}),
        "uncertain_rule": "uncertain mentions are drawn at half strength (status -1)",
        "anatomy": {"lung_template": patient.template, "female": patient.female, "ctr": round(F.marks["ctr"], 3)},
        "acquisition": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(acq).items()},
    }
    return front, side, truth


def _adjusted(kind: str, p, marks: dict) -> dict:
    """What a patient-level finding did, measured on the drawn anatomy."""
    return {
        "cardiomegaly": {"ctr": round(marks["ctr"], 3)},
        "enlarged_mediastinum": {"mediastinal_half_width": round(p.mediastinum, 3)},
        "hyperinflation": {"dome_flattening": round(p.dome_flat, 2), "lucency": round(p.lucency, 2)},
        "scoliosis": {"amplitude": round(abs(p.scoliosis) * 2, 3), "convex": "left" if p.scoliosis < 0 else "right"},
        "kyphosis": {"extra_curvature": round(p.kyphosis, 3)},
        "osteopenia": {"bone_density": round(p.bone_gain, 2)},
        "elevated_hemidiaphragm": {"raise": [round(r, 3) for r in p.dome_raise]},
        "tortuous_aorta": {"knob_radius": round(p.knob, 3)},
    }[kind]


def render_study(study: Study, size: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """`render_text` on the study's findings (the R2Gen report text), seeded by its id."""
    return render_text(study.findings, study.id, size=size, seed=seed)


def write_png(path: Path, a: np.ndarray) -> None:
    """8-bit greyscale PNG written directly: the 'up' filter and zlib's RLE strategy encode a noisy
    512 px view in about 3 ms and 145 KB, where Pillow takes about 10 ms (its per-row filter search)."""
    h, w = a.shape
    rows = np.empty((h, w + 1), np.uint8)
    rows[:, 0] = 2  # filter type 2 (up): each row minus the row above (zeros above the first)
    rows[0, 1:] = a[0]
    np.subtract(a[1:], a[:-1], out=rows[1:, 1:])  # uint8 arithmetic wraps modulo 256, as PNG specifies
    z = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    idat = z.compress(rows.tobytes()) + z.flush()

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)  # 8-bit greyscale, deflate, no interlace
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _write(job: tuple[Study, Path, int, int]) -> tuple[str, int]:
    study, images, size, seed = job
    front, side, truth = render_study(study, size, seed)
    d = images / study.id
    d.mkdir(parents=True, exist_ok=True)
    write_png(d / "0.png", front)
    write_png(d / "1.png", side)
    (d / "truth.json").write_text(json.dumps(truth, indent=1))
    return study.id, len(truth["findings"])


def _worker_signals() -> None:
    """Workers end quietly: the pool stops them with SIGTERM (the CLI's handler, inherited through fork,
    would raise KeyboardInterrupt and print a traceback per worker), and Ctrl-C is the parent's to handle."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def build_phantom(out: Path, size: int = 512, seed: int = 0, limit: int | None = None,
                  workers: int | None = None) -> dict:
    """Write the phantom set in the R2Gen layout: annotation.json, images/<id>/{0,1}.png, truth.json.

    Args:
        out: output folder (created).
        size: image side in pixels.
        seed: global seed; each study's images depend only on (seed, study id).
        limit: render only the first `limit` studies of the R2Gen order (for a quick look).
        workers: processes (default os.cpu_count()).
    Returns:
        counts: studies per split, images written, findings drawn.
    """
    from cxrgen.data.iu import load_iu_xray

    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}")
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if not isinstance(size, int) or not 32 <= size <= 4096:
        raise UserError(f"--size must be an integer between 32 and 4096, got {size!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    studies = [s for s in load_iu_xray() if s.findings.strip()][:limit]
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    workers = workers or os.cpu_count() or 1
    jobs = [(s, images, size, seed) for s in studies]
    drawn = 0
    if workers == 1:
        results = map(_write, jobs)
        for _, n in tqdm(results, total=len(jobs), desc="phantom", unit="study"):
            drawn += n
    else:
        with get_context("fork").Pool(workers, initializer=_worker_signals) as pool:
            for _, n in tqdm(pool.imap_unordered(_write, jobs, chunksize=4), total=len(jobs), desc="phantom", unit="study"):
                drawn += n
    ann: dict[str, list] = {"train": [], "val": [], "test": []}
    for s in studies:
        ann[s.split].append({"id": s.id, "report": s.findings, "image_path": [f"{s.id}/0.png", f"{s.id}/1.png"],
                             "split": s.split})
    atomic_write_text(out / "annotation.json", json.dumps(ann))
    counts = {k: len(v) for k, v in ann.items()}
    counts.update(studies=len(studies), images=2 * len(studies), findings_drawn=drawn)
    _logger.info("phantom set written to %s: %s", out, counts)
    return counts
