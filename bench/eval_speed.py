"""How long `cxrgen eval` takes on the full IU X-ray test split (590 studies), end to end.

Runs the real command in a subprocess (imports, data loading, the METEOR JVM start, labelling,
all NLG + CE metrics, 1,000 bootstrap resamples, p-values, files and chart) and reports wall
time, CPU time (the command and its JVM) and the machine's load, since a shared machine slows
wall time down. Two cases: one system, and one system plus the four baselines (built inside
`--with-baselines`, label-oracle labelling the training split included). The "system" is the
random-train baseline: 590 distinct real reports, so nothing is shared between samples.

    .venv/bin/python bench/eval_speed.py [--repeats 1]
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CXRGEN = [sys.executable, "-m", "cxrgen.cli"]


def _timed(argv: list[str]) -> tuple[float, float]:
    """(wall s, CPU s of the command and everything it waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(CXRGEN + argv, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="eval_speed_"))
    try:
        preds = tmp / "model.jsonl"
        subprocess.run(CXRGEN + ["baseline", "random-train", "--dataset", "iu-xray", "--split", "test",
                                 "--output", str(preds), "--seed", "1"], check=True, stdout=subprocess.DEVNULL)
        base = ["eval", "--predictions", str(preds), "--dataset", "iu-xray", "--split", "test", "--bootstrap", "1000"]
        cases = {"1 system": base + ["--output", str(tmp / "a")],
                 "1 system + 4 baselines": base + ["--output", str(tmp / "b"), "--with-baselines"]}
        print(f"cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.1f}\n")
        print("| case | wall s | CPU s (incl. JVM) | load avg (1 min) after |")
        print("|---|---|---|---|")
        for name, argv in cases.items():
            for _ in range(args.repeats):
                wall, cpu = _timed(argv)
                print(f"| {name} | {wall:.1f} | {cpu:.1f} | {os.getloadavg()[0]:.1f} |", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
