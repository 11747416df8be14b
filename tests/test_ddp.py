"""Data-parallel training through Lightning: 2 processes (gloo, CPU) == 1 process at the same global batch.

The 2-process run is launched exactly as users do on a cluster: `torchrun --nproc_per_node 2`
running `cxrgen.training.fit.fit(..., devices=2, strategy="ddp")`; Lightning picks up torchrun's
environment. This file is also the worker script that torchrun starts (see `__main__`).

Why the two runs must agree: each training epoch is exactly one optimizer step over the whole
training set (8 studies; batch 8 in one process, 4 per rank in two), every report has the same
number of tokens (so the mean of the per-rank mean losses is the global mean loss), no label is
uncertain, and dropout is off. DDP averages the ranks' gradients, so the updates are the same
up to float rounding. A run whose ranks did not synchronise would train on half the data each.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrgen.testing import tiny_config

TEXTS = ["the heart is normal in size . the lungs are clear .",
         "the heart is enlarged in size . the lungs are clear ."]
# the tiny model at 64 px with the default encoder (EfficientNet-Lite0, random weights) and no dropout
OVERRIDES = tiny_config(model={"encoder": "efficientnet_lite0", "image_size": 64, "dropout": 0.0},
                        train={"epochs": 3, "lr": 1e-2, "warmup_ratio": 0.0, "select_metric": "loss",
                               "min_token_freq": 1, "num_workers": 0, "early_stop_margin": 100.0,
                               "precision": "32-true"})  # equal to 1e-4 only in float32: bf16 rounds per batch shape


def make_studies(root: Path) -> list:
    from PIL import Image

    from cxrgen.data.studies import ImageRef, Study

    rng = np.random.default_rng(0)
    studies = []
    for i in range(12):
        refs = []
        for v, view in enumerate(("PA", "LL")):
            path = root / f"img{i}_{v}.png"
            if not path.exists():
                Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(path)
            refs.append(ImageRef(path, view, f"{i}_{v}"))
        studies.append(Study(f"s{i:02d}", "train" if i < 8 else "val", refs, TEXTS[i % 2]))
    return studies


def run(root: Path, out: Path, batch_size: int, devices: int) -> None:
    """Train on the synthetic studies under `root` (the worker body, in every rank)."""
    from cxrgen.config import Config
    from cxrgen.training.fit import fit

    cfg = Config.from_dict({**OVERRIDES, "train": {**OVERRIDES["train"], "batch_size": batch_size}})
    torch.set_num_threads(1)
    fit(cfg, make_studies(root), out, cache_dir=root / "cache", accelerator="cpu", devices=devices,
        strategy="ddp" if devices > 1 else "auto", limit_train_batches=None)


def weights_file(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return weights_file(model_dir / "model.safetensors")


def initial_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    """The weights `fit` starts from: same seed, same config, same vocabulary."""
    import lightning as L
    from safetensors.torch import save_model

    from cxrgen.checkpoint import load_checkpoint
    from cxrgen.models.generator import ReportModel

    _, tok, cfg, _ = load_checkpoint(model_dir)
    L.seed_everything(cfg.train.seed)
    save_model(ReportModel(cfg.model, len(tok)), str(model_dir.parent / "init.safetensors"))
    return weights_file(model_dir.parent / "init.safetensors")


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path):
    from cxrgen.data.tokenizer import ReportTokenizer

    lengths = {len(ReportTokenizer.build(TEXTS).encode(t)) for t in TEXTS}
    assert len(lengths) == 1, "the equivalence argument needs reports of equal token length"
    (tmp_path / "data").mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    # 2 processes first, on a cold cache: rank 0 builds the image and feature caches in the data module's
    # prepare_data while rank 1 waits at Lightning's barrier, then both only open them
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           __file__, str(tmp_path / "data"), str(tmp_path / "two")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((tmp_path / "data" / "cache").glob("features-*.npy"))) == 1
    assert not list((tmp_path / "data" / "cache").rglob("*.tmp"))
    run(tmp_path / "data", tmp_path / "one", batch_size=8, devices=1)  # 1 process, batch 8, reusing the caches

    one, two = weights(tmp_path / "one" / "model"), weights(tmp_path / "two" / "model")
    meta = [json.loads((tmp_path / d / "model" / "meta.json").read_text()) for d in ("one", "two")]
    assert meta[0]["epoch"] == meta[1]["epoch"] and meta[0]["step"] == meta[1]["step"] > 0
    assert one.keys() == two.keys()
    init = initial_weights(tmp_path / "one" / "model")
    moved = max((one[k].float() - init[k].float()).abs().max().item() for k in one)
    worst = max((one[k].float() - two[k].float()).abs().max().item() for k in one)
    assert moved > 1e-3, "training did not change the weights: the comparison would prove nothing"
    assert worst < 1e-4, f"DDP weights differ from the 1-process run by up to {worst:.2e}"

if __name__ == "__main__":  # a torchrun rank
    run(Path(sys.argv[1]), Path(sys.argv[2]), batch_size=4, devices=int(os.environ.get("WORLD_SIZE", "1")))
