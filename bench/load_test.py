"""Bounded load test of `cxrgen serve` on loopback: 16 concurrent clients x 25 requests each.

Usage: .venv/bin/python bench/load_test.py [--model DIR | --random {default,tiny}] [--clients 16]
                                           [--requests 25] [--aborted 50] [--json OUT]

Starts the real server (`cxrgen serve`, uvicorn, one model, batching worker) as a subprocess
on 127.0.0.1 and a free port, then every client posts the same real two-view IU study
(frontal + lateral PNG from ../shared/data/iu_xray/smoke, or --frontal/--lateral) as fast as
it gets answers. It reports every status code, p50/p95/max latency, throughput, the model's
batch sizes and the server's peak RSS (VmHWM from /proc). It fails (exit 1) if any request
goes unanswered or gets a 5xx.

Then two reliability scenarios on the same server: a client that trickles one upload over a few
seconds while /healthz is polled (it must keep answering fast), and --aborted clients that
each send half of a large upload and drop the connection (the server's RSS must not grow by
their bytes, and every request slot must come back: in_flight returns to 0).

Without --model it serves (--random default) the default architecture (configs' defaults: EfficientNet-Lite0 at
224 px, d_model 256, 3 layers, beam 3) with random weights: speed does not depend on the
weights, except that a random decoder never stops early and writes max_len tokens, so the
latencies are an upper bound for a trained model of that size. `--random tiny` serves a
model so small that the numbers measure the server itself.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fmt, machine_facts, write_json  # noqa: E402

from cxrgen.testing import (aborted_upload, current_rss_mb, free_port, health_while,  # noqa: E402
                            random_model, slow_upload)

REPO = Path(__file__).resolve().parents[1]
SMOKE = Path(os.environ.get("CXRGEN_SHARED_DATA", REPO.parent / "shared" / "data")) / "iu_xray" / "smoke" / "images"


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size so far of another process (VmHWM), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(model: Path, port: int, log: Path) -> subprocess.Popen:
    cmd = [str(REPO / ".venv" / "bin" / "cxrgen"), "serve", "--model", str(model), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"server did not come up within 300 s; see {log}")


def reliability(port: int, pid: int, frontal: bytes, aborted: int) -> dict:
    """The slow-upload and aborted-upload scenarios against a running server."""
    url = f"http://127.0.0.1:{port}"
    status, latencies = health_while(lambda: slow_upload(port, frontal, seconds=3), url)
    size = 8 * 2**20
    before = current_rss_mb(pid)
    for _ in range(aborted):
        aborted_upload(port, size)
    time.sleep(1)  # let the server notice the last disconnects
    in_flight = httpx.get(f"{url}/healthz", timeout=30).json()["in_flight"]
    after = current_rss_mb(pid)
    return {"slow_upload_status": status, "healthz_during_slow_upload_max_s": max(latencies),
            "healthz_polls": len(latencies), "aborted_uploads": aborted, "aborted_bytes_each": size // 2,
            "rss_before_aborted_mb": before, "rss_after_aborted_mb": after, "in_flight_after_aborted": in_flight}


def client(url: str, files: dict[str, bytes], n: int) -> list[tuple[int, float, int]]:
    """n sequential requests -> (status, seconds, model batch size); status 0 = no answer."""
    out = []
    with httpx.Client(timeout=600) as c:
        for _ in range(n):
            t = time.perf_counter()
            try:
                r = c.post(url, files={k: (f"{k}.png", v, "image/png") for k, v in files.items()})
                batch = r.json()["timing"]["batch_size"] if r.status_code == 200 else 0
                out.append((r.status_code, time.perf_counter() - t, batch))
            except httpx.HTTPError:
                out.append((0, time.perf_counter() - t, 0))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="checkpoint directory (default: a random-weight model, see --random)")
    ap.add_argument("--random", choices=("default", "tiny"), default="default",
                    help="without --model: the default architecture, or a tiny one that isolates the server's "
                         "own cost (upload, decode, queue, previews, heatmap)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=25, help="requests per client")
    ap.add_argument("--frontal", type=Path, default=SMOKE / "CXR1900_IM-0584-1001.png")
    ap.add_argument("--lateral", type=Path, default=SMOKE / "CXR1900_IM-0584-2001.png")
    ap.add_argument("--aborted", type=int, default=50, help="uploads dropped halfway in the disconnect scenario")
    ap.add_argument("--json", help="write the raw numbers here")
    args = ap.parse_args()
    if not args.frontal.is_file():
        raise SystemExit(f"{args.frontal} not found: pass --frontal (and --lateral) or set CXRGEN_SHARED_DATA")
    files = {"frontal": args.frontal.read_bytes()}
    if args.lateral and args.lateral.is_file():
        files["lateral"] = args.lateral.read_bytes()

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or random_model(Path(tmp) / "model", args.random)
        port, log = free_port(), Path(tmp) / "server.log"
        server = start_server(model, port, log)
        try:
            url = f"http://127.0.0.1:{port}/v1/reports"
            client(url, files, 1)  # warm-up, not counted
            warm_rss = peak_rss_mb(server.pid)  # model loaded and one request served
            start = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                runs = list(pool.map(lambda _: client(url, files, args.requests), range(args.clients)))
            wall = time.perf_counter() - start
            rss = peak_rss_mb(server.pid)
            rel = reliability(port, server.pid, files["frontal"], args.aborted)
        finally:
            server.terminate()
            server.wait(30)

    results = [r for run in runs for r in run]
    statuses = Counter(s for s, _, _ in results)
    lat = sorted(t for _, t, _ in results)
    q = statistics.quantiles(lat, n=100, method="inclusive")
    batches = [b for s, _, b in results if s == 200]
    stats = {
        "model": str(args.model) if args.model else f"{args.random} config, random weights", "clients": args.clients,
        "requests": len(results), "statuses": dict(statuses), "p50_s": q[49], "p95_s": q[94], "max_s": lat[-1],
        "throughput_rps": len(results) / wall, "wall_s": wall, "mean_batch": statistics.mean(batches) if batches else 0,
        "server_peak_rss_mb": rss, "server_peak_rss_after_warmup_mb": warm_rss, "views": sorted(files),
        **rel, "machine": machine_facts(),
    }
    write_json(args.json, stats)
    print("| clients x requests | answered | 5xx | p50 s | p95 s | max s | req/s | mean batch "
          "| server peak RSS MB (after 1 request) |")
    print("|---|---|---|---|---|---|---|---|---|")
    answered = sum(c for s, c in statuses.items() if s)
    errors = sum(c for s, c in statuses.items() if s >= 500)
    print(f"| {args.clients} x {args.requests} | {answered}/{len(results)} | {errors} | {fmt(stats['p50_s'])} | "
          f"{fmt(stats['p95_s'])} | {fmt(stats['max_s'])} | {fmt(stats['throughput_rps'])} | "
          f"{fmt(stats['mean_batch'])} | {rss:.0f} ({warm_rss:.0f}) |")
    print(f"\nstatus codes: {dict(statuses)}; model: {stats['model']}; views: {', '.join(stats['views'])}")
    print("\n| scenario | result |\n|---|---|")
    print(f"| one upload trickled over 3 s | status {rel['slow_upload_status']}; /healthz answered "
          f"{rel['healthz_polls']} polls meanwhile, slowest {fmt(rel['healthz_during_slow_upload_max_s'])} s |")
    print(f"| {args.aborted} uploads dropped after {rel['aborted_bytes_each'] / 2**20:.0f} MB each | server RSS "
          f"{rel['rss_before_aborted_mb']:.0f} -> {rel['rss_after_aborted_mb']:.0f} MB; in_flight afterwards: "
          f"{rel['in_flight_after_aborted']} |")
    print(f"machine: {stats['machine']}")
    healthy = rel["slow_upload_status"] == 200 and rel["in_flight_after_aborted"] == 0
    return 0 if answered == len(results) and errors == 0 and healthy else 1


if __name__ == "__main__":
    sys.exit(main())
