"""Files: atomic writes, and the one JSONL reader and writer.

A write goes to a temporary sibling that is renamed into place only once complete, so a crash,
a kill -9 or a full disk never leaves a half-written result under the final name; a full disk
becomes a UserError that names the file and the fix. Folders (checkpoints) are swapped in the
same way by `atomic_dir`.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from cxrgen.errors import UserError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no space, quota exceeded, file size limit
PREDICTION_LINE = '{"id": ..., "report": ...}'


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


def finish_interrupted_swap(directory: str | Path) -> None:
    """A kill between `atomic_dir`'s two renames leaves the previous folder only as .NAME.old: put it back."""
    directory = Path(directory)
    old = directory.with_name(f".{directory.name}.old")
    if not directory.exists() and old.is_dir():
        old.rename(directory)


@contextmanager
def atomic_dir(directory: str | Path) -> Iterator[Path]:
    """Yield an empty temporary sibling folder; when the block succeeds it replaces `directory`.

    The old folder is renamed to .NAME.old, the new one into place, and the old one removed; a
    reader calls `finish_interrupted_swap` first, so a kill between the two renames loses nothing.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    finish_interrupted_swap(directory)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        yield tmp
        old = None
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            directory.rename(old)
        tmp.rename(directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(e):
            raise disk_full_error(directory, e) from e
        raise


def read_jsonl(path: str | Path, expected: str,
               on_bad_line: Callable[[int, str], None] | None = None) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) of each non-blank line; `expected` describes a line for the error messages.

    A line that is not JSON is a UserError, or, with `on_bad_line(n, reason)`, reported there and skipped.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")  # not splitlines(): JSON may hold a raw U+2028
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file; give a JSONL file of {expected} lines") from None
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                if on_bad_line is not None:
                    on_bad_line(n, f"malformed JSON line ({e.msg})")
                    continue
                raise UserError(f"{path}:{n}: not valid JSON ({e.msg}); each line must be {expected}") from None


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """One JSON object a line, written atomically; `rows` may be a generator (streamed). Returns the count."""
    n = 0
    with atomic_open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
            n += 1
    return n


def read_prediction_rows(path: str | Path) -> dict[str, dict]:
    """{id: row} from a JSONL file of {"id": ..., "report": ...} lines (what `cxrgen generate` writes;
    its rows may also carry "calls", the conditions the model's classifier called, and "refused", why no
    draft was written for that study: its report is then empty)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"predictions file not found: {path}")
    rows: dict[str, dict] = {}
    for n, row in read_jsonl(path, PREDICTION_LINE):
        if not isinstance(row, dict) or not isinstance(row.get("id"), (str, int)) or not isinstance(row.get("report"), str):
            raise UserError(f'{path}:{n}: each line must be {{"id": "...", "report": "..."}}')
        if "calls" in row and not (isinstance(row["calls"], list) and all(isinstance(c, str) for c in row["calls"])):
            raise UserError(f'{path}:{n}: "calls" must be a list of condition names')
        if "refused" in row and not (isinstance(row["refused"], str) and row["report"] == ""):
            raise UserError(f'{path}:{n}: a row with "refused" must give the reason as a string and an empty report')
        sid = str(row["id"])
        if sid in rows:
            raise UserError(f"{path}:{n}: duplicate id {sid!r}")
        rows[sid] = row
    if not rows:
        raise UserError(f'{path}: no predictions (empty file); write it with `cxrgen generate --data SPEC --output '
                        f'{path}` or give one {{"id": ..., "report": ...}} line per study')
    return rows


def read_predictions(path: str | Path) -> dict[str, str]:
    """{id: report} from a predictions JSONL file (see `read_prediction_rows`)."""
    return {sid: row["report"] for sid, row in read_prediction_rows(path).items()}


def write_predictions(preds: dict[str, str], path: str | Path) -> int:
    """{id: report} as the JSONL that `cxrgen eval` reads."""
    return write_jsonl(path, ({"id": k, "report": v} for k, v in preds.items()))
