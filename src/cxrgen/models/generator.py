"""The report generator: shared image encoder over two views -> memory tokens -> transformer decoder.

`ReportModel` is the nn.Module that training optimises; `cxrgen.inference.ReportGenerator`
wraps a trained one for the CLI and the web server.

Views follow R2Gen: frontal and lateral go through the same encoder and their tokens are
concatenated, each tagged with a learned view embedding; a missing lateral is masked out of
cross-attention. An auxiliary 14-way classifier reads each view's pooled encoder features. With
`label_prefix`, 14 more memory tokens state, per CheXpert condition, "present" or "absent"
(PromptMRG's diagnosis prompts). At inference the states are the classifier's own predictions,
thresholded per condition at `label_thresholds` (tuned on the validation split during training).
During training the decoder is teacher-forced on the reference states, as it is on the
reference words; reference labels are never an input at inference.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from cxrgen.config import ModelConfig
from cxrgen.models.decoder import DecoderConfig, Memory, TransformerDecoder
from cxrgen.models.encoders import create_encoder

N_CONDITIONS = 14  # cxrgen.labeler.CONDITIONS, in CheXpert column order


def grid_positions(n: int, dim: int) -> torch.Tensor:
    """Fixed 2D sine-cosine embedding (n, dim) for a square grid of n patches, any image size."""
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"expected a square token grid, got {n} tokens")
    quarter = dim // 4
    freq = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    ys, xs = torch.meshgrid(torch.arange(side, dtype=torch.float32), torch.arange(side, dtype=torch.float32), indexing="ij")
    parts = [f(c.reshape(-1, 1) * freq) for c in (ys, xs) for f in (torch.sin, torch.cos)]
    pos = torch.cat(parts, dim=1)  # (n, 4 * quarter)
    return nn.functional.pad(pos, (0, dim - pos.shape[1]))


def pool_grid(feats: torch.Tensor, side: int | None) -> torch.Tensor:
    """Tokens (B, V, N, C) of a square grid -> (B, V, side*side, C) by average pooling; unchanged if None or larger."""
    n = math.isqrt(feats.shape[2])
    if side is None or side >= n:
        return feats
    B, V, N, C = feats.shape
    grid = feats.reshape(B * V, n, n, C).permute(0, 3, 1, 2)
    pooled = nn.functional.adaptive_avg_pool2d(grid, side)
    return pooled.permute(0, 2, 3, 1).reshape(B, V, side * side, C)


class ReportModel(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int, pretrained: bool | None = None):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.encoder = create_encoder(cfg.encoder, cfg.pretrained if pretrained is None else pretrained, cfg.encoder_weights)
        self.proj = nn.Sequential(nn.Linear(self.encoder.out_dim, d), nn.LayerNorm(d))
        self.view_emb = nn.Embedding(3, d)  # 0 frontal, 1 lateral, 2 label prefix
        # on each view's mean- and max-pooled encoder features: a small bright nodule survives max-pooling
        self.classifier = nn.Sequential(nn.LayerNorm(4 * self.encoder.out_dim), nn.Linear(4 * self.encoder.out_dim, N_CONDITIONS))
        # one embedding per (condition, absent/present); row 2c + state
        self.label_emb = nn.Embedding(2 * N_CONDITIONS, d) if cfg.label_prefix else None
        # the same states as one vector added to every decoder input; token-scale init (std 0.02) so it
        # shifts the residual stream without drowning the words (unit-variance rows stalled training)
        self.label_cond = nn.Embedding(2 * N_CONDITIONS, d) if cfg.label_prefix else None
        if self.label_cond is not None:
            nn.init.normal_(self.label_cond.weight, std=0.02)
        self.register_buffer("label_thresholds", torch.full((N_CONDITIONS,), 0.5))
        self.decoder = TransformerDecoder(DecoderConfig(vocab_size, d, cfg.n_layer, cfg.n_head, cfg.max_len, cfg.dropout))
        self._positions: dict[tuple, torch.Tensor] = {}  # see positions(); not state: checkpoints are unchanged
        # training with cached features: how many of the encoder's last layers still run (and train) on them
        self.cached_below = 0

    def train(self, mode: bool = True) -> "ReportModel":
        super().train(mode)
        if self.cached_below:  # the top trains on frozen features: BatchNorm keeps its statistics, no drop-connect
            self.encoder.eval()
        return self

    def tokens_from_cache(self, cached: torch.Tensor, view_mask: torch.Tensor) -> torch.Tensor:
        """Cached features (B, 2, N', C'), the input of the encoder's last `cached_below` layers, -> encoder
        tokens (B, 2, N, C); an absent view's tokens are zeros, as `encode_views` gives them."""
        if not self.cached_below:
            return cached
        tokens = self.encoder.top(cached.flatten(0, 1), self.cached_below).unflatten(0, cached.shape[:2])
        return tokens * view_mask[:, :, None, None]

    def positions(self, n: int, like: torch.Tensor) -> torch.Tensor:
        """`grid_positions(n, d)` on `like`'s device and dtype, built once: no CPU work or copy per step.

        A plain dict (not a buffer, so state dicts stay as they were); torch.compile reads it as a constant.
        """
        key = (n, like.shape[-1], like.device, like.dtype)
        if key not in self._positions:
            with torch.inference_mode(False):  # a normal tensor even when first built in Lightning's validation
                self._positions[key] = grid_positions(n, like.shape[-1]).to(like.device, like.dtype)
        return self._positions[key]

    def encode_views(self, images: torch.Tensor, view_mask: torch.Tensor) -> torch.Tensor:
        """Images (B, 2, 1, H, W) in [0, 1] -> encoder tokens (B, 2, N, C); an absent lateral's tokens are zeros.

        In training, fixed shapes and no host sync: every row's lateral slot is encoded and absent ones
        are zeroed after. An absent lateral is encoded as a copy of its frontal, so in fine-tuning
        BatchNorm's batch statistics see radiographs rather than blank frames. At inference a batch
        without any lateral (one frontal image, the usual single study) skips the second pass.
        """
        has_lat = view_mask[:, 1]
        front = self.encoder(images[:, 0])  # (B, N, C)
        if not self.training and not has_lat.any():
            return torch.stack([front, torch.zeros_like(front)], dim=1)
        lat = self.encoder(torch.where(has_lat[:, None, None, None], images[:, 1], images[:, 0]))
        lat = torch.where(has_lat[:, None, None], lat, 0.0)
        return torch.stack([front, lat], dim=1)

    def memory_from_features(self, feats: torch.Tensor, view_mask: torch.Tensor,
                             teacher: tuple[torch.Tensor, torch.Tensor] | None = None) -> Memory:
        """Encoder tokens (B, 2, N, C) (live or cached) -> decoder memory and classifier logits.

        `teacher` = (labels, label_mask), each (B, 14): only training passes it, to teacher-force the
        label prefix on the reference findings (where the mask is 0, the model's own call stays).
        """
        cls_logits = self.classifier(self.classifier_input(feats))
        feats = pool_grid(feats, self.cfg.memory_grid)
        B, V, N, _ = feats.shape
        x = self.proj(feats)  # (B, 2, N, d)
        x = x + self.view_emb.weight[:V, None, :] + self.positions(N, x)
        x = x.reshape(B, V * N, -1)
        mask = view_mask.repeat_interleave(N, dim=1)  # (B, 2N)
        if self.label_emb is None:
            return Memory(x, mask, cls_logits, N, 0)
        label_states = self.predicted_states(cls_logits)
        if teacher is not None:
            labels, known = teacher
            label_states = torch.where(known > 0, labels.long(), label_states)
        rows = 2 * torch.arange(N_CONDITIONS, device=x.device) + label_states.long()  # (B, 14)
        states = self.label_emb(rows)  # (B, 14, d)
        tokens = torch.cat([(states + self.view_emb.weight[2]).to(x.dtype), x], dim=1)
        mask = torch.cat([torch.ones_like(mask[:, :1]).expand(-1, N_CONDITIONS), mask], dim=1)
        # the same states also go straight into every decoder position: through cross-attention alone
        # a small decoder learned to ignore them and wrote the most common normal report
        return Memory(tokens, mask, cls_logits, N, N_CONDITIONS, self.label_cond(rows).mean(1).to(x.dtype))

    @staticmethod
    def classifier_input(feats: torch.Tensor) -> torch.Tensor:
        """Encoder tokens (B, 2, N, C) -> the classifier's input (B, 4C): each view's mean and max over its
        tokens (an absent view's are zeros)."""
        return torch.cat([feats.mean(2), feats.amax(2)], dim=1).flatten(1)

    def predicted_states(self, cls_logits: torch.Tensor) -> torch.Tensor:
        """The classifier's present/absent call per condition, (B, 14) long, at the tuned thresholds."""
        return (torch.sigmoid(cls_logits.detach().float()) > self.label_thresholds).long()

    def encode(self, images: torch.Tensor, view_mask: torch.Tensor | None = None) -> Memory:
        if view_mask is None:
            view_mask = torch.ones(images.shape[0], 2, dtype=torch.bool, device=images.device)
        return self.memory_from_features(self.encode_views(images, view_mask), view_mask)

    def decode(self, memory: Memory, input_ids: torch.Tensor | None = None,
               inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits (B, T, V); pass soft-token `inputs_embeds` (B, T, d) instead of ids if wanted."""
        if inputs_embeds is None:
            inputs_embeds = self.decoder.embed(input_ids)
        return self.decoder(inputs_embeds, memory.tokens, memory.mask, condition=memory.condition)[0]

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, view_mask: torch.Tensor | None = None) -> torch.Tensor:
        """images (B, 2, 1, H, W) in [0, 1], input_ids (B, T) starting with BOS -> logits (B, T, V)."""
        return self.decode(self.encode(images, view_mask), input_ids)
