"""Labeler throughput on one core: reports per second over the 3,199 IU reports of the reference CSV.

Usage: python bench/labeler_speed.py [--reference CSV] [--repeat N]
Pins torch-free, single-threaded work (the labeler is pure Python regexes), so the number is one core.
Reports the best of N passes, as timeit does, because other jobs on a shared machine only slow a pass down.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from labeler_agreement import DEFAULT_REFERENCE, load_reference

from cxrgen.labeler import label_many


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    texts = [r["text"] for r in load_reference(args.reference)]
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        label_many(texts)
        times.append(time.perf_counter() - start)
    best = min(times)
    chars = sum(map(len, texts)) / len(texts)
    print(f"{len(texts)} reports (mean {chars:.0f} characters), best of {args.repeat}: {best:.2f} s "
          f"= {len(texts) / best:.0f} reports/s on one core ({platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}); median pass {sorted(times)[len(times) // 2]:.2f} s")


if __name__ == "__main__":
    main()
