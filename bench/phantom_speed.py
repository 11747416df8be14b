"""Phantom renderer throughput: the acceptance run `cxrgen data phantom --out DIR --limit 300`.

Usage: .venv/bin/python bench/phantom_speed.py [--limit 300] [--size 512] [--workers K]
Prints studies/s for the whole command (process start, report loading, rendering, PNG writing).
"""
import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()
    exe = Path(sys.executable).with_name("cxrgen")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(exe), "data", "phantom", "--out", tmp, "--limit", str(args.limit), "--size", str(args.size)]
        if args.workers:
            cmd += ["--workers", str(args.workers)]
        load = os.getloadavg()[0]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        dt = time.perf_counter() - t
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = usage.ru_utime + usage.ru_stime
        n = len(list(Path(tmp, "images").iterdir()))
    workers = args.workers or os.cpu_count()
    print(f"{n} studies at {args.size}px, workers={workers}: {dt:.1f} s wall, {n / dt:.1f} studies/s "
          f"(cpu_count={os.cpu_count()}, load average before {load:.1f})")
    # On a shared machine wall time measures the neighbours; CPU time measures us. The idle-machine
    # estimate assumes the workers' CPU time spreads over min(workers, cores) cores.
    print(f"CPU time {cpu:.1f} s ({1000 * cpu / n:.0f} ms/study): {n * min(workers, os.cpu_count()) / cpu:.1f} studies/s "
          f"on an idle machine")


if __name__ == "__main__":
    main()
