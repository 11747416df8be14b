"""Clean failures: every kind of bad input gives one `error:` line naming the file, exit 2, no traceback.

Covers missing paths, wrong layouts, a corrupt image, binary files where text is expected, a
model folder from another version, an empty predictions file, unknown config keys, and a full
disk (simulated with RLIMIT_FSIZE in a subprocess), which must leave no half-written file.
"""
import csv
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file, save_file

from cxrgen.checkpoint import FORMAT, load_checkpoint
from cxrgen.cli import main
from cxrgen.testing import make_tiny_checkpoint


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A tiny model, a small manifest dataset, and bad inputs of every kind."""
    root = tmp_path_factory.mktemp("rel")
    f = {"root": root, "model": make_tiny_checkpoint(root / "model"), "dir": root / "empty-dir"}
    f["dir"].mkdir()
    with open(root / "m.csv", "w", newline="") as out:
        w = csv.writer(out)
        w.writerow(["id", "image", "text", "split"])
        for i in range(9):
            Image.fromarray(np.full((40, 40), 25 * i, np.uint8)).save(root / f"{i}.png")
            split = ["train", "val", "test"][i % 3]
            w.writerow([f"s{i}", f"{i}.png", "The heart is normal. No pleural effusion.", split])
    f["manifest"] = root / "m.csv"
    f["preds"] = root / "preds.jsonl"
    f["preds"].write_text("".join(json.dumps({"id": f"s{i}", "report": "Heart normal."}) + "\n" for i in (2, 5, 8)))
    f["empty"] = root / "empty.jsonl"
    f["empty"].write_text("\n")
    f["binary"] = root / "scan.png"
    f["binary"].write_bytes((root / "0.png").read_bytes())
    f["truncated"] = root / "truncated.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), np.uint8)).save(root / "noise.png")
    f["truncated"].write_bytes((root / "noise.png").read_bytes()[:2000])  # half of the pixel data
    f["list_annotation"] = root / "other-layout"
    f["list_annotation"].mkdir()
    (f["list_annotation"] / "annotation.json").write_text("[1, 2, 3]")  # JSON, but not R2Gen's annotation
    f["bad_yaml"] = root / "bad.yaml"
    f["bad_yaml"].write_text("model:\n  d_modl: 64\n")
    return f


def _other_version(src: Path, dst: Path, change) -> Path:
    shutil.copytree(src, dst)
    change(dst)
    return dst


def _meta_format(d: Path) -> None:
    meta = json.loads((d / "meta.json").read_text())
    (d / "meta.json").write_text(json.dumps({**meta, "format": FORMAT + 1, "cxrgen_version": "9.0.0"}))


def _config_field(d: Path) -> None:
    cfg = json.loads((d / "config.json").read_text())
    cfg["model"]["vision_tower"] = "vit"  # a field a later version might add
    (d / "config.json").write_text(json.dumps(cfg))


def _weight_names(d: Path) -> None:
    weights = load_file(d / "model.safetensors")
    save_file({f"renamed.{k}": v for k, v in weights.items()}, d / "model.safetensors")


def test_checkpoint_records_its_format(files):
    meta = json.loads((files["model"] / "meta.json").read_text())
    assert meta["format"] == FORMAT and meta["cxrgen_version"]


def test_kill_between_the_renames_of_a_checkpoint_save(files, tmp_path):
    """save_checkpoint moves the old folder to .NAME.old, then the new one in: a kill in between loses nothing."""
    model = shutil.copytree(files["model"], tmp_path / "model")
    model.rename(tmp_path / ".model.old")
    assert load_checkpoint(model)[3]["format"] == FORMAT and model.is_dir()


@pytest.mark.parametrize("change, expected", [(_meta_format, f"format {FORMAT + 1} (written by cxrgen 9.0.0)"),
                                              (_config_field, "vision_tower"), (_weight_names, "Missing key")])
@pytest.mark.parametrize("command", ["generate", "serve"])
def test_model_folder_from_another_version(files, tmp_path, capsys, change, expected, command):
    model = _other_version(files["model"], tmp_path / "old-model", change)
    argv = ["generate", "--model", str(model), "--image", str(files["root"] / "0.png")] if command == "generate" \
        else ["serve", "--model", str(model), "--port", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and str(model) in err and expected in err, err
    assert "retrain" in err


# (argv with {placeholders}, text the one error line must contain)
CASES = {
    "missing dataset": (["data", "stats", "manifest", "{root}/nope.csv"], "{root}/nope.csv"),
    "missing image": (["generate", "--model", "{model}", "--image", "{root}/nope.png"], "{root}/nope.png"),
    "missing model": (["generate", "--model", "{root}/nope", "--image", "{root}/0.png"], "{root}/nope"),
    "missing input": (["label", "--input", "{root}/nope.csv", "--text-column", "text", "--output", "{root}/o.csv"],
                      "{root}/nope.csv"),
    "missing predictions": (["eval", "--predictions", "{root}/nope.jsonl", "--dataset", "manifest:{manifest}",
                             "--output", "{root}/e"], "{root}/nope.jsonl"),
    "missing config": (["train", "--config", "{root}/nope.yaml", "--data", "manifest:{manifest}",
                        "--output", "{root}/r"], "{root}/nope.yaml"),
    "missing simplify input": (["simplify", "--input", "{root}/nope.jsonl"], "{root}/nope.jsonl"),
    "missing clip": (["clip", "eval", "--clip", "{root}/nope", "--data", "manifest:{manifest}"], "{root}/nope"),
    "missing experiment": (["experiment", "{root}/nope.yaml"], "{root}/nope.yaml"),
    "wrong layout (r2gen)": (["data", "check", "r2gen", "{dir}"], "annotation.json"),
    "wrong layout (mimic)": (["train", "--data", "mimic:{dir}", "--output", "{root}/r"], "mimic-cxr-2.0.0-split.csv"),
    "wrong layout (annotation of another shape)": (["data", "stats", "r2gen", "{list_annotation}"],
                                                   "{list_annotation} does not look like the r2gen layout"),
    "image as manifest": (["train", "--data", "manifest:{binary}", "--output", "{root}/r"],
                          "{binary}: not a text file"),
    "output is a file": (["generate", "--model", "{model}", "--data", "manifest:{manifest}", "--split", "train",
                          "--output", "{binary}/preds.jsonl"], "{binary}"),
    "unknown layout": (["baseline", "most-frequent", "--dataset", "dicomdir:{dir}", "--output", "{root}/b.jsonl"],
                       "unknown layout 'dicomdir'"),
    "corrupt image": (["generate", "--model", "{model}", "--image", "{truncated}"], "{truncated}"),
    "empty predictions": (["eval", "--predictions", "{empty}", "--dataset", "manifest:{manifest}",
                           "--output", "{root}/e"], "{empty}: no predictions"),
    "image as predictions": (["eval", "--predictions", "{binary}", "--dataset", "manifest:{manifest}",
                              "--output", "{root}/e"], "{binary}: not a text file"),
    "image as simplify input": (["simplify", "--input", "{binary}"], "{binary}: not a text file"),
    "image as config": (["train", "--config", "{binary}", "--data", "manifest:{manifest}", "--output", "{root}/r"],
                        "{binary} is not a text file"),
    "image as experiment": (["experiment", "{binary}"], "{binary} is not a text file"),
    "image as clip": (["clip", "eval", "--clip", "{binary}", "--data", "manifest:{manifest}"],
                      "{binary}: not a CLIP checkpoint"),
    "image as labeler input": (["label", "--input", "{binary}", "--text-column", "text", "--output", "{root}/o.csv"],
                               "{binary}: not a text file"),
    "unknown config key (file)": (["train", "--config", "{bad_yaml}", "--data", "manifest:{manifest}",
                                   "--output", "{root}/r"], "{bad_yaml}: unknown config field model.d_modl"),
    "unknown config key (--set)": (["train", "--data", "manifest:{manifest}", "--output", "{root}/r",
                                    "--set", "train.epoch=3"], "unknown config field train.epoch"),
    "unknown clip config key": (["clip", "train", "--data", "manifest:{manifest}", "--output", "{root}/c",
                                 "--config", "{bad_yaml}"], "{bad_yaml}: unknown CLIP config fields"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_line(files, capsys, case):
    argv, expected = CASES[case]
    fill = {k: str(v) for k, v in files.items()}
    code = main([a.format(**fill) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert lines[-1].startswith("error: ") and expected.format(**fill) in lines[-1], err
    assert "Traceback" not in err and len([line for line in lines if line.startswith("error")]) == 1


def _limit_file_size(n: int):
    def apply() -> None:  # in the child: writes past n bytes fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))
    return apply


DISK_FULL = {  # command -> (argv, the file it must name)
    "generate": (["generate", "--model", "{model}", "--data", "manifest:{manifest}", "--split", "train",
                  "--output", "{out}/preds.jsonl"], "{out}/preds.jsonl"),
    "label": (["label", "--input", "{manifest}", "--text-column", "text", "--output", "{out}/labels.csv"],
              "{out}/labels.csv"),
    "baseline": (["baseline", "most-frequent", "--dataset", "manifest:{manifest}", "--output", "{out}/b.jsonl"],
                 "{out}/b.jsonl"),
    "simplify": (["simplify", "--input", "{preds}", "--output", "{out}/plain.jsonl"], "{out}/plain.jsonl"),
    "eval": (["eval", "--predictions", "{preds}", "--dataset", "manifest:{manifest}", "--output", "{out}/eval",
              "--bootstrap", "5"], "{out}/eval/metrics.json"),
    "train": (["train", "--data", "manifest:{manifest}", "--output", "{out}/run", "--cache-dir", "{out}/cache",
               "--set", "model.encoder=resnet18", "--set", "model.pretrained=false", "--set", "model.image_size=32",
               "--epochs", "1"], "{out}/cache/images-32-"),
}


@pytest.mark.slow
@pytest.mark.parametrize("command", list(DISK_FULL))
def test_disk_full_is_one_line_and_leaves_no_partial_file(files, tmp_path, command):
    argv, expected = DISK_FULL[command]
    fill = {**{k: str(v) for k, v in files.items()}, "out": str(tmp_path / "out")}
    limit = 2000 if command == "train" else 120  # train: config.yaml fits, the image cache does not
    proc = subprocess.run([sys.executable, "-m", "cxrgen.cli", *[a.format(**fill) for a in argv]],
                          preexec_fn=_limit_file_size(limit), capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert last.startswith(f"error: cannot write {expected.format(**fill)}") and "free some space" in last, last
    # a write cut by the limit leaves exactly `limit` bytes; temporaries end in .tmp
    partial = [p for p in (tmp_path / "out").rglob("*")
               if p.is_file() and (p.stat().st_size == limit or ".tmp" in p.name)]
    assert not partial, partial


@pytest.mark.slow
def test_kill_during_generate_exits_cleanly_and_leaves_no_temporary(files, tmp_path):
    """SIGTERM (`kill`, a job scheduler's stop) unwinds like Ctrl-C: exit 130, no traceback, and
    neither the half-written predictions file nor its temporary stays behind."""
    import time

    with open(tmp_path / "many.csv", "w", newline="") as out:  # enough test studies to take a few seconds
        w = csv.writer(out)
        w.writerow(["id", "image", "text", "split"])
        w.writerows([f"s{i}", str(files["root"] / "3.png"), "Heart normal.", "test"] for i in range(3000))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "cxrgen.cli", "generate", "--model", str(files["model"]),
                             "--data", f"manifest:{tmp_path / 'many.csv'}", "--split", "test",
                             "--output", str(out_dir / "preds.jsonl")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not list(out_dir.glob(".*.tmp")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "generate finished before it could be stopped: give it more studies"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err[-2000:]
    assert list(out_dir.iterdir()) == []
