"""How often the OOD check flags each kind of input, and what scoring costs (docs/reliability.md).

    PYTHONPATH=src python scripts/ood_flag_rates.py --model runs/demo/run/model \
        --phantom runs/demo/phantom --real ../shared/data/iu_xray/smoke/images [--json out.json]

Flag rates (a study is flagged when any view given is; an image's pooled features do not depend
on its slot, so each image is encoded once and scored against either view's statistics):
  phantom val / test      the model's own kind of images, frontal + lateral as given
  swapped views           phantom test frontals scored in the lateral slot, laterals in the frontal slot
  real radiographs        every PNG under --real, in the frontal slot and in the lateral slot
  non-radiographs         generated here: photograph-like colour noise, a page of rendered text,
                          a synthetic MRI-like slice, a flat grey frame (10 seeds each), in either slot
Latency: one study through `ReportGenerator.generate` with the verdict and without (the same model, the
scoring switched off), alternated, median of each; and the verdict alone (pooling is shared with the
model) over 100 calls, as a share of a call without it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from cxrgen.data.images import load_image
from cxrgen.data.specs import load_studies
from cxrgen.inference import ReportGenerator, pooled_features, study_images, views_to_tensor
from cxrgen.ood import pool


def study_rate(gen: ReportGenerator, feats: np.ndarray, mask: np.ndarray) -> tuple[float, int, float, float]:
    """(share of studies with any view flagged, studies, lowest and median score): pooled features (n, 2, C)
    as given; a study's score is its highest view score."""
    rows = gen.ood.verdicts(torch.from_numpy(feats), torch.from_numpy(mask))
    scores = [max(v["score"] for v in row) for row in rows]
    return (float(np.mean([any(v["flag"] for v in row) for row in rows])), len(rows), float(np.min(scores)),
            float(np.median(scores)))


def slot_rate(gen: ReportGenerator, images: np.ndarray, slot: int) -> tuple[float, int, float, float]:
    """Share of single images (n, C) flagged when given in `slot` (0 frontal, 1 lateral). An image's
    pooled features do not depend on its slot, so each image is encoded once and scored per slot."""
    feats = np.zeros((len(images), 2, images.shape[1]), np.float32)
    feats[:, slot] = images
    mask = np.zeros((len(images), 2), bool)
    mask[:, slot] = True
    return study_rate(gen, feats, mask)


def photo(rng: np.random.Generator, side: int = 512) -> np.ndarray:
    """Colour noise with 1/f-like blobs: a photograph's statistics, not a radiograph's."""
    small = rng.integers(0, 256, (16, 16, 3), np.uint8)
    im = Image.fromarray(small).resize((side, side), Image.BICUBIC)
    detail = rng.normal(0, 20, (side, side, 3))
    return (np.asarray(im, float) + detail).clip(0, 255).astype(np.uint8)


def text_page(rng: np.random.Generator, side: int = 512) -> np.ndarray:
    """A scanned-document stand-in: lines of rendered text on white."""
    im = Image.new("L", (side, side), 245)
    draw = ImageDraw.Draw(im)
    words = ["patient", "report", "findings", "the", "lungs", "are", "clear", "date", "signed", "page", "of"]
    for y in range(20, side - 20, 18):
        draw.text((20, y), " ".join(rng.choice(words, 8)), fill=int(rng.integers(0, 60)))
    return np.asarray(im)


def mri_slice(rng: np.random.Generator, side: int = 512) -> np.ndarray:
    """An axial-MRI-like slice: a dark frame, a bright skull ring, grey brain with darker ventricles."""
    yy, xx = np.mgrid[:side, :side] / side - 0.5
    r = np.sqrt((xx / 0.38) ** 2 + (yy / 0.45) ** 2)
    im = np.where(r < 1.0, 110.0, 5.0) + np.where((r > 0.9) & (r < 1.0), 120, 0)
    im += 40 * np.sin(12 * np.arctan2(yy, xx) + 20 * r) * (r < 0.85)  # gyri-like folds
    vent = np.sqrt(((xx - rng.uniform(-.03, .03)) / 0.08) ** 2 + (yy / 0.15) ** 2) < 1
    im[vent] = 30
    im = Image.fromarray(np.clip(im + rng.normal(0, 8, im.shape), 0, 255).astype(np.uint8))
    return np.asarray(im.filter(ImageFilter.GaussianBlur(2)))


def flat(rng: np.random.Generator, side: int = 512) -> np.ndarray:
    return np.full((side, side), int(rng.integers(30, 220)), np.uint8)


def latency(gen: ReportGenerator, frontal: np.ndarray, lateral: np.ndarray | None, rounds: int) -> dict:
    stats, on, off = gen.ood, [], []
    gen.generate(frontal, lateral)  # warm-up
    for _ in range(rounds):
        for timings, check in ((on, stats), (off, None)):
            gen.ood = check
            t = time.perf_counter()
            gen.generate(frontal, lateral)
            timings.append(time.perf_counter() - t)
    gen.ood = stats
    # the verdict alone (what the check adds to a call), timed over many calls: steadier than the
    # difference of two medians of whole calls on a shared machine
    images, mask = views_to_tensor([frontal], [lateral], gen.config.model.image_size)
    with torch.inference_mode():
        pooled = pool(gen.model.encode_views(images, mask))
        t = time.perf_counter()
        for _ in range(100):
            stats.verdicts(pooled, mask)
    score = (time.perf_counter() - t) / 100
    with_check, without = statistics.median(on), statistics.median(off)
    return {"with_ms": 1e3 * with_check, "without_ms": 1e3 * without, "ratio": with_check / without,
            "verdict_ms": 1e3 * score, "verdict_share": score / without, "rounds": rounds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--phantom", required=True, help="the phantom folder the model was trained on")
    p.add_argument("--real", required=True, help="a folder of real radiograph PNGs")
    p.add_argument("--rounds", type=int, default=10, help="latency: single-study calls of each kind")
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args()
    torch.manual_seed(0)
    gen = ReportGenerator.from_pretrained(args.model)
    if gen.ood is None:
        raise SystemExit(f"{args.model} has no OOD statistics: run `cxrgen model calibrate` first")
    size = gen.config.model.image_size
    out: dict = {"thresholds": {k: v.threshold for k, v in gen.ood.views.items()}}
    studies = load_studies(f"phantom:{args.phantom}")
    feats = {}
    for split in ("val", "test"):
        feats[split] = pooled_features(gen.model, study_images([s for s in studies if s.split == split], size))
        out[f"phantom {split}"] = study_rate(gen, *feats[split])
    x, m = feats["test"]
    both = m.all(1)
    out["phantom test frontals in the lateral slot"] = slot_rate(gen, x[both, 0], 1)
    out["phantom test laterals in the frontal slot"] = slot_rate(gen, x[both, 1], 0)
    real, _ = pooled_features(gen.model, ((load_image(p, size), None) for p in sorted(Path(args.real).glob("*.png"))))
    out["real radiographs, frontal slot"] = slot_rate(gen, real[:, 0], 0)
    out["real radiographs, lateral slot"] = slot_rate(gen, real[:, 0], 1)
    for name, make in (("photograph-like noise", photo), ("rendered text page", text_page),
                       ("MRI-like slice", mri_slice), ("flat grey frame", flat)):
        rng = np.random.default_rng(0)
        synth, _ = pooled_features(gen.model, ((load_image(_png(make(rng)), size), None) for _ in range(10)))
        out[f"{name}, frontal slot"] = slot_rate(gen, synth[:, 0], 0)
        out[f"{name}, lateral slot"] = slot_rate(gen, synth[:, 0], 1)
    test = [s for s in studies if s.split == "test" and s.lateral is not None]
    first = next(study_images(test, size))
    out["latency"] = latency(gen, *first, rounds=args.rounds)
    for k, v in out.items():
        print(f"{k:50s} {v}" if not isinstance(v, tuple) else
              f"{k:50s} {100 * v[0]:5.1f}% of {v[1]:4d}  (score: lowest {v[2]:8.1f}, median {v[3]:8.1f})")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


def _png(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


if __name__ == "__main__":
    main()
