"""What tau-bench compatibility needs: upstream's database hash, its way of calling tools, its
golden files, and where its data lives.

tau-bench rewards an episode by comparing a hash of the whole database after the agent's actions with
the hash after replaying the gold actions; :func:`upstream_hash` is that hash, bit for bit, so that
rewards computed here equal upstream's. Upstream-mode tool calls (:mod:`envs.tools`) are made as
upstream's ``Env.step`` makes them (:func:`upstream_tool`, :data:`UNKNOWN_ACTION`). The data itself
is never part of this project: it is read from ``../shared/taubench`` beside the repository, or
from ``$TAUBENCH_DATA_DIR``.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ENV_VAR = "TAUBENCH_DATA_DIR"

UNKNOWN_ACTION = "Unknown action {name}"
"""Upstream's answer to a call of a tool it does not have."""


def upstream_tool(fn: Callable[..., Any], package: str) -> Callable[..., Any]:
    """``fn`` under the name of upstream's copy of it: ``<package>.<name>`` holds a class
    ``<Name>`` (``get_order_details`` -> ``GetOrderDetails``) whose static ``invoke(data, …)`` is
    called as ``invoke(data=…, **arguments)``. Python words the error of a call that does not fit a
    signature with the function's qualified name (and, for an argument given twice, its module),
    so a call whose arguments fit neither ours nor upstream's gets upstream's very text. ``fn``'s
    parameters must be upstream's, state first, named ``data``."""
    copy = types.FunctionType(fn.__code__, fn.__globals__, "invoke", fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__ = fn.__kwdefaults__
    copy.__qualname__ = "".join(word.capitalize() for word in fn.__name__.split("_")) + ".invoke"
    copy.__module__ = f"{package}.{fn.__name__}"
    return copy


def _hashable(item: Any) -> Any:
    """Upstream's ``to_hashable``: mappings become key-sorted tuples of pairs, lists tuples, sets
    sorted tuples; anything else stays itself (so ``str()`` tells ``1`` from ``1.0``, as upstream).
    Exact types are tested first: the ABC check for other mappings is slow on a million values."""
    kind = type(item)
    if kind is str or kind is int or kind is float or kind is bool or item is None:
        return item
    if kind is dict or isinstance(item, Mapping):
        return tuple([(key, _hashable(value)) for key, value in sorted(item.items())])
    if kind is list:
        return tuple([_hashable(element) for element in item])
    if isinstance(item, (set, frozenset)):
        return tuple(sorted(_hashable(element) for element in item))
    return item


def upstream_hash(data: Mapping[str, Any]) -> str:
    """tau-bench's ``consistent_hash(to_hashable(data))``: sha256 of ``str()`` of the canonical form.

    ``data`` is the database as upstream holds it (``{"users": …, "orders": …, …}``); copy-on-write
    tables are mappings too and need not be materialised first. The garbage collector is paused
    meanwhile: the hundreds of thousands of tuples built would trigger it again and again, for
    nothing (they hold no cycles), and it would double the cost.
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        return hashlib.sha256(str(_hashable(data)).encode("utf-8")).hexdigest()
    finally:
        if paused:
            gc.enable()


def load_golden(path: str | Path) -> dict[str, Any]:
    """A golden file: ``{"domain", "split", "initial_data_hash", "tasks": [...]}``, each task with its
    gold ``actions``, the ``tool_outputs`` upstream gave, ``changed_records`` and ``final_data_hash``."""
    try:
        golden = json.loads(Path(path).read_bytes())
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise ValueError(f"{path} is not a tau-bench golden file: not JSON ({error})") from None
    missing = {"domain", "initial_data_hash", "tasks"} - set(golden if isinstance(golden, dict) else ())
    if missing:
        raise ValueError(f"{path} is not a tau-bench golden file: it lacks {sorted(missing)}")
    if not isinstance(golden["domain"], str) or not isinstance(golden["tasks"], list):
        raise ValueError(f"{path} is not a tau-bench golden file: its domain must be text and its tasks a list")
    return golden


def shared_dir() -> Path | None:
    """Where tau-bench's data is: ``$TAUBENCH_DATA_DIR`` when set, else ``../shared/taubench`` next to
    the repository; ``None`` when neither exists (tests that need it then skip)."""
    configured = os.environ.get(ENV_VAR)
    if configured:
        return Path(configured) if Path(configured).is_dir() else None
    default = Path(__file__).resolve().parents[1].parent / "shared" / "taubench"
    return default if default.is_dir() else None
