"""Task pools: CaTs in a JSONL file, one per line.

Appends go through one ``write`` on a file opened with ``O_APPEND`` and are fsynced, so a crash can
at worst leave a partial *last* line; loading skips such a line with a warning, and the next append
cuts it off first. Every complete line stays intact.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from envs.cat import CatFormatError, CodeAsTask

log = logging.getLogger(__name__)


class PoolError(ValueError):
    """A pool file with a bad line that is not just a crash's truncated tail."""


def load_pool(path: str | os.PathLike[str], domain: str | None = None) -> list[CodeAsTask]:
    """All tasks in ``path`` (only those of ``domain`` when given)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"task pool {path} does not exist")
    data = path.read_bytes()
    lines = data.split(b"\n")
    tasks = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            task = CodeAsTask.loads(raw.decode("utf-8"))
        except (CatFormatError, UnicodeDecodeError) as exc:
            if number == len(lines):  # no newline after it: the tail of an interrupted append
                log.warning("%s:%d: skipping a truncated last line (%s)", path, number, exc)
                continue
            raise PoolError(f"{path}:{number}: {exc}") from None
        if domain is None or task.domain == domain:
            tasks.append(task)
    return tasks


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


def append_pool(path: str | os.PathLike[str], tasks: Iterable[CodeAsTask]) -> int:
    """Append ``tasks`` atomically (all their lines in one write); returns how many."""
    lines = [t.dumps() + "\n" for t in tasks]
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
