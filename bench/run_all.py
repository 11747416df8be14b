"""`make bench`: run every speed benchmark once, in order, and write docs/benchmarks.md.

Usage: .venv/bin/python bench/run_all.py [--out docs/benchmarks.md] [--budget 840] [--only NAME ...]

Each benchmark is a subprocess that prints Markdown; this script adds its wall time and peak
RSS (from wait4, so each child's own peak) and pastes the output under a heading. Arguments are
sized so the whole run fits `--budget` seconds on a 2-core CPU; a benchmark that would not fit
in what is left is skipped and says so, and one that runs past its timeout is stopped and says
so. bench/ holds speed benchmarks only: the quality probes, figure and result scripts
(labeler agreement, simplify_eval, the phantom probe and gallery, decoding sweeps, the bad-image
table) live in scripts/ and are not run here.
"""
from __future__ import annotations

import argparse
import datetime
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fmt, machine_facts  # noqa: E402

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


@dataclass
class Bench:
    name: str
    title: str
    args: list[str]
    timeout: int  # seconds
    json: bool = False  # takes --json PATH
    extra: list[str] = field(default_factory=list)


BENCHES = [
    Bench("cli_speed", "The command line: one study, and early failures, beside `import torch`", ["--repeat", "3"], 150),
    Bench("seed_pipeline", "The seed's pipeline against ours (training step and decoding)",
          ["--batch-size", "4", "--steps", "1", "--threads", "1"], 300, json=True),
    Bench("train_speed", "Training throughput",
          ["--batch-size", "8", "--finetune-batch-size", "2", "--steps", "2", "--threads", "1"], 240, json=True),
    Bench("dataloader_speed", "Image cache and data loader", ["--studies", "64", "--workers", "2"], 150, json=True),
    Bench("labeler_speed", "Labeler throughput", ["--repeat", "2"], 60),
    Bench("eval_speed", "Evaluation time (`cxrgen eval`, 590 studies)", [], 200),
    Bench("load_test", "Server under load (peak RSS of the server)",
          ["--random", "default", "--clients", "4", "--requests", "3"], 150, json=True),
    Bench("phantom_speed", "Phantom renderer throughput", ["--limit", "30", "--size", "256"], 90),
    Bench("clip_speed", "Directional loss cost (CLIP engineer's bench)", ["--batch-size", "8", "--steps", "2",
                                                                          "--threads", "1", "--fractions", "1.0"], 200),
]


def run_one(b: Bench, tmp: Path, left: float) -> dict:
    """Run one bench script; returns its stdout, status, wall time and peak RSS."""
    script = BENCH / f"{b.name}.py"
    if not script.exists():
        return {"status": "not present in this checkout"}
    if b.timeout > left:
        return {"status": f"skipped: {b.timeout} s would not fit the {int(left)} s left of the budget"}
    args = list(b.args)
    if b.json:
        args += ["--json", str(tmp / f"{b.name}.json")]
    if b.name == "dataloader_speed":
        args += ["--train-json", str(tmp / "train_speed.json")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}
    out_path, err_path = tmp / f"{b.name}.out", tmp / f"{b.name}.err"
    t = time.perf_counter()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen([sys.executable, str(script), *args], cwd=ROOT, env=env, stdout=out, stderr=err,
                                start_new_session=True)
    usage, code = None, 0
    while usage is None:  # wait4, not communicate: it also gives this child's own peak RSS
        pid, wstatus, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            usage, code = ru, os.waitstatus_to_exitcode(wstatus)
        elif time.perf_counter() - t > b.timeout:  # stop the bench and anything it started (servers, workers)
            os.killpg(proc.pid, signal.SIGKILL if time.perf_counter() - t > b.timeout + 10 else signal.SIGTERM)
            time.sleep(1)
        else:
            time.sleep(0.5)
    proc.returncode = code
    wall = time.perf_counter() - t
    if code == 0:
        status = "ok"
    elif wall > b.timeout:
        status = f"stopped after its {b.timeout} s timeout"
    else:
        tail = (err_path.read_text().strip().splitlines() or [""])[-1]
        status = f"failed (exit {code}): {tail[:200]}"
    return {"status": status, "stdout": out_path.read_text().strip(), "wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}


def render(facts: dict, results: dict[str, dict], total_s: float, command: str) -> str:
    f = facts
    lines = ["# Benchmarks", "",
             f"Written by `{command}` on {datetime.date.today().isoformat()} in {fmt(total_s / 60)} min. "
             "Every number below comes from that one run; ratios compare rows measured in the same process.", "",
             "## Machine", "",
             f"- CPU: {f['cpu']}, {f['cores']} cores; RAM {f['ram_gb']} GB; GPU: {f['gpu'] or 'none'}",
             f"- Python {f['python']}, torch {f['torch']}, {f['torch_threads']} torch threads by default "
             "(the training and decoding benches pin 1 thread)",
             f"- 1-minute load average at the start: {f['load_avg_1min']} "
             "(a shared machine: wall times are inflated by other jobs; ratios within one bench are the robust numbers)", "",
             "| benchmark | status | wall time (s) | peak RSS (MB) |", "|---|---|---|---|"]
    for b in BENCHES:
        r = results[b.name]
        wall = fmt(r["wall_s"]) if r.get("wall_s") else "-"
        rss = fmt(r["peak_rss_mb"]) if r.get("peak_rss_mb") else "-"
        lines.append(f"| `bench/{b.name}.py {' '.join(b.args)}` | {r['status']} | {wall} | {rss} |")
    for b in BENCHES:
        r = results[b.name]
        lines += ["", f"## {b.title}", "", f"`.venv/bin/python bench/{b.name}.py {' '.join(b.args)}`: "
                  f"{r['status']}."]
        if r.get("stdout"):
            lines += ["", r["stdout"]]
    lines += ["", "## GPU", "",
              "Not measured here: this machine has no GPU. `bash bench/gpu.sh` runs the GPU versions of the training and "
              "decoding benches (under 8 minutes) and prints the card's name; record its output here with the card's "
              "peak bf16 throughput for comparison.", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    p.add_argument("--budget", type=float, default=840, help="seconds for the whole run")
    p.add_argument("--only", nargs="*", help="bench names to run (default: all)")
    args = p.parse_args()
    facts = machine_facts()
    start = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for b in BENCHES:
            if args.only and b.name not in args.only:
                results[b.name] = {"status": "not selected (--only)"}
                continue
            left = args.budget - (time.perf_counter() - start)
            print(f"[bench] {b.name} ({int(left)} s of budget left)", file=sys.stderr, flush=True)
            results[b.name] = run_one(b, Path(tmp), left)
            print(f"[bench] {b.name}: {results[b.name]['status']}", file=sys.stderr, flush=True)
    command = "make bench" if not args.only else f"python bench/run_all.py --only {' '.join(args.only)}"
    text = render(facts, results, time.perf_counter() - start, command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
