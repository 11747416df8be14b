"""From `Study` records to training batches: splits, label targets, the Dataset, collate and sampler.

Auxiliary classifier targets come from `cxrgen.labeler` on the reference report (findings +
impression): positive -> 1, negative or not mentioned -> 0, uncertain -> masked out of the BCE.
They are targets only; the model never sees them as input.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import Dataset

from cxrgen.data.cache import ImageCache
from cxrgen.data.layouts.manifest import hash_split
from cxrgen.data.studies import Study
from cxrgen.errors import UserError
from cxrgen.labeler import CONDITIONS, label_many

_logger = logging.getLogger(__name__)


def assign_splits(studies: list[Study]) -> None:
    """Give studies without a split the manifest reader's stable hash split (80/10/10 by id)."""
    for s in studies:
        if s.split is None:
            s.split = hash_split(s.id)


def label_targets(studies: list[Study]) -> tuple[np.ndarray, np.ndarray]:
    """(targets, mask) float32 (N, 14): labeler on the reference report; uncertain -> mask 0."""
    rows = label_many([s.report for s in studies])
    y = np.array([[1.0 if r[c] == 1 else 0.0 for c in CONDITIONS] for r in rows], np.float32)
    m = np.array([[0.0 if r[c] == -1 else 1.0 for c in CONDITIONS] for r in rows], np.float32)
    return y, m


def split_studies(studies: list[Study], usable: set[str]) -> dict[str, list[Study]]:
    """{train, val, test: studies}; without a validation split every 20th training study is held out."""
    splits = {k: [s for s in studies if s.split == k and s.id in usable] for k in ("train", "val", "test")}
    if not splits["train"]:
        raise UserError("no training studies with a report and a readable frontal image")
    if not splits["val"]:
        _logger.warning("no validation split: holding out every 20th training study for validation")
        splits["val"] = splits["train"][::20]
        splits["train"] = [s for i, s in enumerate(splits["train"]) if i % 20]
    return splits


class ReportDataset(Dataset):
    """Samples: study_id, report_ids, labels, label_mask, view_mask, and `features` or `image`."""

    def __init__(self, ids: list[str], token_ids: list[list[int]], labels: np.ndarray, label_mask: np.ndarray,
                 cache: ImageCache, features: np.ndarray | None = None, feature_row: dict[str, int] | None = None):
        self.ids, self.token_ids, self.labels, self.label_mask = ids, token_ids, labels, label_mask
        self.cache, self.features, self.feature_row = cache, features, feature_row

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        sid = self.ids[i]
        frontal, lateral = self.cache.get(sid)
        item = {"study_id": sid, "report_ids": torch.tensor(self.token_ids[i]),
                "labels": torch.from_numpy(self.labels[i]), "label_mask": torch.from_numpy(self.label_mask[i]),
                "view_mask": torch.tensor([frontal is not None, lateral is not None])}
        if self.features is not None:
            # float16 as stored: half the bytes to the GPU; model_step converts on the device
            item["features"] = torch.from_numpy(np.array(self.features[self.feature_row[sid]]))
        else:
            blank = np.zeros((self.cache.size, self.cache.size), np.uint8)
            item["image"] = torch.from_numpy(np.stack([frontal, lateral if lateral is not None else blank]))[:, None]
        return item


def collate(items: list[dict], pad_id: int) -> dict:
    ids = torch.nn.utils.rnn.pad_sequence([it["report_ids"] for it in items], batch_first=True, padding_value=pad_id)
    batch = {"study_id": [it["study_id"] for it in items], "report_ids": ids, "report_mask": ids != pad_id}
    for key in ("labels", "label_mask", "view_mask", "features", "image"):
        if key in items[0]:
            batch[key] = torch.stack([it[key] for it in items])
    return batch


class LengthBucketSampler(torch.utils.data.Sampler):
    """A fresh shuffle each epoch in which every run of `batch_size` indices holds reports of similar length.

    Batches are padded to their longest report, so random batches of IU findings (median 52,
    longest ~100 WordPieces) waste about 40 % of the decoder's compute on padding. Shuffle, sort
    within windows of `window` batches, cut into batches, shuffle the batches: the data and its
    randomness stay, the padding goes. Lightning calls `set_epoch`; under DDP it shards this order.
    With `weights`, an epoch is len(lengths) draws with replacement in proportion to them instead of
    a permutation (oversampling some studies at the same number of steps).
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, window: int = 50,
                 weights: list[float] | None = None):
        self.lengths, self.batch_size, self.seed, self.window, self.epoch = lengths, batch_size, seed, window, 0
        self.weights = weights

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.weights is None:
            order = torch.randperm(len(self.lengths), generator=g).tolist()
        else:
            order = torch.multinomial(torch.tensor(self.weights, dtype=torch.float64), len(self.lengths),
                                      replacement=True, generator=g).tolist()
        span = self.batch_size * self.window
        batches = []
        for start in range(0, len(order), span):
            part = sorted(order[start:start + span], key=self.lengths.__getitem__)
            batches += [part[i:i + self.batch_size] for i in range(0, len(part), self.batch_size)]
        short = [b for b in batches if len(b) < self.batch_size]  # at most one: it goes last, keeping the rest aligned
        full = [b for b in batches if len(b) == self.batch_size]
        return iter([i for k in torch.randperm(len(full), generator=g).tolist() for i in full[k]] + sum(short, []))
