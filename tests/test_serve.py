"""HTTP API: good uploads get a report, every kind of bad upload gets a clear 4xx, the server stays up.

The API layer is tested against a small deterministic stand-in generator (fast, and it lets a
test make the model fail or block); test_real_checkpoint_end_to_end below serves a real (tiny,
random-weight) checkpoint, as tests/test_bad_images.py and tests/test_browser.py do.
"""
from __future__ import annotations

import asyncio
import base64
import io
import re
import struct
import tempfile
import threading
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cxrgen.cli import main
from cxrgen.labeler import CONDITIONS
from cxrgen.serve import create_app
from cxrgen.errors import UserError
from cxrgen.serve.app import STATIC
from cxrgen.serve.similar import SimilarCases
from cxrgen.serve.worker import BatchWorker, Busy
from cxrgen.testing import StandInClip, StandInGenerator, dicom_bytes, png, similar_case_studies


def png_bomb(side: int = 100_000) -> bytes:
    """A valid 1-kB PNG whose header claims side x side pixels (10 gigapixels by default)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = zlib.compress(b"\x00" * 1000)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


@pytest.fixture
def generator() -> StandInGenerator:
    return StandInGenerator()


@pytest.fixture
def client(generator):
    with TestClient(create_app(generator, model_name="stand-in", max_upload_mb=1)) as c:
        yield c


def post(client, **files):
    return client.post("/v1/reports", files={k: (f"{k}.png", v) for k, v in files.items()})


def test_report_from_a_png(client):
    r = post(client, frontal=png(value=220))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["report"].startswith("The heart is enlarged")
    assert "heart" in body["plain"].lower() and body["guard"]["passed"] is True
    assert list(body["probabilities"]) == list(CONDITIONS)
    # the stand-in calls the six conditions at p >= 0.5 and writes only two findings, one of them uncalled
    assert body["calls"] == ["Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
                             "Support Devices"]
    assert body["unstated"] == ["Atelectasis", "Pneumothorax", "Pleural Other", "Fracture", "Support Devices"]
    assert body["uncalled"] == ["Cardiomegaly"]
    assert body["similar_cases"] is None  # no --clip
    assert body["heatmap"].startswith("data:image/png;base64,")
    assert body["images"]["frontal"].startswith("data:image/jpeg;base64,") and body["images"]["lateral"] is None
    assert body["timing"]["batch_size"] == 1 and body["timing"]["total_ms"] > 0
    assert "not a diagnosis" in body["disclaimer"]


def _size(data_url: str) -> tuple[int, int]:
    return Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).size


def test_heatmap_matches_preview_size(client):
    body = post(client, frontal=png(width=1000, height=800)).json()
    assert _size(body["images"]["frontal"]) == _size(body["heatmap"]) == (512, 410)


def test_lateral_and_dicom(client):
    r = post(client, frontal=dicom_bytes(), lateral=png(value=10))
    assert r.status_code == 200, r.text
    assert r.json()["report"].endswith("Lateral view seen.")
    assert r.json()["images"]["lateral"].startswith("data:image/jpeg")


def test_real_smoke_image(generator, shared_iu):
    path = sorted((shared_iu / "smoke" / "images").glob("*.png"))[0]
    with TestClient(create_app(generator)) as c:  # default 25 MB limit
        r = c.post("/v1/reports", files={"frontal": (path.name, path.read_bytes(), "image/png")})
    assert r.status_code == 200, r.text
    assert r.json()["report"] and r.json()["timing"]["read_ms"] > 0


NOT_IMAGE = "not a PNG, JPEG or DICOM"
BAD = {
    "text with a .png name": (lambda: {"frontal": ("x.png", b"hello, I am not an image" * 10)}, 415, NOT_IMAGE),
    "html with a .jpg name": (lambda: {"frontal": ("x.jpg", b"<html><body>hi</body></html>")}, 415, NOT_IMAGE),
    "gif": (lambda: {"frontal": ("x.gif", _gif())}, 415, "GIF"),
    "zero bytes": (lambda: {"frontal": ("x.png", b"")}, 400, "empty"),
    "truncated png": (lambda: {"frontal": ("x.png", png(noise=True)[:3000])}, 422, "truncated"),
    "oversized": (lambda: {"frontal": ("x.png", png(1200, 1200, noise=True))}, 413, "limit"),
    "decompression bomb": (lambda: {"frontal": ("x.png", png_bomb())}, 413, "too many pixels"),
    "above the pixel limit": (lambda: {"frontal": ("x.png", png_bomb(8000))}, 413, "8000x8000 pixels"),
    "dicom without pixels": (lambda: {"frontal": ("x.dcm", dicom_bytes(with_pixels=False))}, 422, "no pixel data"),
    "wrong field name": (lambda: {"image": ("x.png", png())}, 422, "unexpected form field 'image'"),
    "lateral only": (lambda: {"lateral": ("x.png", png())}, 422, "missing form field 'frontal'"),
    "an extra field": (lambda: {"frontal": ("x.png", png()), "notes": ("n.txt", b"hi")}, 422,
                       "unexpected form field 'notes'"),
}


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="GIF")
    return buf.getvalue()


@pytest.mark.parametrize("case", list(BAD))
def test_bad_upload_gets_clear_4xx_and_server_stays_up(client, case):
    files, status, message = BAD[case]
    r = client.post("/v1/reports", files=files())
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]
    assert post(client, frontal=png()).status_code == 200  # still serving


def test_text_field_and_non_multipart_bodies(client):
    r = client.post("/v1/reports", data={"frontal": "not a file"}, files={"lateral": ("l.png", png())})
    assert r.status_code == 422 and "must be a file" in r.json()["detail"]
    r = client.post("/v1/reports", json={"frontal": "x"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
    r = client.post("/v1/reports", content=b"--x\r\ngarbage", headers={"content-type": "multipart/form-data"})
    assert r.status_code == 400 and "multipart" in r.json()["detail"]
    stray_cr = (b'--b\r\nContent-Disposition: form-data; name="frontal"; filename="x.png"\r\nX\rY: z\r\n\r\n'
                + png() + b"\r\n--b--\r\n")  # a carriage return inside a part's header name
    r = client.post("/v1/reports", content=stray_cr, headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 400 and "malformed multipart" in r.json()["detail"]


def test_body_limit_from_declared_length(client):
    r = client.post("/v1/reports", content=b"x" * (3 * 2**20),
                    headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413


def test_uploads_never_touch_disk(client, monkeypatch):
    """Starlette spools parts over 1 MB to a temp file; ours must not."""
    def no_disk(*args, **kwargs):
        raise AssertionError("upload was written to a temporary file")
    monkeypatch.setattr(tempfile, "TemporaryFile", no_disk)
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", no_disk)
    big = png(2000, 2000, noise=True)
    assert len(big) > 2**20
    with TestClient(create_app(StandInGenerator(), max_upload_mb=8)) as c:
        assert post(c, frontal=big).status_code == 200


def test_model_failure_is_a_500_and_worker_survives(client, generator):
    generator.fail = True
    r = post(client, frontal=png())
    assert r.status_code == 500 and "report generation failed" in r.json()["detail"]
    generator.fail = False
    assert post(client, frontal=png()).status_code == 200


def test_full_server_answers_503(generator):
    app = create_app(generator, capacity=1)
    with TestClient(app) as c, app.state.services.worker.slot():
        r = post(c, frontal=png())
        assert r.status_code == 503 and "busy" in r.json()["detail"]
        assert r.headers["retry-after"] == "1"
    with TestClient(app) as c:
        assert post(c, frontal=png()).status_code == 200


def test_worker_batches_queued_jobs():
    """Jobs that arrive while the model is busy go through together, in order."""
    entered, gate, seen = threading.Event(), threading.Event(), []

    def fn(items):
        entered.set()
        gate.wait(5)
        seen.append(list(items))
        return [i * 10 for i in items]

    worker = BatchWorker(fn, capacity=8, max_batch=4)

    async def burst():
        first = asyncio.create_task(worker.submit(0))
        await asyncio.to_thread(entered.wait, 5)  # the model is now busy with job 0
        rest = [asyncio.create_task(worker.submit(i)) for i in range(1, 6)]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(first, *rest)

    results = asyncio.run(burst())
    worker.close()
    assert [r.output for r in results] == [0, 10, 20, 30, 40, 50]
    assert seen == [[0], [1, 2, 3, 4], [5]]
    assert [r.batch_size for r in results] == [1, 4, 4, 4, 4, 1]


def test_slots_are_bounded_and_released():
    worker = BatchWorker(lambda items: items, capacity=2)
    with worker.slot(), worker.slot():
        with pytest.raises(Busy):
            with worker.slot():
                pass
    assert worker.in_flight == 0


def test_simplify_endpoint(client):
    r = client.post("/v1/simplify", json={"report": "Mild cardiomegaly. No pneumothorax or pleural effusion."})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["guard"]["passed"] is True and "heart" in body["plain"].lower()
    assert client.post("/v1/simplify", json={"report": ""}).status_code == 422
    assert client.post("/v1/simplify", json={"text": "x"}).status_code == 422


def test_healthz_info_and_page(client):
    h = client.get("/healthz").json()
    assert h == {"status": "ok", "version": h["version"], "in_flight": 0, "capacity": 32}  # nothing on the model
    assert client.get("/v1/info").json() == {"version": h["version"], "model": "stand-in", "clip": False}
    page = client.get("/")
    assert page.status_code == 200 and "Not for clinical use" in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200


def test_page_loads_nothing_from_the_network():
    """Offline: every URL in the page's files is relative to this server."""
    for f in STATIC.iterdir():
        text = f.read_text()
        urls = re.findall(r"(?:https?:)?//[\w.-]+\.\w+[^\s\"')]*", text)
        external = [u for u in urls if "www.w3.org/2000/svg" not in u]  # the SVG namespace is a name, not a fetch
        assert not external, f"{f.name} loads {external}"


def test_real_checkpoint_end_to_end(tiny_model):
    from cxrgen.inference import ReportGenerator

    app = create_app(ReportGenerator.from_pretrained(tiny_model), model_name="tiny")
    with TestClient(app) as c:
        r = post(c, frontal=png(300, 360, noise=True), lateral=dicom_bytes())
        assert r.status_code == 200, r.text
        body = r.json()
        assert isinstance(body["report"], str) and body["report"]  # random weights: words, not sense
        assert list(body["probabilities"]) == list(CONDITIONS)
        assert all(0 <= p <= 1 for p in body["probabilities"].values())
        assert _size(body["heatmap"]) == _size(body["images"]["frontal"])


def test_cli_serve_binds_loopback_and_logs_it(tiny_model, monkeypatch, caplog):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    with caplog.at_level("INFO"):
        assert main(["serve", "--model", str(tiny_model), "--port", "8123"]) == 0
    assert calls[0]["host"] == "127.0.0.1" and calls[0]["port"] == 8123
    assert "http://127.0.0.1:8123 (loopback only" in caplog.text


def test_cli_serve_bad_model_dir_is_one_line(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "Traceback" not in err


def test_similar_cases_rank_distinct_reports():
    search = SimilarCases(StandInClip(), similar_case_studies())
    assert len(search.reports) == 4  # the duplicate and the empty report are dropped
    bright = search.search(np.full((50, 40), 230, np.uint8), None, 3)
    assert bright[0] == {"study_id": "s0", "report": "Small left pleural effusion.",
                         "score": pytest.approx(1, abs=0.01)}
    assert [c["study_id"] for c in bright][:2] == ["s0", "s3"]  # the third is a tie
    assert [c["score"] for c in bright] == sorted((c["score"] for c in bright), reverse=True)
    assert search.search(np.zeros((50, 40), np.uint8), None, 3)[0]["study_id"] == "s1"  # first of the duplicates
    assert len(search.search(np.zeros((8, 8), np.uint8), None, 10)) == 4
    with pytest.raises(UserError, match="no training reports"):
        SimilarCases(StandInClip(), similar_case_studies()[-1:])


def test_report_includes_similar_cases(generator):
    app = create_app(generator, retriever=SimilarCases(StandInClip(), similar_case_studies()))
    with TestClient(app) as c:
        assert c.get("/v1/info").json()["clip"] is True
        cases = post(c, frontal=png(value=240)).json()["similar_cases"]
    assert len(cases) == 3 and cases[0]["report"] == "Small left pleural effusion."


def test_every_report_carries_the_ood_verdict_and_refuse_ood_answers_422(generator):
    """The stand-in flags a view whose pixel spread is high: noise is flagged, a flat image is not."""
    with TestClient(create_app(generator, model_name="stand-in")) as c:
        ok = post(c, frontal=png(value=220), lateral=png(value=100))
        assert ok.status_code == 200 and [v["view"] for v in ok.json()["ood"]] == ["frontal", "lateral"]
        assert not any(v["flag"] for v in ok.json()["ood"])
        noisy = post(c, frontal=png(noise=True))
        assert noisy.status_code == 200 and noisy.json()["ood"][0]["flag"] and noisy.json()["report"]
    with TestClient(create_app(generator, model_name="stand-in", refuse_ood=True)) as c:
        assert post(c, frontal=png(value=220)).status_code == 200
        decoded = generator.decoded
        r = post(c, frontal=png(noise=True))
        assert r.status_code == 422 and r.json()["detail"].startswith(
            "This image is unlike the images this model was trained on") and "frontal view" in r.json()["detail"]
        assert generator.decoded == decoded  # refused before any report was written


def test_model_card(generator, tiny_model):
    from cxrgen.inference import ReportGenerator

    with TestClient(create_app(generator, model_name="stand-in")) as c:
        card = c.get("/v1/model").json()
    assert card["model"] == "stand-in" and card["data"]["phantom"] is True and card["trained_at"] == "2026-01-01"
    assert card["ood_check"]["thresholds"] == {"frontal": 4.0, "lateral": 4.0}
    # a checkpoint from before the card: every fact it does not record is null, and no OOD check
    with TestClient(create_app(ReportGenerator.from_pretrained(tiny_model), model_name="old")) as c:
        card = c.get("/v1/model").json()
        assert post(c, frontal=png(width=128, height=128, value=200)).json()["ood"] is None
    assert card["ood_check"] is None and card["data"]["layout"] is None and card["cxrgen_version"] == "0.1.0"
