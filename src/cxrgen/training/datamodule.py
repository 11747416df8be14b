"""The Lightning data module: image and encoder-feature caches, train and validation loaders."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cxrgen.config import Config
from cxrgen.data.cache import ImageCache
from cxrgen.data.loader import LengthBucketSampler, ReportDataset, collate, label_targets, split_studies
from cxrgen.data.reports import target_text
from cxrgen.data.studies import Study
from cxrgen.data.tokenizer import ReportTokenizer
from cxrgen.models.generator import ReportModel
from cxrgen.precision import autocast

_logger = logging.getLogger(__name__)


@torch.no_grad()
def extract_features(model: ReportModel, cache: ImageCache, ids: list[str], path: Path, batch_size: int = 32,
                     device: str | torch.device = "cpu", below: int = 0, bf16: bool = False) -> np.ndarray:
    """Encoder tokens for every study, (n, 2, N, C) float16 in a .npy memmap; reused when already complete.
    With `below` N > 0, the tokens that enter the encoder's last N layers (`ImageEncoder.below_top`);
    with `bf16`, computed under bfloat16 autocast.

    The encoder runs on `device` (training's GPU when it has one) and is moved back afterwards.
    """
    if path.exists():
        feats = np.load(path, mmap_mode="r")
        if feats.shape[0] == len(ids):
            return feats
    enc = model.encoder.eval()
    home = next(enc.parameters()).device
    enc.to(device)
    size = cache.size
    probe = enc.below_top(torch.zeros(1, 1, size, size, device=device), below)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # per process: concurrent builders never share it
    feats = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(ids), 2, *probe.shape[1:]))
    for start in tqdm(range(0, len(ids), batch_size), desc=f"encoding images ({enc.name})", unit="batch", disable=None):
        chunk = ids[start:start + batch_size]
        pairs = [cache.get(i) for i in chunk]
        imgs = [im for pair in pairs for im in pair if im is not None]
        x = torch.from_numpy(np.stack(imgs))[:, None].to(device).float().div_(255)  # uint8 over the bus
        with autocast(device, bf16):
            out = enc.below_top(x, below).to(torch.float16).cpu().numpy()
        k = 0
        for j, pair in enumerate(pairs):
            for v, im in enumerate(pair):
                if im is not None:
                    feats[start + j, v] = out[k]
                    k += 1
    enc.to(home)
    feats.flush()
    del feats
    os.replace(tmp, path)
    return np.load(path, mmap_mode="r")


class ReportDataModule(L.LightningDataModule):
    """Train and val loaders over the image cache and, in frozen mode, the encoder-feature cache.

    Lightning calls `prepare_data` in one process per node and `setup` in every process after it:
    the caches are built once there (in parallel over shards, resuming after an interruption) and
    the DDP ranks only open them. `meta` (the checkpoint's) receives the final study counts.
    """

    def __init__(self, config: Config, studies: list[Study], splits: dict[str, list[Study]], tokenizer: ReportTokenizer,
                 model: ReportModel, cache_dir: Path, meta: dict | None = None, bf16: bool = False):
        super().__init__()
        mc, tc = config.model, config.train
        self.config, self.studies, self.tokenizer, self.model = config, studies, tokenizer, model
        self.batch_size, self.pad_id, self.num_workers, self.seed = tc.batch_size, tokenizer.pad_id, tc.num_workers, tc.seed
        key = _fingerprint([(s.id, [str(im.path) for im in s.images]) for s in studies])
        self.cache_path = cache_dir / f"images-{mc.image_size}-{key}"
        self.feature_ids = [s.id for s in splits["train"] + splits["val"]]
        self.features_path = None
        if tc.mode == "frozen":
            below = f"-below{tc.encoder_top}" if tc.encoder_top else ""
            self.features_path = cache_dir / (f"features-{mc.encoder}-{mc.image_size}{below}{'-bf16' if bf16 else ''}-"
                                              f"{_encoder_fingerprint(model)}-{_fingerprint(self.feature_ids)}.npy")
        self.bf16 = bf16
        self.meta = {} if meta is None else meta
        self.datasets: dict[str, ReportDataset] = {}

    def prepare_data(self) -> None:
        cache = ImageCache.build(self.studies, self.config.model.image_size, self.cache_path)
        if self.features_path is not None:
            device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
            extract_features(self.model, cache, self.feature_ids, self.features_path, device=device,
                             below=self.config.train.encoder_top, bf16=self.bf16)

    def setup(self, stage: str) -> None:
        if self.datasets:
            return
        cache = ImageCache(self.cache_path)
        splits = split_studies(self.studies, set(cache.usable_ids()))
        features = np.load(self.features_path, mmap_mode="r") if self.features_path is not None else None
        row = {sid: i for i, sid in enumerate(self.feature_ids)}
        for split in ("train", "val"):
            ss = splits[split]
            y, m = label_targets(ss)
            tokens = [self.tokenizer.encode(target_text(s), self.config.model.max_len) for s in ss]
            self.datasets[split] = ReportDataset([s.id for s in ss], tokens, y, m, cache, features, row)
        self.meta.update(train_studies=len(splits["train"]), val_studies=len(splits["val"]))
        _logger.info("studies: %d train, %d val; vocabulary %d; mode %s", len(splits["train"]), len(splits["val"]),
                     len(self.tokenizer), self.config.train.mode)

    @torch.no_grad()
    def cached_tokens(self, model: ReportModel, split: str, batch_size: int = 256) -> Iterator[torch.Tensor]:
        """Frozen mode: `model`'s encoder tokens (b, 2, N, C) float32 for the studies of `split`, in order,
        `batch_size` at a time, from the feature cache (through `model`'s trained top layers, if any, in
        the cache's precision)."""
        features = np.load(self.features_path, mmap_mode="r")
        row = {sid: i for i, sid in enumerate(self.feature_ids)}
        model.cached_below = self.config.train.encoder_top
        ds = self.datasets[split]
        for start in range(0, len(ds.ids), batch_size):
            ids = ds.ids[start:start + batch_size]
            cached = torch.from_numpy(np.asarray(features[[row[s] for s in ids]], np.float32))
            views = torch.tensor([[True, ds.cache.get(s)[1] is not None] for s in ids])
            with autocast(cached.device, self.bf16):
                tokens = model.eval().tokens_from_cache(cached, views)
            yield tokens.float()

    def _loader(self, split: str, sampler: torch.utils.data.Sampler | None = None) -> DataLoader:
        return DataLoader(self.datasets[split], batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                          collate_fn=lambda items: collate(items, self.pad_id), persistent_workers=self.num_workers > 0,
                          pin_memory=torch.cuda.is_available())  # pinned host memory: async copies to the GPU

    def train_dataloader(self) -> DataLoader:
        train = self.datasets["train"]
        lengths = [len(t) for t in train.token_ids]
        weights = None
        if self.config.train.abnormal_weight != 1.0:  # columns 1.. are the findings (0 is No Finding)
            abnormal = (train.labels[:, 1:] * train.label_mask[:, 1:]).sum(1) > 0
            weights = np.where(abnormal, self.config.train.abnormal_weight, 1.0).tolist()
        return self._loader("train", LengthBucketSampler(lengths, self.batch_size, self.seed, weights=weights))

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")


def _fingerprint(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, default=str).encode()).hexdigest()[:12]


def _encoder_fingerprint(model: ReportModel) -> str:
    """Cached features are only valid for these exact encoder weights (random init differs per seed)."""
    sample = torch.cat([p.detach().flatten()[:256].float() for p in model.encoder.parameters()])
    return hashlib.sha1(sample.numpy().tobytes()).hexdigest()[:12]
