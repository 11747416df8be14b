"""The directional loss must be a differentiable function of the decoder (the seed's was a constant)."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cxrgen.data.tokenizer import ReportTokenizer
from cxrgen.training.hooks import DirectionalHook
from cxrgen.losses import DirectionalLoss
from cxrgen.models.clip import ClipConfig, CXRClip

REPORTS = [  # short on purpose: every step runs MiniLM forward and backward on a shared 2-core CPU
    "The lungs are clear. No pleural effusion.",
    "Cardiomegaly. Small left pleural effusion.",
    "Right upper lobe opacity. Heart size is normal.",
]


class TinyDecoder(nn.Module):
    """Teacher-forced GRU language model conditioned on an image vector: stands in for the generator."""

    def __init__(self, vocab: int, dim: int = 32):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.image = nn.Linear(8, dim)
        self.rnn = nn.GRU(dim, dim, batch_first=True)
        self.head = nn.Linear(dim, vocab)

    def forward(self, image: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.embed(ids), self.image(image).unsqueeze(0).contiguous())
        return self.head(h)  # (B, T, V)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    clip = CXRClip(ClipConfig(image_encoder="resnet18"), pretrained=False)
    tok = ReportTokenizer.build(REPORTS)
    ids, mask = tok.batch_encode(REPORTS, max_len=40)
    return clip, tok, ids, mask


def _inputs(ids, mask):
    return ids[:, :-1], ids[:, 1:], mask[:, 1:]


def test_soft_path_with_one_hot_equals_encoding_the_ids(setup):
    clip, tok, ids, mask = setup
    loss = DirectionalLoss(clip, tok.minilm_ids)
    _, targets, tmask = _inputs(ids, mask)
    soft = loss.report_embedding(targets * tmask, tmask)
    minilm = torch.cat([ids.new_full((ids.shape[0], 1), clip.tokenizer.cls_token_id), tok.minilm_ids[targets * tmask]], 1)
    attn = torch.cat([tmask.new_ones(ids.shape[0], 1), tmask], 1).long()
    with torch.no_grad():
        hard = clip.encode_text(minilm, attn)
    assert torch.allclose(soft, hard, atol=1e-5)


@pytest.mark.parametrize("gumbel", [False, True])
def test_directional_alone_gives_decoder_gradients(setup, gumbel):
    clip, tok, ids, mask = setup
    torch.manual_seed(1)
    dec = TinyDecoder(len(tok))
    loss_fn = DirectionalLoss(clip, tok.minilm_ids, gumbel=gumbel)
    inp, targets, tmask = _inputs(ids, mask)
    image = torch.randn(len(REPORTS), 8)
    image_emb = F.normalize(torch.randn(len(REPORTS), clip.cfg.embed_dim), dim=-1)
    loss = loss_fn(dec(image, inp), targets, tmask, image_emb)  # no cross-entropy anywhere
    loss.backward()
    grads = {n: p.grad for n, p in dec.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["head.weight"].abs().sum() > 0 and grads["embed.weight"].abs().sum() > 0
    assert all(p.grad is None for p in clip.parameters()), "CLIP must stay frozen"


def test_optimising_directional_alone_lowers_it(setup):
    clip, tok, ids, mask = setup
    torch.manual_seed(2)
    dec = TinyDecoder(len(tok))
    loss_fn = DirectionalLoss(clip, tok.minilm_ids)
    inp, targets, tmask = _inputs(ids, mask)
    image = torch.randn(len(REPORTS), 8)
    image_emb = F.normalize(torch.randn(len(REPORTS), clip.cfg.embed_dim), dim=-1)
    report_emb = loss_fn.report_embedding(targets * tmask, tmask)
    opt = torch.optim.Adam(dec.parameters(), lr=3e-2)
    history = []
    for _ in range(8):
        opt.zero_grad()
        loss = loss_fn(dec(image, inp), targets, tmask, image_emb, report_emb)
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert history[-1] < 0.7 * history[0], history


def test_hook_uses_cached_embeddings_and_weight(setup):
    clip, tok, ids, mask = setup
    sids = [f"s{i}" for i in range(len(REPORTS))]
    img = F.normalize(torch.randn(len(REPORTS), clip.cfg.embed_dim), dim=-1)
    hook = DirectionalHook(clip, weight=0.5, image_emb=dict(zip(sids, img)))
    logits = torch.randn(len(REPORTS), ids.shape[1] - 1, len(tok), requires_grad=True)
    batch = {"study_id": sids, "report_ids": ids, "report_mask": mask}
    out = hook(SimpleNamespace(tokenizer=tok), batch, logits)  # the module only lends its tokenizer
    _, targets, tmask = _inputs(ids, mask)
    full = hook.loss(logits, targets, tmask, img)
    assert set(out) == {"directional_loss"} and hook.embedded == set(sids)
    assert torch.allclose(out["directional_loss"], 0.5 * full, atol=1e-5)
    out["directional_loss"].backward()
    assert logits.grad.abs().sum() > 0
    with pytest.raises(KeyError, match="no CLIP image embedding"):
        hook(None, {**batch, "study_id": ["x"] * len(sids)}, logits)


def test_shape_mismatch_is_a_clear_error(setup):
    clip, tok, ids, mask = setup
    loss_fn = DirectionalLoss(clip, tok.minilm_ids)
    with pytest.raises(ValueError, match="shape mismatch"):
        loss_fn(torch.randn(2, 5, len(tok)), ids[:2, :4], mask[:2, :4], torch.randn(2, clip.cfg.embed_dim))
