"""How long `cxrgen` takes from the shell: one study with `generate --image`, and each early
failure, beside a bare `python -c "import torch"` in the same run (the floor of any torch program).

Usage: .venv/bin/python bench/cli_speed.py [--model DIR] [--image PNG] [--repeat 3]

Each row is the median wall time of --repeat fresh processes. Without --model it uses the demo
model (runs/demo/run/model, made by `make demo`) when there is one, else the default architecture
with random weights, which never stops early (beam 3 to max_len: an upper bound). Without --image
it takes the demo's first phantom frontal image, else a 512 x 512 noise PNG.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fmt  # noqa: E402

from cxrgen.testing import png, random_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "runs" / "demo"
BAR_S, QUIET_TORCH_S = 4.0, 2.2  # generate --image within 4 s on a quiet 2-core machine, where `import torch` takes 2.2 s
BAR_RATIO = BAR_S / QUIET_TORCH_S  # the same bar as a ratio to the bare import measured in the same run


def wall(argv: list[str], repeat: int, expect: int) -> float:
    """Median seconds of `repeat` fresh runs of argv; each must exit with `expect`."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        if proc.returncode != expect:
            raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}, expected {expect}: {proc.stderr[-300:]}")
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="checkpoint folder (default: the demo model, else random weights)")
    p.add_argument("--image", type=Path, help="frontal image (default: a demo phantom image, else noise)")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cli-speed-"))
    model = args.model or (DEMO / "run" / "model" if (DEMO / "run" / "model" / "meta.json").is_file() else None)
    which = f"`{model.relative_to(REPO) if model.is_relative_to(REPO) else model}`" if model else \
        "the default architecture with random weights (writes max_len tokens: an upper bound)"
    model = model or random_model(tmp / "model", "default")
    phantom = sorted((DEMO / "phantom" / "images").glob("*/0.png"))[:1]
    image = args.image or (phantom[0] if phantom else None)
    if image is None:
        image = tmp / "frontal.png"
        image.write_bytes(png(512, 512, noise=True))
    cli = [sys.executable, "-m", "cxrgen.cli"]
    rows = [
        ('`python -c "import torch"`', [sys.executable, "-c", "import torch"], 0),
        ("`cxrgen generate --model M --image F`", [*cli, "generate", "--model", str(model), "--image", str(image)], 0),
        ("missing image: `generate --model M --image nope.png`",
         [*cli, "generate", "--model", str(model), "--image", str(tmp / "nope.png")], 2),
        ("missing model folder: `generate --model nope --image F`",
         [*cli, "generate", "--model", str(tmp / "nope"), "--image", str(image)], 2),
        ("missing required option: `generate --image F`", [*cli, "generate", "--image", str(image)], 2),
    ]
    times = {name: wall(argv, args.repeat, expect) for name, argv, expect in rows}
    torch_s = times[rows[0][0]]
    generate_s = times[rows[1][0]]
    print(f"Model: {which}. Median of {args.repeat} fresh processes each.\n")
    print("| command | wall time (s) | x `import torch` |")
    print("|---|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {fmt(seconds)} | {fmt(seconds / torch_s)} |")
    ratio = generate_s / torch_s
    print(f"\n- `generate --image`: {fmt(generate_s)} s, {fmt(ratio)} x a bare `import torch` ({fmt(torch_s)} s) "
          f"in the same run. The bar is {BAR_S:g} s on a quiet 2-core machine where `import torch` takes "
          f"{QUIET_TORCH_S:g} s, so {fmt(BAR_RATIO)} x: {'met' if ratio <= BAR_RATIO else 'not met'} here.")
    slowest = max(times[name] for name, _, code in rows if code == 2)
    print(f"- Every mistake above fails in at most {fmt(slowest)} s (bar: under 1 s), before torch is imported.")


if __name__ == "__main__":
    main()
