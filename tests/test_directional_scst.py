"""SCST with a CLIP reward: sampling is differentiable, the reward ranks texts, the hook trains the decoder."""
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from cxrgen.config import ModelConfig
from cxrgen.data.tokenizer import ReportTokenizer
from cxrgen.models.generator import ReportModel
from cxrgen.training.hooks import Reward, RewardWeights, SCSTHook
from cxrgen.evaluate.clinical import sample_f1
from cxrgen.decoding import sample
from cxrgen.testing import tiny_model

REPORTS = ["No pleural effusion.", "Small left pleural effusion.", "Cardiomegaly.", "The lungs are clear."]


class BagOfWordsClip:
    """A tiny, exact ClipModel: texts embed as normalised word counts (enough to rank strings)."""

    image_size = 32

    def __init__(self, vocab: list[str]):
        self.vocab = {w: i for i, w in enumerate(vocab)}

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), len(self.vocab))
        for i, t in enumerate(texts):
            for w in t.lower().replace(".", " ").split():
                if w in self.vocab:
                    out[i, self.vocab[w]] += 1
        return F.normalize(out + 1e-6, dim=-1)


def _setup():
    torch.manual_seed(0)
    tok = ReportTokenizer.build(REPORTS)
    cfg = ModelConfig(**tiny_model(max_len=16, dropout=0.0))  # image_size unused: the batch holds features
    model = ReportModel(cfg, len(tok))
    ids, mask = tok.batch_encode(REPORTS, 16)
    batch = {"study_id": [f"s{i}" for i in range(4)], "report_ids": ids, "report_mask": mask,
             "features": torch.randn(4, 2, 4, model.encoder.out_dim), "view_mask": torch.ones(4, 2, dtype=torch.bool)}
    return tok, model, batch


def test_sampled_log_probs_are_differentiable():
    tok, model, batch = _setup()
    memory = model.memory_from_features(batch["features"], batch["view_mask"])
    ids, logp = sample(model.decoder, memory, tok.bos_id, tok.eos_id, max_len=12)
    assert ids.shape[0] == 4 and ids.shape[1] <= 11 and (logp < 0).all()
    logp.sum().backward()
    assert model.decoder.head.weight.grad.abs().sum() > 0


def test_reward_prefers_the_matching_report():
    vocab = sorted({w for r in REPORTS for w in r.lower().replace(".", " ").split()})
    clip = BagOfWordsClip(vocab)
    reward = Reward(clip, RewardWeights(clip=1.0, cider=0.0, ce_f1=0.0))
    img = torch.zeros(2, len(vocab))
    refs = ["Small left pleural effusion.", "Cardiomegaly."]
    good = reward(refs, refs, img)
    bad = reward(refs[::-1], refs, img)
    assert torch.allclose(good, torch.ones(2), atol=1e-4) and (bad < good - 0.5).all()
    assert sample_f1(["Cardiomegaly.", "Pneumothorax."], ["Cardiomegaly.", "Cardiomegaly."]).tolist() == [1.0, 0.0]


def test_scst_hook_gives_decoder_gradients():
    tok, model, batch = _setup()
    vocab = sorted({w for r in REPORTS for w in r.lower().replace(".", " ").split()})
    clip = BagOfWordsClip(vocab)
    img = {s: torch.zeros(len(vocab)) for s in batch["study_id"]}
    hook = SCSTHook(Reward(clip, RewardWeights(clip=1.0, ce_f1=0.5)), weight=1.0, image_emb=img, max_len=12)
    out = hook(SimpleNamespace(model=model, tokenizer=tok), batch, logits=None)
    assert set(out) == {"scst_loss", "scst_reward"} and torch.isfinite(out["scst_loss"])
    out["scst_loss"].backward()
    grads = [p.grad for p in model.decoder.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    assert model.training, "the hook must restore train mode after its greedy baseline"


def test_scst_with_a_cider_reward_needs_no_clip():
    import pytest

    from cxrgen.config import LossConfig
    from cxrgen.errors import UserError
    from cxrgen.training.hooks import hooks_from_config

    tok, model, batch = _setup()
    (hook,) = hooks_from_config(LossConfig(scst_weight=1.0, reward_clip=0.0, reward_cider=1.0), studies=[])
    assert hook.reward.clip is None and hook.image_emb == {}
    out = hook(SimpleNamespace(model=model, tokenizer=tok), batch, logits=None)
    out["scst_loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoder.parameters())
    with pytest.raises(UserError, match="loss.clip"):  # the CLIP reward still asks for a CLIP
        hooks_from_config(LossConfig(scst_weight=1.0, reward_clip=1.0), studies=[])
