"""Shared helpers for the benchmarks: machine facts, timing, peak memory, a synthetic study set.

Every bench script prints Markdown on stdout (what `bench/run_all.py` pastes into
docs/benchmarks.md) and, with `--json PATH`, writes its raw numbers for docs/scaling.md.
Timings use the median of a few repeats after a warm-up, because other jobs on a shared
machine only ever slow a repeat down; ratios are always taken within one process.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def machine_facts() -> dict:
    """CPU model, cores, RAM, load and library versions: what a reader needs to compare numbers."""
    import torch

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gb": round(ram_gb, 1), "load_avg_1min": round(os.getloadavg()[0], 2),
            "python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "gpu": gpu}


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Resident set size now, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_it(fn: Callable[[], object], repeat: int = 3, warmup: int = 1, device: str = "cpu") -> float:
    """Median seconds per call of `fn` after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def synthetic_studies(root: Path, n: int, size: int = 256, seed: int = 0):
    """`n` two-view studies: real IU report text (from the torchxrayvision wheel) and noise PNGs.

    Pixels don't matter for speed, only shapes and decode cost, so random images of a radiograph's
    size stand in for real ones (the real IU images are not on this machine).
    """
    from PIL import Image

    from cxrgen.data.iu import load_iu_reports
    from cxrgen.data.studies import ImageRef, Study

    reports = [s for s in load_iu_reports() if s.findings]
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    base = rng.integers(0, 256, (size, size), dtype=np.uint8)
    studies = []
    for i in range(n):
        refs = []
        for v, view in enumerate(("PA", "LL")):
            path = root / f"s{i:06d}_{v}.png"
            if not path.exists():
                Image.fromarray(np.roll(base, i * 7 + v, axis=1)).save(path, compress_level=1)
            refs.append(ImageRef(path, view, f"s{i}_{v}"))
        r = reports[i % len(reports)]
        studies.append(Study(f"s{i:06d}", ("train", "val")[i % 10 == 0], refs, r.findings, r.impression))
    return studies


def write_json(path: str | None, data: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=2))


def fmt(x: float, digits: int = 3) -> str:
    """A number with `digits` significant figures, no scientific notation for the usual ranges."""
    if x == 0 or not np.isfinite(x):
        return str(x)
    return f"{x:.{max(0, digits - 1 - int(np.floor(np.log10(abs(x)))))}f}"
