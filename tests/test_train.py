"""Training through the real Lightning path, checkpoints, the CLI, configs and the no-label-leak guarantee."""
import json
import types

import numpy as np
import pytest
import torch
from PIL import Image

from cxrgen.checkpoint import FILES, load_checkpoint
from cxrgen.cli import main
from cxrgen.config import Config, apply_overrides, load_config
from cxrgen.data.specs import load_studies
from cxrgen.errors import UserError
from cxrgen.inference import ReportGenerator
from cxrgen.testing import MANIFEST_REPORTS, tiny_training_overrides
from cxrgen.training.module import GeneratorModule
from cxrgen.training.callbacks import MarginEarlyStopping
from cxrgen.data.loader import collate
from cxrgen.training.fit import fit

TEXTS = MANIFEST_REPORTS  # the reports of the `manifest` fixture's studies (conftest.py)
TINY = tiny_training_overrides()


@pytest.fixture(scope="module")
def run(manifest, tmp_path_factory):
    """A 2-epoch run through `cxrgen train` (the real Lightning path, frozen-feature mode)."""
    torch.set_num_threads(1)
    cfg = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    apply_overrides(Config(), TINY).save(cfg)
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", "--config", str(cfg), "--data", f"manifest:{manifest}", "--output", str(out),
                 "--epochs", "2", "--set", "train.lr=3e-3"]) == 0
    return out


@pytest.mark.slow
def test_run_folder_has_checkpoint_logs_and_curve(run):
    assert all((run / "model" / f).is_file() for f in FILES)
    resolved = load_config(run / "config.yaml")
    assert resolved.train.epochs == 2 and resolved.train.lr == 3e-3 and resolved.model.d_model == 32
    assert (run / "loss_curve.png").stat().st_size > 0 and (run / "csv" / "metrics.csv").is_file()
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["epochs_run"] == 2 and summary["best_metric"] == "val/cider"
    meta = json.loads((run / "model" / "meta.json").read_text())
    assert meta["seed"] == 42 and meta["train_studies"] == 10
    # the model card's facts and the OOD check's training statistics (10 training frontals: enough for that view)
    assert meta["data"] == {"layout": "manifest", "phantom": False, "studies": {"train": 10, "val": 3, "test": 3}}
    assert meta["trained_at"] and meta["ood"]["views"]["frontal"]["train_images"] == 10
    assert (run / "model" / "ood.safetensors").is_file()


@pytest.mark.slow
def test_training_statistics_match_a_fresh_calibration(run, manifest, tmp_path):
    """Training takes the OOD statistics from the cached (float16) features; `cxrgen model calibrate`
    runs the encoder again over the images: the thresholds agree."""
    import shutil

    copy = shutil.copytree(run / "model", tmp_path / "model")
    assert main(["model", "calibrate", "--model", str(copy), "--data", f"manifest:{manifest}"]) == 0
    trained = json.loads((run / "model" / "meta.json").read_text())["ood"]["views"]["frontal"]["threshold"]
    fresh = json.loads((copy / "meta.json").read_text())["ood"]["views"]["frontal"]["threshold"]
    assert fresh == pytest.approx(trained, rel=1e-2)
    assert not list(run.glob(".model.*"))  # no temporary directories left behind


@pytest.mark.slow
def test_checkpoint_round_trip_and_generate_contract(run, manifest):
    model, tok, cfg, _ = load_checkpoint(run / "model")
    gen = ReportGenerator(model, tok, cfg)
    again = ReportGenerator.from_pretrained(run / "model")
    for a, b in zip(model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)
    frontal = np.asarray(Image.open(manifest.parent / "0_f.png"))
    out = gen.generate(frontal, None)
    assert isinstance(out["report"], str)
    assert len(out["probabilities"]) == 14 and all(0 <= p <= 1 for p in out["probabilities"].values())
    assert out["attention"].shape == (1, 1)  # resnet18 at 32 px: one patch per view
    batch = gen.generate_batch([frontal, frontal], [None, frontal], beam_size=1)
    assert len(batch) == 2 and batch[0]["report"] == gen.generate(frontal, None, beam_size=1)["report"]


@pytest.mark.slow
def test_predictions_ignore_reference_labels(run, manifest):
    """Labels are training targets only: flipping them changes the loss, never the model's outputs."""
    model, tok, cfg, _ = load_checkpoint(run / "model")
    module = GeneratorModule(model, tok, cfg).eval()
    frontal = torch.rand(2, 2, 1, 32, 32).mul(255).byte()
    items = [{"study_id": f"x{i}", "report_ids": torch.tensor(tok.encode(TEXTS[i], 24)),
              "labels": torch.zeros(14), "label_mask": torch.ones(14), "view_mask": torch.tensor([True, True]),
              "image": frontal[i]} for i in range(2)]
    batch = collate(items, tok.pad_id)
    flipped = dict(batch, labels=1 - batch["labels"])
    with torch.no_grad():
        (l1, m1), (l2, m2) = module.model_step(batch), module.model_step(flipped)
        logits1 = model.decode(m1, batch["report_ids"][:, :-1])
        logits2 = model.decode(m2, batch["report_ids"][:, :-1])
    assert torch.equal(m1.cls_logits, m2.cls_logits) and torch.equal(logits1, logits2)
    assert not torch.isclose(l1["cls_loss"], l2["cls_loss"])


@pytest.mark.slow
def test_label_prefix_is_teacher_forced_in_training_only(run):
    """Training feeds the reference present/absent states to the decoder; evaluation feeds the model's own."""
    model, tok, cfg, _ = load_checkpoint(run / "model")
    module = GeneratorModule(model, tok, cfg)
    items = [{"study_id": f"x{i}", "report_ids": torch.tensor(tok.encode(TEXTS[i], 24)), "labels": torch.zeros(14),
              "label_mask": torch.ones(14), "view_mask": torch.tensor([True, False]),
              "image": torch.rand(2, 1, 32, 32).mul(255).byte()} for i in range(2)]
    batch = collate(items, tok.pad_id)
    flipped = dict(batch, labels=1 - batch["labels"])
    torch.manual_seed(0)
    with torch.no_grad():
        module.train()
        prefix = lambda b: module.model_step(b)[1].tokens[:, :14]
        assert not torch.equal(prefix(batch), prefix(flipped))
        module.eval()
        assert torch.equal(prefix(batch), prefix(flipped))


@pytest.mark.slow
def test_thresholds_are_tuned_on_validation_and_decide_the_prefix(run):
    from cxrgen.training.module import tune_thresholds

    probs = torch.tensor([[0.1, 0.3], [0.2, 0.4], [0.8, 0.6], [0.9, 0.7]])
    labels = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    t = tune_thresholds(probs, labels, torch.ones_like(labels), min_positives=2)
    assert 0.2 < t[0] < 0.8 and t[1] == 0.5  # separates the classes; too few positives -> 0.5
    assert tune_thresholds(probs, labels, torch.zeros_like(labels)).tolist() == [0.5, 0.5]  # all uncertain
    rare = torch.zeros(100, 1)
    rare[0] = 1  # one positive with the lowest probability: best F1 would call every study positive
    assert tune_thresholds(torch.linspace(0, 1, 100)[:, None], rare, torch.ones_like(rare)).item() == 0.5
    model, _, _, _ = load_checkpoint(run / "model")
    assert "label_thresholds" in model.state_dict()  # saved with the weights, so inference uses the tuned ones
    logits = torch.zeros(1, 14)
    model.label_thresholds.fill_(0.4)
    assert model.predicted_states(logits).sum() == 14
    model.label_thresholds.fill_(0.6)
    assert model.predicted_states(logits).sum() == 0


@pytest.mark.slow
def test_generate_cli_single_image_and_split(run, manifest, tmp_path, capsys):
    assert main(["generate", "--model", str(run / "model"), "--image", str(manifest.parent / "1_f.png"),
                 "--lateral", str(manifest.parent / "1_l.png"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"report", "probabilities", "calls", "sides", "extras", "unstated", "uncalled", "ood", "disclaimer"}  # attention with --attention
    assert [v["view"] for v in out["ood"]] == ["frontal", "lateral"]  # no lateral statistics (6 training laterals)
    assert out["ood"][1] == {"view": "lateral", "score": None, "threshold": None, "flag": False}
    assert set(out["calls"]) <= set(out["probabilities"])
    preds = tmp_path / "preds.jsonl"
    assert main(["generate", "--model", str(run / "model"), "--data", f"manifest:{manifest}", "--split", "test",
                 "--output", str(preds), "--beam", "2", "--length-penalty", "2.0"]) == 0
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["s13", "s14", "s15"] and all(set(r) == {"id", "report", "calls", "sides", "extras", "ood"} for r in rows)


@pytest.mark.slow
def test_cli_user_errors_exit_2(run, manifest, tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path / "nope"), "--image", "x.png"]) == 2
    assert main(["generate", "--model", str(run / "model"), "--image", str(tmp_path / "missing.png")]) == 2
    assert main(["train", "--data", f"manifest:{manifest}", "--output", str(tmp_path / "r"),
                 "--set", "model.nonsense=1"]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "model.nonsense" in err and "Traceback" not in err


@pytest.mark.slow
def test_finetune_mode_two_steps(manifest, tmp_path):
    torch.set_num_threads(1)
    cfg = load_config(None, TINY + ["train.mode=finetune", "train.epochs=1", "train.select_metric=loss"])
    result = fit(cfg, load_studies(f"manifest:{manifest}"), tmp_path / "ft", limit_train_batches=2)
    assert result.best_metric == "val/ce_loss" and result.best_value is not None
    model, *_ = load_checkpoint(result.model_dir)
    assert any(k.startswith("encoder.") for k in model.state_dict())


@pytest.mark.slow
def test_init_from_starts_at_the_checkpoint_weights_and_vocabulary(run, manifest, tmp_path, capsys):
    """`train.init_from` (SCST after CE): the new run's first step starts from the old model, with
    its tokenizer even when this run's settings would build another; a different model is refused."""
    from cxrgen.training.fit import build_datamodule

    torch.set_num_threads(1)
    old_model, old_tok, old_cfg, _ = load_checkpoint(run / "model")
    studies = load_studies(f"manifest:{manifest}")
    cfg = load_config(None, TINY + ["train.min_token_freq=6", f"train.init_from={run / 'model'}"])
    _, tok, model, _ = build_datamodule(cfg, studies, tmp_path / "cache")
    assert tok.pieces == old_tok.pieces and model.training
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), old_model.state_dict().values()))
    fresh = build_datamodule(load_config(None, TINY + ["train.min_token_freq=6"]), studies, tmp_path / "cache")[1]
    assert len(fresh) != len(old_tok)  # so the vocabulary above really came from the checkpoint

    cfg = load_config(None, TINY + ["model.d_model=64", f"train.init_from={run / 'model'}"])
    with pytest.raises(UserError, match="different model config"):
        build_datamodule(cfg, studies, tmp_path / "cache")

def test_config_overrides_and_errors(tmp_path):
    cfg = load_config(None, ["model.d_model=64", "train.lr=1e-3", "decode.beam_size=5", "model.encoder_weights=/w.pth"])
    assert (cfg.model.d_model, cfg.train.lr, cfg.decode.beam_size, cfg.model.encoder_weights) == (64, 1e-3, 5, "/w.pth")
    path = tmp_path / "c.yaml"
    cfg.save(path)
    assert load_config(path) == cfg
    for bad, msg in (("model.d_model=big", "expects int"), ("train.nope=1", "unknown config field"),
                     ("d_model=3", "section.field=value"), ("model.label_prefix=3", "true or false")):
        with pytest.raises(UserError, match=msg):
            apply_overrides(Config(), [bad])
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_margin_early_stopping_rule():
    stop = MarginEarlyStopping("val/ce_loss", margin=0.05)
    trainer = types.SimpleNamespace(callback_metrics={}, sanity_checking=False, should_stop=False)
    for value, expect in ((2.0, False), (1.0, False), (1.04, False), (1.06, True)):
        trainer.callback_metrics["val/ce_loss"] = torch.tensor(value)
        stop.on_validation_end(trainer, None)
        assert trainer.should_stop is expect


def test_length_buckets_keep_every_study_and_cut_padding():
    from cxrgen.data.loader import LengthBucketSampler

    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 100, size=1003).tolist()
    sampler = LengthBucketSampler(lengths, batch_size=32, seed=1, window=8)
    orders = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        orders.append(list(sampler))
    assert all(sorted(o) == list(range(1003)) for o in orders) and orders[0] != orders[1]
    sampler.set_epoch(0)
    assert list(sampler) == orders[0]  # deterministic per epoch: a resumed run sees the same batches
    padded = lambda order: sum(max(lengths[i] for i in order[k:k + 32]) * len(order[k:k + 32])
                               for k in range(0, len(order), 32))
    assert padded(orders[0]) < 0.75 * padded(rng.permutation(1003).tolist())


def test_sampler_weights_oversample_at_the_same_epoch_length():
    from cxrgen.data.loader import LengthBucketSampler

    lengths = [20] * 900 + [60] * 100  # the last 100 studies stand for the abnormal ones
    weights = [1.0] * 900 + [3.0] * 100
    order = list(LengthBucketSampler(lengths, batch_size=16, seed=0, weights=weights))
    assert len(order) == 1000
    share = sum(i >= 900 for i in order) / len(order)
    assert 0.20 < share < 0.30  # 300 / 1200 expected, against 0.10 unweighted
