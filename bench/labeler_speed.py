"""Labeler throughput on one core: reports per second over the 3,199 IU reports of the reference CSV.

Usage: python bench/labeler_speed.py [--reference CSV] [--repeat N] [--baseline GIT_REV]
Labels whole reports (findings + impression). --baseline also times src/cxrgen/labeler.py as of
GIT_REV, interleaved with the current one, so the ratio holds even on a busy machine.
Pins torch-free, single-threaded work (the labeler is pure Python regexes), so the number is one core.
Reports the best of N passes, as timeit does, because other jobs on a shared machine only slow a pass down.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cxrgen.evaluate.agreement import load_reference
from cxrgen.labeler import label_many

DEFAULT_REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "iu_xray" / "chexpert_labeler_iu.csv"


def _labeler_at(rev: str):
    """The labeler module as of a git revision, imported under another name."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "show", f"{rev}:src/cxrgen/labeler.py"], cwd=root, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "labeler_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("labeler_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["labeler_baseline"] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--baseline", metavar="GIT_REV", help="also time the labeler as of this revision")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    texts = [r["text"] for r in load_reference(args.reference, "report")]
    baseline = _labeler_at(args.baseline).label_many if args.baseline else None
    times, base_times = [], []
    for _ in range(args.repeat):
        start = time.perf_counter()
        label_many(texts)
        times.append(time.perf_counter() - start)
        if baseline:
            start = time.perf_counter()
            baseline(texts)
            base_times.append(time.perf_counter() - start)
    best = min(times)
    chars = sum(map(len, texts)) / len(texts)
    print(f"{len(texts)} reports (mean {chars:.0f} characters), best of {args.repeat}: {best:.2f} s "
          f"= {len(texts) / best:.0f} reports/s on one core ({platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}); median pass {sorted(times)[len(times) // 2]:.2f} s")
    if baseline:
        print(f"baseline {args.baseline}: best {min(base_times):.2f} s = {len(texts) / min(base_times):.0f} reports/s; "
              f"current / baseline throughput = {min(base_times) / best:.2f}")


if __name__ == "__main__":
    main()
