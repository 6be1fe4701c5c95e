"""A tiny domain for testing the shared machinery (env, filter, pool) apart from the real ones."""

from __future__ import annotations

from typing import Any

from envs.base import ToolEnv
from envs.cat import Attempt, CodeAsTask, ToolCall
from envs.state import State, make_base
from envs.tools import Toolset


def get_note(state: State, key: str) -> str:
    """Read a note.

    Args:
        state: The episode state.
        key: The note's key.
    """
    note = state["notes"].get_readonly(key)
    if note is None:
        return f"Error: no note {key!r}"
    return note["text"]


def set_note(state: State, key: str, text: str) -> str:
    """Write a note, replacing any note with the same key.

    Args:
        state: The episode state.
        key: The note's key.
        text: The note's text.
    """
    state["notes"][key] = {"text": text}
    state["writes"] += 1
    return f"saved {key}"


def add(state: State, a: int, b: int) -> str:
    """Add two integers.

    Args:
        state: The episode state.
        a: The first number.
        b: The second number.
    """
    return str(a + b)


class ToyEnv(ToolEnv):
    """Notes: read and write short notes by key (test domain)."""

    domain = "toy"
    toolset = Toolset.of([get_note, set_note, add])
    policy = "Use the tools to do what the user asks, then call finish."

    @classmethod
    def build_world(cls, world: dict[str, Any]) -> State:
        n = int(world.get("notes", 3))
        return make_base({"notes": {f"k{i}": {"text": f"note {i}"} for i in range(n)}, "writes": 0}, ("notes",))

    @classmethod
    def default_tasks(cls) -> list[CodeAsTask]:
        return [copy_task()]


def copy_task(**changes: Any) -> CodeAsTask:
    """Copy note k1 to key 'dst' and answer with its text."""
    fields: dict[str, Any] = dict(
        id="toy-copy", domain="toy", world={"notes": 3},
        instruction="Copy note k1 to the key 'dst' and tell me its text.",
        verifier=("def verify(state, answer):\n"
                  "    return state['notes'].get('dst') == {'text': 'note 1'} and 'note 1' in answer\n"),
        solution=Attempt((ToolCall("get_note", {"key": "k1"}), ToolCall("set_note", {"key": "dst", "text": "note 1"})), "note 1"),
        failures=(
            Attempt((ToolCall("get_note", {"key": "k1"}),), "note 1"),
            Attempt((ToolCall("set_note", {"key": "dst", "text": "note 2"}),), "note 1"),
            Attempt((ToolCall("set_note", {"key": "dst", "text": "note 1"}),), "I don't know"),
        ),
    )
    fields.update(changes)
    return CodeAsTask(**fields)
