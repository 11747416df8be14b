"""Batched greedy, beam-search and sampled decoding with a KV cache.

The whole batch is decoded at once: beams are flattened into the batch dimension (B * K
rows), so one decoder call per step serves every study and every hypothesis. Beam search
ranks candidates by length-normalised log-probability, sum log p / length ** length_penalty,
at every step (not only at the end), so finished short reports do not crowd out longer,
better ones. Cross-attention maps can be accumulated along the way for the web page.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from cxrgen.models.decoder import Memory, TransformerDecoder, reorder_cache


Allowed = Callable[[torch.Tensor], "torch.Tensor | None"]  # ids (R, L) -> (R, V) bool: tokens that may come next


@dataclass
class GenerationOutput:
    sequences: list[list[int]]  # token ids per study, without BOS and EOS
    scores: torch.Tensor  # (B,) length-normalised log-probability of each returned sequence
    attention: torch.Tensor | None  # (B, S) cross-attention over memory, averaged over generated tokens
    candidates: list[list[list[int]]] | None = None  # beam search: every final beam per study, best first


def ban_repeated_ngrams(ids: torch.Tensor, logp: torch.Tensor, n: int) -> torch.Tensor:
    """Set log p = -inf for every token that would repeat an n-gram already in `ids` (R, L)."""
    if n <= 0 or ids.shape[1] < n:
        return logp
    windows = ids.unfold(1, n, 1)  # (R, L - n + 1, n): every n-gram so far
    prefix = ids[:, ids.shape[1] - n + 1:]  # (R, n - 1): what the next n-gram would start with
    match = (windows[:, :, :-1] == prefix[:, None, :]).all(-1)  # (R, W)
    hits = torch.zeros_like(logp).scatter_add_(1, windows[:, :, -1], match.to(logp.dtype))
    return logp.masked_fill(hits > 0, float("-inf"))


def _step(decoder: TransformerDecoder, ids: torch.Tensor, memory: Memory, cache: list, need_weights: bool,
          no_repeat_ngram: int, temperature: float = 1.0, allowed: Allowed | None = None
          ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probabilities (R, V) of the next token after `ids`, feeding only the newest token."""
    logits, weights = decoder(decoder.embed(ids[:, -1:]), memory.tokens, memory.mask, cache, need_weights, memory.condition)
    logp = (logits[:, -1].float() / temperature).log_softmax(-1)
    logp = logp.index_fill(1, ids[0, :1], float("-inf"))  # never emit BOS again (every row starts with it)
    mask = allowed(ids) if allowed is not None else None
    if mask is not None:
        logp = logp.masked_fill(~mask, float("-inf"))
    return ban_repeated_ngrams(ids, logp, no_repeat_ngram), (weights[:, -1].float() if weights is not None else None)


def _strip(row: list[int], eos_id: int) -> list[int]:
    row = row[1:]  # drop BOS
    return row[: row.index(eos_id)] if eos_id in row else row


def _unroll(decoder: TransformerDecoder, memory: Memory, bos_id: int, eos_id: int, max_len: int, choose,
            no_repeat_ngram: int = 0, return_attention: bool = False, temperature: float = 1.0,
            allowed: Allowed | None = None):
    """The token-by-token loop that greedy decoding and sampling share.

    `choose(logp)` picks each row's next token. Returns the ids (B, L) starting with BOS and padded
    with EOS after the first one, the summed log p of the chosen tokens (B,), the number of tokens
    up to and including EOS (B,), and the summed cross-attention (B, S) or None.
    """
    B, device = memory.tokens.shape[0], memory.tokens.device
    ids = torch.full((B, 1), bos_id, dtype=torch.long, device=device)
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    logp_sum = torch.zeros(B, device=device)
    length = torch.zeros(B, device=device)
    att = torch.zeros(memory.tokens.shape[:2], device=device) if return_attention else None
    cache: list = []
    for _ in range(min(max_len, decoder.cfg.max_len) - 1):  # never past the positions the decoder has
        logp, w = _step(decoder, ids, memory, cache, return_attention, no_repeat_ngram, temperature, allowed)
        live = ~finished
        if att is not None:
            att += w * live[:, None]  # only tokens that belong to the report
        tok = choose(logp).masked_fill(finished, eos_id)
        chosen = logp.gather(1, tok[:, None]).squeeze(1)
        logp_sum = logp_sum + torch.where(live, chosen, 0.0)
        length += live
        ids = torch.cat([ids, tok[:, None]], dim=1)
        finished |= tok == eos_id
        if finished.all():
            break
    return ids, logp_sum, length, att


@torch.no_grad()
def greedy(decoder: TransformerDecoder, memory: Memory, bos_id: int, eos_id: int, max_len: int = 100,
           no_repeat_ngram: int = 0, return_attention: bool = False, allowed: Allowed | None = None) -> GenerationOutput:
    ids, total, length, att = _unroll(decoder, memory, bos_id, eos_id, max_len, lambda logp: logp.max(-1).indices,
                                      no_repeat_ngram, return_attention, allowed=allowed)
    length = length.clamp(min=1)
    return GenerationOutput([_strip(r, eos_id) for r in ids.tolist()], total / length,
                            att / length[:, None] if att is not None else None)


def sample(decoder: TransformerDecoder, memory: Memory, bos_id: int, eos_id: int, max_len: int,
           temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial samples with their summed log-probabilities, differentiable (SCST).

    Returns ids (B, L) without BOS, padded with EOS after the first EOS, and log p (B,) of each
    sequence up to and including its EOS.
    """
    pick = lambda logp: torch.multinomial(logp.detach().exp(), 1).squeeze(1)
    ids, logp_sum, _, _ = _unroll(decoder, memory, bos_id, eos_id, max_len, pick, temperature=temperature)
    return ids[:, 1:], logp_sum


@torch.no_grad()
def beam_search(decoder: TransformerDecoder, memory: Memory, bos_id: int, eos_id: int, beam_size: int = 3,
                max_len: int = 100, length_penalty: float = 1.0, no_repeat_ngram: int = 0,
                return_attention: bool = False, allowed: Allowed | None = None) -> GenerationOutput:
    B, K, device = memory.tokens.shape[0], beam_size, memory.tokens.device
    mem = memory.repeat(K)  # (B*K, S, d): row b*K + k is beam k of study b
    ids = torch.full((B * K, 1), bos_id, dtype=torch.long, device=device)
    scores = torch.zeros(B, K, device=device)
    scores[:, 1:] = float("-inf")  # all beams start identical: keep one alive at first
    scores = scores.view(-1)
    finished = torch.zeros(B * K, dtype=torch.bool, device=device)
    length = torch.zeros(B * K, device=device)
    att = torch.zeros(mem.tokens.shape[:2], device=device) if return_attention else None
    offsets = (torch.arange(B, device=device) * K)[:, None]  # (B, 1)
    cache: list = []
    for _ in range(min(max_len, decoder.cfg.max_len) - 1):  # never past the positions the decoder has
        logp, w = _step(decoder, ids, mem, cache, return_attention, no_repeat_ngram, allowed=allowed)
        if att is not None:
            att += w * (~finished)[:, None]
        # a finished hypothesis may only "continue" with EOS at no cost, keeping its score and length
        logp[finished] = float("-inf")
        logp[finished, eos_id] = 0.0
        V = logp.shape[-1]
        new_len = length + (~finished)
        cand = scores[:, None] + logp  # (B*K, V) raw sums
        ranked = cand / new_len[:, None] ** length_penalty
        _, top = ranked.view(B, K * V).topk(K, dim=1)  # (B, K)
        src = (offsets + top // V).view(-1)  # which hypothesis each new beam extends
        tok = (top % V).view(-1)
        scores = cand.view(B, K * V).gather(1, top).view(-1)
        ids = torch.cat([ids[src], tok[:, None]], dim=1)
        length = new_len[src]
        finished = finished[src] | (tok == eos_id)
        if att is not None:
            att = att[src]
        reorder_cache(cache, src)
        if finished.all():
            break
    norm = (scores / length.clamp(min=1) ** length_penalty).view(B, K)
    best = norm.argmax(dim=1)
    rows = (offsets.view(-1) + best).tolist()
    all_ids = ids.tolist()
    attention = None
    if att is not None:
        attention = att[rows] / length[rows].clamp(min=1)[:, None]
    ranked = (offsets + norm.argsort(dim=1, descending=True, stable=True)).tolist()
    candidates = [[_strip(all_ids[r], eos_id) for r in study] for study in ranked]
    return GenerationOutput([_strip(all_ids[r], eos_id) for r in rows], norm.gather(1, best[:, None]).view(-1), attention,
                            candidates)


def generate(decoder: TransformerDecoder, memory: Memory, bos_id: int, eos_id: int, beam_size: int = 3,
             max_len: int = 100, length_penalty: float = 1.0, no_repeat_ngram: int = 3,
             return_attention: bool = False, allowed: Allowed | None = None) -> GenerationOutput:
    """Greedy when beam_size == 1, beam search otherwise. `allowed` restricts each step's tokens
    (`ReportTokenizer.allowed_next`: only words seen in training, never [UNK])."""
    if beam_size <= 1:
        return greedy(decoder, memory, bos_id, eos_id, max_len, no_repeat_ngram, return_attention, allowed)
    return beam_search(decoder, memory, bos_id, eos_id, beam_size, max_len, length_penalty, no_repeat_ngram,
                       return_attention, allowed)
