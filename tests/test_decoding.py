"""Batched greedy / beam search: beam 1 == greedy, batch == one-by-one, n-gram ban, length penalty."""
import pytest
import torch

from cxrgen.decoding import ban_repeated_ngrams, beam_search, generate, greedy
from cxrgen.models.decoder import DecoderConfig, TransformerDecoder
from cxrgen.models.decoder import Memory

BOS, EOS, V = 2, 3, 25


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(1)
    dec = TransformerDecoder(DecoderConfig(vocab_size=V, d_model=32, n_layer=2, n_head=4, max_len=20, dropout=0.0)).eval()
    with torch.no_grad():  # a strong bias towards EOS after a few steps makes sequences of varied length
        dec.tok_emb.weight.mul_(8)
    tokens = torch.randn(4, 6, 32)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[1, 4:] = False
    return dec, Memory(tokens, mask, torch.zeros(4, 14), n_patches=2, prefix=0)


def _row(memory: Memory, i: int) -> Memory:
    return Memory(memory.tokens[i:i + 1], memory.mask[i:i + 1], memory.cls_logits[i:i + 1], memory.n_patches, memory.prefix)


def test_beam_one_equals_greedy(setup):
    dec, memory = setup
    g = greedy(dec, memory, BOS, EOS, max_len=20, no_repeat_ngram=2, return_attention=True)
    b = beam_search(dec, memory, BOS, EOS, beam_size=1, max_len=20, no_repeat_ngram=2, return_attention=True)
    assert g.sequences == b.sequences
    torch.testing.assert_close(g.attention, b.attention)
    torch.testing.assert_close(g.scores, b.scores)


@pytest.mark.parametrize("beam", [1, 3])
def test_batched_equals_one_at_a_time(setup, beam):
    dec, memory = setup
    batched = generate(dec, memory, BOS, EOS, beam_size=beam, max_len=20, no_repeat_ngram=3)
    single = [generate(dec, _row(memory, i), BOS, EOS, beam_size=beam, max_len=20, no_repeat_ngram=3).sequences[0]
              for i in range(4)]
    assert batched.sequences == single
    assert all(EOS not in s and BOS not in s for s in batched.sequences)


def test_beam_finds_at_least_greedy_score(setup):
    dec, memory = setup
    g = generate(dec, memory, BOS, EOS, beam_size=1, max_len=20, no_repeat_ngram=0)
    b = generate(dec, memory, BOS, EOS, beam_size=4, max_len=20, no_repeat_ngram=0)
    assert (b.scores >= g.scores - 1e-5).all()  # the greedy path is always among the beam's candidates


def test_attention_is_a_distribution_over_unmasked_memory(setup):
    dec, memory = setup
    out = generate(dec, memory, BOS, EOS, beam_size=3, max_len=20, return_attention=True)
    assert out.attention.shape == (4, 6)
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(4))
    assert out.attention[1, 4:].abs().max() == 0


def test_no_repeat_ngram_bans_exact_continuations():
    ids = torch.tensor([[2, 5, 6, 7, 5, 6], [2, 5, 6, 7, 8, 9]])
    out = ban_repeated_ngrams(ids, torch.zeros(2, 12), n=3)
    assert out[0, 7] == float("-inf") and torch.isfinite(out[0]).sum() == 11  # "5 6 7" would repeat
    assert torch.isfinite(out[1]).all()
    seqs = generate(*_loop_model(), BOS, EOS, beam_size=3, max_len=20, no_repeat_ngram=2).sequences
    for s in seqs:
        pairs = list(zip(s, s[1:]))
        assert len(pairs) == len(set(pairs))


def _loop_model():
    """A decoder that, unconstrained, repeats one token forever."""
    torch.manual_seed(0)
    dec = TransformerDecoder(DecoderConfig(vocab_size=V, d_model=16, n_layer=1, n_head=2, max_len=20, dropout=0.0)).eval()
    with torch.no_grad():
        dec.head.weight.zero_()  # tied with tok_emb: every logit equal except the bias we add below
        dec.tok_emb.weight[7] = 1.0
    mem = Memory(torch.randn(2, 3, 16), torch.ones(2, 3, dtype=torch.bool), torch.zeros(2, 14), 1, 0)
    return dec, mem


def _eos_model():
    """A decoder whose every step prefers token 7 (p ~ 0.40), then EOS (p ~ 0.15), then the rest."""
    torch.manual_seed(0)
    cfg = DecoderConfig(vocab_size=V, d_model=16, n_layer=1, n_head=2, max_len=20, dropout=0.0)
    dec = TransformerDecoder(cfg).eval()
    with torch.no_grad():  # constant logits: the final LayerNorm outputs its bias, e_0; the tied head reads column 0
        dec.ln_f.weight.zero_()
        dec.ln_f.bias.zero_()
        dec.ln_f.bias[0] = 1.0
        dec.tok_emb.weight.zero_()
        dec.tok_emb.weight[7, 0], dec.tok_emb.weight[EOS, 0] = 3.0, 2.0
    mem = Memory(torch.randn(2, 3, 16), torch.ones(2, 3, dtype=torch.bool), torch.zeros(2, 14), 1, 0)
    return dec, mem


def test_length_penalty_changes_preference():
    """Without length normalisation beam search stops at once (every token costs log-probability);
    with it the cheaper per-token continuation wins and runs to max_len. (The `setup` decoder
    writes max_len tokens at every penalty, so it cannot show this.)"""
    dec, memory = _eos_model()
    short = generate(dec, memory, BOS, EOS, beam_size=4, max_len=20, length_penalty=0.0, no_repeat_ngram=0)
    long = generate(dec, memory, BOS, EOS, beam_size=4, max_len=20, length_penalty=2.0, no_repeat_ngram=0)
    assert short.sequences == [[], []]
    assert long.sequences == [[7] * 19, [7] * 19]  # max_len counts BOS


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_max_len_beyond_the_decoders_positions_is_clamped(setup, search):
    # training's validation decode asks for decode.max_len, which may exceed model.max_len
    dec, memory = setup
    too_long = dec.cfg.max_len + 10
    out = (greedy(dec, memory, BOS, EOS, max_len=too_long) if search == "greedy"
           else beam_search(dec, memory, BOS, EOS, beam_size=2, max_len=too_long))
    assert all(len(s) <= dec.cfg.max_len for s in out.sequences)
