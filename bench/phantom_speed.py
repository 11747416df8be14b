"""Phantom renderer throughput: the acceptance run `cxrgen data phantom --out DIR --limit 300`.

Usage: .venv/bin/python bench/phantom_speed.py [--limit 300] [--size 512] [--workers K]
Prints studies/s for the whole command (process start, report loading, rendering, PNG writing).
"""
import argparse
import os
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
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        dt = time.perf_counter() - t
        n = len(list(Path(tmp, "images").iterdir()))
    print(f"{n} studies at {args.size}px, workers={args.workers or os.cpu_count()}: {dt:.1f} s, {n / dt:.1f} studies/s "
          f"(cpu_count={os.cpu_count()}, load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
