"""Files that survive crashes: JSON lines (task pools, metrics, trajectories, eval outputs), and small files
written whole (:func:`write_atomic`).

An append is one ``write`` of whole lines to a file opened with ``O_APPEND``, fsynced, so a crash
can at worst leave a partial *last* line (a write that fails, on a full disk, is taken back). Reading
skips such a line with a warning; the next append cuts it off first. A last line that is whole but
lacks its newline (a file written by hand) is read, and the next append ends it. A bad line anywhere
else is not a crash's doing, so it is an error naming the line, to a read and to an append alike:
that includes bytes that are not UTF-8 (a last line's too, unless a character is cut short), which
are never replaced (a replaced byte inside a verifier's string literal would silently change what it
compares).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STORAGE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES)
"""What the disk refuses (full, over a quota or a file-size limit, read-only, not ours): a command says it in a
line, exit status 2, not a traceback."""


class RecordsError(ValueError):
    """A bad line that is not just the truncated tail of an interrupted append."""


def _decode(raw: bytes, path: Path, number: int, last: bool) -> str | None:
    """``raw`` as UTF-8; ``None`` for a last line cut inside a character (a crash's doing)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if last and exc.reason == "unexpected end of data":
            return None
        raise RecordsError(f"{path}:{number}: not valid UTF-8: byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} "
                           "of the line (write the file as UTF-8)") from None


def read_lines(path: str | os.PathLike[str]) -> list[tuple[int, str]]:
    """The complete lines of ``path`` with their numbers (blank lines and a partial tail left out).

    A last line without its newline is still returned when it parses as JSON, and dropped with a
    warning when it does not. A line that is not UTF-8 is a :class:`RecordsError`.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    out = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        last = number == len(lines)  # no newline after it: perhaps an interrupted append
        text = _decode(raw, path, number, last)
        if last and (text is None or not _is_json(text)):
            log.warning("%s:%d: skipping a truncated last line", path, number)
            continue
        out.append((number, text))
    return out


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):  # ValueError: bad JSON, or an integer past Python's digit limit
        return False
    return True


def read_jsonl(path: str | os.PathLike[str]) -> list[Any]:
    """Every record of ``path`` ([] when it does not exist); :class:`RecordsError` on a bad line."""
    records = []
    for number, text in read_lines(path):
        try:
            records.append(json.loads(text))
        except json.JSONDecodeError as exc:
            raise RecordsError(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        except (ValueError, RecursionError) as exc:
            raise RecordsError(f"{path}:{number}: not readable JSON ({exc})") from None
    return records


def _end_last_line(fd: int, path: Path) -> None:
    """Make the file end with a line end, so the next line starts clean: a last line without one that
    reads as a record (:func:`read_lines` returns it) gets its newline; an incomplete one, which an
    interrupted append left, is cut off; one that is not UTF-8 is the :class:`RecordsError` reading gives."""
    size = end = os.fstat(fd).st_size
    if size == 0:
        return
    while end > 0:
        start = max(0, end - 65536)
        block = os.pread(fd, end - start, start)
        if end == size and block.endswith(b"\n"):
            return
        cut = block.rfind(b"\n")
        if cut != -1:
            end = start + cut + 1
            break
        end = start
    text = _decode(os.pread(fd, size - end, end), path, os.pread(fd, end, 0).count(b"\n") + 1, last=True)
    if text is not None and _is_json(text):
        os.write(fd, b"\n")
        return
    log.warning("%s: dropping an incomplete last line of %d bytes", path, size - end)
    os.ftruncate(fd, end)


def append_jsonl(path: str | os.PathLike[str], records: Iterable[Any], **dumps: Any) -> int:
    """Append ``records`` as JSON lines in one write; returns how many. ``dumps`` go to ``json.dumps``."""
    lines = [json.dumps(r, **dumps) + "\n" for r in records]
    if not lines:
        return 0
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        _end_last_line(fd, path)
        # A lone surrogate (a string from a JSON escape such as "\ud800") can only sit inside a JSON string,
        # where its escape, written instead, reads back as itself.
        data = "".join(lines).encode("utf-8", "backslashreplace")
        before = os.fstat(fd).st_size
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, f"short write to {path}: {written} of {len(data)} bytes (disk full?)")
            os.fsync(fd)
        except BaseException:  # a full disk, Ctrl-C: take back what got written, as far as the disk lets us
            with contextlib.suppress(OSError):
                os.ftruncate(fd, before)
            raise
    finally:
        os.close(fd)
    return len(lines)


def writable(path: Path) -> bool:
    """Whether ``path`` can be written, or made in the nearest folder above it that exists: a command asks
    before its work, not when it has its results."""
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    return os.access(existing, os.W_OK)


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write ``text`` (UTF-8, or bytes as they are) to ``path`` through a temporary file and a rename: the
    old file or the new, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(text.encode("utf-8") if isinstance(text, str) else text)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
    folder = os.open(path.parent, os.O_RDONLY)  # the rename itself, on disk
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
