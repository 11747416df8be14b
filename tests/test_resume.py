"""Crash-safe training: a run killed with SIGKILL and resumed ends with the uninterrupted run's weights."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from cxrgen.checkpoint import load_checkpoint
from cxrgen.cli import main
from cxrgen.config import Config, apply_overrides
from cxrgen.testing import tiny_training_overrides

TINY = tiny_training_overrides()
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: bit-identical arithmetic in every process


def train_cmd(manifest, tmp_path, out, *extra) -> list[str]:
    cfg = tmp_path / "tiny.yaml"
    if not cfg.exists():
        apply_overrides(Config(), TINY).save(cfg)
    return [sys.executable, "-m", "cxrgen.cli", "train", "--config", str(cfg), "--data", f"manifest:{manifest}",
            "--output", str(out), "--epochs", "3", "--cache-dir", str(tmp_path / "cache"), "--set", "train.lr=3e-3",
            *extra]


def state(run) -> dict:
    return torch.load(run / "last.ckpt", map_location="cpu", weights_only=True)


def csv_epochs(run) -> list[tuple[str, str]]:
    """(epoch, val/cider) of each validation row of the run's metrics.csv."""
    with open(run / "csv" / "metrics.csv") as f:
        return [(float(r["epoch"]), r["val/cider"]) for r in csv.DictReader(f) if r.get("val/cider")]


@pytest.mark.slow
def test_kill_9_then_resume_equals_uninterrupted_run(manifest, tmp_path, capsys):
    whole, crashed = tmp_path / "whole", tmp_path / "crashed"
    done = subprocess.run(train_cmd(manifest, tmp_path, whole), env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]

    proc = subprocess.Popen(train_cmd(manifest, tmp_path, crashed), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (crashed / "last.ckpt").exists():  # the end of epoch 0: kill it during epoch 1
        assert proc.poll() is None and time.time() < deadline, "the run ended before its first last.ckpt"
        time.sleep(0.01)
    proc.kill()
    assert proc.wait() == -signal.SIGKILL
    assert not (crashed / "train_summary.json").exists(), "the kill came too late to test anything"
    killed_at = state(crashed)["epoch"]
    assert killed_at < 2
    load_checkpoint(crashed / "model")  # the best model so far is complete and loadable
    before = {f.name: f.read_bytes() for f in (crashed / "model").iterdir()}
    best_before = json.loads(before["meta.json"])["epoch"]

    # starting afresh in the crashed run's folder would overwrite it: refused, one line, exit 2
    assert main(train_cmd(manifest, tmp_path, crashed)[3:]) == 2
    assert main(train_cmd(manifest, tmp_path, crashed, "--resume", "--set", "train.lr=1e-3")[3:]) == 2
    assert main(train_cmd(manifest, tmp_path, tmp_path / "never", "--resume")[3:]) == 2
    err = capsys.readouterr().err
    assert "add --resume" in err and "train.lr" in err and "last.ckpt not found" in err and "Traceback" not in err

    resumed = subprocess.run(train_cmd(manifest, tmp_path, crashed, "--resume"), env=ENV, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    a, b = state(whole), state(crashed)
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"])
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    best_a, best_b = (load_file(r / "model" / "model.safetensors") for r in (whole, crashed))
    assert best_a.keys() == best_b.keys() and all(torch.equal(best_a[k], best_b[k]) for k in best_a)
    meta = [json.loads((r / "model" / "meta.json").read_text()) for r in (whole, crashed)]
    assert meta[0]["epoch"] == meta[1]["epoch"] and meta[0]["val/cider"] == meta[1]["val/cider"]
    if meta[1]["epoch"] == best_before:  # the best came before the crash: the resumed run never replaced it
        # (the end of training adds the OOD statistics, the report bank, the side and extra-finding models, which the
        # killed run never reached)
        after = {f.name: f.read_bytes() for f in (crashed / "model").iterdir()
                 if f.name not in ("ood.safetensors", "bank.json", "sides.safetensors", "extras.safetensors")}
        after["meta.json"] = json.dumps({k: v for k, v in json.loads(after["meta.json"]).items() if k != "ood"})
        before["meta.json"] = json.dumps(json.loads(before["meta.json"]))
        assert after == before

    # the log keeps the epochs logged before the kill: one validation row per epoch, as in the whole run
    assert csv_epochs(crashed) == csv_epochs(whole) and len(csv_epochs(whole)) == 3
    assert not list((crashed / "csv").glob("*.part*")) and not list((crashed / "csv").glob("*.snapshot"))
    assert not list(crashed.glob("*.tmp"))
