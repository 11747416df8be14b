"""Real lung-field shapes: the 517 V7 Labs lung masks shipped inside the torchxrayvision wheel.

Decoding is the cost (all are PNGs, up to 4 megapixels: 20-200 ms each on a busy 2-core machine), so
the renderer draws from the POOL_SIZE masks with the fewest pixels (about 13 ms each), decoded lazily
and cached per process; blank masks (82 of 517) and implausible crops are skipped.
"""
from __future__ import annotations

import importlib.util
import io
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from cxrgen.errors import UserError

TEMPLATE_SIZE = 128  # lung templates are stored as TEMPLATE_SIZE x TEMPLATE_SIZE label maps
POOL_SIZE = 160  # the cheapest-to-decode masks; about 115 of them hold two usable lungs


@lru_cache(maxsize=1)
def _zip() -> zipfile.ZipFile:
    # find_spec locates the wheel without importing it (importing it would import torch: seconds per worker)
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the phantom renderer needs the torchxrayvision package (pip install torchxrayvision)")
    path = Path(spec.submodule_search_locations[0]) / "data" / "semantic_masks_v7labs_lungs.zip"
    if not path.is_file():
        raise UserError(f"lung masks not found in the torchxrayvision wheel: {path}")
    return zipfile.ZipFile(path)


@lru_cache(maxsize=1)
def template_names() -> tuple[str, ...]:
    return tuple(sorted(n for n in _zip().namelist() if not n.endswith("/")))


@lru_cache(maxsize=None)
def lung_template(index: int) -> tuple[np.ndarray, float] | None:
    """Label map (1 = lung on the image's left, i.e. the patient's right; 2 = the other) cropped to
    both lungs and resized to TEMPLATE_SIZE square, plus the crop's height/width ratio.
    None when the mask is blank or does not hold two plausible lungs."""
    im = Image.open(io.BytesIO(_zip().read(template_names()[index])))
    im.draft("L", (2 * TEMPLATE_SIZE, 2 * TEMPLATE_SIZE))  # JPEG: decode at reduced scale
    mask = np.asarray(im.convert("L").resize((2 * TEMPLATE_SIZE, 2 * TEMPLATE_SIZE), Image.NEAREST)) > 127
    lab, n = ndimage.label(mask)
    if n < 2:
        return None
    sizes = np.bincount(lab.ravel())[1:]
    keep = np.argsort(sizes)[::-1][:2] + 1
    if sizes[keep[1] - 1] < 0.02 * mask.size:
        return None
    ys, xs = np.nonzero(np.isin(lab, keep))
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = lab[y0:y1, x0:x1]
    cx = [np.nonzero(crop == k)[1].mean() for k in keep]
    right_first = keep if cx[0] < cx[1] else keep[::-1]  # image-left lung first
    out = np.zeros(crop.shape, np.uint8)
    out[crop == right_first[0]] = 1
    out[crop == right_first[1]] = 2
    aspect = (y1 - y0) / (x1 - x0)
    if not 0.55 < aspect < 1.3:
        return None
    small = np.asarray(Image.fromarray(out).resize((TEMPLATE_SIZE, TEMPLATE_SIZE), Image.NEAREST))
    return small, float(aspect)


@lru_cache(maxsize=1)
def template_pool() -> tuple[int, ...]:
    """Indices of the POOL_SIZE masks with the fewest pixels (read from the PNG headers only)."""
    z = _zip()
    pixels = [np.prod(Image.open(io.BytesIO(z.read(n))).size) for n in template_names()]
    return tuple(int(i) for i in np.argsort(pixels, kind="stable")[:POOL_SIZE])


def pick_template(rng: np.random.Generator) -> tuple[int, np.ndarray, float]:
    """A random usable template (mask index, label map, aspect); deterministic for the generator state."""
    pool = template_pool()
    start = int(rng.integers(len(pool)))
    for k in range(len(pool)):
        t = lung_template(pool[(start + k) % len(pool)])
        if t is not None:
            return pool[(start + k) % len(pool)], t[0], t[1]
    raise UserError("no usable lung template in the torchxrayvision wheel")
