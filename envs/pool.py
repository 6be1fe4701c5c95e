"""Task pools: CaTs in a JSON-lines file, one per line, crash-safe as :mod:`envs.records` files are."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from envs.cat import CatFormatError, CodeAsTask
from envs.records import append_jsonl, read_lines


class PoolError(ValueError):
    """A pool file with a bad line that is not just a crash's truncated tail."""


def load_pool(path: str | os.PathLike[str], domain: str | None = None) -> list[CodeAsTask]:
    """All tasks in ``path`` (only those of ``domain`` when given)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"task pool {path} does not exist")
    tasks = []
    for number, line in read_lines(path):
        try:
            task = CodeAsTask.loads(line)
        except CatFormatError as exc:
            raise PoolError(f"{path}:{number}: {exc}") from None
        if domain is None or task.domain == domain:
            tasks.append(task)
    return tasks


def append_pool(path: str | os.PathLike[str], tasks: Iterable[CodeAsTask]) -> int:
    """Append ``tasks`` atomically (all their lines in one write); returns how many."""
    return append_jsonl(path, (t.to_json() for t in tasks), ensure_ascii=False, separators=(",", ":"))
