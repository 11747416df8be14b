"""How long `cxrgen eval` takes on the full IU X-ray test split (590 studies), end to end.

Runs the real command in a subprocess (imports, data loading, the METEOR JVM start, labelling,
all NLG + CE metrics, 1,000 bootstrap resamples, p-values, files and chart) and reports wall
time, CPU time (the command and its JVM) and the machine's load, since a shared machine slows
wall time down. Two cases: one system, and one system plus the four baselines (built inside
`--with-baselines`, label-oracle labelling the training split included). The "system" is the
random-train baseline: 590 distinct real reports, so nothing is shared between samples.
`--parts` also times the steps one by one in this process (CPU seconds), which stays readable
when other jobs make wall time meaningless.

    .venv/bin/python bench/eval_speed.py [--repeats 1] [--parts]
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

import numpy as np

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


def _parts(preds_path: Path) -> None:
    """Wall and CPU seconds of each step of one evaluation, measured alone in this process.

    A running JVM's CPU is only counted once it exits, so the METEOR alignments show in the wall
    time of the NLG step, not in its CPU time.
    """
    rows = []

    def step(name, fn):
        before_self, before_kids = time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        out = fn()
        wall = time.perf_counter() - start
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        rows.append((name, wall, time.process_time() - before_self
                     + (kids.ru_utime - before_kids.ru_utime) + (kids.ru_stime - before_kids.ru_stime)))
        return out

    def cli_startup():
        from cxrgen.cli import build_parser

        build_parser()

    def meteor_start():
        from cxrgen.evaluate.nlg import NLGScorer

        with NLGScorer() as s:  # JVM start + paraphrase table, then one pair
            s.score(["a b c"], ["a b c"])

    step("`cxrgen` start-up (build_parser: imports every command module)", cli_startup)
    from cxrgen.data.iu import load_iu_xray
    from cxrgen.evaluate.clinical import label_texts
    from cxrgen.evaluate.bootstrap import resample_weights
    from cxrgen.evaluate.report import SystemSamples
    from cxrgen.io import read_predictions

    refs = [s.findings for s in step("load the test split (load_iu_xray)", lambda: load_iu_xray("test"))]
    preds = list(read_predictions(preds_path).values())
    step("CheXpert labels of 590 references + 590 predictions", lambda: (label_texts(refs), label_texts(preds)))
    step("METEOR JVM start + one pair", meteor_start)
    from cxrgen.evaluate.nlg import NLGScorer

    with NLGScorer() as scorer:
        scorer.score(["a"], ["a"])  # wait for the JVM outside the timed step
        nlg = step("BLEU, METEOR (590 alignments; JVM CPU not counted), ROUGE-L, CIDEr", lambda: scorer.score(preds, refs))
    w = resample_weights(len(refs), 1000, 0)
    ce = np.zeros((len(refs), 14, 3))
    step("1,000 bootstrap resamples of all metrics", lambda: SystemSamples(nlg, ce).metrics(w))
    print("\n| step | wall s | CPU s |\n|---|---|---|")
    for name, wall, cpu in rows:
        print(f"| {name} | {wall:.2f} | {cpu:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--parts", action="store_true", help="also time each step alone (CPU seconds)")
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
        if args.parts:
            _parts(preds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
