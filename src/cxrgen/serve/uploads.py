"""Reading uploaded radiographs safely: in memory only, bounded in bytes and in pixels.

Every way an upload can be wrong maps to one `UploadError(status, message)` that the app
turns into a 4xx with that message. Nothing here writes an image to disk or to a log.
"""
from __future__ import annotations

import io
from collections.abc import AsyncIterator

import numpy as np
from PIL import Image
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from cxrgen.data.images import ImageError, load_image

FIELDS = ("frontal", "lateral")  # frontal required, lateral optional
HOW_TO = "send multipart/form-data with a file field 'frontal' (required) and optionally 'lateral'"


class UploadError(Exception):
    """A bad upload: `status` is the HTTP status, the message says what to fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _InMemoryParser(MultiPartParser):
    # Starlette spools file parts above 1 MB to a temporary file; 0 means "never roll over",
    # so patient images stay in RAM. Memory stays bounded by the body limit below.
    spool_max_size = 0


async def _bounded(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """Pass the body through, failing as soon as it grows past `limit` bytes."""
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > limit:
            raise UploadError(413, f"upload larger than {limit / 2**20:.0f} MB")
        yield chunk


async def read_images(request: Request, max_bytes: int) -> dict[str, bytes]:
    """Parse the multipart body into {"frontal": bytes, "lateral": bytes?}, each at most `max_bytes`."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UploadError(415, f"expected multipart/form-data: {HOW_TO}")
    body_limit = len(FIELDS) * max_bytes + 2**16  # two images plus multipart headers
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > body_limit:
        raise UploadError(413, f"upload of {int(declared) / 2**20:.1f} MB is larger than the limit "
                               f"of {max_bytes / 2**20:.0f} MB per image")
    parser = _InMemoryParser(request.headers, _bounded(request.stream(), body_limit), max_files=8, max_fields=8)
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise UploadError(400, f"malformed multipart body ({e.message}): {HOW_TO}") from e
    except ClientDisconnect as e:  # the client went away mid-upload: nobody reads the answer, nothing to log
        raise UploadError(400, "the client disconnected before the upload was complete") from e
    images: dict[str, bytes] = {}
    for name, value in form.multi_items():
        if name not in FIELDS:
            raise UploadError(422, f"unexpected form field {name!r}: {HOW_TO}")
        if isinstance(value, str):
            raise UploadError(422, f"form field {name!r} must be a file, not text: {HOW_TO}")
        if name in images:
            raise UploadError(422, f"form field {name!r} sent twice: {HOW_TO}")
        data = await value.read()
        if len(data) > max_bytes:
            raise UploadError(413, f"{name} image is {len(data) / 2**20:.1f} MB, above the limit "
                                   f"of {max_bytes / 2**20:.0f} MB")
        images[name] = data
    if "frontal" not in images:
        raise UploadError(422, f"missing form field 'frontal': {HOW_TO}")
    return images


def _sniff(name: str, data: bytes, max_pixels: int) -> None:
    """Check format and pixel count from the header alone, before anything is decoded."""
    if not data:
        raise UploadError(400, f"{name} file is empty (0 bytes)")
    if data[128:132] == b"DICM":
        import pydicom

        try:  # elements are parsed lazily, so a corrupt header can also fail in the reads below
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            width, height = int(ds.get("Columns", 0)), int(ds.get("Rows", 0))
            frames = int(ds.get("NumberOfFrames", 1) or 1)
        except Exception as e:
            raise UploadError(422, f"{name} is an unreadable DICOM file ({e.__class__.__name__})") from e
    else:
        try:
            with Image.open(io.BytesIO(data)) as im:  # reads the header only
                fmt, (width, height), frames = im.format, im.size, 1
        except Exception as e:  # any header the decoders cannot read
            if isinstance(e, Image.DecompressionBombError):
                raise UploadError(413, f"{name} has too many pixels (limit {max_pixels:,})") from e
            raise UploadError(415, f"{name} is not a PNG, JPEG or DICOM image") from e
        if fmt not in ("PNG", "JPEG"):
            raise UploadError(415, f"{name} is a {fmt} image; send PNG, JPEG or DICOM")
    if width * height * frames > max_pixels:
        raise UploadError(413, f"{name} has {width}x{height} pixels, above the limit of {max_pixels:,}")


def decode_upload(name: str, data: bytes, max_pixels: int) -> np.ndarray:
    """Bytes of one uploaded view -> uint8 (H, W), or UploadError with a status that says why not."""
    _sniff(name, data, max_pixels)
    try:
        return load_image(data, max_pixels=max_pixels)
    except ImageError as e:
        raise UploadError(422, f"{name}: {e}") from e
