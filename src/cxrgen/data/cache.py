"""Preprocessed image cache: every radiograph decoded and resized once, then memory-mapped.

Layout of a cache folder:
  index.json             size, shard size, the study ids in order, and their source image paths
  shard_00000.npy        uint8 (n, 2, size, size): frontal and lateral (zeros when absent)
  shard_00000.valid.npy  bool (n, 2): which of the two images decoded

Shards are written atomically (temp file, then rename) by a pool of workers, so an interrupted
build resumes where it stopped, and memory use does not grow with the dataset (MIMIC-CXR has
377k images): training reads shards through `np.load(mmap_mode="r")`.
"""
from __future__ import annotations

import io
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cxrgen.io import atomic_open, atomic_write_text
from cxrgen.data.images import ImageError, load_image
from cxrgen.data.studies import Study

_logger = logging.getLogger(__name__)


def _shard_name(i: int) -> str:
    return f"shard_{i:05d}"


def _study_sources(s: Study) -> list[str | None]:
    f, l = s.frontal, s.lateral
    return [str(f.path) if f and f.path else None, str(l.path) if l and l.path else None]


def _build_shard(args) -> tuple[int, int]:
    """Decode one shard's images; returns (shard index, number of images that failed)."""
    out_dir, index, sources, size = args
    arr = np.zeros((len(sources), 2, size, size), np.uint8)
    valid = np.zeros((len(sources), 2), bool)
    failed = 0
    for i, pair in enumerate(sources):
        for v, src in enumerate(pair):
            if src is None:
                continue
            try:
                arr[i, v] = load_image(src, size)
                valid[i, v] = True
            except ImageError as e:
                failed += 1
                _logger.debug("cache: skipping %s", e)
    base = Path(out_dir) / _shard_name(index)
    for suffix, data in ((".valid.npy", valid), (".npy", arr)):  # data last: its presence marks "done"
        buf = io.BytesIO()  # np.save straight to a file hides a full disk's errno; f.write keeps it
        np.save(buf, data)
        with atomic_open(base.with_name(base.name + suffix), "wb") as f:  # per-process temporary name
            f.write(buf.getbuffer())
    return index, failed


class ImageCache:
    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.index = json.loads((self.dir / "index.json").read_text())
        self.size = self.index["size"]
        self.shard_size = self.index["shard_size"]
        self.position = {sid: i for i, sid in enumerate(self.index["ids"])}
        self._shards: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def build(cls, studies: list[Study], size: int, directory: str | Path, shard_size: int = 256,
              workers: int | None = None) -> "ImageCache":
        """Build (or resume, or reuse) the cache of `studies` at `size` x `size` pixels."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        index = {"size": size, "shard_size": shard_size, "ids": [s.id for s in studies],
                 "sources": [_study_sources(s) for s in studies]}
        index_path = directory / "index.json"
        if index_path.exists() and json.loads(index_path.read_text()) != index:
            _logger.info("cache at %s was built for other studies or size: rebuilding", directory)
            for p in directory.glob("shard_*"):
                p.unlink()
        if not index_path.exists() or json.loads(index_path.read_text()) != index:
            atomic_write_text(index_path, json.dumps(index))  # DDP ranks only ever read a whole index
        n_shards = (len(studies) + shard_size - 1) // shard_size
        todo = [i for i in range(n_shards) if not (directory / f"{_shard_name(i)}.npy").exists()]
        jobs = [(str(directory), i, index["sources"][i * shard_size:(i + 1) * shard_size], size) for i in todo]
        failed = 0
        if jobs:
            workers = workers or min(len(jobs), os.cpu_count() or 1)
            bar = tqdm(total=sum(len(j[2]) for j in jobs), desc=f"caching images ({size}px)", unit="study", disable=None)
            if workers == 1:
                results = map(_build_shard, jobs)
            else:
                pool = ProcessPoolExecutor(workers)
                results = pool.map(_build_shard, jobs)
            for i, f in results:
                failed += f
                bar.update(len(jobs[todo.index(i)][2]))
            bar.close()
            if workers != 1:
                pool.shutdown()
        cache = cls(directory)
        if failed:
            _logger.warning("image cache: %d image(s) could not be read and are skipped (see `cxrgen data check`)", failed)
        return cache

    def _shard(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k not in self._shards:
            base = self.dir / _shard_name(k)
            self._shards[k] = (np.load(f"{base}.npy", mmap_mode="r"), np.load(f"{base}.valid.npy"))
        return self._shards[k]

    def __contains__(self, study_id: str) -> bool:
        return study_id in self.position

    def __len__(self) -> int:
        return len(self.position)

    def get(self, study_id: str) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(frontal, lateral) uint8 arrays, None for an image that is absent or failed to decode."""
        i = self.position[study_id]
        arr, valid = self._shard(i // self.shard_size)
        j = i % self.shard_size
        return (np.asarray(arr[j, 0]) if valid[j, 0] else None, np.asarray(arr[j, 1]) if valid[j, 1] else None)

    def usable_ids(self) -> list[str]:
        """Studies whose frontal image decoded: the ones training can use."""
        out = []
        for k in range((len(self.position) + self.shard_size - 1) // self.shard_size):
            _, valid = self._shard(k)
            ids = self.index["ids"][k * self.shard_size:(k + 1) * self.shard_size]
            out += [sid for sid, ok in zip(ids, valid[:, 0]) if ok]
        return out
