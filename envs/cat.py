"""The Code-as-Task (CaT) record: one self-generated task, as stored one JSON object per line.

A CaT carries an instruction for the agent, a verifier (Python source defining
``verify(state, answer) -> bool``), an example solution and at least three failure cases. The filter
(:mod:`envs.filter`) keeps a CaT only if the verifier accepts the solution and rejects every failure.
Parsing is strict and names the bad field, so a broken record written by an LLM is reported, not
half-loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

MIN_FAILURES = 3


class CatFormatError(ValueError):
    """A CaT record that does not fit the format; ``field`` is the path to the bad field."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field


@dataclass(frozen=True)
class ToolCall:
    """One tool call, as the agent writes it and as solutions store it."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments}


@dataclass(frozen=True)
class Attempt:
    """A way through a task: tool calls in order, then the final answer."""

    actions: tuple[ToolCall, ...]
    answer: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"actions": [a.to_json() for a in self.actions], "answer": self.answer}


@dataclass(frozen=True)
class CodeAsTask:
    """One task as code: what the agent is asked, and the code that decides whether it succeeded.

    ``world`` names the domain state the task lives in (a generator seed, or a data set), so that
    every episode of the task starts from the same state. ``verifier`` is Python source defining
    ``verify(state, answer)``, run in the sandbox on the episode's final state and answer. The
    ``solution`` shows the task can be done; the ``failures`` are plausible wrong ways through it,
    which a verifier worth keeping rejects (:mod:`envs.filter`). ``provenance`` says who wrote it
    (``"scripted"`` or ``"llm:<model>"``) and how; ``filter`` is the filter's record once judged.
    """

    id: str
    domain: str
    world: dict[str, Any]
    instruction: str
    verifier: str
    solution: Attempt
    failures: tuple[Attempt, ...]
    provenance: dict[str, Any] = field(default_factory=dict)
    filter: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "domain": self.domain, "world": self.world,
            "instruction": self.instruction, "verifier": self.verifier,
            "solution": self.solution.to_json(), "failures": [f.to_json() for f in self.failures],
            "provenance": self.provenance,
        }
        if self.filter is not None:
            out["filter"] = self.filter
        return out

    def dumps(self) -> str:
        return json.dumps(self.to_json(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def loads(cls, line: str) -> "CodeAsTask":
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CatFormatError("<record>", f"not valid JSON ({exc.msg} at column {exc.colno})") from None
        return cls.from_json(data)

    @classmethod
    def from_json(cls, data: Any) -> "CodeAsTask":
        obj = _expect(data, dict, "<record>")
        return cls(
            id=_nonempty(_expect(obj.get("id"), str, "id"), "id"),
            domain=_nonempty(_expect(obj.get("domain"), str, "domain"), "domain"),
            world=_expect(obj.get("world"), dict, "world"),
            instruction=_nonempty(_expect(obj.get("instruction"), str, "instruction"), "instruction"),
            verifier=_nonempty(_expect(obj.get("verifier"), str, "verifier"), "verifier"),
            solution=_attempt(obj.get("solution"), "solution"),
            failures=tuple(_attempt(f, f"failures[{i}]")
                           for i, f in enumerate(_expect(obj.get("failures"), list, "failures"))),
            provenance=_expect(obj.get("provenance", {}), dict, "provenance"),
            filter=_expect(obj["filter"], dict, "filter") if obj.get("filter") is not None else None,
        )


_TYPE_NAMES = {dict: "an object", list: "a list", str: "a string"}


def _expect(value: Any, kind: type, where: str) -> Any:
    if value is None:
        raise CatFormatError(where, "is missing")
    if not isinstance(value, kind):
        raise CatFormatError(where, f"expected {_TYPE_NAMES.get(kind, kind.__name__)}, got {type(value).__name__}")
    return value


def _nonempty(value: str, where: str) -> str:
    if not value.strip():
        raise CatFormatError(where, "is empty")
    return value


def _attempt(data: Any, where: str) -> Attempt:
    obj = _expect(data, dict, where)
    actions = []
    for i, raw in enumerate(_expect(obj.get("actions", []), list, f"{where}.actions")):
        at = f"{where}.actions[{i}]"
        call = _expect(raw, dict, at)
        actions.append(ToolCall(
            name=_nonempty(_expect(call.get("name"), str, f"{at}.name"), f"{at}.name"),
            # "parameters" as an agent's call may name them (envs.actions reads both)
            arguments=_expect(call.get("arguments", call.get("parameters", {})), dict, f"{at}.arguments"),
        ))
    answer = obj.get("answer", "")
    return Attempt(tuple(actions), _expect(answer, str, f"{where}.answer") if answer is not None else "")
