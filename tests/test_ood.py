"""The OOD check: statistics fitted per view, stored in the checkpoint, a verdict on every prediction."""
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from cxrgen.checkpoint import model_card, read_meta
from cxrgen.inference import ReportGenerator
from cxrgen.ood import FILE, OODStats
from cxrgen.testing import make_calibrated_checkpoint, make_tiny_checkpoint, ramp_pairs, run_cli


def _gaussian(n, dim=8, shift=0.0, seed=0):
    x = np.random.default_rng(seed).normal(shift, 1.0, (n, 2, dim)).astype(np.float32)
    return x, np.ones((n, 2), bool)


def test_scores_flag_shifted_features_and_about_one_percent_of_in_distribution():
    stats = OODStats.fit(*_gaussian(2000), *_gaussian(500, seed=1))
    x, m = _gaussian(2000, seed=2)
    flags = [v["flag"] for row in stats.verdicts(torch.from_numpy(x), torch.from_numpy(m)) for v in row]
    assert 0.0 < np.mean(flags) < 0.03  # the validation 99th percentile: ~1% of new in-distribution views
    far, m = _gaussian(50, shift=3.0, seed=3)
    assert all(v["flag"] for row in stats.verdicts(torch.from_numpy(far), torch.from_numpy(m)) for v in row)


def test_one_verdict_per_view_given_and_none_for_a_view_without_statistics():
    x, m = _gaussian(100)
    m[:, 1] = False  # no laterals in training: no lateral statistics
    stats = OODStats.fit(x, m, *_gaussian(20, seed=1))
    assert set(stats.views) == {"frontal"}
    rows = stats.verdicts(torch.from_numpy(x[:2]), torch.tensor([[True, False], [True, True]]))
    assert [v["view"] for v in rows[0]] == ["frontal"]
    assert rows[1][1] == {"view": "lateral", "score": None, "threshold": None, "flag": False}


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A tiny checkpoint with statistics from smooth ramp images (frontal) and their transposes (lateral)."""
    return make_calibrated_checkpoint(tmp_path_factory.mktemp("ood") / "model")


def test_stats_survive_the_checkpoint_and_reach_every_prediction(calibrated, tiny_model):
    assert (calibrated / FILE).is_file()
    assert read_meta(calibrated)["ood"]["quantile"] == 0.99
    gen = ReportGenerator.from_pretrained(calibrated)
    front, lat = next(ramp_pairs(1, 6))  # a new ramp: scores ~23 (frontal) and ~22 (lateral), thresholds ~28 and ~26
    out = gen.generate(front, lat)
    assert [v["view"] for v in out["ood"]] == ["frontal", "lateral"] and not any(v["flag"] for v in out["ood"])
    noise = np.random.default_rng(0).integers(0, 256, (128, 128), np.uint8)
    assert [v["flag"] for v in gen.generate(noise)["ood"]] == [True]
    # a frontal in the lateral slot is scored against the lateral statistics
    assert [v["flag"] for v in gen.generate(front, front)["ood"]] == [False, True]
    # a checkpoint without statistics still loads; no verdict
    assert ReportGenerator.from_pretrained(tiny_model).generate(front)["ood"] is None


def test_corrupt_statistics_are_one_line(calibrated, tmp_path):
    import shutil

    broken = shutil.copytree(calibrated, tmp_path / "model")
    (broken / FILE).write_bytes(b"not safetensors")
    Image.fromarray(next(ramp_pairs(1, 6))[0]).save(tmp_path / "ok.png")
    code, out, err = run_cli(["generate", "--model", str(broken), "--image", str(tmp_path / "ok.png")])
    assert code == 2 and f"{broken / FILE} is corrupt" in err and "model calibrate" in err and "Traceback" not in err


def test_generate_cli_prints_the_verdict_and_refuses_on_request(calibrated, tiny_model, tmp_path):
    front, _ = next(ramp_pairs(1, 6))
    Image.fromarray(front).save(tmp_path / "ok.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128), np.uint8)).save(tmp_path / "noise.png")
    code, out, _ = run_cli(["generate", "--model", str(calibrated), "--image", str(tmp_path / "ok.png"), "--json"])
    assert code == 0 and json.loads(out)["ood"][0]["flag"] is False
    code, out, _ = run_cli(["generate", "--model", str(calibrated), "--image", str(tmp_path / "noise.png")])
    assert code == 0 and out.startswith("WARNING: This image is unlike the images this model was trained on")
    code, out, err = run_cli(["generate", "--model", str(calibrated), "--image", str(tmp_path / "noise.png"),
                              "--refuse-ood"])
    assert code == 2 and not out and "no draft written" in err and err.count("\n") == 1
    code, out, _ = run_cli(["generate", "--model", str(tiny_model), "--image", str(tmp_path / "ok.png")])
    assert code == 0 and "no training-set statistics" in out


def test_calibrate_command_and_card(manifest, tmp_path):
    d = make_tiny_checkpoint(tmp_path / "model")
    assert model_card(read_meta(d))["ood_check"] is None
    code, out, err = run_cli(["model", "calibrate", "--model", str(d), "--data", f"manifest:{manifest}",
                              "--quantile", "0.9"])
    assert code == 0, err
    assert "frontal: threshold" in out and "lateral" not in out  # 7 training laterals: too few
    assert not (d / "bank.json").exists()  # the two-report vocabulary spells none of the manifest's reports: no bank, no failure
    code, out, _ = run_cli(["model", "card", "--model", str(d)])
    card = json.loads(out)
    assert code == 0 and card["ood_check"]["quantile"] == 0.9 and set(card["ood_check"]["thresholds"]) == {"frontal"}
    assert card["data"] == {"layout": None, "phantom": None, "studies": {"train": None, "val": None, "test": None}}
    code, _, err = run_cli(["model", "calibrate", "--model", str(d), "--data", f"manifest:{manifest}",
                            "--quantile", "1.5"])
    assert code == 2 and "between 0 and 1" in err


@pytest.fixture(scope="module")
def mixed(manifest, tmp_path_factory):
    """The tiny manifest (whose images `calibrated` flags) with ramps, which it does not flag, for s0-s2."""
    import shutil

    root = shutil.copytree(manifest.parent, tmp_path_factory.mktemp("mixed") / "data")
    for i, (front, lat) in enumerate(ramp_pairs(3, 6)):
        Image.fromarray(front).save(root / f"{i}_f.png")
        Image.fromarray(lat).save(root / f"{i}_l.png")
    return root / manifest.name


def test_split_output_carries_the_verdict_and_counts_flags(calibrated, mixed, tmp_path):
    out_path = tmp_path / "p.jsonl"
    code, out, _ = run_cli(["generate", "--model", str(calibrated), "--data", f"manifest:{mixed}",
                            "--split", "train", "--output", str(out_path)])
    rows = [json.loads(line) for line in out_path.read_text().splitlines()]
    n_flagged = sum(any(v["flag"] for v in r["ood"]) for r in rows)
    assert code == 0 and len(rows) == 10 and f"{n_flagged} of 10 studies flagged" in out
    assert 0 < n_flagged < 10  # the ramps are not flagged, the others are


@pytest.mark.slow  # the METEOR JVM
def test_refused_studies_are_rows_that_eval_counts_and_scores_as_empty(calibrated, mixed, tmp_path, monkeypatch):
    from cxrgen import inference

    decoded = []  # studies that reached the decoder
    decode = inference.generate
    monkeypatch.setattr(inference, "generate", lambda dec, memory, *a, **k: decoded.append(len(memory.tokens))
                        or decode(dec, memory, *a, **k))
    out_path = tmp_path / "preds.jsonl"
    code, out, _ = run_cli(["generate", "--model", str(calibrated), "--data", f"manifest:{mixed}",
                            "--split", "train", "--output", str(out_path), "--refuse-ood"])
    rows = [json.loads(line) for line in out_path.read_text().splitlines()]
    refused = [r for r in rows if "refused" in r]
    assert code == 0 and len(rows) == 10 and 0 < len(refused) < 10 and '"refused": "ood"' in out
    assert all(r["refused"] == "ood" and r["report"] == "" and any(v["flag"] for v in r["ood"]) for r in refused)
    assert all(r["report"] and not any(v["flag"] for v in r["ood"]) for r in rows if "refused" not in r)
    assert sum(decoded) == 10 - len(refused)  # a refused study is never decoded
    code, out, err = run_cli(["eval", "--predictions", str(out_path), "--dataset", f"manifest:{mixed}",
                              "--split", "train", "--output", str(tmp_path / "eval"), "--bootstrap", "10"])
    assert code == 0, err
    assert f"No draft (refused), scored as an empty report: preds {len(refused)} of 10 studies." in out
    samples = (tmp_path / "eval" / "per_sample.csv").read_text()
    assert samples.count("\n") == 11  # every study scored, the refused ones too


def test_the_server_refuses_a_flagged_image_without_decoding_it(calibrated, monkeypatch):
    from fastapi.testclient import TestClient

    from cxrgen import inference
    from cxrgen.serve.app import create_app
    from cxrgen.testing import png

    decoded = []
    decode = inference.generate
    monkeypatch.setattr(inference, "generate", lambda *a, **k: decoded.append(1) or decode(*a, **k))
    front, _ = next(ramp_pairs(1, 6))
    ramp = io.BytesIO()
    Image.fromarray(front).save(ramp, format="PNG")
    with TestClient(create_app(ReportGenerator.from_pretrained(calibrated), refuse_ood=True)) as c:
        r = c.post("/v1/reports", files={"frontal": ("f.png", png(width=128, height=128, noise=True))})
        assert r.status_code == 422 and "unlike the images this model was trained on" in r.json()["detail"]
        assert not decoded
        r = c.post("/v1/reports", files={"frontal": ("f.png", ramp.getvalue())})
        assert r.status_code == 200 and r.json()["report"] is not None and decoded == [1]


def test_record_metrics_puts_the_eval_result_in_the_card(tmp_path):
    d = make_tiny_checkpoint(tmp_path / "model")
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"preds": {"BLEU-4": {"value": 0.123456, "ci_low": 0.1, "ci_high": 0.2}},
                                   "best-constant": {"BLEU-4": {"value": 0.05}}}))
    code, _, err = run_cli(["model", "record-metrics", "--model", str(d), "--metrics", str(metrics), "--system", "x"])
    assert code == 2 and "has no system 'x' (it has: preds, best-constant)" in err
    assert run_cli(["model", "record-metrics", "--model", str(d), "--metrics", str(metrics), "--system", "preds"])[0] == 0
    assert model_card(read_meta(d))["test_metrics"] == {"split": "test", "BLEU-4": 0.1235}
    ReportGenerator.from_pretrained(d)  # the folder still loads
