"""Files: atomic writes, the one JSONL reader and writer, and the one CSV-or-JSONL table reader.

A write goes to a temporary sibling that is renamed into place only once complete, so a crash,
a kill -9 or a full disk never leaves a half-written result under the final name; a full disk
becomes a UserError that names the file and the fix. Folders (checkpoints) are swapped in the
same way by `atomic_dir`.
"""
from __future__ import annotations

import csv
import errno
import io
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


def read_table(path: str | Path, on_bad_row: Callable[[int, str], None] | None = None) -> Iterator[tuple[int, dict]]:
    """(line number, row) of a CSV or JSONL file, told apart by content: a file whose first character
    is `{` or `[` is JSONL (one JSON object a line), anything else CSV with a header row.

    A missing or binary file is a UserError; so is a row that is not an object or has the wrong
    number of fields, or, with `on_bad_row(n, reason)`, it is reported there and skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file; give a CSV or JSONL file") from None

    def bad(n: int, reason: str) -> None:
        if on_bad_row is None:
            raise UserError(f"{path}:{n}: {reason}")
        on_bad_row(n, reason)

    if text.lstrip()[:1] in ("{", "["):
        for n, row in read_jsonl(path, "a JSON object", on_bad_row):
            if isinstance(row, dict):
                yield n, row
            else:
                bad(n, f"JSON line is not an object (got {type(row).__name__})")
        return
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            if None in row or None in row.values():
                bad(reader.line_num, "malformed CSV row (wrong number of fields)")
            else:
                yield reader.line_num, row
    except csv.Error as e:
        raise UserError(f"{path}: cannot read as CSV ({e})") from None


def cell(path: str | Path, n: int, row: dict, column: str, kinds: tuple[type, ...] = (str,)) -> Any:
    """row[column] of `read_table`, or a UserError naming the line and the columns the row has."""
    if column not in row:
        raise UserError(f"{path}:{n}: no column {column!r}; the columns are {', '.join(map(str, row)) or 'none'}")
    if not isinstance(row[column], kinds):
        raise UserError(f"{path}:{n}: {column!r} must be {' or '.join(k.__name__ for k in kinds)}, "
                        f"got {type(row[column]).__name__}")
    return row[column]


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """One JSON object a line, written atomically; `rows` may be a generator (streamed). Returns the count."""
    n = 0
    with atomic_open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
            n += 1
    return n


def read_prediction_rows(path: str | Path, id_column: str = "id", text_column: str = "report") -> dict[str, dict]:
    """{id: {"id", "report"[, "calls"][, "refused"]}} from a CSV or JSONL file of predictions (`read_table`),
    one study a row. `cxrgen generate` writes {"id", "report", "calls"} lines, "calls" being the conditions
    the model's classifier called, and "refused" why no draft was written for that study (its report is
    then empty); other files name their columns with `id_column` and `text_column`."""
    rows: dict[str, dict] = {}
    for n, row in read_table(path):
        sid = str(cell(path, n, row, id_column, (str, int)))
        prediction = {"id": sid, "report": cell(path, n, row, text_column)}
        if "calls" in row:
            if not (isinstance(row["calls"], list) and all(isinstance(c, str) for c in row["calls"])):
                raise UserError(f'{path}:{n}: "calls" must be a list of condition names')
            prediction["calls"] = row["calls"]
        if "refused" in row:
            if not (isinstance(row["refused"], str) and prediction["report"] == ""):
                raise UserError(f'{path}:{n}: a row with "refused" must give the reason as a string and an empty report')
            prediction["refused"] = row["refused"]
        if sid in rows:
            raise UserError(f"{path}:{n}: duplicate id {sid!r}")
        rows[sid] = prediction
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
