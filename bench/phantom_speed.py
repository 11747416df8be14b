"""Phantom renderer throughput: the acceptance run `cxrgen data phantom --out DIR --limit 300`.

Usage: .venv/bin/python bench/phantom_speed.py [--limit 300] [--size 512] [--workers K] [--no-estimate]

1. Runs the acceptance command (default workers = all cores) and prints its wall-clock studies/s:
   the number the issue asks for, but on a shared machine it also measures the neighbours.
2. Unless --no-estimate, estimates the idle-machine rate from CPU time, which the neighbours barely
   change: the same command with --workers 1 (CPU time per study) and with --limit 1 --workers 1
   (the serial part: start-up, report loading, one study). Idle wall time on C cores is then about
   serial + (limit - 1) x per-study / min(workers, C).
"""
import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(limit: int, size: int, workers: int | None) -> tuple[float, float, int, float]:
    """(wall s, CPU s of the command and its workers, studies written, mean PNG kB) for one phantom command."""
    exe = Path(sys.executable).with_name("cxrgen")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(exe), "data", "phantom", "--out", tmp, "--limit", str(limit), "--size", str(size)]
        if workers:
            cmd += ["--workers", str(workers)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        pngs = [p.stat().st_size for p in Path(tmp, "images").glob("*/*.png")]
        return wall, cpu, len(list(Path(tmp, "images").iterdir())), sum(pngs) / len(pngs) / 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--no-estimate", action="store_true", help="only the acceptance run")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    workers = args.workers or cores
    load = os.getloadavg()[0]
    wall, cpu, n, kb = run(args.limit, args.size, args.workers)
    print(f"acceptance: {n} studies at {args.size}px, workers={workers}: {wall:.1f} s wall, {n / wall:.1f} studies/s, "
          f"CPU {cpu:.1f} s, {kb:.0f} kB per PNG (load average before {load:.1f}, after {os.getloadavg()[0]:.1f}, "
          f"{cores} cores)")
    if args.no_estimate:
        return
    load = os.getloadavg()[0]
    _, cpu1, n1, _ = run(args.limit, args.size, 1)
    _, serial, _, _ = run(1, args.size, 1)
    per_study = (cpu1 - serial) / (n1 - 1)
    idle = serial + (n1 - 1) * per_study / min(workers, cores)
    print(f"one worker: CPU {cpu1:.1f} s for {n1} studies; serial part (--limit 1) {serial:.1f} s CPU; "
          f"{1000 * per_study:.0f} ms CPU per study (load average before {load:.1f})")
    print(f"idle-machine estimate with {min(workers, cores)} workers: {idle:.1f} s, {n1 / idle:.1f} studies/s")


if __name__ == "__main__":
    main()
