"""The data module builds the caches in `prepare_data` (one process per node) and `setup` only opens them."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cxrgen.config import Config
from cxrgen.data.studies import ImageRef, Study
from cxrgen.testing import tiny_config
from cxrgen.training.fit import build_datamodule

TEXTS = ["the heart is normal in size . the lungs are clear .", "small left pleural effusion ."]


def studies(root) -> list[Study]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(6):
        refs = []
        for v, view in enumerate(("PA", "LL")[: 1 + i % 2]):  # every other study has no lateral
            path = root / f"img{i}_{v}.png"
            Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(path)
            refs.append(ImageRef(path, view, f"{i}_{v}"))
        out.append(Study(f"s{i}", "train" if i < 4 else "val", refs, TEXTS[i % 2]))
    (root / "img5_0.png").write_bytes(b"not an image")  # s5's frontal cannot be decoded
    return out


def config(mode: str) -> Config:
    return Config.from_dict(tiny_config(train={"mode": mode, "batch_size": 2, "min_token_freq": 1}))


@pytest.mark.parametrize("mode", ["frozen", "finetune"])
def test_setup_only_opens_what_prepare_data_built(tmp_path, mode):
    torch.set_num_threads(1)
    data = tmp_path / "data"
    data.mkdir()
    meta: dict = {}
    dm, tok, model, splits = build_datamodule(config(mode), studies(data), tmp_path / "cache", meta)
    assert not (tmp_path / "cache").exists(), "building the data module must not touch the caches"
    with pytest.raises(FileNotFoundError):
        dm.setup("fit")  # another rank before prepare_data: it must not start a build of its own
    assert not any(dm.cache_path.glob("shard_*"))
    dm.prepare_data()
    assert (dm.features_path is not None) == (mode == "frozen")
    if dm.features_path is not None:
        feats = np.load(dm.features_path, mmap_mode="r")
        assert feats.shape[:2] == (len(dm.feature_ids), 2) and feats.dtype == np.float16
        assert not feats[dm.feature_ids.index("s0"), 1].any() and feats[dm.feature_ids.index("s1"), 1].any()
    dm.setup("fit")
    assert [len(dm.datasets[k]) for k in ("train", "val")] == [4, 1]  # s5 (undecodable frontal) left out
    assert meta["train_studies"] == 4 and meta["val_studies"] == 1
    batch = next(iter(dm.train_dataloader()))
    key = "features" if mode == "frozen" else "image"
    assert batch[key].dtype == (torch.float16 if mode == "frozen" else torch.uint8)  # converted on the device


def test_the_encoders_top_layers_train_on_features_cached_below_them(tmp_path):
    """`train.encoder_top`: the cache holds the tokens entering Lite0's last two layers; those layers get
    gradients (the rest stays frozen, in eval mode), and the cached path gives the encoder's own tokens."""
    torch.set_num_threads(1)
    data = tmp_path / "data"
    data.mkdir()
    cfg = Config.from_dict(tiny_config(model={"encoder": "efficientnet_lite0", "image_size": 64},
                                       train={"mode": "frozen", "encoder_top": 2, "batch_size": 4, "min_token_freq": 1}))
    dm, _, model, _ = build_datamodule(cfg, studies(data), tmp_path / "cache")
    dm.prepare_data()
    dm.setup("fit")
    feats = np.load(dm.features_path, mmap_mode="r")
    assert feats.shape[2:] == (4, 192)  # a 2x2 grid of the last MBConv block's 192-channel input
    model.train()
    assert not model.encoder.training and model.decoder.training  # BatchNorm keeps its statistics
    batch = next(iter(dm.train_dataloader()))
    from cxrgen.training.module import batch_memory

    batch_memory(model, batch, teacher=True).cls_logits.sum().backward()
    top = {id(p) for m in model.encoder.top_modules(2) for p in m.parameters()}
    grads = {id(p): p.grad is not None for p in model.encoder.parameters()}
    assert all(grads[i] for i in top) and not any(g for i, g in grads.items() if i not in top)
    with torch.no_grad():  # an untrained model's cached path = its encoder on the images
        tokens = torch.cat(list(dm.cached_tokens(model, "train")))
        images = torch.stack([torch.from_numpy(np.stack([f, l if l is not None else np.zeros_like(f)]))
                              for f, l in map(dm.datasets["train"].cache.get, dm.datasets["train"].ids)])
        views = torch.tensor([[True, dm.datasets["train"].cache.get(s)[1] is not None] for s in dm.datasets["train"].ids])
        direct = model.eval().encode_views(images[:, :, None].float() / 255, views)
    torch.testing.assert_close(tokens, direct, atol=2e-2, rtol=2e-2)  # the cache is float16
    assert not tokens[~views].any()  # an absent lateral's tokens are zeros


def test_an_encoder_without_layers_ignores_encoder_top_with_a_warning(tmp_path, caplog):
    """The default config asks for the top two layers; ResNet-18 cannot split, so it is cached whole, frozen."""
    cfg = Config.from_dict(tiny_config(train={"mode": "frozen", "encoder_top": 2, "batch_size": 2, "min_token_freq": 1}))
    data = tmp_path / "data"
    data.mkdir()
    with caplog.at_level("WARNING"):
        dm, _, model, _ = build_datamodule(cfg, studies(data), tmp_path / "cache")
    assert "cannot train only its top layers" in caplog.text
    assert model.cached_below == 0 and not any(p.requires_grad for p in model.encoder.parameters())
    assert "below" not in dm.features_path.name


def test_a_bf16_cache_is_its_own_file_and_reads_the_images_as_float32_does(tmp_path):
    """bf16 training caches its features under bfloat16 autocast, in a file of its own (a float32 run
    must not read them), and they stay within bfloat16's rounding of the float32 encoder's (ImageNet weights:
    a random encoder's tokens are too small to compare)."""
    torch.set_num_threads(1)
    data = tmp_path / "data"
    data.mkdir()
    cfg = Config.from_dict(tiny_config(model={"encoder": "efficientnet_lite0", "image_size": 64, "pretrained": True},
                                       train={"mode": "frozen", "encoder_top": 2, "batch_size": 4, "min_token_freq": 1}))
    caches = {}
    for bf16 in (False, True):
        dm, _, model, _ = build_datamodule(cfg, studies(data), tmp_path / "cache", bf16=bf16)
        dm.prepare_data()
        caches[bf16] = dm.features_path
    assert caches[True] != caches[False] and "-bf16-" in caches[True].name and "bf16" not in caches[False].name
    full, half = (np.load(caches[k]).astype(np.float32).ravel() for k in (False, True))
    assert np.corrcoef(full, half)[0, 1] > 0.99 and not np.array_equal(half, full)
