"""`cxrgen demo` reuses a finished run only when it was trained with the config asked for now."""
from pathlib import Path

from cxrgen.commands.demo import set_stale_run_aside
from cxrgen.config import load_config

DEFAULT = str(Path(__file__).resolve().parents[1] / "configs" / "default.yaml")


def _finished_run(folder: Path, overrides: list[str]) -> Path:
    run = folder / "run"
    run.mkdir()
    load_config(DEFAULT, overrides).save(run / "config.yaml")
    (run / "predictions_test.jsonl").write_text('{"id": "a", "report": "old"}\n')
    return run


def test_a_run_with_the_same_config_is_kept(tmp_path):
    run = _finished_run(tmp_path, ["train.epochs=3"])
    set_stale_run_aside(run, DEFAULT, epochs=3)
    assert (run / "predictions_test.jsonl").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_a_run_with_another_config_is_moved_aside_not_deleted(tmp_path):
    run = _finished_run(tmp_path, ["decode.length_penalty=2.0"])  # e.g. trained under an older default
    set_stale_run_aside(run, DEFAULT, epochs=None)
    assert not run.exists()
    (aside,) = tmp_path.iterdir()
    assert aside.name.startswith("run.stale-")
    assert (aside / "predictions_test.jsonl").read_text() == '{"id": "a", "report": "old"}\n'


def test_no_run_yet_is_left_alone(tmp_path):
    set_stale_run_aside(tmp_path / "run", DEFAULT, epochs=None)
    assert list(tmp_path.iterdir()) == []
