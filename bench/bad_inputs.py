"""The bad-image corpus through `cxrgen generate`, `cxrgen data check` and the HTTP API: one table.

Usage: .venv/bin/python bench/bad_inputs.py [--model DIR] [--keep DIR]

Every file is generated here (nothing is committed): broken files that must give one clear
error line, and valid but odd images that must give a report. The table is the real outcome
of each file, as docs/reliability.md shows it; tests/test_bad_images.py asserts the same.
Without --model a tiny random-weight model is used (the outcome does not depend on weights).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import struct
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# name -> True for a valid (odd) image that must get a report, False for one that must be refused
EXPECT_REPORT = {
    "zero-byte.png": False, "truncated.png": False, "truncated.jpg": False, "text-named.png": False,
    "bomb-30000x30000.png": False, "16-bit.png": True, "rgba.png": True, "palette.png": True, "cmyk.jpg": True,
    "dicom-monochrome1.dcm": True, "dicom-no-pixels.dcm": False, "1x1.png": True, "all-black.png": True,
    "1x40000.png": True, "nan-float.tif": False,
}


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(side: int = 30_000) -> bytes:
    """A complete, valid 1-bit PNG of side x side black pixels: ~110 KB on disk, 900 megapixels decoded."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    z, parts = zlib.compressobj(9), []
    for _ in range(side):
        parts.append(z.compress(row))
    parts.append(z.flush())
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b""))


def dicom(photometric: str = "MONOCHROME2", with_pixels: bool = True) -> bytes:
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.Modality, ds.PhotometricInterpretation = "DX", photometric
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 64, 48, 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if with_pixels:
        ds.PixelData = (np.arange(64 * 48, dtype=np.uint16) % 4096).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def make_corpus(directory: Path) -> dict[str, Path]:
    """Write every file of EXPECT_REPORT into `directory`; {name: path}."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (256, 256), np.uint8)
    gradient = np.tile(np.linspace(0, 65535, 128).astype(np.uint16), (160, 1))
    rgba = np.dstack([noise, noise, noise, np.full_like(noise, 128)])
    cmyk = Image.fromarray(np.dstack([noise] * 4), "CMYK")
    files = {
        "zero-byte.png": b"",
        "truncated.png": _encode(Image.fromarray(noise), "PNG")[:4000],
        "truncated.jpg": _encode(Image.fromarray(noise), "JPEG", quality=90)[:3000],
        "text-named.png": b"FINDINGS: this is a text file, not an image.\n" * 20,
        "bomb-30000x30000.png": png_bomb(),
        "16-bit.png": _encode(Image.fromarray(gradient), "PNG"),
        "rgba.png": _encode(Image.fromarray(rgba, "RGBA"), "PNG"),
        "palette.png": _encode(Image.fromarray(noise).convert("P"), "PNG"),
        "cmyk.jpg": _encode(cmyk, "JPEG"),
        "dicom-monochrome1.dcm": dicom("MONOCHROME1"),
        "dicom-no-pixels.dcm": dicom(with_pixels=False),
        "1x1.png": _encode(Image.new("L", (1, 1), 128), "PNG"),
        "all-black.png": _encode(Image.new("L", (256, 256), 0), "PNG"),
        "1x40000.png": _encode(Image.new("L", (1, 40_000), 100), "PNG"),
        "nan-float.tif": _encode(Image.fromarray(np.full((64, 64), np.nan, np.float32), "F"), "TIFF"),
    }
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, data in files.items():
        paths[name] = directory / name
        paths[name].write_bytes(data)
    return paths


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """`cxrgen ARGV` in this process: (exit code, stdout, stderr)."""
    from cxrgen.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def check_manifest(corpus: dict[str, Path], directory: Path) -> dict[str, str]:
    """`cxrgen data check manifest` over one study per file: {name: its problem line, or ""}."""
    manifest = directory / "bad.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "image", "text"])
        for name, path in corpus.items():
            w.writerow([name, str(path), "The lungs are clear."])
    _, out, _ = run_cli(["data", "check", "manifest", str(manifest)])
    return {name: next((line for line in out.splitlines() if line.startswith(str(path))), "")
            for name, path in corpus.items()}


def outcomes(model: Path, corpus: dict[str, Path], workdir: Path) -> dict[str, dict]:
    """{name: {"generate": (exit, line), "check": problem line or "", "api": (status, detail or report)}}."""
    from fastapi.testclient import TestClient

    from cxrgen.models.generator import ReportGenerator
    from cxrgen.serve import create_app

    checked = check_manifest(corpus, workdir)
    rows = {}
    with TestClient(create_app(ReportGenerator.from_pretrained(model), model_name="tiny")) as client:
        for name, path in corpus.items():
            code, out, err = run_cli(["generate", "--model", str(model), "--image", str(path)])
            r = client.post("/v1/reports", files={"frontal": (name, path.read_bytes())})
            body = r.json()
            rows[name] = {"generate": (code, err.strip() if code else out.strip()), "check": checked[name],
                          "api": (r.status_code, body.get("detail") or body.get("report", ""))}
    return rows


def _cell(text: str, width: int = 110) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= width else text[:width - 1] + "…"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="checkpoint directory (default: a tiny random-weight model)")
    ap.add_argument("--keep", type=Path, help="write the corpus here and keep it (default: a temporary folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        model = args.model
        if model is None:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from load_test import random_model

            model = random_model(Path(tmp) / "model", "tiny")
        rows = outcomes(model, make_corpus(work / "corpus"), work)
    print("| file | expected | `cxrgen generate --image` | `cxrgen data check` | API `POST /v1/reports` |")
    print("|---|---|---|---|---|")
    ok = True
    for name, row in rows.items():
        code, line = row["generate"]
        status, detail = row["api"]
        good = EXPECT_REPORT[name] == (code == 0) == (status == 200) == (row["check"] == "")
        ok &= good
        here = f"{work}/"  # paths in the table are relative to the corpus' parent folder
        gen = f"exit 0: report ({len(line.splitlines()[0].split())} words)" if code == 0 \
            else f"exit {code}: `{_cell(line.replace(here, ''))}`"
        api = "200: report" if status == 200 else f"{status}: `{_cell(detail)}`"
        check = "no problem" if not row["check"] else f"`{_cell(row['check'].replace(here, ''))}`"
        print(f"| {name} | {'report' if EXPECT_REPORT[name] else 'clear error'}{'' if good else ' **(MISMATCH)**'} "
              f"| {gen} | {check} | {api} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
