"""Decode chest radiographs (PNG, JPEG, DICOM) into uint8 grayscale arrays.

Everything returns `np.ndarray` (H, W) uint8. Bad input raises `ImageError` with a message a
user can act on; nothing here writes the image anywhere.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 50_000_000  # ~7k x 7k: above any radiograph, below a decompression bomb


class ImageError(ValueError):
    """The bytes are not a usable image (not an image, truncated, too large, no pixel data)."""


def _is_dicom(data: bytes) -> bool:
    return len(data) > 132 and data[128:132] == b"DICM"


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Window 8/12/16-bit or float pixels to 0..255 by their own (finite) range."""
    arr = arr.astype(np.float32)
    finite = np.isfinite(arr)
    if not finite.any():
        raise ImageError("image has no finite pixel values (all NaN or infinite)")
    lo, hi = float(arr[finite].min()), float(arr[finite].max())
    arr = np.clip(np.nan_to_num(arr, nan=lo), lo, hi)  # NaN -> the darkest value, +-inf -> the range's ends
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    return np.round((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _decode_dicom(data: bytes, max_pixels: int) -> np.ndarray:
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as e:
        raise ImageError(f"unreadable DICOM file ({e.__class__.__name__}: {e})") from e
    try:  # pydicom parses elements lazily: a corrupt header can fail at any access below
        if "PixelData" not in ds:
            raise ImageError("DICOM file has no pixel data")
        rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
        if rows * cols > max_pixels:
            raise ImageError(f"image has {rows}x{cols} pixels, above the limit of {max_pixels}")
        arr = ds.pixel_array
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    except ImageError:
        raise
    except Exception as e:
        raise ImageError(f"cannot decode DICOM pixel data ({e.__class__.__name__}: {e})") from e
    if arr.ndim == 4:  # multi-frame colour: first frame
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):  # RGB
        arr = arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    elif arr.ndim == 3:  # multi-frame grayscale: first frame
        arr = arr[0]
    out = _to_uint8(arr)
    if photometric == "MONOCHROME1":  # bright = low attenuation: invert to the usual look
        out = 255 - out
    return out


def _decode_pil(data: bytes, max_pixels: int) -> np.ndarray:
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                if im.width * im.height > max_pixels:
                    raise ImageError(f"image has {im.width}x{im.height} pixels, above the limit of {max_pixels}")
                im.load()  # forces full decode: truncated files fail here
                if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                    return _to_uint8(np.asarray(im))
                if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                    im = im.convert("RGBA")
                    background = Image.new("RGBA", im.size, (0, 0, 0, 255))
                    im = Image.alpha_composite(background, im)
                return np.asarray(im.convert("L"), dtype=np.uint8).copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"image is too large (decompression bomb guard): {e}") from e
    except UnidentifiedImageError as e:
        raise ImageError("not an image (PNG, JPEG or DICOM expected)") from e
    except ImageError:
        raise
    except Exception as e:  # decoders fail in many ways (OSError, SyntaxError, EOFError, struct.error...) on bad bytes
        raise ImageError(f"truncated or corrupt image ({e})") from e
    finally:
        Image.MAX_IMAGE_PIXELS = old


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Bytes of a PNG, JPEG or DICOM file -> uint8 (H, W); MONOCHROME1 inverted, colour to gray."""
    if not data:
        raise ImageError("empty file (0 bytes)")
    if _is_dicom(data):
        return _decode_dicom(data, max_pixels)
    return _decode_pil(data, max_pixels)


def resize(img: np.ndarray, size: int) -> np.ndarray:
    """Square resize (R2Gen convention: aspect ratio not kept), area filter for downsampling."""
    if img.shape == (size, size):
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0))


def load_image(src: str | Path | bytes, size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a radiograph from a path or bytes, optionally resized to `size` x `size`."""
    if isinstance(src, (str, Path)):
        path = Path(src)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ImageError(f"{path}: file not found") from None
        except OSError as e:
            raise ImageError(f"{path}: cannot read ({e.strerror})") from e
        try:
            img = decode_image(data, max_pixels)
        except ImageError as e:
            raise ImageError(f"{path}: {e}") from e
    else:
        img = decode_image(bytes(src), max_pixels)
    return resize(img, size) if size else img
