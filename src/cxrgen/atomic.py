"""Atomic file writes: a temporary sibling, renamed into place only once complete.

A crash, a kill -9 or a full disk therefore never leaves a half-written result under the
final name; a full disk becomes a UserError that names the file and the fix.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from cxrgen.errors import UserError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no space, quota exceeded, file size limit


def is_disk_full(e: BaseException) -> bool:
    """An OSError with a disk-full errno, or a Rust library's error that carries one (safetensors)."""
    if isinstance(e, OSError):
        return e.errno in DISK_FULL
    return any(f"(os error {n})" in str(e) for n in DISK_FULL)


def disk_full_error(path: str | Path, e: BaseException) -> UserError:
    reason = getattr(e, "strerror", None) or e
    return UserError(f"cannot write {path}: {reason} (disk full?); free some space or write elsewhere")


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs) -> Iterator[IO]:
    """`open()` for writing whose result appears at `path` only if the block finishes without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # same folder, so the rename is atomic
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if is_disk_full(e):
            raise disk_full_error(path, e) from e
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)
