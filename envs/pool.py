"""Task pools: CaTs in a JSON-lines file, one per line, crash-safe as :mod:`envs.records` files are.

Loading fails loudly, naming the file and line: a line that is not UTF-8 or not a CaT, a task id
seen before (``gym.make`` reaches tasks by id, so a second one would be unreachable), and a verifier
that does not compile (it would only ever score 0). Compiling runs none of the task's code.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from envs.cat import CodeAsTask
from envs.records import RecordsError, append_jsonl, read_lines

log = logging.getLogger(__name__)


class PoolError(RecordsError):
    """A pool file with a bad line that is not just a crash's truncated tail."""


def verifier_problem(source: str) -> str | None:
    """Why ``source`` does not compile (with the verifier's own line), or ``None`` when it does."""
    try:
        compile(source, "<verifier>", "exec", dont_inherit=True)
    except SyntaxError as exc:
        return f"{exc.msg} (verifier line {exc.lineno})"
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes; nesting past the compiler's limits
        return str(exc) or type(exc).__name__
    return None


def load_pool(path: str | os.PathLike[str], domain: str | None = None, dedupe: bool = False,
              compiled_only: bool = False, label: str | None = None) -> list[CodeAsTask]:
    """All tasks in ``path`` (only those of ``domain`` when given). A task id seen before is a
    :class:`PoolError`, or with ``dedupe`` a later copy that is left out (with a warning). So is a
    verifier that does not compile, or with ``compiled_only`` its task is left out (a record of
    proposals, such as a run's ``parsed.jsonl``, holds such tasks by design). ``label`` reads only
    the tasks whose provenance has that label: such a record holds the proposals of several stages,
    under their labels, and one task may stand under more than one."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"task pool {path} does not exist")
    try:
        lines = read_lines(path)
    except RecordsError as exc:
        raise PoolError(str(exc)) from None
    tasks = []
    first_line: dict[str, int] = {}
    for number, line in lines:
        try:
            task = CodeAsTask.loads(line)
        except (ValueError, RecursionError) as exc:  # CatFormatError, or JSON past Python's limits
            raise PoolError(f"{path}:{number}: {exc}") from None
        if label is not None and task.provenance.get("label") != label:
            continue
        if task.id in first_line:
            if not dedupe:
                raise PoolError(f"{path}:{number}: task id {task.id!r} is already on line {first_line[task.id]}; "
                                "ids must be unique (`python -m envs.filter POOL --dedupe --out NEW` keeps the first)")
            log.warning("%s:%d: leaving out a second task %r (first on line %d)", path, number, task.id,
                        first_line[task.id])
            continue
        first_line[task.id] = number
        if problem := verifier_problem(task.verifier):
            if not compiled_only:
                raise PoolError(f"{path}:{number}: task {task.id!r}: its verifier does not compile: {problem}")
            log.info("%s:%d: leaving out task %r: its verifier does not compile (%s)", path, number, task.id, problem)
            continue
        if domain is None or task.domain == domain:
            tasks.append(task)
    return tasks


def append_pool(path: str | os.PathLike[str], tasks: Iterable[CodeAsTask]) -> int:
    """Append ``tasks`` atomically (all their lines in one write); returns how many. A last line that is
    not UTF-8 (not a crash's tail) is the :class:`PoolError` loading gives."""
    try:
        return append_jsonl(path, (t.to_json() for t in tasks), ensure_ascii=False, separators=(",", ":"))
    except RecordsError as exc:
        raise PoolError(str(exc)) from None
