"""Toolset modes: strict checks calls and undoes a failed one whole; upstream runs them unchecked,
in upstream's words, keeping what a failed call wrote."""

from __future__ import annotations

from typing import Any, Literal

import pytest

from envs.state import State, fork, make_base, state_hash
from envs.tools import Toolset, UpstreamFailure, tool_mode


def scribble(data: State, key: str, fail: bool) -> str:
    """Write a note and count it, then perhaps fail.

    Args:
        data: The episode state.
        key: The note's key.
        fail: Whether to raise after writing.
    """
    data["notes"][key] = {"text": "scribbled"}
    data["notes"]["k0"]["text"] += "!"
    data["notes"]["k0"]["text"] += "!"  # a record fetched twice in one call is recorded once, before the first write
    data["writes"] += 1
    data["log"].append(key)
    if fail:
        raise KeyError(key)
    return f"scribbled {key}"


def mode_says(data: State) -> Any:
    """Answer the mode of the call, and nothing in upstream mode.

    Args:
        data: The episode state.
    """
    return "strict" if tool_mode() == "strict" else None


TOOLS = Toolset.of([scribble, mode_says], upstream="upstream_pkg.tools")


def _state() -> State:
    base = make_base({"notes": {f"k{i}": {"text": f"note {i}"} for i in range(3)}, "writes": 0, "log": []}, ("notes",))
    return fork(base)


def test_strict_mode_undoes_every_write_of_a_call_that_raises() -> None:
    state = _state()
    TOOLS.call(state, "scribble", {"key": "k1", "fail": False})
    before = state_hash(state)
    assert TOOLS.call(state, "scribble", {"key": "new", "fail": True}) == "Error: 'new'"
    assert state_hash(state) == before
    assert "new" not in state["notes"] and state["writes"] == 1 and state["log"] == ["k1"]
    assert state["notes"]["k0"]["text"] == "note 0!!"


def test_strict_mode_keeps_the_writes_of_a_call_that_succeeds() -> None:
    state = _state()
    assert TOOLS.call(state, "scribble", {"key": "new", "fail": False}) == "scribbled new"
    assert state["notes"]["new"] == {"text": "scribbled"} and state["writes"] == 1 and state["log"] == ["new"]


def test_upstream_mode_keeps_what_a_failed_call_wrote_and_words_errors_as_upstream() -> None:
    state = _state()
    assert TOOLS.call(state, "scribble", {"key": "new", "fail": True}, "upstream") == "Error: 'new'"
    assert "new" in state["notes"] and state["writes"] == 1
    assert TOOLS.call(state, "scribble", {"key": "k1"}, "upstream") == (
        "Error: Scribble.invoke() missing 1 required positional argument: 'fail'")
    assert TOOLS.call(state, "scribble", {"key": 7, "fail": False, "data": 1}, "upstream") == (
        "Error: upstream_pkg.tools.scribble.Scribble.invoke() got multiple values for keyword argument 'data'")
    assert TOOLS.call(state, "erase", {}, "upstream") == "Unknown action erase"
    assert TOOLS.call(state, "scribble", {"key": 7, "fail": False}).startswith("Error: argument 'key'")


def test_a_tool_sees_the_mode_of_its_call_and_upstream_mode_fails_on_an_answer_that_is_not_text() -> None:
    assert TOOLS.call(_state(), "mode_says", {}) == "strict"
    with pytest.raises(UpstreamFailure, match="mode_says answered None"):
        TOOLS.call(_state(), "mode_says", {}, "upstream")


def test_a_toolset_without_an_upstream_has_only_strict_mode() -> None:
    plain = Toolset.of([scribble])
    assert plain.modes == ("strict",)
    with pytest.raises(ValueError, match="no 'upstream' mode"):
        plain.call(_state(), "scribble", {"key": "k", "fail": False}, "upstream")



def scale(data: State, count: int, factor: float) -> str:
    """Multiply.

    Args:
        data: The episode state.
        count: How many.
        factor: By how much.
    """
    return str(count * factor)


@pytest.mark.parametrize("name, arguments, problem", [
    ("scribble", None, "must be a JSON object, got NoneType"),
    ("scribble", ["k1", False], "must be a JSON object, got list"),
    ("scribble", {"key": "k1", "fail": 1}, "'fail' of scribble must be of type boolean, got int"),
    ("scale", {"count": True, "factor": 1.5}, "'count' of scale must be of type integer, got bool"),
    ("scale", {"count": 2, "factor": False}, "'factor' of scale must be of type number, got bool"),
    ("scale", {"count": 2, "factor": 3}, None), ("scale", {"count": 2.0, "factor": 3}, "type integer, got float"),
])
def test_strict_mode_refuses_arguments_of_the_wrong_shape_or_type_and_a_bool_is_no_number(name, arguments, problem):
    tools, state = Toolset.of([scribble, scale]), _state()
    if problem is None:
        assert tools.check(name, arguments) is None and tools.call(state, name, arguments) == "6"
    else:
        assert problem in tools.check(name, arguments)
        assert tools.call(state, name, arguments).startswith("Error:") and state["writes"] == 0


def tag(data: State, keys: list[str], colour: Literal["red", "blue"]) -> str:
    """Tag notes.

    Args:
        data: The episode state.
        keys: The notes' keys.
        colour: The tag's colour.
    """
    return f"tagged {len(keys)} {colour}"


@pytest.mark.parametrize("arguments, problem", [
    ({"keys": ["k1", 2], "colour": "red"}, "'keys' of tag must be of type array"),
    ({"keys": ["k1"], "colour": "green"}, "'colour' of tag must be one of ['red', 'blue'], got 'green'"),
    ({"keys": ["k1"]}, "tag is missing required argument(s) 'colour'"),
])
def test_strict_mode_checks_array_items_enums_and_required_arguments(arguments, problem):
    tools = Toolset.of([tag])
    assert problem in tools.check("tag", arguments)
    assert tools.call({}, "tag", {"keys": ["k1", "k2"], "colour": "blue"}) == "tagged 2 blue"


def test_a_strict_call_undone_leaves_no_record_of_the_world_in_the_episode():
    """Undoing a failed call puts back copies: a later call that edits the record in place must not
    reach the world's own record, which every episode shares."""
    base = make_base({"notes": {f"k{i}": {"text": f"note {i}"} for i in range(3)}, "writes": 0, "log": []}, ("notes",))
    state = fork(base)
    assert TOOLS.call(state, "scribble", {"key": "new", "fail": True}).startswith("Error:")
    assert TOOLS.call(state, "scribble", {"key": "k1", "fail": False}) == "scribbled k1"
    assert state["notes"]["k0"]["text"] == "note 0!!"
    assert base["notes"].records["k0"] == {"text": "note 0"}


def drop(data: State, name: str) -> str:
    """Drop a top-level entry of the state.

    Args:
        data: The episode state.
        name: The entry's name.
    """
    del data[name]
    return f"dropped {name}"


def test_a_strict_call_that_succeeds_keeps_its_removal_of_a_top_level_entry():
    state = _state()
    assert Toolset.of([drop]).call(state, "drop", {"name": "log"}) == "dropped log"
    assert "log" not in state and state["writes"] == 0
