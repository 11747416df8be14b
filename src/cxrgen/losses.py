"""Losses that use CLIP: symmetric InfoNCE with hard negatives, and the directional loss.

The training hooks that add them to a generator's loss are in `cxrgen.training.hooks`.

The directional loss is the paper's eqs 1-4 (after StyleGAN-NADA):
    dD1 = E_T(r) - E_I(x)          ground-truth report direction
    dD2 = E_T(M(x)) - E_I(x)       generated report direction
    L_dir = 1 - cos(dD1, dD2)
    L_total = L_CE + lambda * L_dir
The seed decoded M(x) with argmax into strings and ran CLIP under `.detach()`, so L_dir was
a constant with zero gradient. Here E_T(M(x)) is computed from the decoder's per-position
token distributions mapped into MiniLM's input-embedding space, so it is differentiable in
the decoder's logits.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cxrgen.models.clip import CXRClip


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
              negative_text_features: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Symmetric InfoNCE over a batch of matched pairs (row i of each is a pair).

    `negative_text_features` (M, D) are extra candidates for image->text only (NegCLIP-style
    hard negatives: the same report with one finding negated or its side flipped), so an image
    must prefer its report over a near-copy that says the opposite.
    """
    labels = torch.arange(image_features.shape[0], device=image_features.device)
    candidates = text_features if negative_text_features is None else torch.cat([text_features, negative_text_features])
    logits_i2t = logit_scale * image_features @ candidates.T  # (B, B + M)
    logits_t2i = logit_scale * text_features @ image_features.T  # (B, B)
    loss = (F.cross_entropy(logits_i2t, labels) + F.cross_entropy(logits_t2i, labels)) / 2
    return {"contrastive_loss": loss}


# --- the directional loss ---------------------------------------------------------------------
class DirectionalLoss(nn.Module):
    """L_dir = 1 - cos(E_T(r) - E_I(x), E_T(M(x)) - E_I(x)), differentiable in the decoder's logits.

    E_T(M(x)) is the frozen CLIP text tower applied to soft input embeddings: at each target
    position, the decoder's token distribution over the compact vocabulary (softmax(logits / tau),
    or a straight-through Gumbel-softmax sample) times the MiniLM word-embedding rows of those
    tokens (`minilm_ids`), after a [CLS] row. The CLIP stays frozen; only the generator learns.

    Args:
        clip: a trained CXRClip (its text tower is MiniLM, the decoder's token space).
        minilm_ids: (V,) compact token id -> MiniLM id (`ReportTokenizer.minilm_ids`).
        temperature: softmax temperature tau on the logits.
        gumbel: use hard straight-through Gumbel-softmax samples instead of the soft distribution.
    """

    def __init__(self, clip: CXRClip, minilm_ids: torch.Tensor, temperature: float = 1.0, gumbel: bool = False):
        super().__init__()
        self.clip = clip.requires_grad_(False).eval()
        self.register_buffer("minilm_ids", minilm_ids.long(), persistent=False)
        self.temperature = temperature
        self.gumbel = gumbel
        self.cls_id = clip.tokenizer.cls_token_id

    def train(self, mode: bool = True) -> DirectionalLoss:
        super().train(mode)
        self.clip.eval()  # frozen: no dropout in the reference embeddings
        return self

    def text_embedding(self, probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, V) token distributions over the compact vocab + (B, T) mask -> (B, D) unit CLIP text embeddings."""
        words = self.clip.text.word_embeddings  # (V_minilm, H)
        embeds = probs.to(words.dtype) @ words[self.minilm_ids]  # (B, T, H) expected word embeddings
        cls = words[self.cls_id].expand(probs.shape[0], 1, -1)  # (B, 1, H)
        embeds = torch.cat([cls, embeds], dim=1)
        attn = torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1).long()
        return self.clip.encode_text(inputs_embeds=embeds, attention_mask=attn)

    @torch.no_grad()
    def report_embedding(self, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """E_T(r) through the same soft path with one-hot targets (equals encoding the ids)."""
        onehot = F.one_hot(targets, num_classes=self.minilm_ids.numel()).float()
        return self.text_embedding(onehot, mask)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, image_emb: torch.Tensor,
                report_emb: torch.Tensor | None = None) -> torch.Tensor:
        """Args: teacher-forced logits (B, T, V) for `targets` (B, T) [the report after BOS, ending in EOS],
        `mask` (B, T) true on real tokens, `image_emb` E_I(x) (B, D) and optionally a cached E_T(r) (B, D)."""
        if logits.shape[:2] != targets.shape or targets.shape != mask.shape:
            raise ValueError(f"shape mismatch: logits {tuple(logits.shape)}, targets {tuple(targets.shape)}, "
                             f"mask {tuple(mask.shape)}")
        if self.gumbel:
            probs = F.gumbel_softmax(logits.float(), tau=self.temperature, hard=True)
        else:
            probs = F.softmax(logits.float() / self.temperature, dim=-1)
        probs = probs * mask.unsqueeze(-1)  # padding positions carry no mass (and no gradient)
        generated = self.text_embedding(probs, mask)
        if report_emb is None:
            report_emb = self.report_embedding(targets * mask, mask)
        d1 = report_emb - image_emb  # eq 1
        d2 = generated - image_emb  # eq 2
        return (1 - F.cosine_similarity(d1, d2, dim=-1)).mean()  # eq 3
