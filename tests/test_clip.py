"""CXR-CLIP: loss known answers, hard negatives, checkpoint round trips, external checkpoint formats."""
import argparse
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cxrgen.errors import UserError
from cxrgen.losses import clip_loss
from cxrgen.data.reports import flip_sides, hard_negative, negate_sentence
from cxrgen.models.clip import ClipConfig, CXRClip, HFClipWrapper, OpenClipWrapper, load_clip

IMAGES = [np.random.default_rng(i).integers(0, 255, (40, 48), dtype=np.uint8) for i in range(3)]


def test_clip_loss_known_answers():
    e = F.normalize(torch.eye(4, 8), dim=-1)
    perfect = clip_loss(e, e, torch.tensor(100.0))["contrastive_loss"]
    assert perfect < 1e-6
    uniform = clip_loss(e, e, torch.tensor(0.0))["contrastive_loss"]  # scale 0: all logits equal
    assert math.isclose(uniform.item(), math.log(4), rel_tol=1e-5)
    # a hard negative identical to row 0's text makes that row's image->text term a coin flip: log 2 / (2 * B)
    with_neg = clip_loss(e, e, torch.tensor(100.0), negative_text_features=e[:1])["contrastive_loss"]
    assert math.isclose(with_neg.item(), math.log(2) / 8, rel_tol=1e-4)


def test_hard_negatives_flip_meaning_with_few_words():
    assert flip_sides("Small left pleural effusion.") == "Small right pleural effusion."
    assert flip_sides("Heart size is normal.") is None
    assert negate_sentence("No pneumothorax.") == "Pneumothorax."
    assert negate_sentence("There is no pleural effusion.") == "There is pleural effusion."
    assert negate_sentence("The heart is enlarged.") == "The heart is not enlarged."
    assert negate_sentence("Cardiomegaly.") is None
    report = "Heart size is normal. Small left pleural effusion."
    assert hard_negative(report) == "Heart size is normal. Small right pleural effusion."
    rng_outs = {hard_negative(report, random.Random(s)) for s in range(20)}
    assert "Heart size is not normal. Small left pleural effusion." in rng_outs
    assert hard_negative("Cardiomegaly.") is None


@pytest.fixture(scope="module")
def tiny_cxrclip():
    torch.manual_seed(0)
    return CXRClip(ClipConfig(image_encoder="resnet18", image_size=32, image_hidden=16), pretrained=False).eval()


def test_cxrclip_save_load_round_trip(tiny_cxrclip, tmp_path):
    texts = ["No pleural effusion.", "Small left pleural effusion."]
    before_t, before_i = tiny_cxrclip.embed_texts(texts), tiny_cxrclip.encode_images(IMAGES)
    assert before_t.shape == (2, 384) and before_i.shape == (3, 384)
    assert torch.allclose(before_t.norm(dim=-1), torch.ones(2), atol=1e-5)
    loaded = load_clip(tiny_cxrclip.save(tmp_path / "clip"))
    assert isinstance(loaded, CXRClip)
    assert torch.allclose(loaded.embed_texts(texts), before_t, atol=1e-5)
    assert torch.allclose(loaded.encode_images(IMAGES), before_i, atol=1e-5)


def test_untrained_text_space_is_minilm(tiny_cxrclip):
    """Identity-initialised projection: the 'before' negation probe measures MiniLM itself."""
    e = tiny_cxrclip.embed_texts(["There is a pleural effusion.", "There is no pleural effusion."])
    assert 0.5 < float(e[0] @ e[1]) < 0.95  # the negation problem this project has to fix


def test_encode_text_needs_exactly_one_input(tiny_cxrclip):
    with pytest.raises(ValueError, match="exactly one"):
        tiny_cxrclip.encode_text()


def test_open_clip_state_dict_loads(tmp_path):
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    ref = open_clip.CLIP(
        embed_dim=16, quick_gelu=True,
        vision_cfg=CLIPVisionCfg(layers=1, width=64, patch_size=8, image_size=32),
        text_cfg=CLIPTextCfg(context_length=20, vocab_size=49408, width=64, heads=1, layers=1),
    ).eval()
    path = tmp_path / "cxr_repair_like.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, path)
    clip = load_clip(path)
    assert isinstance(clip, OpenClipWrapper) and clip.image_size == 32
    texts = ["no pleural effusion", "cardiomegaly"]
    with torch.no_grad():
        expected = F.normalize(ref.encode_text(open_clip.tokenize(texts, context_length=20)), dim=-1)
    assert torch.allclose(clip.embed_texts(texts), expected, atol=1e-5)
    assert clip.encode_images(IMAGES).shape == (3, 16)


def test_hugging_face_clip_folder_loads(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=37, num_attention_heads=2,
                         num_hidden_layers=1, max_position_embeddings=24),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37,
                           num_attention_heads=2, num_hidden_layers=1),
        projection_dim=16,
    )
    CLIPModel(cfg).save_pretrained(tmp_path / "hf")
    clip = load_clip(tmp_path / "hf")
    assert isinstance(clip, HFClipWrapper)
    t = clip.embed_texts(["no pleural effusion", "cardiomegaly"])
    assert t.shape == (2, 16) and not torch.allclose(t[0], t[1])
    assert clip.encode_images(IMAGES).shape == (3, 16)


def test_bad_checkpoints_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_clip(tmp_path / "missing")
    bad = tmp_path / "bad.pt"
    torch.save({"weight": torch.zeros(2)}, bad)
    with pytest.raises(UserError, match="not an open_clip"):
        load_clip(bad)
    pickled = tmp_path / "with_objects.pt"  # e.g. a training checkpoint that kept its argparse options
    torch.save({"state_dict": {}, "args": argparse.Namespace(lr=1e-4)}, pickled)
    with pytest.raises(UserError, match="Python objects besides tensors"):
        load_clip(pickled)
    (tmp_path / "dir").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        load_clip(tmp_path / "dir")
