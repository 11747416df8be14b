"""`cxrgen clip train|eval|probe|retrieve` on a tiny R2Gen-layout set, plus retrieval known answers."""
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cxrgen.cli import main
from cxrgen.config import load_config
from cxrgen.evaluate.truth import stated
from cxrgen.retrieval import recall_at_k
from cxrgen.testing import tiny_config, tiny_overrides

REPORTS = [
    "The lungs are clear. No pleural effusion.",
    "Cardiomegaly. Small left pleural effusion.",
    "Right upper lobe opacity. Heart size is normal.",
    "No pneumothorax. The heart is enlarged.",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """8 train + 4 test studies; images are noise with a per-report brightness so the pairing is learnable."""
    root = tmp_path_factory.mktemp("r2gen")
    rng = np.random.default_rng(0)
    ann = {"train": [], "val": [], "test": []}
    for i in range(12):
        split = "train" if i < 8 else "test"
        sid = f"CXR{i}"
        (root / "images" / sid).mkdir(parents=True)
        for v in range(2):
            img = (rng.random((48, 48)) * 60 + 40 * (i % 4)).astype(np.uint8)
            Image.fromarray(img).save(root / "images" / sid / f"{v}.png")
        ann[split].append({"id": sid, "report": REPORTS[i % 4], "image_path": [f"{sid}/0.png", f"{sid}/1.png"],
                           "split": split})
    (root / "annotation.json").write_text(json.dumps(ann))
    cfg = root / "clip.yaml"
    cfg.write_text("model: {image_encoder: resnet18, image_size: 32, image_hidden: 16}\ntrain: {batch_size: 4}\n")
    return root, cfg


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    root, cfg = dataset
    out = tmp_path_factory.mktemp("runs") / "clip"
    torch.set_num_threads(2)
    assert main(["clip", "train", "--data", f"r2gen:{root}", "--output", str(out), "--config", str(cfg),
                 "--epochs", "1"]) == 0
    return out


@pytest.mark.slow
def test_train_writes_checkpoint_and_metrics(trained):
    assert (trained / "model.safetensors").is_file() and (trained / "config.json").is_file()
    m = json.loads((trained / "metrics.json").read_text())
    assert len(m["history"]) == 1 and np.isfinite(m["history"][0]["loss"])
    for key in ("i2t_R@1", "t2i_R@10", "template_cos", "report_cos", "image_prefers_true"):
        assert key in m["test_after"]
    assert m["test_after"]["t2i_R@10"] == 1.0  # only 4 test studies


@pytest.mark.slow
def test_retrieve_writes_eval_jsonl(trained, dataset, tmp_path):
    root, _ = dataset
    out = tmp_path / "preds.jsonl"
    assert main(["clip", "retrieve", "--clip", str(trained), "--data", f"r2gen:{root}", "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["CXR8", "CXR9", "CXR10", "CXR11"]
    assert all(r["report"] in REPORTS for r in rows)
    assert main(["clip", "retrieve", "--clip", str(trained), "--data", f"r2gen:{root}", "--output", str(out),
                 "--k", "2"]) == 0
    sentences = {s for r in REPORTS for s in r.split(". ")}
    for row in map(json.loads, out.read_text().splitlines()):
        parts = row["report"].replace(". ", ".|").split("|")
        assert len(parts) == 2 and all(p.rstrip(".") in {s.rstrip(".") for s in sentences} for p in parts)


@pytest.mark.slow
def test_eval_and_probe_print_metrics(trained, dataset, capsys):
    root, _ = dataset
    assert main(["clip", "eval", "--clip", str(trained), "--data", f"r2gen:{root}", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 4
    assert main(["clip", "probe", "--clip", str(trained), "--json"]) == 0
    assert 0 < json.loads(capsys.readouterr().out)["template_cos"] < 1


def test_user_errors_exit_2(tmp_path, capsys):
    assert main(["clip", "train", "--data", f"r2gen:{tmp_path / 'nope'}", "--output", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epocs: 3}\n")
    assert main(["clip", "train", "--data", f"r2gen:{tmp_path}", "--output", str(tmp_path / "o"),
                 "--config", str(bad)]) == 2
    assert "epocs" in capsys.readouterr().err


def test_recall_at_k_known_answers():
    e = torch.eye(5)
    assert recall_at_k(e, e)["i2t_R@1"] == 1.0
    shifted = e.roll(1, dims=0)  # every text matches the next image
    r = recall_at_k(e, shifted, ks=(1, 5))
    assert r["i2t_R@1"] == 0.0 and r["t2i_R@1"] == 0.0 and r["i2t_R@5"] == 1.0


@pytest.mark.slow
def test_train_config_loss_section_adds_directional_and_scst(trained, dataset, tmp_path, capsys):
    """`loss:` in a training config switches the CLIP losses on from the CLI; they are logged per step."""
    root, _ = dataset
    tiny = tiny_overrides(train={"batch_size": 4, "min_token_freq": 1, "val_decode_limit": 4}, decode={"max_len": 24},
                          loss={"clip": trained, "directional_weight": 0.5, "scst_weight": 0.5, "scst_max_len": 12})
    out = tmp_path / "gen"
    args = ["train", "--data", f"r2gen:{root}", "--output", str(out), "--epochs", "1"]
    assert main(args + [a for t in tiny for a in ("--set", t)]) == 0
    header = (out / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "train/directional_loss_epoch" in header and "train/scst_loss_epoch" in header
    capsys.readouterr()
    bare = [t for t in tiny if not t.startswith("loss.clip")]
    assert main(args[:4] + [str(tmp_path / "gen2"), "--epochs", "1"] + [a for t in bare for a in ("--set", t)]) == 2
    assert "loss.clip" in capsys.readouterr().err


@pytest.mark.slow
def test_experiment_runs_every_condition_from_a_base_config(trained, dataset, tmp_path, capsys):
    """`cxrgen experiment`: generator = a config file plus inline changes; CE, CE + L_dir and retrieval
    over one seed give a summary row each, and a second call reuses the finished runs. Read as a
    phantom set (truth.json beside the test images), the summary also holds omission and hallucination."""
    root, _ = dataset
    ann = json.loads((root / "annotation.json").read_text())
    for study in ann["test"]:  # the truth says each test image shows what its report states
        drawn = [{"kind": kind, "laterality": min(sides, default=None)} for kind, sides in stated(study["report"]).items()]
        (root / "images" / study["id"] / "truth.json").write_text(json.dumps({"id": study["id"], "findings": drawn}))
    base = tmp_path / "tiny.yaml"
    base.write_text(yaml.safe_dump(tiny_config(train={"epochs": 3, "batch_size": 4, "min_token_freq": 1,
                                                      "val_decode_limit": 4},
                                               decode={"beam_size": 1, "max_len": 24}), sort_keys=False))
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"data: phantom:{root}\noutput: {tmp_path / 'out'}\nseeds: [0]\nbootstrap: 20\nclip: {{dir: {trained}}}\n"
                   f"generator: {{config: {base}, train: {{epochs: 1}}}}\n"
                   "conditions:\n  ce: {}\n  ce+dir0.5: {loss: {directional_weight: 0.5}}\n"
                   "  ce+scst: {init: ce, train: {lr: 1.0e-4}, loss: {scst_weight: 1.0, scst_max_len: 12}}\n"
                   "  retrieval: {retrieval: {k: 1}}\n")
    assert main(["experiment", str(exp)]) == 0
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert all(f"| {name} |" in summary for name in ("ce", "ce+dir0.5", "ce+scst", "retrieval"))
    assert "| CE-macro-F1 | omission | hallucination | words | distinct reports | train CPU s/run |" in summary
    per_run = json.loads((tmp_path / "out" / "eval_per_run" / "metrics.json").read_text())
    assert set(per_run) == {"ce@s0", "ce+dir0.5@s0", "ce+scst@s0", "retrieval@s0"}
    assert all(0 <= m["omission"]["value"] <= 1 and 0 <= m["hallucination"]["value"] <= 1 for m in per_run.values())
    ce = per_run["ce@s0"]  # the summary's cells are these runs' rates
    assert f"| {ce['CE-macro-F1']['value']:.3f} +- 0.000 | {ce['omission']['value']:.3f} +- 0.000 | " \
           f"{ce['hallucination']['value']:.3f} +- 0.000 |" in summary
    run = tmp_path / "out" / "runs" / "ce+dir0.5-s0"
    assert "train/directional_loss_epoch" in (run / "csv" / "metrics.csv").read_text().splitlines()[0]
    saved = (run / "config.yaml").read_text()
    assert "d_model: 32" in saved and "epochs: 1" in saved  # the base file, then the inline change
    assert "directional_weight: 0.5" in saved  # and the condition's own section
    assert len((run / "predictions.jsonl").read_text().splitlines()) == 4  # the 4 test studies
    scst = load_config(tmp_path / "out" / "runs" / "ce+scst-s0" / "config.yaml").train  # SCST fine-tunes CE
    assert (scst.init_from, scst.lr, scst.epochs) == (str(tmp_path / "out" / "runs" / "ce-s0" / "model"), 1e-4, 1)
    before = (run / "predictions.jsonl").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["experiment", str(exp)]) == 0  # finished runs are reused, not retrained
    assert (run / "predictions.jsonl").stat().st_mtime_ns == before


def test_experiment_refuses_a_condition_field_outside_its_section(dataset, tmp_path, capsys):
    root, _ = dataset
    for condition, message in (("{directional_weight: 0.5}", "`directional_weight: 0.5` is not a config section"),
                               ("{loss: {directional_wieght: 0.5}}", "unknown config field loss.directional_wieght")):
        exp = tmp_path / "exp.yaml"
        exp.write_text(f"data: r2gen:{root}\noutput: {tmp_path / 'out'}\nconditions:\n  ce: {{}}\n  bad: {condition}\n")
        assert main(["experiment", str(exp)]) == 2
        err = capsys.readouterr().err
        assert "condition bad:" in err and message in err
        assert not (tmp_path / "out" / "runs").exists()  # refused before any training


def test_experiment_subset_cuts_only_the_splits_it_names():
    from types import SimpleNamespace

    from cxrgen.training.experiment import _subset

    studies = [SimpleNamespace(id=i, split=sp) for i, sp in enumerate(["train"] * 3 + ["test"] * 3 + ["val"] * 2)]
    assert [s.id for s in _subset(studies, {"test": 1})] == [0, 1, 2, 3, 6, 7]
    assert [s.id for s in _subset(studies, {"train": 2, "val": 0})] == [0, 1, 3, 4, 5]
    assert _subset(studies, None) == studies
