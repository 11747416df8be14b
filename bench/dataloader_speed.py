"""Image-cache build rate and data-loader throughput, and whether reading a cache needs RAM in proportion to its size.

Usage: .venv/bin/python bench/dataloader_speed.py [--studies 64] [--workers 2] [--train-json OUT_OF_train_speed] [--json OUT]

Synthetic studies (noise PNGs of a radiograph's pixel count, real IU report text) in a temp dir:
1. `ImageCache.build` (the lead's sharded, memory-mapped, resumable cache) with a process pool:
   studies/s; then a resume after one shard is deleted (only that shard is rebuilt).
2. `cxrgen.data.loader.ReportDataset` through a DataLoader, frozen features and fine-tune images,
   0 and N workers: samples/s, to set against what a training step consumes.
3. Memory: anonymous RSS growth while reading every study of a small and an 8x larger cache.
   Memory-mapped pages show up as file-backed RSS, which the kernel can drop at will.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fmt, machine_facts, synthetic_studies, write_json  # noqa: E402


def rss_kinds() -> dict[str, float]:
    """Anonymous and file-backed resident memory now, MB (Linux /proc)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        for key in ("RssAnon", "RssFile"):
            if line.startswith(key + ":"):
                out[key] = int(line.split()[1]) / 1024
    return out


def build_rate(studies, root: Path, size: int, workers: int) -> dict:
    from cxrgen.data.cache import ImageCache

    t = time.perf_counter()
    ImageCache.build(studies, size, root, shard_size=16, workers=workers)
    first = time.perf_counter() - t
    (root / "shard_00001.npy").unlink()  # an interrupted build: one shard missing
    t = time.perf_counter()
    ImageCache.build(studies, size, root, shard_size=16, workers=workers)
    resume = time.perf_counter() - t
    return {"studies": len(studies), "seconds": first, "studies_per_s": len(studies) / first,
            "images_per_s": 2 * len(studies) / first, "resume_one_shard_s": resume}


def loader_rate(studies, cache_dir: Path, size: int, workers: int, batch_size: int = 16) -> dict:
    """Samples/s of the real training dataset + collate, per mode and worker count (2 passes, best)."""
    from cxrgen.data.cache import ImageCache
    from cxrgen.data.tokenizer import ReportTokenizer
    from cxrgen.data.loader import ReportDataset, collate

    cache = ImageCache(cache_dir)
    tok = ReportTokenizer.build([s.findings for s in studies])
    ids = [s.id for s in studies]
    tokens = [tok.encode(s.findings, 100) for s in studies]
    labels = np.zeros((len(ids), 14), np.float32)
    feats = np.lib.format.open_memmap(cache_dir / "features.npy", mode="w+", dtype=np.float16,
                                      shape=(len(ids), 2, 49, 1280))  # EfficientNet-Lite0 tokens at 224 px
    feats.flush()
    rows = {sid: i for i, sid in enumerate(ids)}
    out = {}
    for mode, features in (("frozen features", np.load(cache_dir / "features.npy", mmap_mode="r")), ("fine-tune images", None)):
        ds = ReportDataset(ids, tokens, labels, labels, cache, features, rows if features is not None else None)
        for w in sorted({0, workers}):
            loader = DataLoader(ds, batch_size=batch_size, num_workers=w, collate_fn=lambda b: collate(b, tok.pad_id),
                                pin_memory=torch.cuda.is_available())
            best = float("inf")
            for _ in range(2):
                t = time.perf_counter()
                for _batch in loader:
                    pass
                best = min(best, time.perf_counter() - t)
            out[f"{mode}, {w} workers"] = len(ds) / best
    return out


def rss_growth(root: Path, size: int, small: int, factor: int = 8) -> dict:
    """Anonymous RSS growth while reading every study of caches of `small` and `factor * small` studies."""
    from cxrgen.data.cache import ImageCache

    out = {}
    for n in (small, small * factor):
        studies = synthetic_studies(root / f"img{n}", n, size=64, seed=n)
        cache = ImageCache.build(studies, size, root / f"cache{n}", shard_size=64, workers=1)
        before = rss_kinds()
        total = 0
        for s in studies:
            f, lat = cache.get(s.id)
            total += int(f[0, 0]) + int(lat[0, 0])
        after = rss_kinds()
        out[n] = {"cache_mb": n * 2 * size * size / 2**20, "anon_growth_mb": after["RssAnon"] - before["RssAnon"],
                  "file_growth_mb": after["RssFile"] - before["RssFile"]}
    return out


def markdown(r: dict) -> str:
    b = r["build"]
    lines = [f"Image cache build ({b['studies']} two-view studies, {r['source_px']} px noise PNGs -> {r['size']} px, "
             f"{r['workers']} worker processes): **{fmt(b['studies_per_s'])} studies/s** ({fmt(b['images_per_s'])} images/s); "
             f"resuming after one deleted shard took {fmt(b['resume_one_shard_s'])} s against {fmt(b['seconds'])} s for the full build.",
             "", "| data loader (batch 16, `ReportDataset` + collate) | samples/s |", "|---|---|"]
    lines += [f"| {k} | {fmt(v)} |" for k, v in r["loader"].items()]
    if r.get("train"):
        t = r["train"]["rows"]
        lines += ["", "Against what training consumes (samples/s from bench/train_speed.py in this run): "
                  + "; ".join(f"{k}: {fmt(v['samples_per_s'])}" for k, v in t.items()) + "."]
    lines += ["", "| cache studies | cache size (MB) | anonymous RSS growth reading all (MB) | file-backed (mmap) RSS growth (MB) |",
              "|---|---|---|---|"]
    lines += [f"| {n} | {fmt(v['cache_mb'])} | {fmt(v['anon_growth_mb'])} | {fmt(v['file_growth_mb'])} |"
              for n, v in r["rss"].items()]
    lines += ["", "File-backed pages are the memory map's page cache: the kernel evicts them under pressure, so a "
              "MIMIC-size cache (227,835 studies x 2 views x 224 x 224 bytes: about 23 GB on disk) does not need that much RAM.",
              "Worker processes pay a start-up cost that a few batches do not amortise; over an epoch they add throughput."]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--studies", type=int, default=64)
    p.add_argument("--source-px", type=int, default=512)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--train-json", help="JSON written by bench/train_speed.py, for the consumption comparison")
    p.add_argument("--json")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        studies = synthetic_studies(root / "img", args.studies, size=args.source_px)
        r = {"size": args.size, "source_px": args.source_px, "workers": args.workers,
             "build": build_rate(studies, root / "cache", args.size, args.workers),
             "loader": loader_rate(studies, root / "cache", args.size, args.workers),
             "rss": rss_growth(root, args.size, 64)}
    if args.train_json and Path(args.train_json).exists():
        r["train"] = json.loads(Path(args.train_json).read_text())
    r["machine"] = machine_facts()
    write_json(args.json, {k: v for k, v in r.items() if k != "train"})
    print(markdown(r))


if __name__ == "__main__":
    main()
