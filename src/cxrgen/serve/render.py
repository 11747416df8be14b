"""Images for the page, as data URLs: a small preview of each view and the attention heatmap.

The browser cannot show DICOM, so the page displays what the server decoded. Both are built
in memory and only ever returned to the client that uploaded the image.
"""
from __future__ import annotations

import base64
import io

import matplotlib
import numpy as np
from PIL import Image

PREVIEW_SIDE = 512  # longest side of the preview, in pixels


def _data_url(im: Image.Image, fmt: str, **save_args: object) -> str:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **save_args)
    mime = "image/png" if fmt == "PNG" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def preview(img: np.ndarray) -> tuple[str, tuple[int, int]]:
    """uint8 (H, W) -> (JPEG data URL with the longest side at most PREVIEW_SIDE, (width, height))."""
    im = Image.fromarray(img)
    im.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), Image.Resampling.LANCZOS)
    return _data_url(im, "JPEG", quality=85), im.size


def heatmap(attention: np.ndarray, size: tuple[int, int]) -> str:
    """(h, w) attention weights -> transparent PNG data URL of `size` (width, height).

    The model sees the whole image squashed to a square, so its attention grid is stretched
    back over the full preview. Colour and opacity both follow the weight, so areas the
    model ignored stay clear.
    """
    att = np.nan_to_num(np.asarray(attention, np.float32))
    lo, hi = float(att.min()), float(att.max())
    att = (att - lo) / (hi - lo) if hi > lo else np.zeros_like(att)
    grid = Image.fromarray(att).resize(size, Image.Resampling.BICUBIC)
    weights = np.clip(np.asarray(grid), 0.0, 1.0)
    rgba = matplotlib.colormaps["inferno"](weights)  # (H, W, 4) floats in 0..1
    rgba[..., 3] = 0.75 * weights
    return _data_url(Image.fromarray((rgba * 255).astype(np.uint8)), "PNG")
