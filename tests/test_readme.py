"""The README's "Use your own data" steps run as written, on the 5-study manifest they make.

Only two things differ from a user's shell: the images are generated here (the README leaves them
to the user), and `train` gets the tiny model's settings so that it takes seconds.
"""
import csv
import re
import shlex
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cxrgen.cli import main
from cxrgen.testing import ramp_pairs, tiny_training_overrides

REPO = Path(__file__).resolve().parents[1]


def _walkthrough() -> tuple[str, str, list[list[str]]]:
    """(manifest path, manifest text, the cxrgen command lines) of the README section."""
    section = (REPO / "README.md").read_text().split("## Use your own data", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    path, text = re.search(r"cat > (\S+) <<'EOF'\n(.*?)\nEOF\n", block, re.S).groups()
    commands = [shlex.split(line.split("#", 1)[0])[1:] for line in block.splitlines() if line.startswith("cxrgen ")]
    return path, text + "\n", commands


def test_the_walkthrough_has_every_step():
    path, text, commands = _walkthrough()
    assert len(text.strip().splitlines()) == 6  # the header and 5 studies
    assert [c[:2] if c[0] == "data" else c[:1] for c in commands] == [
        ["data", "check"], ["train"], ["generate"], ["generate"], ["eval"], ["serve"]]


@pytest.mark.slow  # trains a (tiny) model and starts the METEOR JVM
def test_use_your_own_data_runs_as_written(tmp_path, monkeypatch, capsys):
    import uvicorn

    path, text, commands = _walkthrough()
    monkeypatch.chdir(tmp_path)
    manifest = Path(path)
    manifest.parent.mkdir(parents=True)
    manifest.write_text(text)
    pairs = ramp_pairs(5, 0, side=64)
    for row in csv.DictReader(text.splitlines()):
        frontal, lateral = next(pairs)
        Path(manifest.parent / row["frontal"]).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(frontal).save(manifest.parent / row["frontal"])
        if row["lateral"]:
            Image.fromarray(lateral).save(manifest.parent / row["lateral"])
    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.append(app))
    tiny = ["--config", str(REPO / "configs" / "default.yaml"), "--epochs", "1"]
    for argv in commands:
        if argv[0] == "train":
            argv = argv + tiny + [f"--set={o}" for o in tiny_training_overrides()]
        assert main(argv) == 0, argv
    out = capsys.readouterr().out
    assert "5 studies checked, 0 problem(s)" in out and "1 predictions written" in out
    assert Path("runs/mine/eval/metrics.json").is_file()
    frontal = manifest.parent / "images" / "p5_pa.png"
    with TestClient(served[0]) as client:
        answer = client.post("/v1/reports", files={"frontal": ("f.png", frontal.read_bytes(), "image/png")})
    assert answer.status_code == 200 and answer.json()["report"]
