"""Tools: plain Python functions ``fn(state, **arguments) -> str``, one per tool.

Their schemas (OpenAI function format, as chat templates and tau-bench use) come from the type
hints and the Google-style docstring through transformers' ``get_json_schema``; the first
parameter, the episode state, is documented there but never shown to the agent. A call is checked
against the schema before the tool runs, so a wrong name, argument or type comes back as an error
text the agent can read and the state is left untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from transformers.utils import get_json_schema

from envs.state import State

Tool = Callable[..., str]

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


@dataclass
class Toolset:
    """The tools of one domain, by name, with their schemas."""

    tools: dict[str, Tool]
    schemas: list[dict[str, Any]] = field(init=False)

    @classmethod
    def of(cls, fns: Sequence[Tool]) -> "Toolset":
        return cls({fn.__name__: fn for fn in fns})

    def __post_init__(self) -> None:
        self.schemas = [tool_schema(fn) for fn in self.tools.values()]
        self._by_name = {s["function"]["name"]: s for s in self.schemas}

    def __contains__(self, name: object) -> bool:
        return name in self.tools

    def params(self) -> dict[str, list[str]]:
        """Each tool's parameter names in order (for code actions that pass them by position)."""
        return {n: list(s["function"]["parameters"]["properties"]) for n, s in self._by_name.items()}

    def check(self, name: str, arguments: Any, offered: Sequence[str] = ()) -> str | None:
        """Why the call is invalid (unknown tool, wrong arguments), or ``None``. ``offered``: every
        tool the caller offers (its own, such as ``finish``, besides these), for the error's list."""
        if name not in self.tools:
            return f"Error: unknown tool {name!r}. Available tools: {', '.join(offered or self.tools)}"
        return check_arguments(self._by_name[name], arguments)

    def call(self, state: State, name: str, arguments: Any) -> str:
        """Run one tool call; every failure comes back as an ``Error: …`` text, never raised."""
        problem = self.check(name, arguments)
        if problem:
            return problem
        try:
            return self.tools[name](state, **arguments)
        except Exception as exc:  # a tool's own failure is an observation, as in tau-bench
            return f"Error: {exc}"
