"""A view under construction: density layers plus the landmarks findings need to place themselves.

Radiographs show attenuation, so every structure adds to (or, for air, subtracts from) a density
map; `acquisition.expose` turns the sum into grey levels. Layers stay separate so findings can
replace lung air (effusion, consolidation) instead of just painting over it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage


@dataclass
class Canvas:
    """One view at the internal resolution R (square). Coordinates are pixels, x to the image's right."""
    R: int
    soft: np.ndarray = None    # soft-tissue thickness
    bone: np.ndarray = None    # bone density
    air: np.ndarray = None     # lung air depth (subtracted)
    fill: np.ndarray = None    # fraction of lung air replaced by fluid/tissue, 0..1
    extra: np.ndarray = None   # added densities: heart blood, nodules, opacities
    metal: np.ndarray = None   # devices: far denser than bone
    marks: dict = field(default_factory=dict)  # landmarks: lung masks, hila, heart box, spine ...

    def __post_init__(self):
        for name in ("soft", "bone", "air", "fill", "extra", "metal"):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros((self.R, self.R), np.float32))

    @property
    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """(y, x) open grids, broadcastable to (R, R)."""
        return _grid(self.R)

    def density(self) -> np.ndarray:
        return self.soft + self.bone - self.air * (1.0 - np.clip(self.fill, 0, 1)) + self.extra + self.metal


_GRIDS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _grid(R: int) -> tuple[np.ndarray, np.ndarray]:
    if R not in _GRIDS:
        _GRIDS[R] = (np.arange(R, dtype=np.float32)[:, None], np.arange(R, dtype=np.float32)[None, :])
    return _GRIDS[R]


def blob(R: int, cx: float, cy: float, rx: float, ry: float, angle: float = 0.0, edge: float = 1.0) -> np.ndarray:
    """A soft-edged filled ellipse (1 inside, 0 outside, ramp `edge` pixels wide); `angle` in radians.
    Computed only inside its bounding window: most blobs cover a few percent of the view."""
    out = np.zeros((R, R), np.float32)
    reach = max(rx, ry) + edge + 2
    y0, y1 = int(max(cy - reach, 0)), int(min(cy + reach + 1, R))
    x0, x1 = int(max(cx - reach, 0)), int(min(cx + reach + 1, R))
    if y0 >= y1 or x0 >= x1:
        return out
    y, x = _grid(R)
    y, x = y[y0:y1], x[:, x0:x1]
    c, s = np.cos(angle), np.sin(angle)
    u, v = (x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c
    r = np.sqrt((u / max(rx, 0.5)) ** 2 + (v / max(ry, 0.5)) ** 2)
    out[y0:y1, x0:x1] = np.clip((1.0 - r) * min(rx, ry) / max(edge, 1e-3) + 0.5, 0.0, 1.0)
    return out


def smooth(a: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; wide blurs run on a 4x smaller copy (same look, ~16x less work)."""
    if sigma < 3:
        return ndimage.gaussian_filter(a, sigma, truncate=3.0)
    R = a.shape[0]
    small = np.asarray(Image.fromarray(a.astype(np.float32)).resize((R // 4, R // 4), Image.BOX))
    small = ndimage.gaussian_filter(small, sigma / 4, truncate=3.0)
    return np.asarray(Image.fromarray(small).resize((R, R), Image.BILINEAR))


def draw(R: int, strokes: list[tuple], blur: float = 0.0) -> np.ndarray:
    """Rasterise PIL strokes into a float map: ("line", xy, width, value), ("ellipse", box, value),
    ("polygon", xy, value), ("rect", box, value), ("arc", box, start, end, width, value)."""
    im = Image.new("F", (R, R), 0.0)
    d = ImageDraw.Draw(im)
    for kind, *a in strokes:
        if kind == "line":
            d.line([tuple(p) for p in a[0]], fill=float(a[2]), width=max(1, int(round(a[1]))), joint="curve")
        elif kind == "ellipse":
            d.ellipse(a[0], fill=float(a[1]))
        elif kind == "polygon":
            d.polygon([tuple(p) for p in a[0]], fill=float(a[1]))
        elif kind == "rect":
            d.rectangle(a[0], fill=float(a[1]))
        elif kind == "arc":
            d.arc(a[0], a[1], a[2], width=max(1, int(round(a[3]))), fill=float(a[4]))
    out = np.asarray(im, dtype=np.float32)
    return smooth(out, blur) if blur > 0 else out.copy()


def noise_field(rng: np.random.Generator, R: int, scale: float) -> np.ndarray:
    """Smooth random field, zero mean and unit std, with features about `scale` pixels wide.
    Drawn at low resolution and upsampled: cheap, and the same look at any R."""
    n = max(4, int(R / max(scale, 1.0)) + 3)
    small = rng.standard_normal((n, n)).astype(np.float32)
    small = ndimage.gaussian_filter(small, 0.8, truncate=3.0)
    out = np.asarray(Image.fromarray(small).resize((R, R), Image.BICUBIC))
    return (out - out.mean()) / (out.std() + 1e-6)
