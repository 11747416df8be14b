"""A real uvicorn server keeps answering while a request is slow, and dropped uploads leak nothing.

The server runs in a thread on a free loopback port; the clients are real sockets (the
cxrgen.testing helpers that bench/load_test.py uses too), so disconnects happen at the TCP
level, as they do in use.
"""
import os
import threading
import time

import httpx

from cxrgen.serve import create_app
from cxrgen.testing import StandInGenerator, aborted_upload, current_rss_mb, health_while, png, serving, slow_upload


class SlowGenerator(StandInGenerator):
    """Blocks inside the model call until `gate` is set."""

    def __init__(self):
        super().__init__()
        self.gate, self.entered = threading.Event(), threading.Event()

    def generate_batch(self, frontals, laterals, skip_flagged=False):
        self.entered.set()
        assert self.gate.wait(60)
        return super().generate_batch(frontals, laterals, skip_flagged)


def test_health_and_simplify_answer_while_the_model_is_busy():
    gen = SlowGenerator()
    with serving(create_app(gen, model_name="slow")) as port:
        url = f"http://127.0.0.1:{port}"
        result = {}
        slow = threading.Thread(target=lambda: result.update(r=httpx.post(
            f"{url}/v1/reports", files={"frontal": ("f.png", png())}, timeout=60)))
        slow.start()
        assert gen.entered.wait(30)  # the report request is now inside the model
        with httpx.Client(timeout=5) as c:  # a blocked event loop would time these out
            for _ in range(5):
                health = c.get(f"{url}/healthz").json()
                assert health["in_flight"] == 1
            r = c.post(f"{url}/v1/simplify", json={"report": "Mild cardiomegaly."})
            assert r.status_code == 200 and "heart" in r.json()["plain"].lower()
        gen.gate.set()
        slow.join(30)
        assert result["r"].status_code == 200 and result["r"].json()["report"]


def test_health_answers_during_a_trickled_upload():
    with serving(create_app(StandInGenerator(), model_name="stand-in")) as port:
        status, latencies = health_while(lambda: slow_upload(port, png(300, 300, noise=True), seconds=2),
                                         f"http://127.0.0.1:{port}")
    assert status == 200
    assert len(latencies) >= 5  # polled every 0.1 s for 2 s, each answered while the upload was open


def test_dropped_uploads_free_their_memory_and_slots():
    size = 8 * 2**20  # each client sends 4 MB of a declared 8 MB image, then disconnects
    with serving(create_app(StandInGenerator(), model_name="stand-in", max_upload_mb=10)) as port:
        url = f"http://127.0.0.1:{port}"
        for _ in range(5):  # warm-up: the allocator's first growth is not a leak
            aborted_upload(port, size)
        time.sleep(0.5)
        before = current_rss_mb(os.getpid())
        for _ in range(50):
            aborted_upload(port, size)
        deadline = time.time() + 30
        while (health := httpx.get(f"{url}/healthz", timeout=10).json())["in_flight"] and time.time() < deadline:
            time.sleep(0.1)
        grown = current_rss_mb(os.getpid()) - before
        assert health["in_flight"] == 0  # every dropped request gave its slot back
        assert httpx.post(f"{url}/v1/reports", files={"frontal": ("f.png", png())}, timeout=30).status_code == 200
    assert grown < 60, f"RSS grew {grown:.0f} MB over 50 dropped uploads of 4 MB (200 MB if all were kept)"
