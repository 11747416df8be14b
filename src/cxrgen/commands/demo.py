"""`cxrgen demo`: the main job end to end on the built-in default data.

phantom IU X-ray (drawn from the 3,955 real reports) -> train the default model (frozen encoder,
cached features) -> generate for R2Gen's test split -> evaluate beside the trivial baselines (the
model's test metrics go into its card) -> a results page. Each stage is the same CLI command a user would run; a finished stage is reused,
so an interrupted demo resumes.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from cxrgen.errors import UserError


def _run(argv: list[str]) -> None:
    """One stage, run exactly as a user would type it (`python -m cxrgen.cli ...`), its output streamed."""
    print(f"\n$ cxrgen {' '.join(argv)}", flush=True)
    stage = subprocess.Popen([sys.executable, "-m", "cxrgen.cli", *argv])
    try:
        code = stage.wait()
    except BaseException:  # Ctrl-C or a kill: stop the stage too, so its atomic writes clean up
        stage.terminate()
        stage.wait()
        raise
    if code:
        raise UserError(f"stage `cxrgen {argv[0]}` failed (exit {code}); fix the message above and rerun `make demo`")


def set_stale_run_aside(run: Path, config_path: str, epochs: int | None) -> None:
    """Move RUN to RUN.stale-TIME when it was trained with another config (an older default, other
    --epochs): reusing it would show old results under the new settings, deleting it loses work."""
    from cxrgen.config import load_config

    saved = run / "config.yaml"
    if not saved.is_file():
        return
    wanted = load_config(config_path, [f"train.epochs={epochs}"] if epochs else [])
    if load_config(saved) == wanted:
        return
    aside = run.with_name(f"{run.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
    run.rename(aside)
    print(f"{run} was trained with a different config; moved it to {aside} and training afresh", flush=True)


def _demo(args) -> int:
    from cxrgen.checkpoint import read_meta
    from cxrgen.evaluate.results_page import write_results_page

    out = Path(args.out)
    phantom, run = out / "phantom", out / "run"
    preds, evaluation = run / "predictions_test.jsonl", run / "eval"
    start = time.time()
    if not (phantom / "annotation.json").exists():
        cmd = ["data", "phantom", "--out", str(phantom), "--size", str(args.size)]
        _run(cmd + (["--limit", str(args.limit)] if args.limit else []))
    set_stale_run_aside(run, args.config, args.epochs)
    if not (run / "train_summary.json").exists():  # written last: model/ already exists after the first epoch
        cmd = ["train", "--config", args.config, "--data", f"phantom:{phantom}", "--output", str(run)]
        cmd += ["--resume"] if (run / "last.ckpt").exists() else []
        _run(cmd + (["--epochs", str(args.epochs)] if args.epochs else []))
    if "ood" not in read_meta(run / "model"):  # a model trained before training wrote the statistics
        _run(["model", "calibrate", "--model", str(run / "model"), "--data", f"phantom:{phantom}"])
    if not preds.exists():
        _run(["generate", "--model", str(run / "model"), "--data", f"phantom:{phantom}", "--split", "test",
              "--output", str(preds)])
    _run(["eval", "--predictions", str(preds), "--dataset", f"phantom:{phantom}", "--split", "test",
          "--output", str(evaluation), "--with-baselines"])
    _run(["model", "record-metrics", "--model", str(run / "model"), "--metrics", str(evaluation / "metrics.json"),
          "--system", preds.stem])
    page = write_results_page(out, phantom, run, preds, evaluation)
    print(f"\nDemo finished in {time.time() - start:.0f} s. Results page: {page}")
    print("Research prototype: the reports are drafts, not diagnoses.")
    return 0


def register(sub) -> None:
    p = sub.add_parser("demo", help="phantom data -> train -> generate -> evaluate -> results page")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--config", default="configs/default.yaml")
    p.add_argument("--size", type=int, default=256, help="phantom image size in pixels")
    p.add_argument("--limit", type=int, default=None, help="only the first N phantom studies (a quick run)")
    p.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    p.set_defaults(func=_demo)
