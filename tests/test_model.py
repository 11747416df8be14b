"""Encoders, decoder (KV cache, soft inputs), two-view generator and the no-label-leak guarantee."""
import numpy as np
import pytest
import torch

from cxrgen.config import ModelConfig
from cxrgen.errors import UserError
from cxrgen.models.decoder import DecoderConfig, TransformerDecoder
from cxrgen.models.encoders import create_encoder, list_encoders
from cxrgen.models.generator import ReportModel, grid_positions
from cxrgen.inference import views_to_tensor
from cxrgen.testing import TINY_MODEL, tiny_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ReportModel(ModelConfig(**TINY_MODEL), vocab_size=40).eval()


@pytest.mark.parametrize("name", list_encoders())
def test_encoder_contract(name):
    enc = create_encoder(name, pretrained=False).eval()
    with torch.no_grad():
        tokens = enc(torch.rand(2, 1, 64, 64))
    assert tokens.dim() == 3 and tokens.shape[0] == 2 and tokens.shape[2] == enc.out_dim
    side = int(tokens.shape[1] ** 0.5)
    assert side * side == tokens.shape[1]  # a square grid the web page can draw attention on


def test_lite0_loads_imagenet_weights_offline():
    random_init = create_encoder("efficientnet_lite0", pretrained=False)
    pretrained = create_encoder("efficientnet_lite0", pretrained=True)
    w0, w1 = random_init.backbone._conv_stem.weight, pretrained.backbone._conv_stem.weight
    assert not torch.allclose(w0, w1)
    assert pretrained.out_dim == 1280


def test_unknown_encoder_and_bad_weights_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown encoder"):
        create_encoder("vgg99")
    bad = tmp_path / "w.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot load resnet18 weights"):
        create_encoder("resnet18", weights_path=str(bad))


def test_timm_local_weight_file_is_loaded(tmp_path):
    src = create_encoder("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(src.backbone.state_dict(), path)
    loaded = create_encoder("resnet18", weights_path=str(path))
    assert torch.equal(loaded.backbone.conv1.weight, src.backbone.conv1.weight)


def test_kv_cache_equals_full_recompute():
    torch.manual_seed(0)
    dec = TransformerDecoder(DecoderConfig(vocab_size=30, d_model=32, n_layer=2, n_head=4, max_len=16, dropout=0.0)).eval()
    memory, mask = torch.randn(3, 5, 32), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 1, 1, 1]]).bool()
    ids = torch.randint(0, 30, (3, 9))
    with torch.no_grad():
        full, _ = dec(dec.embed(ids), memory, mask)
        cache, steps = [], []
        for t in range(ids.shape[1]):
            steps.append(dec(dec.embed(ids[:, t:t + 1]), memory, mask, cache)[0])
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)


def test_soft_token_inputs_match_ids_and_carry_gradient(model):
    ids = torch.randint(0, 40, (2, 6))
    images, vm = torch.rand(2, 2, 1, 32, 32), torch.tensor([[True, True], [True, False]])
    memory = model.encode(images, vm)
    one_hot = torch.nn.functional.one_hot(ids, 40).float().requires_grad_(True)
    soft = model.decode(memory, inputs_embeds=one_hot @ model.decoder.tok_emb.weight)
    torch.testing.assert_close(soft, model.decode(memory, ids))
    soft.sum().backward()
    assert one_hot.grad is not None and one_hot.grad.abs().sum() > 0


def test_forward_shape_and_missing_lateral_is_masked(model):
    images = torch.rand(2, 2, 1, 32, 32)
    ids = torch.randint(0, 40, (2, 7))
    vm = torch.tensor([[True, False], [True, False]])
    logits = model(images, ids, vm)
    assert logits.shape == (2, 7, 40)
    # what sits in an absent lateral slot must not matter
    other = images.clone()
    other[:, 1] = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(model(other, ids, vm), logits)
    memory = model.encode(images, vm)
    assert memory.mask.shape == memory.tokens.shape[:2] and memory.mask[:, memory.prefix + memory.n_patches:].sum() == 0


def test_images_to_tensor_accepts_rgb_and_rejects_bad_shapes():
    grey = np.full((50, 40), 255, np.uint8)
    rgb = np.zeros((30, 30, 3), np.uint8)
    images, vm = views_to_tensor([grey, rgb], [None, grey], 32)
    assert images.shape == (2, 2, 1, 32, 32) and images[0, 0].max() == 1.0
    assert vm.tolist() == [[True, False], [True, True]]
    with pytest.raises(ValueError, match="HxW"):
        views_to_tensor([np.zeros(5, np.uint8)], [None], 32)


def test_grid_positions_distinguish_patches():
    pos = grid_positions(16, 32)
    assert pos.shape == (16, 32)
    assert torch.cdist(pos, pos).add(torch.eye(16) * 10).min() > 0.1
    with pytest.raises(ValueError, match="square"):
        grid_positions(15, 32)


def test_memory_grid_pools_decoder_tokens_but_not_the_classifier():
    from cxrgen.models.generator import pool_grid

    feats = torch.arange(2 * 2 * 16 * 3, dtype=torch.float32).reshape(2, 2, 16, 3)  # 4x4 grids
    pooled = pool_grid(feats, 2)
    assert pooled.shape == (2, 2, 4, 3)
    torch.testing.assert_close(pooled[0, 0, 0], feats[0, 0, [0, 1, 4, 5]].mean(0))  # top-left 2x2 block
    assert pool_grid(feats, None) is feats and pool_grid(feats, 8) is feats
    torch.manual_seed(0)
    full = ReportModel(ModelConfig(**tiny_model(image_size=128)), vocab_size=40).eval()
    small = ReportModel(ModelConfig(**tiny_model(image_size=128, memory_grid=2)), vocab_size=40).eval()
    small.load_state_dict(full.state_dict())
    images, vm = torch.rand(1, 2, 1, 128, 128), torch.tensor([[True, True]])
    a, b = full.encode(images, vm), small.encode(images, vm)
    assert (a.n_patches, b.n_patches) == (16, 4) and b.tokens.shape[1] == b.prefix + 8
    torch.testing.assert_close(a.cls_logits, b.cls_logits)


def test_label_states_condition_every_decoder_position():
    """The present/absent states reach the decoder as memory tokens and as a vector added at every position."""
    torch.manual_seed(0)
    m = ReportModel(ModelConfig(**TINY_MODEL), vocab_size=40).eval()
    feats = torch.randn(2, 2, 1, m.encoder.out_dim)
    vm = torch.ones(2, 2, dtype=torch.bool)
    ids = torch.randint(0, 40, (2, 5))
    on, off = torch.ones(2, 14), torch.zeros(2, 14)
    a = m.memory_from_features(feats, vm, (on, torch.ones(2, 14)))
    b = m.memory_from_features(feats, vm, (off, torch.ones(2, 14)))
    assert a.condition.shape == (2, 32) and not torch.equal(a.condition, b.condition)
    assert not torch.allclose(m.decode(a, ids), m.decode(b, ids))
    a.tokens, a.mask = b.tokens, b.mask  # same memory tokens: the condition alone still changes the logits
    assert not torch.allclose(m.decode(a, ids), m.decode(b, ids))
