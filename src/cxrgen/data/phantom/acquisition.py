"""From density to a radiograph: positioning, exposure, blur, noise, collimation and side markers.

Everything that differs between two films of the same patient lives here, drawn per study, so a
model cannot tell findings apart by acquisition.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cxrgen.data.phantom.canvas import smooth


@dataclass
class Acquisition:
    tilt: float        # in-plane rotation, degrees
    shift: tuple[float, float]  # patient offset, fraction of the image
    zoom: float        # magnification
    gain: float        # exposure: density -> optical density scale
    gamma: float       # display curve
    blur: float        # focal-spot / motion blur, internal pixels
    noise: float       # quantum noise strength
    collimate: tuple[float, float, float, float]  # unexposed margins (top, bottom, left, right), fraction
    marker: str        # side marker text, "" for none
    marker_xy: tuple[float, float]


def sample_acquisition(rng: np.random.Generator) -> Acquisition:
    margins = tuple(float(m) if rng.random() < 0.25 else 0.0 for m in rng.uniform(0.01, 0.05, 4))
    return Acquisition(
        tilt=rng.normal(0, 1.5), shift=(rng.normal(0, 0.015), rng.normal(0, 0.015)), zoom=rng.uniform(0.95, 1.06),
        gain=rng.uniform(1.1, 1.4), gamma=rng.uniform(0.85, 1.15), blur=rng.uniform(0.3, 0.9),
        noise=rng.uniform(0.01, 0.03), collimate=margins,
        marker=str(rng.choice(["L", "L", "R", "", "L PA"])), marker_xy=(rng.uniform(0.78, 0.9), rng.uniform(0.04, 0.1)),
    )


@lru_cache(maxsize=4)
def _noise_bank(size: int) -> np.ndarray:
    return np.random.default_rng(12345).standard_normal((2 * size, 2 * size), dtype=np.float32)


@lru_cache(maxsize=8)
def _font(px: int) -> ImageFont.ImageFont:
    # load_default(size) decodes an embedded TrueType font on every call: once per process is enough
    try:
        return ImageFont.load_default(size=px)
    except (TypeError, OSError):  # Pillow built without FreeType: the bitmap font, fixed size
        return ImageFont.load_default()


def expose(density: np.ndarray, a: Acquisition, size: int, rng: np.random.Generator, lateral: bool = False) -> np.ndarray:
    """Density map (R x R) -> uint8 radiograph (size x size)."""
    R = density.shape[0]
    # positioning: one affine resample (rotation about the centre, zoom, shift)
    th = np.deg2rad(a.tilt)
    m = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]) / a.zoom  # output -> input, (x, y)
    c = np.array([R / 2, R / 2])
    offset = c - m @ c - np.array(a.shift) * R
    coeffs = (m[0, 0], m[0, 1], offset[0], m[1, 0], m[1, 1], offset[1])
    d = np.asarray(Image.fromarray(density.astype(np.float32)).transform((R, R), Image.AFFINE, coeffs, Image.BILINEAR))
    if a.blur > 0:
        d = smooth(d, a.blur)
    img = 1.0 - np.exp(-a.gain * np.clip(d, 0, None))
    img = np.clip(img, 0, 1) ** a.gamma
    if size != R:
        img = np.asarray(Image.fromarray(img.astype(np.float32)).resize((size, size), Image.BILINEAR))
    # quantum noise, larger where fewer photons reach the detector (bright areas): a window of a
    # fixed per-process noise bank at a random offset, ~10x cheaper than fresh normals at 512 px
    bank = _noise_bank(size)
    oy, ox = rng.integers(0, size, 2)
    img = img + a.noise * (0.5 + img) * bank[oy:oy + size, ox:ox + size]
    t, b, l, r = (int(round(f * size)) for f in a.collimate)
    if t: img[:t] = 0.92
    if b: img[size - b:] = 0.92
    if l: img[:, :l] = 0.92
    if r: img[:, size - r:] = 0.92
    out = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))
    if a.marker:
        px = max(8, size // 22)
        x, y = a.marker_xy
        if lateral:
            x = 1 - x - 0.05
        ImageDraw.Draw(out).text((x * size, y * size), a.marker, fill=245, font=_font(px))
    return np.asarray(out)
