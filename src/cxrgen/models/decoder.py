"""A small pre-LN transformer decoder with cross-attention to image tokens (nanoGPT style).

Incremental decoding uses a KV cache: the self-attention cache grows by one position per
step, while cross-attention keys/values are computed from the image memory once.
The token-embedding lookup is a separate step (`embed`), so a caller can feed soft token
distributions (`probs @ tok_emb.weight`) instead of ids.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

Cache = list[dict[str, torch.Tensor]]  # one dict per layer: self_k/self_v (grow), cross_k/cross_v (fixed)


@dataclass
class Memory:
    """What the decoder attends to."""
    tokens: torch.Tensor  # (B, S, d_model), S = prefix + 2 * n_patches
    mask: torch.Tensor  # (B, S) bool, True = real token (False for an absent lateral view)
    cls_logits: torch.Tensor  # (B, 14) auxiliary finding classifier
    n_patches: int  # tokens per view (a square grid)
    prefix: int  # leading non-image tokens (14 label-state tokens with label_prefix)
    condition: torch.Tensor | None = None  # (B, d_model) added to every decoder input position (the label states)

    def repeat(self, k: int) -> Memory:
        """Each row repeated k times (row-major), for beam search."""
        r = lambda t: None if t is None else t.repeat_interleave(k, dim=0)
        return Memory(r(self.tokens), r(self.mask), r(self.cls_logits), self.n_patches, self.prefix, r(self.condition))


@dataclass
class DecoderConfig:
    vocab_size: int
    d_model: int = 256
    n_layer: int = 3
    n_head: int = 8
    max_len: int = 100  # positions available to the learned position embedding
    dropout: float = 0.1


class Attention(nn.Module):
    """Multi-head attention; self-attention when `kv` is None, cross-attention otherwise."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        assert cfg.d_model % cfg.n_head == 0, "d_model must be divisible by n_head"
        self.n_head = cfg.n_head
        self.q = nn.Linear(cfg.d_model, cfg.d_model)
        self.kv = nn.Linear(cfg.d_model, 2 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout = cfg.dropout

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        return x.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv(x).chunk(2, dim=-1)
        return self.heads(k), self.heads(v)

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                causal: bool = False, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, C) attends to k, v (B, nh, S, hs); mask (B, S) True = may attend. Returns (out, weights)."""
        B, T, C = x.shape
        q = self.heads(self.q(x))
        attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, S)
        weights = None
        if need_weights:  # explicit softmax so the map can be returned (the web page draws it)
            att = (q @ k.transpose(-2, -1)) / math.sqrt(k.shape[-1])
            if attn_mask is not None:
                att = att.masked_fill(~attn_mask, float("-inf"))
            weights = att.softmax(dim=-1)  # (B, nh, T, S)
            y = weights @ v
        else:
            drop = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop, is_causal=causal and T > 1)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble heads
        return self.proj(y), weights


class Block(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.ln1, self.ln2, self.ln3 = (nn.LayerNorm(cfg.d_model) for _ in range(3))
        self.self_attn = Attention(cfg)
        self.cross_attn = Attention(cfg)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, 4 * cfg.d_model), nn.GELU(),
                                 nn.Linear(4 * cfg.d_model, cfg.d_model), nn.Dropout(cfg.dropout))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None,
                cache: dict[str, torch.Tensor] | None, need_weights: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.ln1(x)
        k, v = self.self_attn.keys_values(h)
        if cache is not None:
            if "self_k" in cache:  # append this step's keys to the past ones
                k = torch.cat([cache["self_k"], k], dim=2)
                v = torch.cat([cache["self_v"], v], dim=2)
            cache["self_k"], cache["self_v"] = k, v
        x = x + self.drop(self.self_attn(h, k, v, causal=True)[0])  # one cached step (T=1) needs no mask
        if cache is not None and "cross_k" in cache:
            ck, cv = cache["cross_k"], cache["cross_v"]
        else:
            ck, cv = self.cross_attn.keys_values(memory)
            if cache is not None:
                cache["cross_k"], cache["cross_v"] = ck, cv
        y, weights = self.cross_attn(self.ln2(x), ck, cv, mask=memory_mask, need_weights=need_weights)
        x = x + self.drop(y)
        return x + self.mlp(self.ln3(x)), weights


class TransformerDecoder(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # weight tying: fewer parameters, better on small data
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> embeddings (B, T, C). Soft inputs: use `probs @ self.tok_emb.weight` instead."""
        return self.tok_emb(input_ids)

    def forward(self, inputs_embeds: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None = None,
                cache: Cache | None = None, need_weights: bool = False,
                condition: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, V) for token embeddings (B, T, C) attending to memory (B, S, C).

        `condition` (B, C), if given, is added to every input position (a global conditioning vector).

        With `cache` (a list, empty on the first call) the embeddings are the *new*
        positions only, and past keys/values are reused. `need_weights` also returns the last layer's
        cross-attention averaged over heads, (B, T, S).
        """
        B, T, _ = inputs_embeds.shape
        past = cache[0]["self_k"].shape[2] if cache and "self_k" in cache[0] else 0
        if past + T > self.cfg.max_len:
            raise ValueError(f"sequence length {past + T} exceeds max_len {self.cfg.max_len}")
        if past and T > 1:
            raise ValueError("cached decoding feeds one new position at a time")
        if cache is not None and not cache:
            cache.extend({} for _ in self.blocks)
        pos = torch.arange(past, past + T, device=inputs_embeds.device)
        x = inputs_embeds + self.pos_emb(pos)
        if condition is not None:
            x = x + condition[:, None, :]
        x = self.drop(x)
        weights = None
        for i, block in enumerate(self.blocks):
            last = i == len(self.blocks) - 1
            x, w = block(x, memory, memory_mask, cache[i] if cache is not None else None, need_weights and last)
            weights = w.mean(dim=1) if w is not None else weights
        return self.head(self.ln_f(x)), weights


def reorder_cache(cache: Cache, index: torch.Tensor) -> None:
    """Keep only the rows `index` of every cached tensor (beam search reorders hypotheses each step)."""
    for layer in cache:
        for key in ("self_k", "self_v"):
            layer[key] = layer[key].index_select(0, index)
