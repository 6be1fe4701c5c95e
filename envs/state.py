"""Domain state: plain JSON data, with copy-on-write tables so that an episode never pays for a copy
of the whole world and never leaks a write back into it.

A world's *base state* is built once (from a seed or from files) and shared by every episode. An
episode works on ``fork(base)``: big collections (users, orders, flights…) become :class:`Table`
views that copy a record the first time it is fetched by key, and everything else is copied outright.
The state hash is kept incrementally: the base's per-record digests are summed once per world, and an
episode only rehashes the records it touched.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, MutableMapping
from typing import Any

_MOD = 1 << 256
_MISSING = object()


def copy_json(value: Any) -> Any:
    """Deep-copy JSON data (dicts, lists, scalars); several times faster than ``copy.deepcopy``."""
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_json(v) for v in value]
    return value


def canonical_json(value: Any) -> str:
    """The one serialisation that hashes use: sorted keys, no whitespace."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_as_json)


def _as_json(value: Any) -> Any:
    if isinstance(value, Table):
        return dict(value.items())
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    raise TypeError(f"state holds a non-JSON value of type {type(value).__name__}")


def _utf8(text: str) -> bytes:
    """``text`` as hashed: UTF-8, a lone surrogate (a tool argument may hold one) as its three bytes."""
    return text.encode("utf-8", "surrogatepass")


def _digest(name: str, key: str, record: Any) -> int:
    blob = _utf8(canonical_json([name, key, record]))
    return int.from_bytes(hashlib.sha256(blob).digest(), "big")


class BaseTable:
    """One table of a world's base state. Never mutated once built; shared by every fork."""

    def __init__(self, name: str, records: dict[str, Any]):
        self.name = name
        self.records = records
        self._digest: int | None = None

    def digest(self) -> int:
        """Sum of the per-record digests, computed on first use and then cached for the world."""
        if self._digest is None:
            self._digest = sum(_digest(self.name, k, r) for k, r in self.records.items()) % _MOD
        return self._digest

    def __len__(self) -> int:
        return len(self.records)


class Table(MutableMapping[str, Any]):
    """A copy-on-write view of a :class:`BaseTable` for one episode.

    ``table[key]`` returns the episode's own copy of the record (made on first access), so tools may
    change it in place as tau-bench's tools do. Iterating with ``values()``/``items()`` yields records
    without copying them: treat those as read-only and fetch by key to change one.
    """

    def __init__(self, base: BaseTable):
        self._base = base
        self._own: dict[str, Any] = {}
        self._deleted: set[str] = set()

    @property
    def name(self) -> str:
        return self._base.name

    def __getitem__(self, key: str) -> Any:
        own = self._own.get(key, _MISSING)
        if own is not _MISSING:
            return own
        if key in self._deleted or key not in self._base.records:
            raise KeyError(key)
        own = self._own[key] = copy_json(self._base.records[key])
        return own

    def __setitem__(self, key: str, value: Any) -> None:
        self._deleted.discard(key)
        self._own[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._own.pop(key, None)
        if key in self._base.records:
            self._deleted.add(key)

    def __contains__(self, key: object) -> bool:
        return key in self._own or (key in self._base.records and key not in self._deleted)

    def __iter__(self) -> Iterator[str]:
        for key in self._base.records:
            if key not in self._deleted:
                yield key
        for key in self._own:
            if key not in self._base.records:
                yield key

    def __len__(self) -> int:
        new = sum(1 for k in self._own if k not in self._base.records)
        return len(self._base.records) - len(self._deleted) + new

    def get_readonly(self, key: str, default: Any = None) -> Any:
        """The record without copying it (read-only); for lookups that only read."""
        own = self._own.get(key, _MISSING)
        if own is not _MISSING:
            return own
        if key in self._deleted:
            return default
        return self._base.records.get(key, default)

    def items(self) -> Iterator[tuple[str, Any]]:  # type: ignore[override]
        for key in self:
            yield key, self.get_readonly(key)

    def values(self) -> Iterator[Any]:  # type: ignore[override]
        for key in self:
            yield self.get_readonly(key)

    def touched(self) -> set[str]:
        """Keys this episode fetched for writing, added or deleted."""
        return set(self._own) | self._deleted

    def changed(self) -> dict[str, Any]:
        """Records that differ from the base (a deleted record maps to ``None``)."""
        out: dict[str, Any] = {}
        for key in self.touched():
            new = self._own.get(key)
            if new != self._base.records.get(key):
                out[key] = new
        return out

    def digest(self) -> int:
        total = self._base.digest()
        for key in self.touched():
            old = self._base.records.get(key, _MISSING)
            if old is not _MISSING:
                total -= _digest(self.name, key, old)
            new = self._own.get(key, _MISSING)
            if new is not _MISSING:
                total += _digest(self.name, key, new)
        return total % _MOD


State = dict[str, Any]
"""A domain state: top-level names mapping to :class:`Table` views or to plain JSON values."""


def make_base(data: dict[str, Any], tables: tuple[str, ...]) -> State:
    """Freeze ``data`` into a world's base state, turning the named collections into tables."""
    return {k: BaseTable(k, v) if k in tables else v for k, v in data.items()}


def fork(base: State) -> State:
    """A fresh episode state over ``base``: tables are copy-on-write, everything else is copied."""
    return {k: Table(v) if isinstance(v, BaseTable) else copy_json(v) for k, v in base.items()}


def state_hash(state: State) -> str:
    """A canonical hash of a state (or a base state); cost grows with what the episode touched."""
    parts = []
    for name in sorted(state):
        value = state[name]
        if isinstance(value, (Table, BaseTable)):
            parts.append(f"{name}:{value.digest():064x}")
        else:
            parts.append(f"{name}={canonical_json(value)}")
    return hashlib.sha256(_utf8("\n".join(parts))).hexdigest()


def to_plain(state: State) -> dict[str, Any]:
    """Materialise a state as plain dicts (costly for big worlds: for tests and small domains)."""
    return {
        k: {rk: copy_json(r) for rk, r in v.items()} if isinstance(v, Table)
        else copy_json(v.records) if isinstance(v, BaseTable) else copy_json(v)
        for k, v in state.items()
    }
