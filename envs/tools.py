"""Tools: plain Python functions ``fn(state, **arguments) -> str``, one per tool.

Their schemas (OpenAI function format, as chat templates and tau-bench use) come from the type
hints and the Google-style docstring through transformers' ``get_json_schema``; the first
parameter, the episode state, is documented there but never shown to the agent.

A :class:`Toolset` runs calls in one of two modes:

- ``strict`` (the default, for training: it teaches better habits): a call is checked against the
  schema before the tool runs, so a wrong name, argument or type comes back as an error text the
  agent can read, and a call that fails half-way is undone, so a failed call never changes the
  state;
- ``upstream`` (for benchmarks whose tools ours reproduce, e.g. tau-bench's): calls are handled as
  upstream's env handles them, with no checks, upstream's error texts, and whatever a failing call
  wrote before it failed kept, so that an episode scores as it would upstream.

A tool is written once, in upstream's order of reading, checking and writing; the few places where
the modes part are marked by :func:`tool_mode`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

from transformers.utils import get_json_schema

from envs.state import State, Table, copy_json
from envs.taubench import UNKNOWN_ACTION, upstream_tool

Tool = Callable[..., str]
ToolMode = Literal["strict", "upstream"]

_MODE: ContextVar[ToolMode] = ContextVar("tool_mode", default="strict")
_ABSENT = object()


def tool_mode() -> ToolMode:
    """The mode of the tool call in progress, for a tool whose upstream behaviour strict mode
    improves on (e.g. upstream's fourth booking overwrites its third)."""
    return _MODE.get()


class UpstreamFailure(Exception):
    """A call on which upstream's own env fails (e.g. a tool that answers no text), which ends its
    episode with reward 0; the env ends the episode the same way."""


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list, tuple),
    "object": (dict,),
    "null": (type(None),),
}


def tool_schema(fn: Tool) -> dict[str, Any]:
    """The agent-facing schema of a tool: ``get_json_schema`` without the state parameter."""
    schema = get_json_schema(fn)
    function = schema["function"]
    function.pop("return", None)
    params = function["parameters"]
    state_param = next(iter(params["properties"]))
    params["properties"].pop(state_param)
    params["required"] = [p for p in params.get("required", []) if p != state_param]
    return schema


def _type_ok(value: Any, spec: dict[str, Any]) -> bool:
    kinds = spec.get("type")
    if kinds is None:
        return True
    kinds = kinds if isinstance(kinds, list) else [kinds]
    for kind in kinds:
        allowed = _JSON_TYPES.get(kind, (object,))
        if kind in ("integer", "number") and isinstance(value, bool):
            continue
        if isinstance(value, allowed):
            if kind == "array" and "items" in spec:
                return all(_type_ok(v, spec["items"]) for v in value)
            return True
    return False


def check_arguments(schema: dict[str, Any], arguments: Any) -> str | None:
    """Why ``arguments`` do not fit ``schema``, or ``None`` when they do."""
    name = schema["function"]["name"]
    params = schema["function"]["parameters"]
    props: dict[str, Any] = params.get("properties", {})
    if not isinstance(arguments, dict):
        return f"Error: the arguments of {name} must be a JSON object, got {type(arguments).__name__}"
    unknown = [a for a in arguments if a not in props]
    if unknown:
        return (f"Error: {name} got unexpected argument(s) {', '.join(map(repr, unknown))}; "
                f"it takes {', '.join(props) or 'no arguments'}")
    missing = [p for p in params.get("required", []) if p not in arguments]
    if missing:
        return f"Error: {name} is missing required argument(s) {', '.join(map(repr, missing))}"
    for arg, value in arguments.items():
        spec = props[arg]
        if not _type_ok(value, spec):
            return (f"Error: argument {arg!r} of {name} must be of type {spec.get('type')}, "
                    f"got {type(value).__name__}")
        if "enum" in spec and value not in spec["enum"]:
            return f"Error: argument {arg!r} of {name} must be one of {spec['enum']}, got {value!r}"
    return None


class _Recorded(MutableMapping[str, Any]):
    """A table as one strict call sees it: the first fetch of each record remembers the record as
    it was, so that a call that fails half-way can be undone. A record the episode had not fetched
    yet is remembered for free (the world's own copy, never changed); one it had is copied."""

    def __init__(self, table: Table):
        self.table = table
        self.before: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key in self.before:
            return self.table[key]
        before = self.table.get_readonly(key, _ABSENT)
        record = self.table[key]
        self.before[key] = copy_json(record) if record is before else before
        return record

    def _keep(self, key: str) -> None:
        if key not in self.before:
            before = self.table.get_readonly(key, _ABSENT)
            self.before[key] = before if before is _ABSENT else copy_json(before)

    def __setitem__(self, key: str, value: Any) -> None:
        self._keep(key)
        self.table[key] = value

    def __delitem__(self, key: str) -> None:
        self._keep(key)
        del self.table[key]

    def __contains__(self, key: object) -> bool:
        return key in self.table

    def __iter__(self) -> Iterator[str]:
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)

    def get_readonly(self, key: str, default: Any = None) -> Any:
        return self.table.get_readonly(key, default)

    def items(self) -> Iterator[tuple[str, Any]]:  # type: ignore[override]
        return self.table.items()

    def values(self) -> Iterator[Any]:  # type: ignore[override]
        return self.table.values()

    def undo(self) -> None:
        for key, record in self.before.items():
            if record is not _ABSENT:
                self.table[key] = copy_json(record)  # never the world's own copy, which others share
            elif key in self.table:
                del self.table[key]


def _undoable_call(tool: Tool, state: State, arguments: dict[str, Any]) -> str:
    """``tool(state, **arguments)``; if it raises, the state is put back as it was and the
    exception raised again. Tables are journalled record by record (copying one is cheap, copying
    a whole table is not); other values are copied whole."""
    view = {k: _Recorded(v) if isinstance(v, Table) else v for k, v in state.items()}
    plain = {k: copy_json(v) for k, v in state.items() if not isinstance(v, Table)}
    try:
        output = tool(view, **arguments)
    except Exception:
        for value in view.values():
            if isinstance(value, _Recorded):
                value.undo()
        state.update(plain)
        raise
    for key in set(state) - set(view):
        del state[key]
    state.update({k: v.table if isinstance(v, _Recorded) else v for k, v in view.items()})
    return output


@dataclass
class Toolset:
    """The tools of one domain, by name, with their schemas."""

    tools: dict[str, Tool]
    upstream: str | None = None
    """The package of upstream's copies of these tools (tau-bench's), for ``upstream`` mode;
    ``None`` when the domain reproduces no benchmark's tools."""
    schemas: list[dict[str, Any]] = field(init=False)

    @classmethod
    def of(cls, fns: Sequence[Tool], upstream: str | None = None) -> "Toolset":
        return cls({fn.__name__: fn for fn in fns}, upstream)

    def __post_init__(self) -> None:
        self.schemas = [tool_schema(fn) for fn in self.tools.values()]
        self._by_name = {s["function"]["name"]: s for s in self.schemas}
        package = self.upstream
        self._upstream = {n: upstream_tool(fn, package) for n, fn in self.tools.items()} if package else {}

    @property
    def modes(self) -> tuple[ToolMode, ...]:
        return ("strict", "upstream") if self.upstream else ("strict",)

    def __contains__(self, name: object) -> bool:
        return name in self.tools

    def params(self) -> dict[str, list[str]]:
        """Each tool's parameter names in order (for code actions that pass them by position)."""
        return {n: list(s["function"]["parameters"]["properties"]) for n, s in self._by_name.items()}

    def check(self, name: str, arguments: Any, offered: Sequence[str] = (), mode: ToolMode = "strict") -> str | None:
        """Why the call is invalid (unknown tool, wrong arguments), or ``None``. ``offered``: every
        tool the caller offers (its own, such as ``finish``, besides these), for the error's list.
        Upstream mode checks only the name, in upstream's words."""
        if mode not in self.modes:
            raise ValueError(f"these tools have no {mode!r} mode; they have {', '.join(self.modes)}")
        if name not in self.tools:
            if mode == "upstream":
                return UNKNOWN_ACTION.format(name=name)
            return f"Error: unknown tool {name!r}. Available tools: {', '.join(offered or self.tools)}"
        return None if mode == "upstream" else check_arguments(self._by_name[name], arguments)

    def call(self, state: State, name: str, arguments: Any, mode: ToolMode = "strict") -> str:
        """Run one tool call in ``mode``; a failure comes back as an error text, never raised (but
        for :class:`UpstreamFailure`, where upstream itself fails)."""
        problem = self.check(name, arguments, mode=mode)
        if problem:
            return problem
        token = _MODE.set(mode)
        try:
            if mode == "upstream":  # as upstream's Env.step: `Tool.invoke(data=…, **kwargs)`
                output = self._upstream[name](data=state, **arguments)
            else:
                output = _undoable_call(self.tools[name], state, arguments)
        except Exception as exc:  # a tool's own failure is an observation, as in tau-bench
            return f"Error: {exc}"
        finally:
            _MODE.reset(token)
        if not isinstance(output, str):
            raise UpstreamFailure(f"{name} answered {output!r}, not text: upstream's env fails on it, which ends "
                                  "upstream's episode with reward 0")
        return output
