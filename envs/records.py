"""JSON-lines files that survive crashes: task pools, metrics, trajectories, eval outputs.

An append is one ``write`` of whole lines to a file opened with ``O_APPEND``, fsynced, so a crash
can at worst leave a partial *last* line. Reading skips such a line with a warning; the next append
cuts it off first. A bad line anywhere else is not a crash's doing, so it is an error naming the line.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class RecordsError(ValueError):
    """A bad line that is not just the truncated tail of an interrupted append."""


def read_lines(path: str | os.PathLike[str]) -> list[tuple[int, str]]:
    """The complete lines of ``path`` with their numbers (blank lines and a partial tail left out).

    A last line without its newline is still returned when it parses as JSON, and dropped with a
    warning when it does not.
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
        text = raw.decode("utf-8", "replace")
        if number == len(lines):  # no newline after it: perhaps an interrupted append
            try:
                json.loads(text)
            except json.JSONDecodeError:
                log.warning("%s:%d: skipping a truncated last line", path, number)
                continue
        out.append((number, text))
    return out


def read_jsonl(path: str | os.PathLike[str]) -> list[Any]:
    """Every record of ``path`` ([] when it does not exist); :class:`RecordsError` on a bad line."""
    records = []
    for number, text in read_lines(path):
        try:
            records.append(json.loads(text))
        except json.JSONDecodeError as exc:
            raise RecordsError(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    return records


def _drop_partial_tail(fd: int, path: Path) -> None:
    """Cut off the incomplete last line an interrupted append left, so the next line starts clean."""
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
        _drop_partial_tail(fd, path)
        data = "".join(lines).encode("utf-8")
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"short write to {path}: {written} of {len(data)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)
    return len(lines)
