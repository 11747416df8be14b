"""Helpers shared by the tests (tests/) and the bench and script files (bench/, scripts/).

- The one tiny model: `TINY_MODEL` (the `model:` section), `tiny_config` / `tiny_overrides`
  to build a config from it, `make_tiny_checkpoint` and `random_model` to save one.
- A 16-study manifest dataset (`write_tiny_manifest`) and the settings that train on it.
- Stand-ins for the server: a generator and a CLIP that need no weights, and a PNG maker.
- The bad-image corpus: every file that `scripts/bad_inputs.py` tabulates and
  tests/test_bad_images.py asserts on, generated on demand (nothing is committed).
- HTTP helpers that talk to a real server over sockets: a uvicorn server in a thread, a trickled
  upload, an upload dropped halfway, /healthz polled while something else runs.

Importing this module is cheap: torch, FastAPI, uvicorn and pydicom are imported where used.
"""
from __future__ import annotations

import contextlib
import csv
import io
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# ---------------------------------------------------------------------------------------------
# The one tiny model
# ---------------------------------------------------------------------------------------------

#: The `model:` section of every tiny test model: ResNet-18 at 32 px (one patch per view), one
#: decoder layer of width 32. Tests that need another size override single fields of it.
TINY_MODEL: dict[str, Any] = {"encoder": "resnet18", "pretrained": False, "image_size": 32, "d_model": 32,
                              "n_layer": 1, "n_head": 2, "max_len": 24}


def tiny_model(**changes: Any) -> dict[str, Any]:
    """TINY_MODEL with some fields changed (e.g. `image_size=128`)."""
    return {**TINY_MODEL, **changes}


def tiny_config(**sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A config mapping (for `Config.from_dict` or a YAML file): TINY_MODEL, changed by `model=`,
    plus the other sections as given, e.g. `tiny_config(train={"batch_size": 4})`."""
    out = {"model": tiny_model(**sections.pop("model", {}))}
    out.update({name: dict(fields) for name, fields in sections.items()})
    return out


def _override_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def tiny_overrides(**sections: dict[str, Any]) -> list[str]:
    """`tiny_config(**sections)` as `section.field=value` strings (what `--set` and `load_config` take)."""
    return [f"{name}.{key}={_override_value(value)}"
            for name, fields in tiny_config(**sections).items() for key, value in fields.items()]


#: The tiny model the server tests and benches serve: 128 px so the attention map has a grid
#: (4 x 4 patches), greedy decoding of at most 20 tokens.
SERVE_CONFIG = tiny_config(model={"image_size": 128}, decode={"beam_size": 1, "max_len": 20})

_CHECKPOINT_REPORTS = ["The heart is normal in size. No pleural effusion or pneumothorax.",
                       "Mild cardiomegaly. Small left pleural effusion. The lungs are clear.",
                       "Degenerative changes of the spine."]


def make_tiny_checkpoint(directory: Path, **model: Any) -> Path:
    """A randomly initialised SERVE_CONFIG model (`model` fields changed, e.g. another encoder), with
    a three-report vocabulary, saved through the real checkpoint code (a few MB, seconds on a CPU)."""
    import torch

    from cxrgen.checkpoint import save_checkpoint
    from cxrgen.config import Config
    from cxrgen.data.tokenizer import ReportTokenizer
    from cxrgen.models.generator import ReportModel

    cfg = Config.from_dict(tiny_config(**{**SERVE_CONFIG, "model": {**SERVE_CONFIG["model"], **model}}))
    tok = ReportTokenizer.build(_CHECKPOINT_REPORTS)
    torch.manual_seed(0)
    return save_checkpoint(directory, ReportModel(cfg.model, len(tok), pretrained=False), tok, cfg)


def ramp_pairs(n: int, seed: int, side: int = 128) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`n` (frontal, lateral) uint8 pairs: a smooth ramp with mild noise, and its transpose."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, side)[None, :] * np.linspace(0.5, 1, side)[:, None]
    for _ in range(n):
        base = (ramp * 200 + rng.normal(0, 4, (side, side))).clip(0, 255).astype(np.uint8)
        yield base, base.T.copy()


def make_calibrated_checkpoint(directory: Path) -> Path:
    """`make_tiny_checkpoint` with OOD statistics fitted on ramp images (40 training, 20 validation
    pairs): another ramp passes, noise, a real radiograph or a frontal in the lateral slot is flagged."""
    from cxrgen.checkpoint import load_checkpoint
    from cxrgen.inference import calibrate

    directory = make_tiny_checkpoint(directory)
    calibrate(load_checkpoint(directory)[0], ramp_pairs(40, 0), ramp_pairs(20, 1), 0.99).save(directory)
    return directory


def random_model(directory: Path, size: str) -> Path:
    """The default config ("default") or SERVE_CONFIG ("tiny") with random weights and the IU
    training reports' vocabulary, saved as a checkpoint (what the benches serve)."""
    import torch

    from cxrgen.checkpoint import save_checkpoint
    from cxrgen.config import Config
    from cxrgen.data.iu import load_iu_reports
    from cxrgen.data.tokenizer import ReportTokenizer
    from cxrgen.models.generator import ReportModel

    cfg = Config() if size == "default" else Config.from_dict(tiny_config(**SERVE_CONFIG))
    tokenizer = ReportTokenizer.build([s.findings for s in load_iu_reports() if s.split == "train"], min_freq=2)
    torch.manual_seed(0)
    return save_checkpoint(directory, ReportModel(cfg.model, len(tokenizer)), tokenizer, cfg)


# ---------------------------------------------------------------------------------------------
# A 16-study manifest dataset
# ---------------------------------------------------------------------------------------------

#: The two reports of the manifest: bright studies (even index) get the first, dark ones the second.
MANIFEST_REPORTS = ["The heart is enlarged. There is a small left pleural effusion.",
                    "The lungs are clear. No pleural effusion or pneumothorax. Heart size is normal."]


def write_tiny_manifest(root: Path) -> Path:
    """16 studies in `root/m.csv` (10 train, 3 val, 3 test; 40 px PNGs, a lateral for 2 in 3):
    bright images say cardiomegaly + effusion, dark ones are normal. Returns the CSV's path."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with open(root / "m.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "image", "lateral", "text", "split"])
        for i in range(16):
            a = (rng.random((40, 40)) * 60 + (150 if i % 2 == 0 else 40)).astype(np.uint8)
            Image.fromarray(a).save(root / f"{i}_f.png")
            Image.fromarray(a.T.copy()).save(root / f"{i}_l.png")
            split = "train" if i < 10 else "val" if i < 13 else "test"
            w.writerow([f"s{i}", f"{i}_f.png", f"{i}_l.png" if i % 3 else "", MANIFEST_REPORTS[i % 2], split])
    return root / "m.csv"


def tiny_training_overrides() -> list[str]:
    """`section.field=value` settings that train the tiny model on write_tiny_manifest's studies:
    batches of 4, every word in the vocabulary, 24-token validation decodes of 8 studies."""
    return tiny_overrides(train={"batch_size": 4, "min_token_freq": 1, "val_decode_limit": 8}, decode={"max_len": 24})


# ---------------------------------------------------------------------------------------------
# Stand-ins for the server's generator and CLIP
# ---------------------------------------------------------------------------------------------

class StandInGenerator:
    """Report and probabilities from image brightness; attention = the image on an 8x8 grid; the OOD
    verdict flags a view whose pixel spread (std / 8) is above 4 (noise is, a flat image is not).

    Set `fail = True` to make the next calls raise; `batches` records each call's batch size, `decoded`
    how many studies got a report."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.decoded = 0
        self.fail = False
        self.meta = {"data": {"layout": "phantom", "phantom": True, "studies": {"train": 10, "val": 3, "test": 3}},
                     "trained_at": "2026-01-01", "test_metrics": {"bleu4": 0.1},
                     "ood": {"quantile": 0.99, "views": {"frontal": {"threshold": 4.0}, "lateral": {"threshold": 4.0}}},
                     "cxrgen_version": "0.1.0"}

    def generate_batch(self, frontals, laterals, skip_flagged=False):
        from cxrgen.bank import finding_set
        from cxrgen.inference import refused
        from cxrgen.labeler import CONDITIONS, label_many

        if self.fail:
            raise RuntimeError("boom")
        self.batches.append(len(frontals))
        outs = []
        for f, lat in zip(frontals, laterals):
            ood = [{"view": view, "score": round(float(im.std()) / 8, 4), "threshold": 4.0,
                    "flag": float(im.std()) / 8 > 4.0} for view, im in (("frontal", f), ("lateral", lat)) if im is not None]
            if skip_flagged and any(v["flag"] for v in ood):
                outs.append(refused(ood))
                continue
            self.decoded += 1
            mean = float(f.mean()) / 255
            report = "The heart is enlarged. Small left pleural effusion." if mean > 0.5 else \
                "The lungs are clear. No pleural effusion or pneumothorax."
            probs = {c: mean * (i + 1) / len(CONDITIONS) for i, c in enumerate(CONDITIONS)}
            calls, stated = [c for c, p in probs.items() if p >= 0.5], finding_set(label_many([report])[0], no_finding=True)
            outs.append({"report": report + (" Lateral view seen." if lat is not None else ""),
                         "probabilities": probs, "calls": calls,
                         "unstated": [c for c in calls if c not in stated],
                         "uncalled": [c for c in CONDITIONS if c in stated and c not in calls],
                         "attention": np.asarray(Image.fromarray(f).resize((8, 8)), np.float32), "ood": ood})
        return outs


class StandInClip:
    """Texts embed by keywords, images by brightness: bright -> "effusion", dark -> "clear"."""

    image_size = 32
    WORDS = ("effusion", "cardiomegaly", "clear")

    def embed_texts(self, texts):
        import torch

        v = torch.tensor([[float(w in t.lower()) for w in self.WORDS] for t in texts]) + 0.01
        return torch.nn.functional.normalize(v, dim=-1)

    def encode_images(self, images):
        return self.embed_texts(["effusion" if im.mean() > 127 else "clear" for im in images])


def similar_case_studies() -> list:
    """Six training studies for similar-case search with StandInClip: a duplicate and an empty report."""
    from cxrgen.data.studies import Study

    texts = ["Small left pleural effusion.", "The lungs are clear.", "The lungs are clear.",
             "Cardiomegaly and effusion.", "Cardiomegaly.", ""]
    return [Study(f"s{i}", "train", findings=t) for i, t in enumerate(texts)]


def png(width: int = 64, height: int = 80, value: int = 200, noise: bool = False) -> bytes:
    """A greyscale PNG: flat `value`, or seeded noise."""
    arr = np.random.default_rng(0).integers(0, 256, (height, width), np.uint8) if noise \
        else np.full((height, width), value, np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# The bad-image corpus
# ---------------------------------------------------------------------------------------------

#: corpus file name -> True for a valid (odd) image that must get a report, False for one that must be refused
EXPECT_REPORT = {
    "zero-byte.png": False, "truncated.png": False, "truncated.jpg": False, "text-named.png": False,
    "bomb-30000x30000.png": False, "16-bit.png": True, "rgba.png": True, "palette.png": True, "cmyk.jpg": True,
    "dicom-monochrome1.dcm": True, "dicom-no-pixels.dcm": False, "1x1.png": True, "all-black.png": True,
    "1x40000.png": True, "nan-float.tif": False,
}


def encode_image(im: Image.Image, fmt: str, **kw) -> bytes:
    """`im` saved in format `fmt` (PIL's name), as bytes."""
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb_bytes(side: int = 30_000) -> bytes:
    """A complete, valid 1-bit PNG of side x side black pixels: ~110 KB on disk, 900 megapixels decoded."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    z, parts = zlib.compressobj(9), []
    for _ in range(side):
        parts.append(z.compress(row))
    parts.append(z.flush())
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b""))


def dicom_bytes(photometric: str = "MONOCHROME2", with_pixels: bool = True) -> bytes:
    """A 64 x 48, 12-bit digital X-ray DICOM file (explicit VR little endian)."""
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


def make_bad_image_corpus(directory: Path) -> dict[str, Path]:
    """Write every file of EXPECT_REPORT into `directory`; {name: path}."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (256, 256), np.uint8)
    gradient = np.tile(np.linspace(0, 65535, 128).astype(np.uint16), (160, 1))
    rgba = np.dstack([noise, noise, noise, np.full_like(noise, 128)])
    cmyk = Image.fromarray(np.dstack([noise] * 4), "CMYK")
    files = {
        "zero-byte.png": b"",
        "truncated.png": encode_image(Image.fromarray(noise), "PNG")[:4000],
        "truncated.jpg": encode_image(Image.fromarray(noise), "JPEG", quality=90)[:3000],
        "text-named.png": b"FINDINGS: this is a text file, not an image.\n" * 20,
        "bomb-30000x30000.png": png_bomb_bytes(),
        "16-bit.png": encode_image(Image.fromarray(gradient), "PNG"),
        "rgba.png": encode_image(Image.fromarray(rgba, "RGBA"), "PNG"),
        "palette.png": encode_image(Image.fromarray(noise).convert("P"), "PNG"),
        "cmyk.jpg": encode_image(cmyk, "JPEG"),
        "dicom-monochrome1.dcm": dicom_bytes("MONOCHROME1"),
        "dicom-no-pixels.dcm": dicom_bytes(with_pixels=False),
        "1x1.png": encode_image(Image.new("L", (1, 1), 128), "PNG"),
        "all-black.png": encode_image(Image.new("L", (256, 256), 0), "PNG"),
        "1x40000.png": encode_image(Image.new("L", (1, 40_000), 100), "PNG"),
        "nan-float.tif": encode_image(Image.fromarray(np.full((64, 64), np.nan, np.float32), "F"), "TIFF"),
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


HEAVY_MODULES = ("torch", "timm", "transformers", "pandas", "fastapi", "uvicorn")

_FRESH = """
import json, sys, time
start = time.perf_counter()
from cxrgen.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:  # argparse's own errors
    code = e.code
print(json.dumps([code, time.perf_counter() - start, [m for m in {heavy!r} if m in sys.modules]]))
"""


def run_cli_fresh(argv: list[str]) -> tuple[int, str, float, list[str]]:
    """`cxrgen ARGV` in a fresh interpreter, as a user runs it: (exit code, stderr, seconds from the
    first import to the exit, which of HEAVY_MODULES it imported)."""
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _FRESH.format(heavy=HEAVY_MODULES), *argv],
                          capture_output=True, text=True, timeout=120)
    code, seconds, heavy = json.loads(proc.stdout.splitlines()[-1])
    return code, proc.stderr, seconds, heavy


def check_manifest(corpus: dict[str, Path], directory: Path) -> dict[str, str]:
    """`cxrgen data check manifest` over one study per file: {name: its problem line, or ""}."""
    manifest = directory / "bad.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "image", "text"])
        for name, path in corpus.items():
            w.writerow([name, str(path), "The lungs are clear."])
    _, out, _ = run_cli(["data", "check", "manifest", str(manifest), "--show", str(len(corpus))])
    lines = [line.strip() for line in out.splitlines()]  # each problem, indented under its kind
    return {name: next((line for line in lines if line.startswith(str(path))), "") for name, path in corpus.items()}


def bad_image_outcomes(model: Path, corpus: dict[str, Path], workdir: Path) -> dict[str, dict]:
    """Each corpus file through `cxrgen generate --image`, `cxrgen data check` and `POST /v1/reports`:
    {name: {"generate": (exit, line), "check": problem line or "", "api": (status, detail or report)}}."""
    from fastapi.testclient import TestClient

    from cxrgen.inference import ReportGenerator
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


# ---------------------------------------------------------------------------------------------
# HTTP helpers: a real server, real sockets
# ---------------------------------------------------------------------------------------------

def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(app, start_timeout: float = 30, log_level: str = "warning") -> Iterator[int]:
    """Serve the ASGI `app` with uvicorn on a free loopback port in a daemon thread; yields the port.
    `log_level="info"` turns uvicorn's access log on, as `cxrgen serve` has it."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level=log_level))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.time() > deadline:
            server.should_exit = True
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    try:
        yield server.config.port
    finally:
        server.should_exit = True
        thread.join(30)


def current_rss_mb(pid: int) -> float:
    """Resident set size now of a process (VmRSS), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _multipart(data: bytes, boundary: str = "cxrgen-bench") -> tuple[bytes, bytes, str]:
    """(part header, part trailer, content type) of a one-file multipart body with field 'frontal'."""
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="frontal"; filename="f.png"\r\n'
            "Content-Type: image/png\r\n\r\n").encode()
    return head, f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _request_head(port: int, length: int, content_type: str) -> bytes:
    return (f"POST /v1/reports HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {length}\r\nConnection: close\r\n\r\n").encode()


def aborted_upload(port: int, size: int) -> None:
    """Declare a `size`-byte image upload, send half of it, and drop the connection."""
    head, tail, ctype = _multipart(b"")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(_request_head(port, len(head) + size + len(tail), ctype) + head)
        s.sendall(b"\x89PNG" + b"\0" * (size // 2))


def slow_upload(port: int, data: bytes, seconds: float, pieces: int = 20) -> int:
    """Send one upload in `pieces` spread over `seconds`; the HTTP status of the answer."""
    head, tail, ctype = _multipart(data)
    body = head + data + tail
    step = -(-len(body) // pieces)
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        s.sendall(_request_head(port, len(body), ctype))
        for i in range(0, len(body), step):
            s.sendall(body[i:i + step])
            time.sleep(seconds / pieces)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def health_while(busy: Callable[[], object], url: str) -> tuple[object, list[float]]:
    """Run `busy()` in a thread and time GET /healthz every 0.1 s until it returns: (its result, latencies)."""
    import httpx

    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(busy)
        latencies = []
        with httpx.Client(timeout=30) as c:
            while not job.done():
                t = time.perf_counter()
                c.get(f"{url}/healthz").raise_for_status()
                latencies.append(time.perf_counter() - t)
                time.sleep(0.1)
        return job.result(), latencies
